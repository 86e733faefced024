"""Any Hugging Face vision model (``AutoModel``) from a local directory as a medtune backbone.

For example a DINOv2 or RAD-DINO export, a ViT, or the vision tower of a CLIP or SigLIP model.
Loading is offline and safe: ``local_files_only``, safetensors only, never remote code.
Features: the model's own ``pooler_output`` (DINOv2's normed class token, CLIP's class token
after its last norm, SigLIP's attention pool, Swin's average), else the class token, and the
patch tokens after the special ones (class, registers, distillation).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.families import (
    find_lora_targets,
    first_line,
    map_to_tokens,
    quiet_transformers,
    split_prefix,
    to_tuple,
)
from medtune.models.registry import register_backbone

# The statistics most HF image processors default to (ImageNet's); used without a
# preprocessor_config.json.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class HFBackbone(Encoder):
    """A Hugging Face vision model behind the encoder contract."""

    family = "hf"

    def __init__(self, model: nn.Module, contract: InputContract, source: str) -> None:
        super().__init__()
        self.model = model
        self.contract = contract
        self.source = source
        config = model.config
        self.dim = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])
        self.lora_targets = find_lora_targets(model)
        patch = getattr(config, "patch_size", None)
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        self._grid = (contract.size // patch,) * 2 if patch else None
        self._forward_kwargs = {}
        trained_size = getattr(config, "image_size", contract.size)
        trained_size = trained_size[0] if isinstance(trained_size, list | tuple) else trained_size
        takes = inspect.signature(model.forward).parameters
        if trained_size != contract.size and "interpolate_pos_encoding" in takes:
            self._forward_kwargs["interpolate_pos_encoding"] = True

    def forward_features(self, x: torch.Tensor) -> Features:
        self.contract.check(x)
        out = self.model(pixel_values=x, **self._forward_kwargs)
        hidden = out.last_hidden_state
        pooler = getattr(out, "pooler_output", None)
        if hidden.ndim == 4:  # convnets: (B, C, H, W)
            tokens, grid = map_to_tokens(hidden)
            pooled = pooler.flatten(1) if pooler is not None else tokens.mean(1)
            return Features(pooled=pooled, tokens=tokens, grid=grid)
        prefix, tokens, grid = split_prefix(hidden, self._grid, self.source)
        if pooler is not None and pooler.ndim == 2:
            pooled = pooler
        else:
            pooled = prefix[:, 0] if prefix.shape[1] > 0 else tokens.mean(1)
        return Features(pooled=pooled, tokens=tokens, grid=grid)


@register_backbone("hf")
def hf_backbone(path: str, image_size: int | None = None) -> HFBackbone:
    """The vision model saved in the local directory ``path`` (``config.json`` plus
    ``*.safetensors``; ``preprocessor_config.json`` gives its input size and statistics).

    ``image_size`` overrides the size; ViT-style models then interpolate their position
    embeddings (DINOv2 always does).
    """
    from transformers import AutoModel

    directory = _check_directory(Path(path))
    quiet_transformers()
    try:
        model = AutoModel.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise MedtuneError(
            f"{directory}: cannot load a Hugging Face model ({first_line(exc)})"
        ) from exc
    model = getattr(model, "vision_model", model)  # CLIP / SigLIP: keep the image tower
    if not hasattr(model.config, "num_channels"):
        raise MedtuneError(f"{directory}: {type(model).__name__} is not a vision model")
    embeddings = getattr(model, "embeddings", None)
    if (
        getattr(embeddings, "cls_token", None) is not None
        and getattr(model, "pooler", None) is not None
    ):
        # ViT, DeiT, BEiT: pool with the class token, not the pooler (dense + tanh, often absent
        # from checkpoints and then random). Removed, it also leaves no parameter that never
        # gets a gradient, which DDP would refuse.
        model.pooler = None
    contract = _contract(directory, model.config, image_size)
    return HFBackbone(model, contract, str(directory))


def _check_directory(directory: Path) -> Path:
    if not (directory / "config.json").is_file():
        raise MedtuneError(f"{directory}: not a Hugging Face model directory (no config.json)")
    if not any(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        why = (
            f"only pickle weights ({', '.join(pickles)}), which can execute code"
            if pickles
            else "no weights"
        )
        raise MedtuneError(f"{directory}: {why}; medtune loads .safetensors only")
    return directory


def _contract(directory: Path, config: Any, image_size: int | None) -> InputContract:
    processor = _read_json(directory / "preprocessor_config.json")
    channels = int(config.num_channels)
    size = image_size or _processor_size(processor) or config.image_size
    size = size[0] if isinstance(size, list | tuple) else size
    return InputContract(
        channels=channels,
        size=int(size),
        mean=to_tuple(processor.get("image_mean", _IMAGENET_MEAN), channels),
        std=to_tuple(processor.get("image_std", _IMAGENET_STD), channels),
    )


def _processor_size(processor: dict[str, Any]) -> int | None:
    """The side the processor feeds the model: the crop when it crops, else the resize."""
    size = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = size or processor.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return int(size) if size else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MedtuneError(f"{path}: not valid JSON ({exc})") from exc
