"""Boxes: original -> stored pixels exactly as ingest letterboxed the image; import by image id
or by the original SOP Instance UID through the pseudonym key; the synthetic cohort's truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medtune.dataset.boxes import (
    boxes_from_original,
    boxes_to_original,
    clip_boxes,
    import_boxes,
    read_box_table,
    read_boxes,
    synth_truth_boxes,
)
from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.io.folder import input_id
from medtune.io.pixels import preprocess


@pytest.fixture
def workspace(ingested_workspace: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(ingested_workspace, root)
    return root


def _geometry(rows: int, cols: int, size: int) -> tuple[dict, np.ndarray]:
    """A catalog-like geometry row (float32 scale, as the catalog keeps it) of a preprocess."""
    _, g = preprocess(np.zeros((rows, cols), np.float32), size)
    return {
        "rows": [rows],
        "cols": [cols],
        "scale": [np.float32(g.scale)],
        "pad_x": [g.pad_x],
        "pad_y": [g.pad_y],
    }, g


@pytest.mark.parametrize("rows, cols", [(256, 208), (255, 200), (97, 300), (1001, 777)])
def test_mapping_matches_the_letterboxed_pixels_exactly(rows: int, cols: int) -> None:
    # A float image keeps every sliver of overlap: INTER_AREA spreads a rectangle over exactly
    # the stored pixels its mapped box touches, and keeps its area.
    rng = np.random.default_rng(rows)
    for _ in range(20):
        x0, y0 = rng.integers(0, cols - 2), rng.integers(0, rows - 2)
        x1, y1 = rng.integers(x0 + 1, cols + 1), rng.integers(y0 + 1, rows + 1)
        original = np.zeros((rows, cols), np.float32)
        original[y0:y1, x0:x1] = 1.0
        stored, _ = preprocess(original, 64)
        geometry, _ = _geometry(rows, cols, 64)
        box = boxes_from_original(geometry, np.array([[x0, y0, x1, y1]]))[0]
        ys, xs = np.nonzero(stored > 1e-6)
        eps = 1e-4
        assert (xs.min(), ys.min()) == (np.floor(box[0] + eps), np.floor(box[1] + eps))
        assert (xs.max() + 1, ys.max() + 1) == (np.ceil(box[2] - eps), np.ceil(box[3] - eps))
        area = (box[2] - box[0]) * (box[3] - box[1])
        assert stored.sum() == pytest.approx(area, rel=1e-3)
        back = boxes_to_original(geometry, box[None])[0]
        np.testing.assert_allclose(back, [x0, y0, x1, y1], atol=1e-3)


def test_short_side_uses_its_whole_pixel_scale() -> None:
    # 255 x 200 at 64 px: the long side scales by 64/255, the short side to round(50.2) = 50
    # pixels, so the full width ends at 7 + 50 = 57 (not 7 + 200 * 64/255 = 57.2).
    geometry, g = _geometry(255, 200, 64)
    box = boxes_from_original(geometry, np.array([[0, 0, 200, 255]]))[0]
    assert (g.pad_x, g.pad_y) == (7, 0)
    np.testing.assert_allclose(box, [7, 0, 57, 64], atol=1e-5)


def test_full_image_box_is_the_stored_content_of_a_real_image(ingested_workspace: Path) -> None:
    catalog = read_catalog(ingested_workspace / "dataset" / "catalog.parquet").to_pylist()
    row = next(r for r in catalog if r["rows"] != r["cols"])
    geometry = {k: [row[k]] for k in ("rows", "cols", "scale", "pad_x", "pad_y")}
    x0, y0, x1, y1 = boxes_from_original(geometry, np.array([[0, 0, row["cols"], row["rows"]]]))[0]
    shard = np.load(ingested_workspace / "dataset" / "images" / f"{row['shard_file']}.npy")
    image = shard[row["index"]]
    assert (x0, y0) == (row["pad_x"], row["pad_y"]) and x1 - x0 < image.shape[1]
    outside = np.ones(image.shape, bool)
    outside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = False
    assert outside.any() and not image[outside].any()  # the letterbox's black bars
    assert image[int(y0) : int(y1), int(x0)].any() and image[int(y0) : int(y1), int(x1) - 1].any()


def test_clip_boxes_counts_what_changed() -> None:
    boxes = np.array([[10, 10, 20, 20], [-5, 10, 20, 300], [300, 0, 400, 10], [5, 5, 5, 9]])
    clipped, changed, empty = clip_boxes(boxes, 208, 256)
    np.testing.assert_array_equal(clipped[1], [0, 10, 20, 256])
    assert changed.tolist() == [False, True, True, False]
    assert empty.tolist() == [False, False, True, True]


def _truth(synth_cohort: Path) -> list[dict]:
    table = pq.read_table(
        synth_cohort / "truth" / "images.parquet",
        columns=["file", "sop_uid", "rows", "cols", "findings"],
    )
    return table.to_pylist()


def test_import_by_original_sop_uid_goes_through_the_key(
    workspace: Path, ingested_workspace: Path, synth_cohort: Path
) -> None:
    catalog = read_catalog(workspace / "dataset" / "catalog.parquet")
    image_of_input = dict(
        zip(
            catalog.column("input_id").to_pylist(),
            catalog.column("image_id").to_pylist(),
            strict=True,
        )
    )
    truth = [
        t
        for t in _truth(synth_cohort)
        if input_id(t["file"].removeprefix("dicom/")) in image_of_input
    ][:5]
    assert all(t["sop_uid"] not in catalog.column("sop_uid").to_pylist() for t in truth)
    rows = [
        {
            "sop_uid": t["sop_uid"],
            "phrase": "nodule",
            "x0": 10.0,
            "y0": 20.0,
            "x1": 50.0,
            "y1": 60.0,
        }
        for t in truth
    ]
    rows += [
        {"sop_uid": "1.2.3.4.5", "phrase": "nodule", "x0": 1.0, "y0": 1.0, "x1": 2.0, "y1": 2.0}
    ] * 2
    rows.append({**rows[0], "x1": float(truth[0]["cols"] + 40)})  # partly outside: clipped
    rows.append({**rows[0], "x0": -30.0, "x1": -10.0})  # wholly outside: dropped
    rows.append({**rows[0], "x1": 5.0})  # x1 < x0: invalid
    key = ingested_workspace.parent / "key"
    result = import_boxes(workspace, pa.Table.from_pylist(rows), key_path=key, source="pacs")
    assert (result.rows, result.written, result.unmatched) == (10, 6, 2)
    assert (result.clipped, result.outside, result.invalid) == (1, 1, 1)
    boxes = read_boxes(workspace)
    expected = [image_of_input[input_id(t["file"].removeprefix("dicom/"))] for t in truth]
    assert sorted(boxes.column("image_id").to_pylist()) == sorted([*expected, expected[0]])
    assert max(boxes.column("x1").to_pylist()) <= 64.0
    assert any("match no image" in line for line in result.lines())
    # Re-importing the source replaces its rows; another source's rows stay.
    import_boxes(workspace, pa.Table.from_pylist(rows[:2]), key_path=key, source="pacs")
    import_boxes(
        workspace,
        pa.Table.from_pylist(
            [
                {
                    "image_id": expected[0],
                    "finding": "pleural_effusion",
                    "x0": 0,
                    "y0": 0,
                    "x1": 9,
                    "y1": 9,
                }
            ]
        ),
        source="other",
    )
    boxes = read_boxes(workspace)
    assert boxes.column("source").to_pylist().count("pacs") == 2
    assert boxes.filter(pa.compute.equal(boxes["source"], "other"))["phrase"].to_pylist() == [
        "pleural effusion"
    ]


def test_import_by_sop_uid_needs_the_key(workspace: Path, tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [{"sop_uid": "1.2", "phrase": "x", "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0}]
    )
    with pytest.raises(MedtuneError, match="pseudonym key"):
        import_boxes(workspace, table, key_path=tmp_path / "missing-key")


def test_synth_truth_boxes_land_on_the_findings(workspace: Path, synth_cohort: Path) -> None:
    catalog = read_catalog(workspace / "dataset" / "catalog.parquet")
    ingested = set(catalog.column("input_id").to_pylist())
    truth = [
        t for t in _truth(synth_cohort) if input_id(t["file"].removeprefix("dicom/")) in ingested
    ]
    findings = [f for t in truth for f in t["findings"]]
    table = synth_truth_boxes(workspace, synth_cohort)
    assert table.num_rows == len(findings) > 0
    result = import_boxes(workspace, table, source="synth-truth")
    assert result.written == len(findings) and result.clipped == result.outside == 0
    # Each stored box frames its finding's mask, letterboxed as ingest letterboxed the image.
    geometry = {r["image_id"]: r for r in catalog.to_pylist()}
    masks = {f["mask"]: f["finding"] for f in findings}
    boxes = read_boxes(workspace).to_pylist()
    checked = 0
    for mask_path, finding in masks.items():
        mask = cv2.imread(str(synth_cohort / mask_path), cv2.IMREAD_UNCHANGED).astype(np.float32)
        stored, _ = preprocess(mask, 64)
        ys, xs = np.nonzero(stored > 1e-6)
        found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        framed = [
            b
            for b in boxes
            if b["finding"] == finding
            and geometry[b["image_id"]]["rows"] == mask.shape[0]
            and found == _pixels_of(b)
        ]
        checked += bool(framed)
    assert checked == len(masks)
    assert all(" in the " in b["phrase"] for b in boxes if b["finding"] == "consolidation")


def _pixels_of(box: dict) -> tuple[int, ...]:
    eps = 1e-4
    return (
        int(np.floor(box["x0"] + eps)),
        int(np.floor(box["y0"] + eps)),
        int(np.ceil(box["x1"] - eps)),
        int(np.ceil(box["y1"] - eps)),
    )


def test_read_boxes_says_how_to_make_them(workspace: Path) -> None:
    with pytest.raises(MedtuneError, match="medtune boxes import"):
        read_boxes(workspace)


def test_read_box_table_keeps_uids_as_text(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text(
        "sop_uid,frame,phrase,x0,y0,x1,y1\n1.2,0,nodule,1,2,3,4\n1.2.3,,effusion,0,0,5,5\n"
    )
    table = read_box_table(path)
    assert table.column("sop_uid").to_pylist() == ["1.2", "1.2.3"]
    assert table.column("frame").to_pylist() == [0, None]
    with pytest.raises(MedtuneError, match=r"use \.csv"):
        read_box_table(tmp_path / "boxes.xlsx")
