"""Phrase grounding: a text query to a heat map over the image and a box, by patch-text
similarity (BioViL's phrase grounding, Boecking et al. 2022).

The head projects a backbone's patch tokens (``Features.tokens`` on ``Features.grid``) and the
text tower's pooled query embedding into one space; the heat map is the cosine similarity of
each patch with the query, scaled by a learnt temperature and shifted by a learnt bias; its
sigmoid, trained against each patch's share inside the phrase's boxes, estimates that share.
The box is drawn around the largest connected region of the heat map, resized to the image,
at or above ``threshold`` x its maximum.

Boxes here are x0, y0, x1, y1 in pixels of the square image the backbone sees (continuous
coordinates: pixel i spans [i, i + 1)).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, InputContract
from medtune.models.text import TextEncoder

MAX_SCALE = 100.0  # as CLIP: a larger logit scale makes training unstable


class GroundingHead(nn.Module):
    """Patch tokens and a query embedding to heat-map logits (B, h, w).

    Example: ``GroundingHead(384, 384, 128)(features.tokens, features.grid, query)``."""

    def __init__(
        self, image_dim: int, text_dim: int, projection_dim: int = 128, temperature: float = 0.1
    ) -> None:
        super().__init__()
        self.image_dim, self.text_dim, self.projection_dim = image_dim, text_dim, projection_dim
        # Two layers per side, as BioViL's projections: patch tokens of a frozen backbone need
        # a non-linear map to line up with a frozen text tower's space.
        self.image_projection = _projection(image_dim, projection_dim)
        self.text_projection = _projection(text_dim, projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int], query: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, h, w) of image b's patches for query b; ``query`` is (B, text_dim)."""
        patches, queries = self._embed(tokens, query)
        similarity = torch.einsum("bnd,bd->bn", patches, queries)
        return self._logits(similarity).unflatten(1, grid)

    def pair_logits(
        self, tokens: torch.Tensor, grid: tuple[int, int], queries: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, Q, h, w) of every image's patches for every one of Q queries."""
        patches, queries = self._embed(tokens, queries)
        similarity = torch.einsum("bnd,qd->bqn", patches, queries)
        return self._logits(similarity).unflatten(2, grid)

    def _embed(self, tokens: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, ...]:
        patches = F.normalize(self.image_projection(tokens.float()), dim=-1)
        return patches, F.normalize(self.text_projection(query.float()), dim=-1)

    def _logits(self, similarity: torch.Tensor) -> torch.Tensor:
        return similarity * self.logit_scale.exp().clamp(max=MAX_SCALE) + self.bias

    def config(self) -> dict[str, int]:
        """What rebuilds the head (an export records it)."""
        return {
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
            "projection_dim": self.projection_dim,
        }


def _projection(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out), nn.GELU(), nn.Linear(out, out))


# ---------------------------------------------------------------------------------------------
# Boxes: to the patch grid (targets), from heat maps (predictions), and their overlap.


def box_fractions(boxes: torch.Tensor, grid: tuple[int, int], image_size: int) -> torch.Tensor:
    """The share of each patch that lies inside the boxes: (B, K, 4) px -> (B, h, w) in [0, 1].

    A patch covered by several of an image's K boxes takes the largest share; boxes with no
    area (padding) cover nothing. The training target of the heat map."""
    h, w = grid
    edges_x = torch.arange(w + 1, device=boxes.device, dtype=torch.float32) * (image_size / w)
    edges_y = torch.arange(h + 1, device=boxes.device, dtype=torch.float32) * (image_size / h)
    x0, y0, x1, y1 = (boxes[..., i, None].float() for i in range(4))  # (B, K, 1) each
    overlap_x = (torch.minimum(x1, edges_x[1:]) - torch.maximum(x0, edges_x[:-1])).clamp(min=0)
    overlap_y = (torch.minimum(y1, edges_y[1:]) - torch.maximum(y0, edges_y[:-1])).clamp(min=0)
    share_x = overlap_x / (image_size / w)  # (B, K, w)
    share_y = overlap_y / (image_size / h)  # (B, K, h)
    return (share_y[..., :, None] * share_x[..., None, :]).amax(dim=1)


