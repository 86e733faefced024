"""`medtune ingest` end to end: accounting, de-identification, resume, shards, messy inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from medtune.config import IngestConfig
from medtune.dataset.ingest import ShardSpec, ingest, ingest_with_reports
from medtune.dataset.leakcheck import check_workspace, identifiers_from_phi_manifest
from medtune.deid import leak
from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key
from medtune.workspace import Workspace

pytestmark = pytest.mark.integration

CONFIG = IngestConfig(size=64, workers=1, shard_images=16)


@pytest.fixture(scope="module")
def ingested(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    ws = tmp_path_factory.mktemp("ws") / "ws"
    key = tmp_path_factory.mktemp("key") / "key"
    summary = ingest_with_reports(
        synth_cohort / "dicom", ws, CONFIG, key, [synth_cohort / "reports"]
    )
    return ws, key, summary


def test_every_input_is_accounted_for(ingested, synth_cohort: Path) -> None:
    ws, _, summary = ingested
    result = summary.ingest
    files = [p for p in (synth_cohort / "dicom").rglob("*") if p.is_file()]
    assert result.inputs == len(files)
    assert result.accounted
    assert result.ingested >= 0.8 * len(files)  # a few may be quarantined for pixel text
    inputs = pq.read_table(ws / "dataset" / "deid" / "inputs.parquet").to_pylist()
    assert len(inputs) == len(files)
    assert {f["status"] for f in inputs} <= {"ingested", "quarantined", "duplicate"}
    assert all(f["reason"] for f in inputs if f["status"] == "quarantined")


def test_catalog_and_shards_agree(ingested) -> None:
    ws, _, summary = ingested
    catalog = pq.read_table(ws / "dataset" / "catalog.parquet").to_pylist()
    assert len(catalog) == summary.ingest.images
    for row in catalog[:10]:
        shard = np.load(ws / "dataset" / "images" / f"{row['shard_file']}.npy", mmap_mode="r")
        image = shard[row["index"]]
        assert image.shape == (64, 64) and image.dtype == np.uint8 and image.max() > 0
    assert len({r["image_id"] for r in catalog}) == len(catalog)
    assert {r["sex"] for r in catalog} <= {"M", "F", "O", None}
    assert all(r["age"] is None or 0 <= r["age"] <= 90 for r in catalog)
    assert len({r["site"] for r in catalog}) == 5  # one pseudonymous site per hospital


def test_no_identifier_in_catalog_or_reports(ingested, synth_cohort: Path) -> None:
    ws, key, _ = ingested
    reports = pq.read_table(ws / "dataset" / "reports.parquet").to_pylist()
    assert reports and all(r["text"] for r in reports)
    known = identifiers_from_phi_manifest(synth_cohort / "truth" / "phi.parquet")
    hits = check_workspace(Workspace(ws), known, Pseudonymizer(load_or_create_key(key)))
    assert not hits, leak.describe(hits) + " in " + ", ".join(sorted({h.where for h in hits}))


def test_reports_join_their_studies(ingested) -> None:
    ws, _, summary = ingested
    assert summary.reports.withheld == 0  # the scrubber left no identifier of any row
    reports = pq.read_table(ws / "dataset" / "reports.parquet").to_pylist()
    catalog_studies = set(
        pq.read_table(ws / "dataset" / "catalog.parquet").column("study_id").to_pylist()
    )
    matched = [r for r in reports if r["has_images"]]
    assert len(matched) >= 0.8 * len(reports)
    assert {r["study_id"] for r in matched} <= catalog_studies


def test_same_input_and_key_give_the_same_dataset(
    ingested, synth_cohort: Path, tmp_path: Path
) -> None:
    ws, key, _ = ingested
    again = tmp_path / "again"
    ingest(synth_cohort / "dicom", again, CONFIG, key)
    a = pq.read_table(ws / "dataset" / "catalog.parquet")
    b = pq.read_table(again / "dataset" / "catalog.parquet")
    assert a.equals(b)
    for shard in sorted((ws / "dataset" / "images").glob("*.npy")):
        np.testing.assert_array_equal(
            np.load(shard), np.load(again / "dataset" / "images" / shard.name)
        )


def test_parts_merge_to_the_same_catalog(ingested, synth_cohort: Path, tmp_path: Path) -> None:
    ws, key, _ = ingested
    parts = tmp_path / "parts"
    first = ingest(synth_cohort / "dicom", parts, CONFIG, key, ShardSpec(0, 2))
    assert not first.merged
    second = ingest(synth_cohort / "dicom", parts, CONFIG, key, ShardSpec(1, 2))
    assert second.merged
    merged = pq.read_table(parts / "dataset" / "catalog.parquet").to_pylist()
    whole = pq.read_table(ws / "dataset" / "catalog.parquet").to_pylist()
    assert sorted(r["image_id"] for r in merged) == sorted(r["image_id"] for r in whole)


def _messy_source(synth_cohort: Path, root: Path) -> dict[str, str]:
    """A copy of a few cohort files plus every kind of bad input; returns expected outcomes."""
    files = sorted(p for p in (synth_cohort / "dicom").rglob("*") if p.is_file())[:6]
    for i, path in enumerate(files):
        shutil.copy(path, root / f"good{i}.dcm")
    shutil.copy(files[0], root / "copy-of-good0")  # the same instance again: a duplicate
    (root / "notes.txt").write_text("not an image")
    (root / "empty").write_bytes(b"")
    data = files[1].read_bytes()
    (root / "truncated.dcm").write_bytes(data[: len(data) // 3])
    ds = pydicom.dcmread(files[2])
    del ds.PixelData
    ds.save_as(root / "nopixels.dcm")
    ds = pydicom.dcmread(files[3])
    ds.Rows, ds.Columns = 40000, 40000
    ds.save_as(root / "bomb.dcm")
    ds = pydicom.dcmread(files[4])
    ds.PatientID = "../../../../tmp/evil"
    ds.AccessionNumber = "../../escape"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    ds.save_as(root / "pathy.dcm")
    ds = pydicom.dcmread(files[5])
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"  # a syntax nobody can decode
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    ds.save_as(root / "unknown-syntax.dcm")
    return {"notes.txt": "not a DICOM file", "empty": "not a DICOM file",
            "nopixels.dcm": "no pixel data", "bomb.dcm": "implausible"}  # fmt: skip


def test_bad_inputs_are_quarantined_and_the_batch_goes_on(
    synth_cohort: Path, tmp_path: Path
) -> None:
    source = tmp_path / "messy"
    source.mkdir()
    expected = _messy_source(synth_cohort, source)
    messages: dict[str, str] = {}
    ws = tmp_path / "ws"
    config = IngestConfig(size=64, workers=1, shard_images=4, deid={"ocr": "off"})

    def note(item, reason) -> None:  # type: ignore[no-untyped-def]
        messages[item.relative] = reason

    summary = ingest(source, ws, config, tmp_path / "key", on_quarantine=note)
    assert summary.accounted and summary.inputs == 14
    assert summary.duplicates == 1
    for name, fragment in expected.items():
        assert fragment in messages[name], (name, messages.get(name))
    assert "truncated.dcm" in messages and "unknown-syntax.dcm" in messages
    assert summary.ingested == 14 - 1 - len(messages)
    long = [m for m in messages.values() if "\n" in m or len(m) >= 200]
    assert not long, long
    # Nothing was written outside the workspace by the path-shaped identifiers.
    assert not Path("/tmp/evil").exists()
    outside = [p for p in ws.rglob("*") if not p.resolve().is_relative_to(ws.resolve())]
    assert not outside, outside


def test_pydicom_test_files_ingest_or_are_quarantined_with_a_reason(tmp_path: Path) -> None:
    import data_store  # the pydicom-data wheel: pydicom's test files, offline

    source = Path(data_store.__file__).parent / "data"
    reasons: dict[str, str] = {}
    config = IngestConfig(size=32, workers=2, shard_images=64, deid={"ocr": "off"})

    def note(item, reason) -> None:  # type: ignore[no-untyped-def]
        reasons[item.relative] = reason

    summary = ingest(source, tmp_path / "ws", config, tmp_path / "key", on_quarantine=note)
    assert summary.accounted and summary.inputs >= 60
    assert summary.ingested >= summary.inputs // 2
    assert all(reason for reason in reasons.values())
    assert "internal" not in " ".join(f for f in summary.reasons), summary.reasons


def test_resume_after_kill_equals_an_uninterrupted_run(synth_cohort: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    args = [sys.executable, "-m", "medtune.cli", "ingest", str(synth_cohort / "dicom"),
            "--key", str(key), "--workers", "1", "--set", "shard_images=8",
            "--size", "48"]  # fmt: skip
    killed = tmp_path / "killed"
    process = subprocess.Popen([*args, "--workspace", str(killed)], stderr=subprocess.DEVNULL)
    progress = killed / "dataset" / ".ingest" / "all" / "progress.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = json.loads(progress.read_text())
        except (OSError, ValueError):
            state = {}
        if 1 <= state.get("chunks_done", 0) < state.get("chunks", 0):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "dataset" / "catalog.parquet").exists()
    subprocess.run([*args, "--workspace", str(killed)], check=True, stderr=subprocess.DEVNULL)
    clean = tmp_path / "clean"
    subprocess.run([*args, "--workspace", str(clean)], check=True, stderr=subprocess.DEVNULL)
    a = pq.read_table(killed / "dataset" / "catalog.parquet")
    b = pq.read_table(clean / "dataset" / "catalog.parquet")
    assert a.equals(b)
    shards = sorted(p.name for p in (clean / "dataset" / "images").glob("*.npy"))
    assert shards == sorted(p.name for p in (killed / "dataset" / "images").glob("*.npy"))
    for name in shards:
        np.testing.assert_array_equal(np.load(killed / "dataset" / "images" / name),
                                      np.load(clean / "dataset" / "images" / name))  # fmt: skip
    assert not list((killed / "dataset" / "images").glob(".*"))  # no temporary leftovers
