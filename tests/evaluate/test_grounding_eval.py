"""Grounding evaluation: CNR by hand, aggregation by hand, and a tiny trained grounding export on
the ingested workspace with the synthetic cohort's truth boxes."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medtune.errors import MedtuneError
from medtune.evaluate.grounding_eval import (
    GroundingItem,
    boxed_items,
    contrast_to_noise,
    evaluate_grounding,
    score_grounding,
)
from medtune.models.grounding import box_iou, heatmap_to_box

# --- contrast-to-noise ratio --------------------------------------------------------------------


def test_cnr_by_hand_on_a_map_the_size_of_the_image() -> None:
    heat = np.zeros((4, 4))
    heat[:2, :2] = [[1.0, 1.0], [1.0, 0.6]]
    heat[3, 3] = 0.2
    # Inside: 1, 1, 1, 0.6 (mean 0.9, variance 0.03); outside: eleven 0 and one 0.2.
    mean_out = 0.2 / 12
    var_out = 0.04 / 12 - mean_out**2
    expected = (0.9 - mean_out) / math.sqrt(0.03 + var_out)
    assert contrast_to_noise(heat, (0, 0, 2, 2), 4) == pytest.approx(expected)
    # The same box given as a list of boxes, and the union of two boxes.
    assert contrast_to_noise(heat, [(0, 0, 2, 2)], 4) == pytest.approx(expected)
    union = contrast_to_noise(heat, [(0, 0, 1, 2), (1, 0, 2, 2)], 4)
    assert union == pytest.approx(expected)


def test_cnr_is_large_over_a_bright_block_zero_when_flat_nan_without_an_outside() -> None:
    heat = np.zeros((4, 4))
    heat[1:3, 1:3] = 1.0  # patches of 8 px on a 32 px image: the block is px 8..24
    assert contrast_to_noise(heat, (8, 8, 24, 24), 32) > 2  # 2.9: upsampling blurs the edges
    assert contrast_to_noise(heat, (8, 8, 24, 24), 32) > contrast_to_noise(heat, (0, 0, 16, 16), 32)
    assert contrast_to_noise(np.full((4, 4), 0.7), (8, 8, 24, 24), 32) == 0.0
    assert math.isnan(contrast_to_noise(heat, (0, 0, 32, 32), 32))
    assert math.isnan(contrast_to_noise(heat, (40, 40, 50, 50), 32))  # wholly outside


# --- aggregation --------------------------------------------------------------------------------


def _item(finding: str, iou: float, cnr: float) -> GroundingItem:
    return GroundingItem("img", 0, finding, finding, iou, cnr, (0, 0, 1, 1), (0, 0, 1, 1))


def test_score_grounding_by_hand() -> None:
    items = [_item("nodule", 0.6, 1.0), _item("nodule", 0.2, math.nan), _item("mass", 0.5, 3.0)]
    scores = score_grounding(items)
    assert scores.miou == pytest.approx(1.3 / 3)
    assert scores.cnr == pytest.approx(2.0)  # the nan item (a whole-image box) is left out
    assert scores.hit_rate == pytest.approx(2 / 3)  # IoU 0.5 is a hit
    assert list(scores.per_finding) == ["mass", "nodule"]
    assert scores.per_finding["mass"] == {"miou": 0.5, "cnr": 3.0, "hit_rate": 1.0, "n": 1}
    nodule = {"miou": 0.4, "cnr": 1.0, "hit_rate": 0.5, "n": 2}
    assert scores.per_finding["nodule"] == pytest.approx(nodule)
    only_nan = score_grounding([_item("x", 0.1, math.nan)])
    assert math.isnan(only_nan.cnr) and only_nan.hit_rate == 0.0
    with pytest.raises(MedtuneError, match="no grounding items"):
        score_grounding([])


# --- a trained export ---------------------------------------------------------------------------

TINY_VIT = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
            "heads": 2}  # fmt: skip
TINY_BERT = {"name": "tiny-bert", "dim": 32, "depth": 1, "heads": 2, "max_length": 32}


@pytest.fixture(scope="module")
def ground_export(
    ingested_workspace: Path, synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory
):
    """The ingested workspace, labelled, split, with the truth boxes, and a grounding model
    trained 3 steps on it (validated on val + test at its last step)."""
    from medtune.config_train import FinetuneConfig
    from medtune.curate.labels import label_workspace
    from medtune.curate.splits import SplitSpec, make_split
    from medtune.dataset.boxes import import_boxes, synth_truth_boxes
    from medtune.train.finetune import run_finetune

    root = tmp_path_factory.mktemp("ground-eval") / "ws"
    shutil.copytree(ingested_workspace, root)
    label_workspace(root)
    make_split(root, SplitSpec())
    import_boxes(root, synth_truth_boxes(root, synth_cohort), source="synth-truth")
    config = FinetuneConfig.model_validate(
        {
            "workspace": root, "task": "ground", "mode": "full", "backbone": TINY_VIT,
            "data": {"batch_size": 4, "val": ["val", "test"]},
            "ground": {"text": TINY_BERT, "projection_dim": 16},
            "loop": {"max_steps": 3, "lr": 1e-3, "log_every": 1, "eval_every": 3,
                     "precision": "fp32"},
        }
    )  # fmt: skip
    return root, run_finetune(config, progress=False).export_dir


def test_evaluate_grounding_scores_each_image_phrase_of_the_split(ground_export) -> None:
    from medtune.dataset.boxes import read_boxes
    from medtune.dataset.catalog import read_catalog

    root, export = ground_export
    # The test split alone has one box: train and test have 10, of four findings.
    splits = ("train", "test")
    scores, samples = evaluate_grounding(export, root, splits=splits, batch_size=3, samples=2)
    catalog = read_catalog(root / "dataset" / "catalog.parquet", columns=["image_id", "split"])
    ids = {i for i, s in zip(*catalog.to_pydict().values(), strict=True) if s in splits}
    boxes = [b for b in read_boxes(root).to_pylist() if b["image_id"] in ids]
    assert len(scores.items) == len({(b["image_id"], b["phrase"]) for b in boxes}) > 3
    assert set(scores.per_finding) == {b["finding"] for b in boxes}
    assert len(scores.per_finding) > 1
    assert sum(f["n"] for f in scores.per_finding.values()) == len(scores.items)
    assert all(0.0 <= item.iou <= 1.0 for item in scores.items)
    assert scores.miou == pytest.approx(np.mean([item.iou for item in scores.items]))
    assert len(samples) == 2 and samples[0].image.shape == (32, 32)
    assert samples[0].image.min() >= 0.0 and samples[0].image.max() <= 1.0
    first = scores.items[0]
    # The sample's box is its heat map's at the export's threshold (0.5).
    assert samples[0].predicted == first.predicted == heatmap_to_box(samples[0].heat, 32, 0.5)
    assert samples[0].iou == first.iou == pytest.approx(box_iou(first.predicted, first.truth))


def test_truth_boxes_map_back_onto_the_stored_boxes(ground_export) -> None:
    """The stand-in of a perfect model: each true box in the model's input pixels, mapped back
    to stored pixels (64 px shards, 32 px model), is a box of the table with IoU 1."""
    from medtune.dataset.boxes import read_boxes
    from medtune.models.export import load_encoder

    root, export = ground_export
    stored: dict[tuple[str, str], list[list[float]]] = {}
    for b in read_boxes(root).to_pylist():
        stored.setdefault((b["image_id"], b["phrase"]), []).append(
            [b[k] for k in ("x0", "y0", "x1", "y1")]
        )
    split = boxed_items(root, load_encoder(export).contract)
    scores, _ = evaluate_grounding(export, root, samples=0)
    assert len(split.items) == len(scores.items)
    for item in scores.items:
        table = np.array(stored[(item.image_id, item.phrase)])
        assert box_iou(np.array(item.truth) * 2, table).max() == pytest.approx(1.0)
    for k in range(len(split.items)):
        entry = split.items[k]
        image_id = split.image_ids[entry["index"]]
        table = np.array(stored[(image_id, split.phrases[entry["phrase"]])])
        real = entry["boxes"].numpy()[: len(table)]
        assert np.allclose(np.sort(real * 2, axis=0), np.sort(table, axis=0))


def test_evaluate_grounding_agrees_with_the_training_run(ground_export) -> None:
    from medtune.models.export import read_export

    root, export = ground_export
    record = read_export(export)
    scores, _ = evaluate_grounding(export, root, splits=("val", "test"), samples=0)
    assert scores.miou == pytest.approx(record["metrics"]["val_miou"], abs=1e-6)
    assert scores.hit_rate == pytest.approx(record["metrics"]["val_hit_rate"], abs=1e-6)


def test_no_boxes_on_the_split_is_an_error(ground_export, tmp_path: Path) -> None:
    from medtune.dataset.boxes import BOXES_SCHEMA, import_boxes

    root, export = ground_export
    copy = tmp_path / "ws"
    shutil.copytree(root, copy)
    empty = BOXES_SCHEMA.remove(BOXES_SCHEMA.get_field_index("source")).empty_table()
    import_boxes(copy, empty, source="synth-truth")  # replaces the only source's rows
    with pytest.raises(MedtuneError, match="no boxes on the split test rows"):
        evaluate_grounding(export, copy)
