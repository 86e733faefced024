"""The contract every image backbone answers, whatever family it comes from.

Probing, LoRA, heads, grounding and evaluation talk to a backbone only through this: pooled
features, patch tokens on a grid, the feature dimension, and the input the backbone expects
(as timm's ``forward_features`` / ``forward_head`` contract, STYLE.md item 2). The data path
shapes images to ``InputContract``; a mismatch is an error, never silently wrong outputs.

Pretraining needs two optional hooks, which families with a patch embedding provide (medtune's
ViT, timm ViTs): ``embed_patches`` (pixels to patch embeddings) and ``forward_patches`` (the
rest of the network), so that self-distillation can replace masked patch embeddings by its
mask token before the transformer blocks (iBOT). A family that has them sets ``patch_size``;
one whose ``embed_patches`` also takes other input sizes (multi-crop's small local views) sets
``any_size``. Others keep the defaults, and pretraining resizes local views to the contract's
size instead and refuses the masked-patch term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medtune.errors import MedtuneError


@dataclass(frozen=True)
class InputContract:
    """What a backbone takes: ``channels`` x ``size`` x ``size`` pixels scaled to [0, 1], then
    normalised per channel by ``mean`` and ``std``. Grayscale images feed 3-channel backbones
    by repeating the gray channel."""

    channels: int  # 1 (grayscale) or 3 (the gray image repeated)
    size: int  # square side, px
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise MedtuneError(f"input contract: {self.channels} channels (expected 1 or 3)")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise MedtuneError(
                f"input contract: mean and std need {self.channels} values each, "
                f"got {len(self.mean)} and {len(self.std)}"
            )

    def check(self, x: torch.Tensor, *, any_size: bool = False) -> None:
        """Raise MedtuneError unless ``x`` is a (B, channels, size, size) batch (with
        ``any_size``, a (B, channels, H, W) batch of any H and W)."""
        expected = (self.channels, self.size, self.size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            if any_size and x.ndim == 4 and x.shape[1] == self.channels:
                return
            size = "H, W" if any_size else f"{self.size}, {self.size}"
            raise MedtuneError(
                f"input of shape {tuple(x.shape)} does not match the backbone's contract "
                f"(B, {self.channels}, {size})"
            )


@dataclass
class Features:
    """A backbone's output for a batch."""

    pooled: torch.Tensor  # (B, D): one vector per image
    tokens: torch.Tensor  # (B, N, D): patch tokens, no class or register tokens
    grid: tuple[int, int]  # (h, w) of the patch tokens, h * w == N


class Encoder(nn.Module):
    """Base of every image backbone: subclasses set the attributes and ``forward_features``."""

    dim: int
    contract: InputContract
    family: str  # "medtune-vit", "timm", "hf", "open_clip"
    lora_targets: list[str]  # module-name regexes PEFT's LoRA wraps (attention and MLP linears)
    # Pretraining hooks (see the module docstring): set by families that have them.
    patch_size: int | None = None  # px per patch side; None: no embed_patches/forward_patches
    any_size: bool = False  # embed_patches takes inputs of any size (a multiple of patch_size)

    def forward_features(self, x: torch.Tensor) -> Features:
        raise NotImplementedError

    def embed_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, N, D) patch embeddings of ``x`` before position embedding and transformer
        blocks, and their (h, w) grid. ``forward_patches(*embed_patches(x))`` equals
        ``forward_features(x)``; in between, pretraining may replace masked embeddings."""
        raise MedtuneError(f"{self.family}: the backbone has no patch-level hooks "
                           "(embed_patches / forward_patches)")  # fmt: skip

    def forward_patches(self, tokens: torch.Tensor, grid: tuple[int, int]) -> Features:
        """The rest of the network on patch embeddings from :meth:`embed_patches`."""
        raise MedtuneError(f"{self.family}: the backbone has no patch-level hooks "
                           "(embed_patches / forward_patches)")  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).pooled
