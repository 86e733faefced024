"""The grounding task end to end: the ingested test workspace with the synthetic cohort's truth
boxes, a tiny ViT and a tiny BERT, a few steps, and an export that gives the same heat maps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medtune.config_train import FinetuneConfig, LoraSection
from medtune.dataset.boxes import import_boxes, read_boxes, synth_truth_boxes
from medtune.errors import MedtuneError
from medtune.models.grounding import box_iou, ground, load_grounding
from medtune.models.weights import load_weights
from medtune.train.checkpoint import checkpoint_dir
from medtune.train.finetune import run_finetune
from medtune.train.grounding import (
    GROUND_AUGMENT,
    BoxedImages,
    GroundingModel,
    encode_phrases,
)
from medtune.train.modes import prepare_backbone
from medtune.train.recipe import image_datasets

TINY_VIT = {
    "name": "medtune-vit",
    "image_size": 32,
    "patch_size": 8,
    "dim": 32,
    "depth": 2,
    "heads": 2,
}
TINY_BERT = {"name": "tiny-bert", "dim": 32, "depth": 1, "heads": 2, "max_length": 32}


@pytest.fixture(scope="module")
def boxed_workspace(
    ingested_workspace: Path, synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the ingested workspace, labelled, split, with the truth boxes imported (read
    only: each test copies it)."""
    from medtune.curate.labels import label_workspace
    from medtune.curate.splits import SplitSpec, make_split

    root = tmp_path_factory.mktemp("boxed") / "ws"
    shutil.copytree(ingested_workspace, root)
    label_workspace(root)
    make_split(root, SplitSpec())
    import_boxes(root, synth_truth_boxes(root, synth_cohort), source="synth-truth")
    return root


@pytest.fixture
def workspace(boxed_workspace: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(boxed_workspace, root)
    return root


def _config(workspace: Path, mode: str = "full", **overrides) -> FinetuneConfig:
    values = {
        "workspace": workspace,
        "task": "ground",
        "mode": mode,
        "name": f"ground-{mode}",
        "backbone": TINY_VIT,
        "data": {"batch_size": 4, "val": ["val", "test"]},  # the val split alone has 2 boxes
        "ground": {"text": TINY_BERT, "projection_dim": 16},
        "lora": {"rank": 2},
        "loop": {"max_steps": 6, "lr": 1e-3, "log_every": 1, "eval_every": 3, "precision": "fp32"},
    }
    return FinetuneConfig.model_validate(values | overrides)


def _val_items(config: FinetuneConfig, contract) -> tuple[BoxedImages, list[str]]:
    boxes = read_boxes(config.workspace)
    phrases = sorted(set(boxes.column("phrase").to_pylist()))
    _, val = image_datasets(config, contract, train_augment=GROUND_AUGMENT, label_columns=[])
    return BoxedImages(val, boxes, phrases), phrases


def _batch(items: BoxedImages) -> dict:
    rows = [items[i] for i in range(len(items))]
    return {k: torch.stack([torch.as_tensor(r[k]) for r in rows]) for k in rows[0]}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_train_grounding_end_to_end_and_the_export_round_trip(workspace: Path, mode: str) -> None:
    config = _config(workspace, mode)
    result = run_finetune(config, progress=False)
    assert result.steps == 6 and result.export_dir == result.run_dir / "export"
    assert {"val_loss", "val_miou", "val_hit_rate"} <= set(result.metrics)
    assert 0.0 <= result.metrics["val_miou"] <= 1.0
    assert any("text tower frozen" in line for line in result.lines)

    loaded = load_grounding(result.run_dir)  # a run directory resolves to its export
    assert loaded.record["task"] == "ground" and loaded.record["mode"] == mode
    assert loaded.record["text"] == TINY_BERT and loaded.threshold == 0.5
    assert (result.export_dir / "adapter").is_dir() == (mode == "lora")
    items, phrases = _val_items(config, loaded.contract)
    assert len(items) >= 2
    batch = _batch(items)
    heat, boxes = ground(loaded, batch["image"], [phrases[i] for i in batch["phrase"]])
    assert heat.shape == (len(items), 4, 4) and len(boxes) == len(items)
    # The export scores the validation boxes as the run did at its best evaluation.
    ious = [
        box_iou(box, truth).max() for box, truth in zip(boxes, batch["boxes"].numpy(), strict=True)
    ]
    best = loaded.record["best"]
    assert loaded.record["step"] == best["step"]
    assert float(np.mean(ious)) == pytest.approx(best["value"], abs=1e-6)

    # ... and gives the heat maps of the trained model, rebuilt from that checkpoint (for
    # LoRA: adapters injected again, then loaded; the export has them merged).
    from medtune.models.registry import backbone_from_config
    from medtune.models.text import text_encoder_from_config

    lora = LoraSection(rank=2)
    prepared = prepare_backbone(backbone_from_config(TINY_VIT), mode, lora)
    text = text_encoder_from_config(TINY_BERT)
    head = type(loaded.head)(32, text.dim, 16)
    model = GroundingModel(prepared, head, encode_phrases(text, phrases))
    load_weights(model, checkpoint_dir(result.run_dir, best["step"]) / "model.safetensors")
    model.eval()
    with torch.no_grad():
        features = model.features(batch["image"])
        trained = torch.sigmoid(
            head(features.tokens, features.grid, model.queries[batch["phrase"]])
        )
    torch.testing.assert_close(heat, trained, atol=1e-5, rtol=1e-4)


def test_no_boxes_is_an_error_that_says_what_to_do(
    ingested_workspace: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(ingested_workspace, root)
    with pytest.raises(MedtuneError, match="medtune boxes import"):
        run_finetune(_config(root, data={"val": []}, name="nothing"), progress=False)


def test_geometric_augmentation_is_refused(workspace: Path) -> None:
    config = _config(workspace, data={"augment": {"crop": {}, "gamma": {}}, "val": []})
    with pytest.raises(MedtuneError, match="crop would move the boxes"):
        run_finetune(config, progress=False)


def test_items_carry_their_boxes_in_the_contract_pixels(workspace: Path) -> None:
    config = _config(workspace)
    from medtune.models.registry import backbone_from_config

    contract = backbone_from_config(TINY_VIT).contract
    items, phrases = _val_items(config, contract)
    stored = read_boxes(workspace).to_pylist()
    item = items[0]
    assert item["image"].shape == (1, 32, 32)
    truth = [b for b in stored if b["phrase"] == phrases[item["phrase"]]]
    # Stored at 64 px, seen at 32 px: coordinates halve.
    halves = [[b["x0"] / 2, b["y0"] / 2, b["x1"] / 2, b["y1"] / 2] for b in truth]
    assert any(np.allclose(item["boxes"][0].numpy(), h) for h in halves)
