"""`medtune ingest` from a real Orthanc (DICOMweb, DIMSE): the dataset equals the folder's."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medtune.cli import main
from medtune.io import orthanc
from medtune.io.folder import list_inputs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if shutil.which("Orthanc") is None:
        pytest.fail("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    state = tmp_path_factory.mktemp("orthanc")
    info = orthanc.up(state)
    try:
        orthanc.push(state, [item.path for item in list_inputs(synth_cohort / "dicom")])
        yield info
    finally:
        orthanc.down(state)


def _image_ids(ws: Path) -> list[str]:
    return sorted(pq.read_table(ws / "dataset" / "catalog.parquet").column("image_id").to_pylist())


@pytest.mark.parametrize("protocol", ["dicomweb", "get"])
def test_ingest_from_the_pacs_equals_ingest_from_the_folder(
    server, synth_cohort: Path, tmp_path: Path, protocol: str
) -> None:
    key = tmp_path / "key"
    common = ["--key", str(key), "--size", "32", "--workers", "1", "--ocr", "off"]
    assert (
        main(["ingest", str(synth_cohort / "dicom"), "-w", str(tmp_path / "folder"), *common]) == 0
    )
    spec = server.dicomweb_spec if protocol == "dicomweb" else server.dimse_spec("get")
    staging = tmp_path / "staging"
    args = ["ingest", spec, "-w", str(tmp_path / "pacs"), "--staging", str(staging), *common]
    assert main(args) == 0
    assert _image_ids(tmp_path / "pacs") == _image_ids(tmp_path / "folder")
    # Raw files wait outside the workspace, under names that carry no identifier.
    assert all(p.suffix == ".dcm" and len(p.stem) == 32 for p in staging.rglob("*.dcm"))
    assert not (tmp_path / "pacs" / "dataset" / "staging").exists()
