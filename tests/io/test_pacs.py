"""PACS sources against a real Orthanc: push a synthetic cohort, find it, retrieve it back.

The integration tests start Orthanc with ``medtune.io.orthanc.up`` (Debian packages orthanc and
orthanc-dicomweb). Without them these tests fail, never skip: CI installs the packages and the
PACS path must be proven there. The unit tests at the top need no server.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from typer.testing import CliRunner

from medtune.cli_pacs import pacs_app
from medtune.errors import MedtuneError
from medtune.io import orthanc
from medtune.io.folder import list_inputs
from medtune.io.pacs import (
    DicomWebSource,
    DimseSource,
    FailedItem,
    PacsQuery,
    RetrievedFile,
    SeriesRef,
    StudyRef,
    open_source,
    staged_path,
    summarize,
)
from medtune.synth.dicom import BODY_PART

UID = "2.25.123456789012345678901234567890"

# ---------------------------------------------------------------------------------------------
# Unit tests: no server.


def test_query_date_range_and_matching():
    query = PacsQuery(dt.date(2015, 1, 1), dt.date(2018, 12, 31), ("cr",), ("chest",))
    assert query.study_date == "20150101-20181231"
    assert PacsQuery(date_from=dt.date(2015, 1, 1)).study_date == "20150101-"
    assert PacsQuery(date_to=dt.date(2015, 1, 1)).study_date == "-20150101"
    assert PacsQuery().study_date is None
    assert query.keeps("CR", "CHEST") and not query.keeps("DX", "CHEST")
    assert not query.keeps("CR", "HAND")
    # A value the server left out passes only where the server filtered on it (one value).
    assert query.keeps("CR", None)
    assert not PacsQuery(body_parts=("HAND", "FOOT")).keeps("CR", None)
    with pytest.raises(MedtuneError, match="start date is after the end date"):
        PacsQuery(dt.date(2020, 1, 1), dt.date(2019, 1, 1))


def test_open_source_specs():
    web = open_source("dicomweb+http://127.0.0.1:8042/dicom-web/")
    assert isinstance(web, DicomWebSource) and web.url == "http://127.0.0.1:8042/dicom-web"
    get = open_source("dimse://PACS1@10.0.0.5:11112?calling=ME")
    assert isinstance(get, DimseSource)
    assert (get.host, get.port, get.called_aet, get.calling_aet, get.method) == (
        "10.0.0.5",
        11112,
        "PACS1",
        "ME",
        "get",
    )
    move = open_source("dimse://PACS1@pacs?method=move&port=11113&listen=0.0.0.0")
    assert (move.port, move.method, move.move_port, move.listen_host) == (
        104,
        "move",
        11113,
        "0.0.0.0",
    )
    for bad, message in (
        ("ftp://x", "unknown source"),
        ("dimse://A@h:1?methd=get", "unknown option 'methd'"),
        ("dimse://A@h:1?method=move", "needs the port"),
        ("dimse://A@h:1?method=push", "'get' or 'move'"),
        ("dimse://A@h:1?port=x", "bad number"),
    ):
        with pytest.raises(MedtuneError, match=message):
            open_source(bad)


def test_staged_names_are_hashes_and_reprs_hide_uids(tmp_path):
    path = staged_path(tmp_path, UID)
    assert path == staged_path(tmp_path, UID)  # stable: a re-run finds it
    assert re.fullmatch(r"[0-9a-f]{32}\.dcm", path.name) and path.parent.name == path.name[:2]
    assert UID not in str(path)
    items = [
        StudyRef(UID, (SeriesRef(UID, "CR", "CHEST", 1),)),
        FailedItem("study", "not found on the server", True, UID, UID),
        RetrievedFile(path, UID, UID),
    ]
    assert all(UID not in repr(item) for item in items)


def test_orthanc_config_is_loopback_only(tmp_path):
    config = orthanc.orthanc_config(tmp_path, 1, 2, "ORTHANC", "MEDTUNE", 3, Path("x.so"))
    assert config["RemoteAccessAllowed"] is False
    assert config["DicomCheckModalityHost"] is True
    assert not any(config[f"DicomAlwaysAllow{op}"] for op in ("Echo", "Store", "Find", "Get"))
    assert config["DicomModalities"] == {
        "medtune": {"AET": "MEDTUNE", "Host": "127.0.0.1", "Port": 3}
    }
    assert str(config["StorageDirectory"]).startswith(str(tmp_path))


def test_up_without_orthanc_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Orthanc binary to be found
    with pytest.raises(MedtuneError, match="install the Debian packages orthanc orthanc-dicomweb"):
        orthanc.up(tmp_path / "state")


# ---------------------------------------------------------------------------------------------
# Integration: a real Orthanc holding the synthetic cohort.


@dataclass(frozen=True)
class Pacs:
    info: orthanc.ServerInfo
    pushed: orthanc.PushSummary
    truth: list[dict]  # one row per image of truth/images.parquet
    cohort: Path

    def spec(self, protocol: str) -> str:
        return self.info.dicomweb_spec if protocol == "dicomweb" else self.info.dimse_spec(protocol)


@pytest.fixture(scope="module")
def pacs(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    if shutil.which("Orthanc") is None:
        pytest.fail("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    state = tmp_path_factory.mktemp("orthanc")
    info = orthanc.up(state)
    try:
        files = [item.path for item in list_inputs(synth_cohort / "dicom")]
        pushed = orthanc.push(state, files)
        truth = pq.read_table(synth_cohort / "truth" / "images.parquet").to_pylist()
        yield Pacs(info, pushed, truth, synth_cohort)
    finally:
        assert orthanc.down(state)
    # Nothing left behind: the process is gone (and reaped), the state file removed.
    assert not Path(f"/proc/{info.pid}").exists()
    assert orthanc.read_state(state) is None
    assert not orthanc.status(state).running


PROTOCOLS = ["dicomweb", "get", "move"]


@pytest.mark.integration
def test_push_counts_every_file(pacs: Pacs):
    assert pacs.pushed.accepted == len(pacs.truth)
    assert pacs.pushed.total == pacs.pushed.accepted  # nothing refused, nothing skipped
    state = orthanc.status(pacs.info.state_dir)
    studies = {row["study_uid"] for row in pacs.truth}
    assert (state.studies, state.instances) == (len(studies), len(pacs.truth))
    # Again: every file is already there; a non-DICOM file is skipped, never sent.
    files = [pacs.cohort / row["file"] for row in pacs.truth[:3]]
    files.append(pacs.cohort / "truth" / "images.parquet")
    again = orthanc.push(pacs.info.url, files)
    assert (again.already, again.skipped, again.accepted, again.rejected) == (3, 1, 0, 0)


QUERIES = {
    "date": PacsQuery(date_from=dt.date(2015, 1, 1), date_to=dt.date(2018, 12, 31)),
    "modality": PacsQuery(modalities=("CR",)),
    "body part": PacsQuery(body_parts=("chest",)),
    "all three": PacsQuery(dt.date(2015, 1, 1), dt.date(2018, 12, 31), ("CR",), ("CHEST",)),
    "several values": PacsQuery(modalities=("CR", "DX"), body_parts=("HAND", "FOOT")),
}


def _expected(truth: list[dict], query: PacsQuery) -> tuple[set[str], int]:
    rows = [
        row
        for row in truth
        if (query.date_from is None or row["study_date"] >= query.date_from)
        and (query.date_to is None or row["study_date"] <= query.date_to)
        and (not query.modalities or row["modality"] in query.modalities)
        and (not query.body_parts or BODY_PART[row["anatomy"]] in query.body_parts)
    ]
    return {row["study_uid"] for row in rows}, len(rows)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_find_returns_exactly_the_expected_studies(pacs: Pacs, protocol: str):
    source = open_source(pacs.spec(protocol))
    for name, query in QUERIES.items():
        studies, images = _expected(pacs.truth, query)
        assert 0 < len(studies) < len({row["study_uid"] for row in pacs.truth}), name
        found = source.find(query)
        assert {ref.study_uid for ref in found} == studies, name
        # Only the matching series (one image each in this cohort) are selected.
        assert sum(ref.n_instances for ref in found) == images, name
    by_uid = source.find(PacsQuery(study_uids=(pacs.truth[0]["study_uid"], UID)))
    assert [ref.study_uid for ref in by_uid] == [pacs.truth[0]["study_uid"]]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retrieve_every_instance_byte_identical_then_resume(
    pacs: Pacs, protocol: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    source = open_source(pacs.spec(protocol))
    studies = source.find(PacsQuery())
    staging = tmp_path / "staging"
    results = list(source.retrieve([*studies, UID], staging))

    assert summarize(results) == {"fetched": len(pacs.truth), "cached": 0, "failed": 0, "absent": 1}
    (absent,) = [r for r in results if isinstance(r, FailedItem)]
    assert (absent.level, absent.absent, absent.study_uid) == ("study", True, UID)
    staged = {r.sop_uid: r.path for r in results if isinstance(r, RetrievedFile)}
    assert set(staged) == {row["sop_uid"] for row in pacs.truth}
    for row in pacs.truth:
        original = pydicom.dcmread(pacs.cohort / row["file"])
        copy = pydicom.dcmread(staged[row["sop_uid"]])
        assert copy.SOPInstanceUID == original.SOPInstanceUID
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert np.array_equal(copy.pixel_array, original.pixel_array)
    assert all(re.fullmatch(r"[0-9a-f]{32}\.dcm", path.name) for path in staged.values())

    # Resume: a second run fetches nothing; after losing three files, exactly those three.
    again = list(source.retrieve(studies, staging))
    assert summarize(again) == {"fetched": 0, "cached": len(pacs.truth), "failed": 0, "absent": 0}
    lost = sorted(staged)[:3]
    for sop in lost:
        staged[sop].unlink()
    third = list(source.retrieve(studies, staging))
    assert sorted(r.sop_uid for r in third if isinstance(r, RetrievedFile) and not r.cached) == lost
    assert summarize(third)["cached"] == len(pacs.truth) - 3

    # No identifier reached the logs: no UID, no injected value.
    logged = caplog.text
    assert not any(row["sop_uid"] in logged or row["study_uid"] in logged for row in pacs.truth)
    phi = pq.read_table(pacs.cohort / "truth" / "phi.parquet").column("value").to_pylist()
    assert not [value for value in phi if len(str(value)) >= 6 and str(value) in logged]


@pytest.mark.integration
def test_retrieve_resumes_after_a_kill(pacs: Pacs, tmp_path: Path):
    source = open_source(pacs.spec("dicomweb"))
    studies = source.find(PacsQuery())
    run = source.retrieve(studies, tmp_path)
    for _ in range(10):  # stopped after a few results, as a kill would
        next(run)
    run.close()
    on_disk = len(list(tmp_path.rglob("*.dcm")))
    assert 10 <= on_disk < len(pacs.truth)
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written file left
    rest = summarize(source.retrieve(studies, tmp_path))
    assert rest == {
        "fetched": len(pacs.truth) - on_disk,
        "cached": on_disk,
        "failed": 0,
        "absent": 0,
    }


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_series_is_reported_not_silent(pacs: Pacs, protocol: str, tmp_path: Path):
    source = open_source(pacs.spec(protocol))
    real = pacs.truth[0]["study_uid"]
    ghost = StudyRef(real, (SeriesRef(UID, "CR", "CHEST", 1),))
    (result,) = list(source.retrieve([ghost], tmp_path))
    assert isinstance(result, FailedItem)
    assert (result.level, result.absent, result.uid) == ("series", True, UID)
    assert UID not in result.reason


@pytest.mark.integration
def test_cli_up_status_push_down(tmp_path: Path, synth_cohort: Path):
    runner = CliRunner()
    state = str(tmp_path / "state")
    started = runner.invoke(pacs_app, ["up", "--dir", state])
    try:
        assert started.exit_code == 0, started.output
        assert "dicomweb+http://127.0.0.1:" in started.output
        again = runner.invoke(pacs_app, ["up", "--dir", state])
        assert "already running" in again.output
        site = next(p for p in (synth_cohort / "dicom").iterdir() if p.is_dir())
        pushed = runner.invoke(pacs_app, ["push", str(site), "--dir", state])
        files = len(list_inputs(site))
        assert pushed.exit_code == 0 and f"pushed {files} files: {files} stored" in pushed.output
        shown = runner.invoke(pacs_app, ["status", "--dir", state])
        assert shown.exit_code == 0 and f"{files} instances" in shown.output
        # Pull one study by UID, and one the server lacks: reported absent, not dropped.
        one = pydicom.dcmread(list_inputs(site)[0].path, stop_before_pixels=True)
        spec = orthanc.read_state(state).dicomweb_spec
        args = ["pull", spec, "--out", str(tmp_path / "out"), "--study", one.StudyInstanceUID]
        pulled = runner.invoke(pacs_app, [*args, "--study", UID])
        assert pulled.exit_code == 0, pulled.output
        assert re.search(
            r"staged [1-9]\d* fetched, 0 already there, 0 failed, 1 absent", pulled.output
        )
        assert UID not in pulled.output and one.StudyInstanceUID not in pulled.output
    finally:
        stopped = runner.invoke(pacs_app, ["down", "--dir", state])
    assert stopped.exit_code == 0 and "Orthanc stopped" in stopped.output
    assert runner.invoke(pacs_app, ["status", "--dir", state]).exit_code == 3


@pytest.mark.integration
def test_up_on_a_taken_port_fails_in_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(MedtuneError, match="Orthanc exited on start") as error:
            orthanc.up(tmp_path, http_port=busy.getsockname()[1])
    assert "\n" not in str(error.value) and "orthanc.log" in str(error.value)
    assert orthanc.read_state(tmp_path) is None  # nothing recorded as running
