"""The grounding task: a text query to a heat map and a box, trained on ``dataset/boxes.parquet``.

Each training item is one (image, phrase) with that phrase's boxes on the image. The backbone's
patch tokens and the phrase's embedding meet in :class:`~medtune.models.grounding.GroundingHead`;
the target is each patch's share inside the boxes. The text tower is frozen (its query
embeddings are computed once per distinct phrase, before training): the phrases of a box table
are few and short, and a pretrained sentence encoder already separates them, while the boxes
(hundreds, at best thousands) could not retrain it without forgetting. The export records the
tower's config, not its weights (see :func:`~medtune.models.grounding.load_grounding`)::

    loaded = load_grounding("ws/runs/finetune-ground-lora/export")
    heatmaps, boxes = ground(loaded, images, ["nodule in the right upper zone", ...])

Augmentation is intensity only (brightness, contrast, gamma, noise): a crop, rotation or flip
would move the boxes, and the data path moves pixels only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medtune.config_train import FinetuneConfig
from medtune.errors import MedtuneError
from medtune.models.contract import Features
from medtune.models.grounding import (
    GroundingHead,
    box_fractions,
    box_iou,
    ground,
    heatmap_to_box,
    load_grounding,
)
from medtune.train.modes import Prepared, finish_backbone, save_adapter
from medtune.train.recipe import Backbone, evaluation_at, image_datasets, keep_best_weights
from medtune.train.tasks import TrainResult, register_task

__all__ = [
    "BoxedImages",
    "GroundingModel",
    "ground",
    "grounding_loss",
    "load_grounding",
    "train_grounding",
]

# Exposure changes only: geometry would move the boxes (see the module docstring).
GROUND_AUGMENT: dict[str, dict[str, Any]] = {
    "brightness": {"amount": 0.1},
    "contrast": {"amount": 0.1},
    "gamma": {"amount": 0.1},
    "noise": {"std": 0.01},
}
GEOMETRIC_STEPS = ("crop", "rotate", "hflip")
MONITOR = ("val_miou", "max")
CONTRASTIVE_WEIGHT = 0.5  # the recipe's ground.contrastive_weight default
HIT_IOU = 0.5  # a predicted box "hits" its truth at this IoU (the usual detection bar)


class GroundingModel(nn.Module):
    """Backbone, head and the cached query embeddings in one module (the loop's checkpoints
    hold backbone and head; the embeddings are rebuilt from the frozen text tower)."""

    def __init__(self, prepared: Prepared, head: GroundingHead, queries: torch.Tensor) -> None:
        super().__init__()
        self.encoder = prepared.encoder
        self.head = head
        self.prepared = prepared  # plain attribute: its encoder is registered above
        self.register_buffer("queries", queries.float(), persistent=False)  # (phrases, text_dim)

    def features(self, images: torch.Tensor) -> Features:
        return self.prepared.features(images)


class BoxedImages(Dataset[dict[str, Any]]):
    """Items of an :class:`~medtune.train.data.ImageDataset` that have boxes, one per (image,
    phrase): {"image", "phrase" (index into ``phrases``), "boxes" (K, 4) px of the contract's
    square, zero-area padding past the item's own, "index" (catalog row)}."""

    def __init__(self, images: Any, boxes: pa.Table, phrases: Sequence[str]) -> None:
        from medtune.dataset.catalog import read_catalog

        self.images = images
        ids = read_catalog(images.workspace.catalog_path, columns=["image_id"]).column(0)
        position_of = {
            image_id: i for i, image_id in enumerate(ids.take(pa.array(images.rows)).to_pylist())
        }
        phrase_index = {p: k for k, p in enumerate(phrases)}
        groups: dict[tuple[int, int], list[list[float]]] = {}
        for row in boxes.to_pylist():
            position = position_of.get(row["image_id"])
            if position is not None:
                key = (position, phrase_index[row["phrase"]])
                groups.setdefault(key, []).append([row[k] for k in ("x0", "y0", "x1", "y1")])
        keys = sorted(groups)
        self.positions = np.array([k[0] for k in keys], np.int64)
        self.phrase_ids = np.array([k[1] for k in keys], np.int64)
        width = max((len(g) for g in groups.values()), default=1)
        self.boxes = np.zeros((len(keys), width, 4), np.float32)
        for i, key in enumerate(keys):
            self.boxes[i, : len(groups[key])] = groups[key]
        if len(keys):  # stored px -> px of the square the backbone sees
            self.boxes *= images.contract.size / images.pixels(int(self.positions[0])).shape[-1]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        position = int(self.positions[index])
        item = self.images[position if seed is None else (position, seed)]
        return {
            "image": item["image"],
            "phrase": int(self.phrase_ids[index]),
            "boxes": torch.from_numpy(self.boxes[index]),
            "index": item["index"],
        }


def grounding_loss(
    head: GroundingHead,
    features: Features,
    queries: torch.Tensor,
    phrase_ids: torch.Tensor,
    target: torch.Tensor,
    contrastive_weight: float = CONTRASTIVE_WEIGHT,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({"loss", "bce"[, "contrastive"]}, heat-map logits (B, h, w)).

    Binary cross-entropy per patch against ``target``, each patch's share inside the boxes.
    Unweighted, on purpose: its optimum is a calibrated map (heat = share), so a half-covered
    patch gets half heat and :func:`heatmap_to_box` puts the box edge inside it. Weighting the
    rare positives (pos_weight = negatives / positives) inflates partly covered patches and
    boxes grow by up to a patch a side: on bright squares (2-20 % of the image, frozen tiny ViT,
    80 steps) mIoU fell from 0.88 to 0.64, and from 0.57 to 0.37 for 3-5 px squares.

    BCE alone teaches where findings are, but with few distinct phrases the head could mark
    every finding whatever the text; the contrastive term asks that, inside an image's box, its
    own phrase score higher than the batch's other phrases (a local image-text contrast, as in
    GLoRIA and BioViL), which is what grounding a phrase means. It needs two distinct phrases
    in the batch."""
    logits = head(features.tokens, features.grid, queries[phrase_ids]).float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    out = {"loss": bce, "bce": bce}
    distinct, own = torch.unique(phrase_ids, return_inverse=True)
    if contrastive_weight > 0 and len(distinct) > 1:
        pair = head.pair_logits(features.tokens, features.grid, queries[distinct]).float()
        inside = target / target.sum(dim=(1, 2), keepdim=True).clamp(min=1e-6)  # (B, h, w)
        scores = (pair * inside[:, None]).sum(dim=(-2, -1))  # (B, phrases): mean logit in box
        out["contrastive"] = F.cross_entropy(scores, own)
        out["loss"] = bce + contrastive_weight * out["contrastive"]
    return out, logits


def _step_fn(contrastive_weight: float, image_size: int) -> Callable[[nn.Module, dict], dict]:
    def step(model: GroundingModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        features = model.features(batch["image"])
        target = box_fractions(batch["boxes"], features.grid, image_size)
        out, _ = grounding_loss(
            model.head, features, model.queries, batch["phrase"], target, contrastive_weight
        )
        return out

    return step


def _evaluator(
    loader: Any, contrastive_weight: float, image_size: int, threshold: float
) -> Callable[[nn.Module], dict[str, float]]:
    def evaluate(model: GroundingModel) -> dict[str, float]:
        device = model.queries.device
        losses, ious, weights = [], [], []
        for batch in loader:
            images, boxes = batch["image"].to(device), batch["boxes"].to(device)
            features = model.features(images)
            target = box_fractions(boxes, features.grid, image_size)
            out, logits = grounding_loss(
                model.head,
                features,
                model.queries,
                batch["phrase"].to(device),
                target,
                contrastive_weight,
            )
            losses.append(float(out["loss"]))
            weights.append(len(images))
            for heat, truth in zip(torch.sigmoid(logits).cpu(), boxes.cpu().numpy(), strict=True):
                predicted = heatmap_to_box(heat, image_size, threshold)
                ious.append(float(box_iou(predicted, truth).max()))  # best of the phrase's boxes
        ious_ = np.array(ious)
        return {
            "val_loss": float(np.average(losses, weights=weights)),
            "val_miou": float(ious_.mean()),
            "val_hit_rate": float((ious_ >= HIT_IOU).mean()),
        }

    return evaluate


@register_task("ground")
def train_grounding(
    config: FinetuneConfig,
    backbone: Backbone,
    prepared: Prepared,
    run: Path,
    *,
    resume: bool,
    progress: Any = None,
) -> TrainResult:
    """Train a grounding head (and the backbone, as the mode says) on the workspace's boxes;
    export it to ``run/export`` (see :func:`load_grounding`). Monitors ``val_miou``."""
    from medtune.models.text import text_encoder_from_config
    from medtune.train.loop import fit

    section = config.ground
    contract = prepared.encoder.contract
    train, val, phrases = _box_datasets(config, contract)
    text = text_encoder_from_config(section.text.as_mapping())
    queries = encode_phrases(text, phrases)
    with torch.random.fork_rng(devices=[]):  # the head's init: a function of the seed alone
        torch.manual_seed(config.loop.seed)
        head = GroundingHead(prepared.encoder.dim, text.dim, section.projection_dim)
    model = GroundingModel(prepared, head, queries).train()
    weight = section.contrastive_weight
    evaluate = (
        None
        if val is None
        else _evaluator(_loader(val, config, train=False), weight, contract.size, section.threshold)
    )
    result = fit(
        model,
        _step_fn(weight, contract.size),
        _loader(train, config, train=True),
        config.loop.to_loop_config(*MONITOR),
        run,
        evaluate=evaluate,
        resume=resume,
        trainable=[*prepared.trainable, *head.parameters()],
        progress=progress,
    )
    exported_step = keep_best_weights(model, run, result)
    exported_metrics = evaluation_at(run, exported_step) or dict(result.last_eval)
    info = {
        "head": head.config(),
        "text": section.text.as_mapping(),
        "projection_dim": section.projection_dim,
        "threshold": section.threshold,
        "mode": prepared.mode,
        "metrics": exported_metrics,
        "step": exported_step,
        "steps": result.steps,
        "best": {"step": result.best_step, "value": result.best_value},
        "recipe": config.model_dump(mode="json"),
        "init": str(backbone.init) if backbone.init is not None else None,
    }
    export = _export(run / "export", backbone, prepared, head, info)
    lines = _summary(prepared, head, train, val, len(phrases), result)
    return TrainResult(run, export, result.steps, exported_metrics, lines)


def _box_datasets(
    config: FinetuneConfig, contract: Any
) -> tuple[BoxedImages, BoxedImages | None, list[str]]:
    """(train, val or None when its rows have no boxes, every phrase of the box table)."""
    from medtune.dataset.boxes import read_boxes

    _check_augment(config)
    boxes = read_boxes(config.workspace, config.ground.boxes)
    if boxes.num_rows == 0:
        raise MedtuneError(f"{config.workspace}: no boxes; run `medtune boxes import` first")
    phrases = sorted(set(boxes.column("phrase").to_pylist()))
    train_images, val_images = image_datasets(
        config, contract, train_augment=GROUND_AUGMENT, label_columns=[]
    )
    train = BoxedImages(train_images, boxes, phrases)
    if len(train) == 0:
        raise MedtuneError(
            f"{config.workspace}: no boxes on the training rows ({', '.join(config.data.train)})"
        )
    val = BoxedImages(val_images, boxes, phrases) if val_images is not None else None
    return train, (val if val is not None and len(val) else None), phrases


@torch.no_grad()
def encode_phrases(text: nn.Module, phrases: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(P, D) pooled embeddings of ``phrases`` by the frozen text tower, on the CPU."""
    text.eval()
    parts = [
        text.encode(list(phrases[i : i + batch_size])).float().cpu()
        for i in range(0, len(phrases), batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, text.dim)


def _check_augment(config: FinetuneConfig) -> None:
    steps = sorted(set(config.data.augment or {}) & set(GEOMETRIC_STEPS))
    if steps:
        raise MedtuneError(
            f"data.augment: {', '.join(steps)} would move the boxes; the ground task takes "
            "intensity steps only (brightness, contrast, gamma, blur, noise)"
        )


def _loader(items: BoxedImages, config: FinetuneConfig, *, train: bool) -> Any:
    from medtune.train.data import make_loader

    if not train:
        batch_size = config.data.eval_batch_size or config.data.batch_size
        return make_loader(
            items, batch_size, shuffle=False, workers=config.data.workers, seed=config.loop.seed
        )
    # Under torchrun each rank reads its own share of every epoch.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return make_loader(
        items,
        config.data.batch_size,
        shuffle=True,
        workers=config.data.workers,
        seed=config.loop.seed,
        rank=rank,
        world_size=world,
    )


def _export(
    directory: Path, backbone: Backbone, prepared: Prepared, head: GroundingHead, info: dict
) -> Path:
    from medtune.models.export import export_model

    return export_model(
        directory,
        task="ground",
        backbone=backbone.config,
        encoder=finish_backbone(prepared),
        parts={"grounding": head},
        info=info,
        write_extra=lambda tmp: save_adapter(prepared, tmp / "adapter"),
    )


def _summary(
    prepared: Prepared,
    head: GroundingHead,
    train: BoxedImages,
    val: BoxedImages | None,
    phrases: int,
    result: Any,
) -> list[str]:
    trained = sum(p.numel() for p in prepared.trainable)
    size = sum(p.numel() for p in head.parameters())
    lines = [
        f"{prepared.mode}: {trained:,} backbone parameters trained, grounding head {size:,}; "
        "text tower frozen",
        f"{len(train)} training and {len(val) if val is not None else 0} validation "
        f"(image, phrase) pairs; {phrases} distinct phrases",
    ]
    scores = result.last_eval
    if val is None or "val_miou" not in scores:
        lines.append(
            "no boxes on the validation rows: the export holds the last weights, not evaluated"
        )
    else:
        lines.append(
            f"val_miou {scores['val_miou']:.3f}, hit rate (IoU >= {HIT_IOU}) "
            f"{scores['val_hit_rate']:.3f} at step {result.steps}"
        )
    if result.best_step is not None and result.best_step != result.steps:
        lines.append(f"best val_miou {result.best_value:.3f} at step {result.best_step}")
    return lines