def heatmap_to_box(
    heat: np.ndarray | torch.Tensor, image_size: int, threshold: float = 0.5
) -> tuple[float, float, float, float]:
    """The box (px of an ``image_size`` square) around the largest connected region of the
    heat map ``heat`` (h, w) at or above ``threshold`` x its maximum (a tie goes to the region
    holding more heat). A flat map gives the whole image.

    The map is first resized to the image bilinearly (as BioViL scores its maps), so a box
    edge falls where the heat crosses the level, inside a patch, not on the patch grid: a
    map trained on each patch's share of the box puts a half-covered patch at half heat. A
    0/1 map gives boxes on patch edges exactly."""
    from scipy import ndimage

    heat = torch.as_tensor(heat).detach().cpu().to(torch.float64)
    size = (image_size, image_size)
    up = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)
    pixels = up[0, 0].numpy()
    regions, count = ndimage.label(pixels >= threshold * pixels.max())
    if count == 0:  # a map below zero everywhere
        return (0.0, 0.0, float(image_size), float(image_size))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(pixels), regions, index)
    mass = ndimage.sum_labels(pixels, regions, index)
    best = index[np.lexsort((mass, sizes))[-1]]
    rows, cols = np.nonzero(regions == best)
    return (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


def box_iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray:
    """Intersection over union of boxes ``a`` and ``b`` (..., 4), pairwise by position;
    0 where both have no area."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(min=0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(min=0)
    inter = width * height
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mean_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The mean IoU of N predicted boxes against their N true boxes (N, 4); nan for none."""
    ious = box_iou(np.asarray(predicted).reshape(-1, 4), np.asarray(truth).reshape(-1, 4))
    return float(ious.mean()) if ious.size else float("nan")


def _area(box: np.ndarray) -> np.ndarray:
    return (box[..., 2] - box[..., 0]).clip(min=0) * (box[..., 3] - box[..., 1]).clip(min=0)


# ---------------------------------------------------------------------------------------------
# A trained grounding model, loaded from its export.


@dataclass
class LoadedGrounding:
    """An exported grounding model: image backbone, head, text tower, settings."""

    encoder: Encoder
    head: GroundingHead
    text: TextEncoder
    threshold: float
    record: dict[str, Any]  # the export's medtune.json

    @property
    def contract(self) -> InputContract:
        return self.encoder.contract


def load_grounding(directory: str | os.PathLike[str]) -> LoadedGrounding:
    """Rebuild a ``ground`` export (or a run holding one) in eval mode on the CPU.

    The text tower is rebuilt from its recorded config (it is frozen in training, so the
    export carries no text weights): a ``hf`` tower needs its directory to still exist."""
    from medtune.models.export import load_encoder, load_part, read_export, resolve_export
    from medtune.models.text import text_encoder_from_config

    directory = resolve_export(directory)
    record = read_export(directory)
    if record.get("task") != "ground":
        raise MedtuneError(f"{directory}: a {record.get('task')!r} export, not a grounding model")
    text = text_encoder_from_config(record["text"])
    config = record["head"]
    if int(config["text_dim"]) != text.dim:
        raise MedtuneError(
            f"{directory}: the head takes {config['text_dim']}-d queries but the recorded text "
            f"tower gives {text.dim}-d"
        )
    head = GroundingHead(int(config["image_dim"]), text.dim, int(config["projection_dim"]))
    load_part(directory, "grounding", head)
    loaded = LoadedGrounding(
        load_encoder(directory), head, text, float(record["threshold"]), record
    )
    for module in (loaded.encoder, loaded.head, loaded.text):
        module.eval()
    return loaded


@torch.no_grad()
def ground(
    loaded: LoadedGrounding, images: torch.Tensor, phrases: Sequence[str]
) -> tuple[torch.Tensor, list[tuple[float, float, float, float]]]:
    """Heat maps (B, h, w) in [0, 1] and one box per image (px of the contract's square) for
    image b and query ``phrases[b]``. ``images`` are shaped and normalised to
    ``loaded.contract`` (as :class:`medtune.train.data.ImageDataset` gives them)."""
    loaded.contract.check(images)
    if len(phrases) != len(images):
        raise MedtuneError(f"ground: {len(phrases)} phrases for {len(images)} images")
    device = next(loaded.head.parameters()).device
    features = loaded.encoder.forward_features(images.to(device))
    queries = loaded.text.encode(list(phrases)).to(device)
    heat = torch.sigmoid(loaded.head(features.tokens, features.grid, queries))
    size = loaded.contract.size
    return heat, [heatmap_to_box(map_, size, loaded.threshold) for map_ in heat]
