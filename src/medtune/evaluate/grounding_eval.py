"""Phrase-grounding evaluation as BioViL reports it: box IoU, hit rate and contrast-to-noise.

Each (image, phrase) of ``dataset/boxes.parquet`` on the evaluated rows is one item, as in
training (:class:`~medtune.train.grounding.BoxedImages`, so true boxes are mapped to the
model's input pixels exactly as training mapped them). The model's heat map for the phrase
gives a box (:func:`~medtune.models.grounding.heatmap_to_box` at the export's threshold),
scored by its IoU with the best-matching true box of that phrase (the training run's
``val_miou``); a hit is IoU >= 0.5. CNR (contrast-to-noise ratio, Boecking et al. 2022) scores
the heat map itself, with no threshold: how far the heat inside the phrase's boxes stands out
from the heat outside, in units of their spread::

    scores, samples = evaluate_grounding("ws/runs/finetune-ground-lora", "ws", splits=["test"])
    scores.miou, scores.hit_rate, scores.per_finding["pneumothorax"]["cnr"]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from medtune.errors import MedtuneError
from medtune.models.contract import InputContract
from medtune.models.grounding import box_iou
from medtune.train.grounding import HIT_IOU, BoxedImages

Box = tuple[float, float, float, float]


def contrast_to_noise(heat: np.ndarray | torch.Tensor, box: Sequence[float] | np.ndarray,
                      image_size: int) -> float:  # fmt: skip
    """CNR of heat map ``heat`` (h, w) for ``box`` (x0, y0, x1, y1 px of the ``image_size``
    square; or (K, 4) boxes, whose union is the inside): |mean inside - mean outside| /
    sqrt(var inside + var outside), on the map resized bilinearly to the image as
    :func:`~medtune.models.grounding.heatmap_to_box` does. A pixel is inside when its centre is.

    nan when the box covers all or none of the image (one side is empty); 0 for a flat map;
    inf when each side is flat but they differ (a perfect map at full resolution)."""
    heat = torch.as_tensor(heat).detach().cpu().to(torch.float64)
    size = (image_size, image_size)
    pixels = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)
    pixels = pixels[0, 0].numpy()
    inside = _box_mask(box, image_size)
    if inside.all() or not inside.any():
        return math.nan
    if float(heat.max()) == float(heat.min()):
        return 0.0  # exactly: interpolation rounding would leave 1e-17 "contrast" over 1e-17 noise
    a, b = pixels[inside], pixels[~inside]
    contrast = abs(float(a.mean()) - float(b.mean()))
    noise = math.sqrt(float(a.var()) + float(b.var()))
    if noise == 0:
        return 0.0 if contrast == 0 else math.inf
    return contrast / noise


def _box_mask(boxes: Sequence[float] | np.ndarray, image_size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie in any of ``boxes`` (4,) or (K, 4)."""
    centres = np.arange(image_size) + 0.5
    mask = np.zeros((image_size, image_size), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        rows = (centres >= y0) & (centres < y1)
        cols = (centres >= x0) & (centres < x1)
        mask |= rows[:, None] & cols[None, :]
    return mask


@dataclass
class GroundingItem:
    """One (image, phrase) scored: its predicted box against the best-matching true box."""

    image_id: str
    row: int  # catalog row
    finding: str  # the box table's finding (the phrase where it has none)
    phrase: str
    iou: float
    cnr: float  # over all of the phrase's boxes on the image
    predicted: Box  # px of the model's input square
    truth: Box  # the true box the IoU is taken with, same pixels


@dataclass
class GroundingScores:
    """Means over items, overall and per finding ({miou, cnr, hit_rate, n}). CNR means leave
    out nan items (a box over the whole image)."""

    items: list[GroundingItem]
    miou: float
    cnr: float
    hit_rate: float  # share of items with IoU >= HIT_IOU (0.5)
    per_finding: dict[str, dict[str, float]]
    # figure -> patient-bootstrap Estimate (medtune.evaluate.intervals), when computed
    intervals: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroundingSample:
    """What one item's figure shows: the model's input, its heat map, both boxes."""

    image: np.ndarray  # (H, W) in [0, 1]: the model's input, un-normalised (first channel)
    heat: np.ndarray  # (h, w) in [0, 1] on the patch grid
    predicted: Box
    truth: Box
    phrase: str
    iou: float


def score_grounding(items: list[GroundingItem]) -> GroundingScores:
    """Mean IoU, mean CNR and hit rate (IoU >= 0.5) of ``items``, overall and per finding."""
    if not items:
        raise MedtuneError("no grounding items to score")
    by_finding: dict[str, list[GroundingItem]] = {}
    for item in items:
        by_finding.setdefault(item.finding, []).append(item)
    overall = _means(items)
    return GroundingScores(
        items=list(items),
        miou=overall["miou"],
        cnr=overall["cnr"],
        hit_rate=overall["hit_rate"],
        per_finding={f: _means(group) for f, group in sorted(by_finding.items())},
    )


def _means(items: list[GroundingItem]) -> dict[str, float]:
    ious = np.array([i.iou for i in items], np.float64)
    cnrs = np.array([i.cnr for i in items], np.float64)
    cnrs = cnrs[~np.isnan(cnrs)]
    return {
        "miou": float(ious.mean()),
        "cnr": float(cnrs.mean()) if len(cnrs) else math.nan,
        "hit_rate": float((ious >= HIT_IOU).mean()),
        "n": len(items),
    }


def evaluate_grounding(
    export_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    split_column: str = "split",
    splits: Sequence[str] = ("test",),
    batch_size: int = 32,
    samples: int = 6,
) -> tuple[GroundingScores, list[GroundingSample]]:
    """Score a grounding export on the boxes of the ``splits`` rows (see the module docstring)
    and return the first ``samples`` items' pictures. MedtuneError when those rows have no
    boxes."""
    from medtune.models.grounding import ground, load_grounding

    loaded = load_grounding(export_dir)
    split = boxed_items(workspace, loaded.contract, split_column, splits)
    size = loaded.contract.size
    mean, std = loaded.contract.mean[0], loaded.contract.std[0]
    items: list[GroundingItem] = []
    pictures: list[GroundingSample] = []
    for start in range(0, len(split.items), batch_size):
        batch = [split.items[i] for i in range(start, min(start + batch_size, len(split.items)))]
        phrases = [split.phrases[b["phrase"]] for b in batch]
        heat, predicted = ground(loaded, torch.stack([b["image"] for b in batch]), phrases)
        for k, entry in enumerate(batch):
            item = _score(entry, split, phrases[k], heat[k].numpy(), predicted[k], size)
            items.append(item)
            if len(pictures) < samples:
                image = (entry["image"][0] * std + mean).clamp(0, 1).numpy()
                pictures.append(GroundingSample(image, heat[k].numpy(), item.predicted,
                                                item.truth, item.phrase, item.iou))  # fmt: skip
    return score_grounding(items), pictures


@dataclass
class BoxedSplit:
    """The (image, phrase) items of some rows, as training reads them, and what names them."""

    items: BoxedImages  # image, phrase (index into phrases), boxes in the contract's px, index
    phrases: list[str]
    image_ids: dict[int, str]  # catalog row -> image id, for the rows the items use
    findings: dict[tuple[str, str], str]  # (image id, phrase) -> finding, where the table has one


def boxed_items(
    workspace: str | os.PathLike[str],
    contract: InputContract,
    split_column: str = "split",
    splits: Sequence[str] = ("test",),
) -> BoxedSplit:
    """The boxes of the ``splits`` rows in ``contract`` pixels, through training's
    :class:`~medtune.train.grounding.BoxedImages` (the same letterbox-and-resize mapping).
    MedtuneError when those rows have none."""
    from medtune.dataset.boxes import read_boxes
    from medtune.dataset.catalog import read_catalog
    from medtune.train.data import ImageDataset

    boxes = read_boxes(workspace)
    phrases = sorted(set(boxes.column("phrase").to_pylist()))
    images = ImageDataset(workspace, contract=contract, split_column=split_column,
                          split_values=list(splits), label_columns=[])  # fmt: skip
    items = BoxedImages(images, boxes, phrases)
    if len(items) == 0:
        raise MedtuneError(
            f"{workspace}: no boxes on the {split_column} {', '.join(splits)} rows; "
            "import some with `medtune boxes import`"
        )
    catalog = read_catalog(images.workspace.catalog_path, columns=["image_id"]).column(0)
    rows = sorted({int(images.rows[p]) for p in items.positions})
    image_ids = dict(zip(rows, catalog.take(pa.array(rows)).to_pylist(), strict=True))
    findings: dict[tuple[str, str], str] = {}
    for row in boxes.select(["image_id", "phrase", "finding"]).to_pylist():
        if row["finding"]:
            findings.setdefault((row["image_id"], row["phrase"]), row["finding"])
    return BoxedSplit(items, phrases, image_ids, findings)


def _score(
    entry: dict, split: BoxedSplit, phrase: str, heat: np.ndarray, predicted: Box, size: int
) -> GroundingItem:
    """One item's IoU with its best-matching true box and its CNR over all of them."""
    truths = _real_boxes(entry["boxes"].numpy())
    ious = box_iou(np.asarray(predicted, np.float64)[None], truths)
    best = int(ious.argmax())
    image_id = split.image_ids[int(entry["index"])]
    return GroundingItem(
        image_id=image_id,
        row=int(entry["index"]),
        finding=split.findings.get((image_id, phrase)) or phrase,
        phrase=phrase,
        iou=float(ious[best]),
        cnr=contrast_to_noise(heat, truths, size),
        predicted=tuple(float(v) for v in predicted),
        truth=tuple(float(v) for v in truths[best]),
    )


def _real_boxes(boxes: np.ndarray) -> np.ndarray:
    """The item's boxes without BoxedImages' zero-area padding: (K, 4)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[area > 0].astype(np.float64)
