"""`medtune deid SOURCE --out DIR`: de-identified DICOM files, a log, resumable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from medtune.config import IngestConfig
from medtune.dataset.export import export_deidentified
from medtune.dataset.leakcheck import identifiers_from_phi_manifest
from medtune.deid.leak import Needles, scan_dataset

pytestmark = pytest.mark.integration


def test_export_writes_pseudonymous_files_without_identifiers(
    synth_cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = IngestConfig(workers=2)
    summary = export_deidentified(synth_cohort / "dicom", out, config, tmp_path / "key")
    inputs = [p for p in (synth_cohort / "dicom").rglob("*") if p.is_file()]
    assert summary.inputs == len(inputs) == summary.written + summary.quarantined
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == summary.written >= 0.8 * len(inputs)
    # Paths are pseudonyms and UIDs only: no folder name of the source survives.
    source_parts = {part for p in inputs for part in p.relative_to(synth_cohort).parts[:-1]}
    assert not source_parts & {part for f in files for part in f.relative_to(out).parts}
    needles = Needles.of(
        identifiers_from_phi_manifest(synth_cohort / "truth" / "phi.parquet").known
    )
    log = [json.loads(line) for line in (out / "deid-log.jsonl").read_text().splitlines()]
    cleaned = {e["file"] for e in log if e.get("pixels_cleaned")}
    originals = {hashlib.sha256(pydicom.dcmread(p).pixel_array.tobytes()).hexdigest()
                 for p in inputs}  # fmt: skip
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert not scan_dataset(ds, needles), path.name
        pixels = hashlib.sha256(ds.pixel_array.tobytes()).hexdigest()
        # Pixels are the originals, except where burned-in text was blanked.
        assert (pixels in originals) != (path.relative_to(out).as_posix() in cleaned)
    assert len(log) == len(inputs) and all("deid" in e or e["status"] != "written" for e in log)
    # A rerun skips what is logged.
    again = export_deidentified(synth_cohort / "dicom", out, config, tmp_path / "key")
    assert again.skipped == len(inputs) and again.written == 0
