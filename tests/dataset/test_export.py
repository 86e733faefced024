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


def test_header_only_path_writes_what_pydicom_would(synth_cohort: Path, tmp_path: Path) -> None:
    """The fast path (header encoded alone, pixel element copied by the kernel) gives the very
    bytes pydicom's save_as gives for the same de-identified data set, pixels included."""
    import io

    from medtune.dataset import export
    from medtune.dataset.item import ItemContext, deidentify_header
    from medtune.deid.pseudonyms import Pseudonymizer
    from medtune.io.folder import list_inputs

    root = synth_cohort / "dicom"
    ctx = ItemContext(IngestConfig(deid={"ocr": "off"}), Pseudonymizer(b"k" * 32), root)
    native = [item for item in list_inputs(root)
              if pydicom.dcmread(item.path, stop_before_pixels=True).file_meta.TransferSyntaxUID
              in export._NATIVE]  # fmt: skip
    assert native
    for item in native:
        entry = export._export_header_only(item, ctx, tmp_path)
        assert entry is not None  # the fast path applied
        ds = pydicom.dcmread(item.path)
        deidentify_header(ds, item, ctx)
        expected = io.BytesIO()
        ds.save_as(expected, enforce_file_format=True)
        assert (tmp_path / str(entry["file"])).read_bytes() == expected.getvalue()


def test_header_longer_than_the_first_read_is_still_exported_exactly(
    synth_cohort: Path, tmp_path: Path
) -> None:
    import io

    from medtune.dataset import export
    from medtune.dataset.item import ItemContext, deidentify_header
    from medtune.deid.pseudonyms import Pseudonymizer
    from medtune.io.folder import list_inputs

    root = synth_cohort / "dicom"
    source = next(item.path for item in list_inputs(root)
                  if pydicom.dcmread(item.path, stop_before_pixels=True)
                  .file_meta.TransferSyntaxUID in export._NATIVE)  # fmt: skip
    ds = pydicom.dcmread(source)
    # A vendor's private blob: the header no longer fits the first read.
    ds.private_block(0x0029, "VENDOR BLOB", create=True).add_new(
        0x10, "OB", b"\1" * (export._HEAD_BYTES + 1000)
    )
    big = tmp_path / "in" / "big.dcm"
    big.parent.mkdir()
    ds.save_as(big, enforce_file_format=True)
    ctx = ItemContext(IngestConfig(deid={"ocr": "off"}), Pseudonymizer(b"k" * 32), big.parent)
    [item] = list_inputs(big.parent)
    entry = export._export_header_only(item, ctx, tmp_path / "out")
    assert entry is not None
    expected = pydicom.dcmread(big)
    deidentify_header(expected, item, ctx)
    buffer = io.BytesIO()
    expected.save_as(buffer, enforce_file_format=True)
    assert (tmp_path / "out" / str(entry["file"])).read_bytes() == buffer.getvalue()
    assert not any(
        e.tag.group == 0x0029 for e in pydicom.dcmread(tmp_path / "out" / str(entry["file"]))
    )


@pytest.mark.parametrize("sop", ["1.2.3", "1.2.34", "2.25.123456789012345678901234567890123"])
def test_file_meta_encoding_equals_pydicoms(sop: str) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    from medtune.dataset.export import _encode_file_meta

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1544.1"
    meta.ImplementationVersionName = "MEDTUNE_0.1"  # odd length: padded with a space
    expected = DicomBytesIO()
    write_file_meta_info(expected, meta, enforce_standard=True)
    assert _encode_file_meta(meta) == expected.getvalue()
    del meta.ImplementationClassUID  # not the meta medtune writes: pydicom's writer decides
    assert _encode_file_meta(meta) is None
