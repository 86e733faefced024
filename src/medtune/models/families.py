"""What the backbone families (timm, Hugging Face, open_clip) share: turning a family's output
into :class:`Features`, and finding the layers PEFT's LoRA should wrap.

Each family lives in its own module (``timm_backbone``, ``hf_backbone``, ``openclip_backbone``)
and imports its library only when a backbone is built, so importing medtune stays fast.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

import torch
from torch import nn

from medtune.errors import MedtuneError

# Leaf names of the attention and MLP linears across the families: timm (qkv, proj, fc1, fc2),
# transformers 4 (query, key, value, dense), transformers 5 and CLIP/SigLIP (q_proj, k_proj,
# v_proj, o_proj / out_proj), DINOv2's SwiGLU (weights_in, weights_out), open_clip (c_fc, c_proj).
LINEAR_LEAVES = frozenset(
    {"qkv", "q", "k", "v", "kv", "proj", "fc1", "fc2", "query", "key", "value", "dense"}
    | {"q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "weights_in", "weights_out"}
    | {"c_fc", "c_proj"}
)


def quiet_transformers() -> None:
    """Silence transformers' own progress bars and notices while it loads a local model: a
    command shows medtune's progress, and a training log is not the place for a loader's."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def find_lora_targets(
    model: nn.Module,
    leaves: Collection[str] | None = LINEAR_LEAVES,
    types: tuple[type[nn.Module], ...] = (nn.Linear,),
) -> list[str]:
    """Full-match regexes naming every ``types`` module called one of ``leaves`` (any name for
    ``None``) inside a repeated block (a path with a numeric index: ``blocks.3.attn.qkv``).

    Requiring the block index leaves out stems, patch embeddings, poolers and heads. Indices
    become ``\\d+`` and an optional prefix is allowed, so the patterns still match once the
    model is wrapped (``model.blocks.0.attn.qkv``); join them with ``|`` for PEFT's
    ``target_modules``, which full-matches a single regex.
    """
    patterns = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        inside_block = any(part.isdigit() for part in parts[:-1])
        named = not parts[-1].isdigit() if leaves is None else parts[-1] in leaves
        if isinstance(module, types) and named and inside_block:
            body = r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in parts)
            patterns.add(r"(.*\.)?" + body)
    return sorted(patterns)


def map_to_tokens(
    feature_map: torch.Tensor, channels_last: bool = False
) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) feature map (or (B, H, W, C) with ``channels_last``) to (B, H*W, C) tokens."""
    if not channels_last:
        feature_map = feature_map.permute(0, 2, 3, 1)
    b, h, w, c = feature_map.shape
    return feature_map.reshape(b, h * w, c), (h, w)


def split_prefix(
    hidden: torch.Tensor, grid: tuple[int, int] | None, source: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Split a (B, T, D) sequence into (prefix, patch tokens, grid); patch tokens come last.

    ``grid`` is the patch grid the caller expects; ``None`` (or a grid larger than the sequence,
    as in hierarchical models whose last stage is downsampled) means a square grid as large as
    fits, with the remaining leading tokens (class, registers, distillation) as the prefix.
    """
    t = hidden.shape[1]
    if grid is None or grid[0] * grid[1] > t:
        side = math.isqrt(t)
        grid = (side, side)
    n = grid[0] * grid[1]
    if n == 0:
        raise MedtuneError(f"{source}: no patch tokens in an output of shape {tuple(hidden.shape)}")
    return hidden[:, : t - n], hidden[:, t - n :], grid


def to_tuple(value: float | tuple[float, ...] | list[float], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels`` channels; 3 RGB values average to one for gray."""
    values = tuple(float(v) for v in value) if isinstance(value, list | tuple) else (float(value),)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if channels == 1:
        # A 3-channel model adapted to 1 channel sums its RGB kernels (timm's adapt_input_conv),
        # which matches the RGB normalisation exactly only if the channels share a mean and std;
        # their average is the closest single value.
        return (sum(values) / len(values),)
    raise MedtuneError(f"input statistics: {len(values)} values for {channels} channels")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: library errors span many, MedtuneError's one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
