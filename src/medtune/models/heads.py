"""Task heads on a backbone's pooled features: (B, dim) in, (B, classes) logits out.

The MLP head is the three-layer probe of the usual probing protocol (as in the multi-anatomy
X-ray foundation-model papers): Linear-GELU-Dropout twice, then a Linear. A LayerNorm (with
learned scale and shift) comes first, because pooled features differ in scale by orders of
magnitude across families (a timm ViT's normed class token, a convnet's raw average, an HF
pooler's tanh): normed, one learning rate suits every backbone, and probes of different
backbones compare on what their features say rather than on their scale.

Each head keeps its constructor arguments in ``.config``, which an export records so that
:func:`head_from_config` rebuilds the head before its weights load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medtune.errors import MedtuneError

HEADS = ("mlp", "linear")


class MLPHead(nn.Module):
    """LayerNorm, then Linear-GELU-Dropout, Linear-GELU-Dropout, Linear."""

    def __init__(self, dim: int, classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"kind": "mlp", "dim": dim, "classes": classes, "hidden": hidden,
                       "dropout": dropout}  # fmt: skip
        self.layers = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class LinearHead(nn.Module):
    """A LayerNorm and one Linear: the linear probe (the norm for the reason above)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.config = {"kind": "linear", "dim": dim, "classes": classes}
        self.layers = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def make_head(
    kind: str, dim: int, classes: int, hidden: int = 256, dropout: float = 0.1
) -> nn.Module:
    """A head of ``kind`` ("mlp" or "linear"; the linear one ignores ``hidden`` and
    ``dropout``) from ``dim`` features to ``classes`` logits."""
    if dim < 1 or classes < 1:
        raise MedtuneError(f"head: needs at least 1 feature and 1 class, got {dim} and {classes}")
    if kind == "mlp":
        return MLPHead(dim, classes, hidden, dropout)
    if kind == "linear":
        return LinearHead(dim, classes)
    raise MedtuneError(f"head {kind!r}: unknown (use {', '.join(HEADS)})")


def head_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a head from its ``.config`` (as an export records it)."""
    values = dict(config)
    kind = values.pop("kind", None)
    try:
        return make_head(str(kind), **values)
    except TypeError as exc:
        raise MedtuneError(f"head config {dict(config)}: {exc}") from exc
