"""Any timm model as a medtune backbone, with weights only from a local safetensors file.

Features follow timm's own contract: ``forward_features`` gives the final feature map or token
sequence, ``forward_head(pre_logits=True)`` pools it the way the model was trained to (class
token, average, ...), and the prefix tokens (``num_prefix_tokens``: class, registers) are split
from the patch tokens. Convnets give their last feature map as the token grid.

timm's ``VisionTransformer`` (and its subclasses) also gets the pretraining hooks of
:class:`Encoder` (``embed_patches`` / ``forward_patches``), for any input size when the model is
built with ``model_kwargs: {dynamic_img_size: true}`` (timm fixes that at construction).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.families import (
    find_lora_targets,
    first_line,
    map_to_tokens,
    split_prefix,
    to_tuple,
)
from medtune.models.registry import register_backbone
from medtune.models.weights import read_state_dict

if TYPE_CHECKING:
    from collections.abc import Sequence


class TimmBackbone(Encoder):
    """A timm model (built with ``num_classes=0``) behind the encoder contract."""

    def __init__(self, model: nn.Module, contract: InputContract, family: str = "timm") -> None:
        super().__init__()
        self.model = model
        self.contract = contract
        self.family = family
        self.dim = int(model.num_features)
        self.lora_targets = _lora_targets(model)
        self._prefix = int(getattr(model, "num_prefix_tokens", 0))
        self._channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        self._grid = (int(grid[0]), int(grid[1])) if grid is not None else None
        if _is_plain_vit(model):  # pretraining hooks
            self.patch_size = int(model.patch_embed.patch_size[0])
            self.any_size = bool(model.dynamic_img_size)

    def forward_features(self, x: torch.Tensor) -> Features:
        self.contract.check(x)
        return self._features(self.model.forward_features(x))

    def embed_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.patch_size is None:
            return super().embed_patches(x)
        self.contract.check(x, any_size=self.any_size)
        tokens = self.model.patch_embed(x)
        if tokens.ndim == 4:  # (B, h, w, D) from a model built with dynamic_img_size
            return tokens.flatten(1, 2), (int(tokens.shape[1]), int(tokens.shape[2]))
        return tokens, self._grid

    def forward_patches(self, tokens: torch.Tensor, grid: tuple[int, int]) -> Features:
        if self.patch_size is None:
            return super().forward_patches(tokens, grid)
        m = self.model  # the steps of timm's VisionTransformer.forward_features after patch_embed
        x = tokens.unflatten(1, tuple(grid)) if m.dynamic_img_size else tokens
        x = m.norm_pre(m.patch_drop(m._pos_embed(x)))
        x = m.norm(m.blocks(x))
        return self._features(x, tuple(grid))

    def _features(self, features: torch.Tensor, grid: tuple[int, int] | None = None) -> Features:
        pooled = self.model.forward_head(features, pre_logits=True)
        if pooled.ndim != 2:
            raise MedtuneError(
                f"timm model {type(self.model).__name__}: pooling gives shape "
                f"{tuple(pooled.shape)}, not (B, D); set a global_pool in model_kwargs"
            )
        if features.ndim == 4:
            tokens, grid = map_to_tokens(features, channels_last=self._channels_last)
        else:
            grid = grid or self._grid
            _, tokens, grid = split_prefix(features[:, self._prefix :], grid, "timm")
        return Features(pooled=pooled, tokens=tokens, grid=grid)


def _is_plain_vit(model: nn.Module) -> bool:
    """A timm VisionTransformer whose forward_features is the base class's: the pretraining
    hooks re-run its steps, so a subclass that changes them does not get the hooks."""
    from timm.models.vision_transformer import VisionTransformer

    return (
        isinstance(model, VisionTransformer)
        and type(model).forward_features is VisionTransformer.forward_features
        and type(model)._pos_embed is VisionTransformer._pos_embed
    )


def _lora_targets(model: nn.Module) -> list[str]:
    # Transformers: the attention and MLP linears. Convnets have none in their blocks, so their
    # convolutions are the targets (PEFT wraps Conv2d too).
    return find_lora_targets(model) or find_lora_targets(model, leaves=None, types=(nn.Conv2d,))


@register_backbone("timm")
def timm_backbone(
    model_name: str,
    pretrained_path: str | None = None,
    image_size: int | None = None,
    in_chans: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> TimmBackbone:
    """A timm model by name (``vit_base_patch16_224``, ``convnext_tiny``, ...).

    ``pretrained_path``: a ``.safetensors`` file of the model's weights (timm's own layout, as
    on the Hugging Face hub); the classifier is dropped, the position embedding resampled to
    ``image_size`` and RGB stem weights summed to one channel when ``in_chans`` is 1, all by
    timm's loader. ``model_kwargs`` go to ``timm.create_model`` (for example ``depth``,
    ``drop_path_rate``). ``mean``/``std`` default to the model's pretrained config.
    """
    import timm

    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise MedtuneError(f"timm model {model_name!r}: unknown name; {hint}")
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans, **(model_kwargs or {})}
    if pretrained_path is not None:
        kwargs.update(
            pretrained=True, pretrained_cfg_overlay=_weights_overlay(model_name, pretrained_path)
        )
    model = _create(timm, model_name, image_size, kwargs)
    model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
    cfg = model.pretrained_cfg
    contract = InputContract(
        channels=in_chans,
        size=image_size or int(cfg["input_size"][-1]),
        mean=to_tuple(mean if mean is not None else cfg.get("mean", 0.5), in_chans),
        std=to_tuple(std if std is not None else cfg.get("std", 0.25), in_chans),
    )
    return TimmBackbone(model, contract)


def _weights_overlay(model_name: str, path: str) -> dict[str, Any]:
    """A pretrained-config overlay handing timm the file's state dict, classifier removed.

    Passing the weights (not the path) keeps the pickle check ours and keeps timm's load
    strict: with the classifier already removed, timm need not loosen strictness to drop it,
    so a file for another architecture fails loudly instead of leaving layers random.
    """
    import timm

    state_dict = read_state_dict(path)
    cfg = timm.models.get_pretrained_cfg(model_name)
    classifier = cfg.classifier or ()
    for name in (classifier,) if isinstance(classifier, str) else classifier:
        state_dict.pop(f"{name}.weight", None)
        state_dict.pop(f"{name}.bias", None)
    overlay: dict[str, Any] = {"state_dict": state_dict, "num_classes": 0, "file": str(path)}
    stem = state_dict.get(f"{cfg.first_conv}.weight") if isinstance(cfg.first_conv, str) else None
    if stem is not None and stem.ndim == 4:
        # Tell timm how many channels the file's stem has, so it adapts it only when needed.
        overlay["input_size"] = (stem.shape[1], *cfg.input_size[1:])
    return overlay


def _create(
    timm: Any, model_name: str, image_size: int | None, kwargs: dict[str, Any]
) -> nn.Module:
    try:
        if image_size is not None:
            try:
                return timm.create_model(model_name, img_size=image_size, **kwargs)
            except TypeError as exc:  # convnets take any input size and no img_size argument
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(model_name, **kwargs)
    except (RuntimeError, TypeError) as exc:
        source = kwargs.get("pretrained_cfg_overlay", {}).get("file", model_name)
        raise MedtuneError(
            f"{source}: cannot build timm model {model_name!r}: {first_line(exc)}"
        ) from exc
