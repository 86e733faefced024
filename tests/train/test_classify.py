"""The classification task: its loss and metrics, and a probe that learns a visible signal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from medtune.config_train import FinetuneConfig
from medtune.dataset.catalog import CATALOG_SCHEMA, write_catalog
from medtune.dataset.shards import ShardWriter
from medtune.train.classify import classification_metrics, load_classifier, masked_bce, predict
from medtune.train.finetune import run_finetune
from medtune.workspace import Workspace

TINY_VIT = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
            "heads": 2}  # fmt: skip


def test_masked_bce_averages_over_kept_entries_only() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    kept = mask.bool()
    expected = F.binary_cross_entropy_with_logits(logits[kept], labels[kept])
    torch.testing.assert_close(masked_bce(logits, labels, mask), expected)
    none = masked_bce(logits, labels, torch.zeros_like(mask))
    assert none.item() == 0.0
    none.backward()  # a batch of ignored labels still backpropagates (zero gradients)
    assert logits.grad is not None and not logits.grad.any()


def test_metrics_score_labels_with_both_classes() -> None:
    logits = torch.tensor([[3.0, 0.1, 1.0], [-1.0, 0.2, 1.0], [2.0, 0.3, 1.0], [-2.0, 0.4, 1.0]])
    labels = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.ones_like(labels)
    mask[3, 1] = 0.0  # masked: the second label's last row does not count
    metrics = classification_metrics(logits, labels, mask, ["a", "b", "c"])
    assert metrics["val_auroc_a"] == 1.0  # perfectly separated
    assert metrics["val_auroc_b"] == 0.5  # rows 0-2: 0.1 and 0.3 positive, 0.2 negative
    assert "val_auroc_c" not in metrics  # one class only: skipped, not NaN
    assert metrics["val_auroc"] == pytest.approx((1.0 + metrics["val_auroc_b"]) / 2)
    assert metrics["val_auroc_labels"] == 2.0
    assert metrics["val_loss"] == pytest.approx(float(masked_bce(logits, labels, mask)))
    nothing = classification_metrics(logits, torch.ones_like(labels), mask, ["a", "b", "c"])
    assert nothing["val_auroc"] == 0.5 and nothing["val_auroc_labels"] == 0.0
    assert all(math.isfinite(v) for v in nothing.values())


def signal_workspace(root: Path, n: int = 128, size: int = 32) -> Path:
    """A workspace whose label ``bright`` is visible: a bright square somewhere on noise.
    Every 4th image validates; a third of the images have no label (null)."""
    rng = np.random.default_rng(0)
    images = rng.normal(90, 25, (n, size, size)).clip(0, 255).astype(np.uint8)
    bright = rng.random(n) < 0.5
    for image, on in zip(images, bright, strict=True):
        if on:
            y, x = rng.integers(0, size - 10, 2)
            image[y : y + 10, x : x + 10] = 230
    ws = Workspace(root).create()
    writer = ShardWriter(ws.shard_path(0), size, "uint8")
    indices = [writer.add(image) for image in images]
    writer.finish()
    values = {"image_id": [f"I{i}" for i in range(n)], "study_id": [f"S{i}" for i in range(n)],
              "shard": [0] * n, "shard_file": ["shard-00000"] * n, "index": indices}  # fmt: skip
    table = pa.table({f.name: pa.array(values.get(f.name, [None] * n), f.type)
                      for f in CATALOG_SCHEMA})  # fmt: skip
    label = [None if i % 3 == 2 and i % 4 else int(b) for i, b in enumerate(bright)]
    columns = {"label_bright": pa.array(label, pa.int8()),
               "split": ["val" if i % 4 == 0 else "train" for i in range(n)]}  # fmt: skip
    write_catalog(ws.catalog_path, table, columns)
    return root


def test_probe_learns_a_visible_signal(tmp_path: Path) -> None:
    """A frozen random tiny ViT and an MLP head: the bright square is found from the features."""
    ws = signal_workspace(tmp_path / "ws")
    config = FinetuneConfig(
        workspace=ws, mode="probe", backbone=TINY_VIT, data={"batch_size": 32},
        classify={"labels": ["bright"], "unmentioned": "ignore"},
        loop={"max_steps": 40, "lr": 3e-3, "eval_every": 20},
    )  # fmt: skip
    result = run_finetune(config, progress=False)
    assert result.metrics["val_auroc"] > 0.8, result.metrics
    assert result.metrics["val_auroc_labels"] == 1.0
    assert any("val_auroc" in line for line in result.lines)
    # The export scores the validation images as the run's evaluation did.
    encoder, head, labels = load_classifier(result.run_dir)
    assert labels == ["bright"]
    from medtune.train.data import ImageDataset

    val = ImageDataset(ws, contract=encoder.contract, split_values="val",
                       label_columns=["bright"])  # fmt: skip
    items = [val[i] for i in range(len(val))]
    probabilities = predict((encoder, head, labels), torch.stack([i["image"] for i in items]))
    truth = torch.stack([i["labels"] for i in items])[:, 0]
    from sklearn.metrics import roc_auc_score

    auroc = roc_auc_score(truth.numpy(), probabilities[:, 0].numpy())
    assert auroc == pytest.approx(result.metrics["val_auroc"], abs=1e-6)


def test_without_validation_the_last_weights_are_exported(tmp_path: Path) -> None:
    ws = signal_workspace(tmp_path / "ws", n=32)
    config = FinetuneConfig(
        workspace=ws, mode="full", backbone=TINY_VIT, data={"batch_size": 16, "val": []},
        classify={"labels": ["bright"], "head": "linear"}, loop={"max_steps": 2},
    )  # fmt: skip
    result = run_finetune(config, progress=False)
    assert result.steps == 2 and result.metrics == {}
    assert any("no validation split" in line for line in result.lines)
    _, head, labels = load_classifier(result.export_dir)
    assert labels == ["bright"] and head.config["kind"] == "linear"
