"""The leakage check: it catches a patient across splits and near-duplicate pixels across splits
in a hand-made column, and passes a clean one; and the groups a split may not cut."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from medtune.curate.leakage import (
    Leak,
    check_split,
    check_workspace_split,
    describe,
    leak_groups,
)
from medtune.dataset.catalog import read_catalog, write_catalog
from medtune.dataset.phash import NEAR
from medtune.errors import MedtuneError
from medtune.workspace import Workspace


@pytest.fixture
def workspace(ingested_workspace: Path, tmp_path: Path) -> Workspace:
    shutil.copytree(ingested_workspace, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def by_patient_split(table: pa.Table) -> list[str]:
    """A clean hand-made split: patients sorted by id, alternately train and test."""
    patients = sorted(set(table.column("patient_id").to_pylist()))
    part = {p: ("train", "test")[k % 2] for k, p in enumerate(patients)}
    return [part[p] for p in table.column("patient_id").to_pylist()]


def flip_bits(code: bytes, count: int) -> bytes:
    out = bytearray(code)
    for bit in range(count):
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def tiny(
    patients: list[str | None], values: list[object], hashes: list[bytes | None] | None = None
) -> pa.Table:
    rng = np.random.default_rng(0)
    hashes = hashes or [rng.bytes(32) for _ in patients]
    return pa.table({
        "image_id": [f"img-{i}" for i in range(len(patients))],
        "patient_id": pa.array(patients, pa.string()),
        "phash": pa.array(hashes, pa.binary(32)),
        "split": values,
    })  # fmt: skip


def test_clean_hand_made_split_passes(workspace: Workspace) -> None:
    table = read_catalog(workspace.catalog_path)
    write_catalog(workspace.catalog_path, table, columns={"mine": by_patient_split(table)})
    assert check_workspace_split(workspace.root, "mine") == []


def test_catches_a_patient_across_splits(workspace: Workspace) -> None:
    table = read_catalog(workspace.catalog_path)
    values = by_patient_split(table)
    patients = table.column("patient_id").to_pylist()
    images = table.column("image_id").to_pylist()
    # A patient with several images: move their last image to the other part.
    leaker = next(p for p in sorted(set(patients)) if patients.count(p) > 1)
    last = max(i for i, p in enumerate(patients) if p == leaker)
    values[last] = "test" if values[last] == "train" else "train"
    write_catalog(workspace.catalog_path, table, columns={"mine": values})
    leaks = check_workspace_split(workspace.root, "mine")
    assert [(leak.kind, leak.values, leak.patient_ids) for leak in leaks] == [
        ("patient", ("test", "train"), (leaker,))
    ]
    assert images[last] in leaks[0].image_ids
    assert describe(leaks) == "1 patient in more than one split"


def test_catches_a_planted_near_duplicate_across_splits(workspace: Workspace) -> None:
    table = read_catalog(workspace.catalog_path)
    values = by_patient_split(table)
    hashes = table.column("phash").to_pylist()
    train, test = values.index("train"), values.index("test")
    hashes[test] = flip_bits(hashes[train], NEAR)  # re-exported under another patient id
    table = table.set_column(table.schema.get_field_index("phash"), "phash",
                             pa.array(hashes, pa.binary(32)))  # fmt: skip
    write_catalog(workspace.catalog_path, table, columns={"mine": values})
    leaks = check_workspace_split(workspace.root, "mine")
    image_ids = table.column("image_id").to_pylist()
    assert len(leaks) == 1
    leak = leaks[0]
    assert (leak.kind, leak.values, leak.distance) == ("near_duplicate", ("test", "train"), NEAR)
    assert set(leak.image_ids) == {image_ids[train], image_ids[test]}
    assert describe(leaks) == "1 near-duplicate pair across splits"


def test_near_duplicate_threshold_is_inclusive() -> None:
    code = bytes(range(32))
    for bits, caught in ((NEAR, True), (NEAR + 1, False)):
        table = tiny(["a", "b"], ["train", "test"], [code, flip_bits(code, bits)])
        assert bool(check_split(table, "split")) is caught, bits
    loose = tiny(["a", "b"], ["train", "test"], [code, flip_bits(code, NEAR + 1)])
    assert len(check_split(loose, "split", near_duplicate_bits=NEAR + 1)) == 1


def test_excluded_and_null_values_take_no_part() -> None:
    code = bytes(32)
    values = ["train", "excluded", None, "excluded"]
    table = tiny(["a", "a", "a", "b"], values, [code, None, code, code])
    assert check_split(table, "split") == []


def test_same_patient_near_duplicates_are_reported_once_as_a_patient() -> None:
    code = bytes(32)
    table = tiny(["a", "a"], ["train", "test"], [code, code])
    assert [leak.kind for leak in check_split(table, "split")] == ["patient"]


def test_images_without_patient_are_checked_by_pixels() -> None:
    code = bytes(32)
    table = tiny([None, None, "c"], ["train", "test", "test"], [code, code, None])
    leaks = check_split(table, "split")
    assert [(leak.kind, leak.patient_ids) for leak in leaks] == [("near_duplicate", (None, None))]


def test_fold_columns_are_checked_like_strings() -> None:
    table = tiny(["a", "a", "b"], pa.array([0, 1, 1], pa.int8()))
    leaks = check_split(table, "split")
    assert [(leak.kind, leak.values) for leak in leaks] == [("patient", ("0", "1"))]


def test_describe_counts_by_kind() -> None:
    patient = Leak("patient", ("test", "train"), ("p1",), ("i1", "i2"))
    pair = Leak("near_duplicate", ("test", "train"), ("p1", "p2"), ("i1", "i3"), 3)
    assert describe([]) == "no leaks"
    assert describe([patient] * 3 + [pair]) == (
        "3 patients in more than one split, 1 near-duplicate pair across splits"
    )
    assert describe([pair, pair]) == "2 near-duplicate pairs across splits"


def test_missing_column_is_a_clear_error(workspace: Workspace) -> None:
    with pytest.raises(MedtuneError, match="no column 'nope'"):
        check_workspace_split(workspace.root, "nope")


def test_groups_join_patients_sharing_a_near_duplicate() -> None:
    code = bytes(range(32))
    hashes = [code, None, flip_bits(code, 3), None, None, None]
    table = tiny(["a", "a", "b", "c", None, None], ["x"] * 6, hashes)
    groups = leak_groups(table)
    codes = groups.codes.tolist()
    assert codes[0] == codes[1] == codes[2]  # a's images, and b joined by the near-duplicate
    assert len({codes[0], codes[3], codes[4], codes[5]}) == 4  # c and each unknown apart
    assert groups.count == 4
    assert (groups.merged_patients, groups.without_patient, groups.without_hash) == (2, 2, 4)
    assert groups.near_pairs == [(0, 2, 3)]
