"""Annotations: imports merge by image and column, unknown images are refused whole, and the
synthetic cohort's marker and mirroring reach the right catalog images."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medtune.dataset.annotations import (
    annotation_sources,
    annotations_path,
    import_annotations,
    read_annotations,
    synth_truth_annotations,
)
from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.io.folder import input_id


@pytest.fixture
def workspace(ingested_workspace: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(ingested_workspace, root)
    return root


def image_ids(workspace: Path) -> list[str]:
    return read_catalog(workspace / "dataset" / "catalog.parquet").column("image_id").to_pylist()


def by_id(workspace: Path) -> dict[str, dict]:
    table = read_annotations(workspace)
    assert table is not None
    return {row["image_id"]: row for row in table.to_pylist()}


def test_imports_merge_by_image_and_column(workspace: Path) -> None:
    assert read_annotations(workspace) is None
    a, b, c = image_ids(workspace)[:3]
    first = pa.table({"image_id": [a, b], "marker": ["L", "R"], "mirrored": [False, True]})
    assert import_annotations(workspace, first, source="reader-1") == 2
    second = pa.table({"image_id": [b, c], "marker": ["none", None], "reader": ["x", "y"]})
    assert import_annotations(workspace, second, source="reader-2") == 2

    rows = by_id(workspace)
    assert rows[a] == {"image_id": a, "marker": "L", "mirrored": False, "reader": None}
    assert rows[b] == {"image_id": b, "marker": "none", "mirrored": True, "reader": "x"}
    assert rows[c] == {"image_id": c, "marker": None, "mirrored": None, "reader": "y"}
    assert annotation_sources(workspace) == ["reader-1", "reader-2"]
    # Re-importing a source moves it last and does not list it twice.
    import_annotations(workspace, first.select(["image_id", "marker"]), source="reader-1")
    assert annotation_sources(workspace) == ["reader-2", "reader-1"]
    assert by_id(workspace)[b]["marker"] == "R"
    assert not list(annotations_path(workspace).parent.glob(".*.tmp"))


def test_bad_tables_are_refused_and_leave_the_file_alone(workspace: Path) -> None:
    ids = image_ids(workspace)
    import_annotations(workspace, pa.table({"image_id": ids[:1], "marker": ["L"]}), source="a")
    before = annotations_path(workspace).read_bytes()
    unknown = pa.table({"image_id": [ids[1], "nope-1", "nope-2"], "marker": ["L", "R", "L"]})
    with pytest.raises(MedtuneError, match="2 image_id values are not in the catalog"):
        import_annotations(workspace, unknown, source="b")
    with pytest.raises(MedtuneError, match="repeat"):
        import_annotations(workspace, pa.table({"image_id": [ids[1], ids[1]]}), source="b")
    with pytest.raises(MedtuneError, match="no image_id column"):
        import_annotations(workspace, pa.table({"marker": ["L"]}), source="b")
    clash = pa.table({"image_id": ids[:1], "marker": pa.array([[1]], pa.list_(pa.int64()))})
    with pytest.raises(MedtuneError, match="column 'marker'"):
        import_annotations(workspace, clash, source="b")
    assert annotations_path(workspace).read_bytes() == before


def test_synth_truth_reaches_the_catalog_images(workspace: Path, synth_cohort: Path) -> None:
    table = synth_truth_annotations(workspace, synth_cohort)
    assert table.column_names == ["image_id", "marker", "mirrored"]
    assert sorted(table.column("image_id").to_pylist()) == sorted(image_ids(workspace))
    truth = pq.read_table(synth_cohort / "truth" / "images.parquet").to_pylist()
    assert Counter(table.column("marker").to_pylist()) == Counter(
        r["marker"] or "none" for r in truth
    )
    assert sum(table.column("mirrored").to_pylist()) == sum(r["mirrored"] for r in truth) > 0
    # Image by image: the truth row of the catalog row's source file (same size, same sex).
    of_input = {input_id(r["file"].removeprefix("dicom/")): r for r in truth}
    catalog = read_catalog(workspace / "dataset" / "catalog.parquet").to_pylist()
    expected = {}
    for row in catalog:
        source = of_input[row["input_id"]]
        assert [source[k] for k in ("rows", "cols", "sex")] == [
            row[k] for k in ("rows", "cols", "sex")
        ]
        expected[row["image_id"]] = (source["marker"] or "none", source["mirrored"])
    assert import_annotations(workspace, table, source="synth-truth") == table.num_rows
    assert {k: (v["marker"], v["mirrored"]) for k, v in by_id(workspace).items()} == expected
