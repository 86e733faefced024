"""Folder source: every file under the root, stable order, never outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medtune.errors import MedtuneError
from medtune.io.folder import check_dicomdir, input_id, list_inputs


def test_lists_every_file_nested_sorted_with_opaque_ids(tmp_path: Path) -> None:
    for rel in ("b/2.dcm", "a/x/1", "a/readme.txt", "c.DCM"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = list_inputs(tmp_path)
    # Depth-first, names sorted within each folder: the same order on every machine.
    assert [i.relative for i in items] == ["c.DCM", "a/readme.txt", "a/x/1", "b/2.dcm"]
    assert all(i.input_id == input_id(i.relative) and len(i.input_id) == 16 for i in items)
    assert [i.relative for i in list_inputs(tmp_path)] == [i.relative for i in items]  # stable


def test_links_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.dcm").write_bytes(b"x")
    os.symlink(outside / "secret.dcm", root / "link.dcm")
    os.symlink(outside, root / "linkdir")
    assert [i.relative for i in list_inputs(root)] == ["ok.dcm"]


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match="not a directory"):
        list_inputs(tmp_path / "missing")


def test_dicomdir_references_outside_the_root_are_counted_not_followed(tmp_path: Path) -> None:
    (tmp_path / "IMG").mkdir()
    (tmp_path / "IMG" / "A").write_bytes(b"x")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    records = []
    for parts in (["IMG", "A"], ["IMG", "MISSING"], ["..", "..", "etc", "passwd"]):
        record = Dataset()
        record.DirectoryRecordType = "IMAGE"
        record.ReferencedFileID = parts
        records.append(record)
    ds.DirectoryRecordSequence = records
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=False)
    check = check_dicomdir(tmp_path)
    assert check is not None
    assert (check.referenced, check.missing, check.outside) == (3, 1, 1)
    assert check_dicomdir(tmp_path / "IMG") is None
