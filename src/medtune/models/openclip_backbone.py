"""The image tower of an open_clip model (CLIP, BiomedCLIP-style) as a medtune backbone.

Only the vision tower is built (open_clip's ``_build_vision_tower``), from a built-in config
name or a local ``open_clip_config.json``: building the whole model would build its text tower
too, and a Hugging Face text tower (BiomedCLIP's PubMedBERT) would fetch its config online.
Weights come from a local safetensors file holding the whole model (``visual.*`` keys) or the
tower alone. Features are taken before the CLIP projection, as timm's ``pre_logits``: the
projection only serves CLIP's own text matching, and tokens and pooled vector then share a width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.families import find_lora_targets, to_tuple
from medtune.models.registry import register_backbone
from medtune.models.timm_backbone import TimmBackbone
from medtune.models.weights import apply_state_dict, read_state_dict

# Weight files open_clip's own local-dir loader looks for, safetensors only.
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
)


class OpenClipViT(Encoder):
    """open_clip's own VisionTransformer behind the encoder contract."""

    family = "open_clip"

    def __init__(self, visual: nn.Module, contract: InputContract) -> None:
        super().__init__()
        if visual.attn_pool is not None:
            raise MedtuneError(
                "open_clip: towers with an attentional pooler (CoCa) are not supported"
            )
        if visual.pool_type not in ("tok", "avg"):
            raise MedtuneError(f"open_clip: pool_type {visual.pool_type!r} is not supported")
        visual.proj = None  # features are taken before it; see the module docstring
        self._avg = visual.pool_type == "avg"
        self.visual = visual
        self.contract = contract
        self.dim = int(visual.transformer.width)
        # PEFT's LoRA wraps nn.MultiheadAttention whole (its in_proj and out_proj), plus the
        # MLP linears; towers built with open_clip's custom blocks get the MLP linears only.
        self.lora_targets = find_lora_targets(
            visual, leaves={"attn"}, types=(nn.MultiheadAttention,)
        ) + find_lora_targets(visual, leaves={"c_fc", "c_proj"})
        side = contract.size // _first(visual.patch_size)
        self.grid = (side, side)

    def forward_features(self, x: torch.Tensor) -> Features:
        self.contract.check(x)
        out = self.visual.forward_intermediates(
            x,
            indices=1,  # the last block only, before the final LayerNorm
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        prefix, tokens = out["image_intermediates_prefix"][0], out["image_intermediates"][0]
        ln_post = self.visual.ln_post
        # Pool as open_clip's _pool does: the class token or the patch average, normed before
        # or (final_ln_after_pool) after pooling.
        if self.visual.final_ln_after_pool:
            pooled = ln_post(tokens.mean(dim=1) if self._avg else prefix[:, 0])
            tokens = ln_post(tokens)
        else:
            tokens = ln_post(tokens)
            pooled = tokens.mean(dim=1) if self._avg else ln_post(prefix[:, 0])
        return Features(pooled=pooled, tokens=tokens, grid=self.grid)


@register_backbone("open_clip")
def open_clip_backbone(
    model_name: str | None = None,
    config_path: str | None = None,
    pretrained_path: str | None = None,
) -> Encoder:
    """An open_clip image tower: a built-in ``model_name`` (``ViT-B-16``) or ``config_path`` (an
    ``open_clip_config.json``, or the directory holding it and, by default, the weights).

    ``pretrained_path``: a ``.safetensors`` file. A tower that is a timm model (BiomedCLIP)
    becomes a timm-family encoder labelled ``open_clip``.
    """
    from open_clip.model import _build_vision_tower

    model_cfg, preprocess_cfg, directory = _read_config(model_name, config_path)
    vision_cfg = dict(model_cfg["vision_cfg"])
    visual = _build_vision_tower(
        model_cfg["embed_dim"], vision_cfg, quick_gelu=model_cfg.get("quick_gelu", False)
    )
    weights = pretrained_path or _default_weights(directory)
    if weights is not None:
        _load_visual(visual, weights)
    contract = _contract(vision_cfg, preprocess_cfg)
    if hasattr(visual, "trunk"):  # open_clip's TimmModel: the trunk is a plain timm model
        return TimmBackbone(visual.trunk, contract, family="open_clip")
    if not hasattr(visual, "transformer"):
        raise MedtuneError(
            f"open_clip {model_name or config_path}: only ViT image towers are supported"
        )
    return OpenClipViT(visual, contract)


def _read_config(
    model_name: str | None, config_path: str | None
) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    if config_path is not None:
        path = Path(config_path)
        directory = path if path.is_dir() else None
        path = path / "open_clip_config.json" if path.is_dir() else path
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MedtuneError(f"{path}: cannot read the open_clip config ({exc})") from exc
        return config.get("model_cfg", config), config.get("preprocess_cfg", {}), directory
    if model_name is None:
        raise MedtuneError("open_clip backbone: give model_name or config_path")
    return _builtin_config(model_name), {}, None


def _builtin_config(model_name: str) -> dict[str, Any]:
    import difflib

    import open_clip

    if ":" in model_name:  # hf-hub: would download; local-dir: is config_path's job
        raise MedtuneError(f"open_clip {model_name!r}: use config_path for a local directory")
    config = open_clip.get_model_config(model_name)
    if config is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise MedtuneError(f"open_clip model {model_name!r}: unknown name; {hint}")
    return config


def _default_weights(directory: Path | None) -> Path | None:
    if directory is None:
        return None
    for name in _WEIGHT_NAMES:
        if (directory / name).is_file():
            return directory / name
    pickles = sorted(directory.glob("*.bin")) + sorted(directory.glob("*.pt*"))
    if pickles:  # refused with the pickle explanation
        read_state_dict(pickles[0])
    return None


def _load_visual(visual: nn.Module, path: str | Path) -> None:
    state_dict = read_state_dict(path)
    if any(key.startswith("visual.") for key in state_dict):  # a whole CLIP checkpoint
        state_dict = {
            k.removeprefix("visual."): v for k, v in state_dict.items() if k.startswith("visual.")
        }
    apply_state_dict(visual, state_dict, path)


def _contract(vision_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> InputContract:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return InputContract(
        channels=3,
        size=_first(vision_cfg.get("image_size", 224)),
        mean=to_tuple(preprocess_cfg.get("mean", OPENAI_DATASET_MEAN), 3),
        std=to_tuple(preprocess_cfg.get("std", OPENAI_DATASET_STD), 3),
    )


def _first(value: int | tuple[int, ...] | list[int]) -> int:
    return int(value[0] if isinstance(value, list | tuple) else value)
