"""LoRA on any backbone, through PEFT: inject adapters in place, merge them for export, and
save or load the adapter alone (PEFT's own layout, so it can be shared without the backbone).

PEFT's ``inject_adapter_in_model`` wraps the layers the encoder names in ``lora_targets`` (the
attention and MLP linears, found per family by ``medtune.models.families``) and leaves the
encoder's class and attributes (``dim``, ``contract``, ``forward_features``) as they were, so
everything downstream keeps talking to the same :class:`Encoder`::

    params = inject_lora(encoder, rank=8, alpha=16)   # only these train
    plain = merged_copy(encoder)                      # the same outputs, plain weights
    save_adapter(encoder, run / "adapter")            # adapter_config.json + safetensors
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder
from medtune.workspace import atomic_path, atomic_write_text

ADAPTER_NAME = "default"  # PEFT's; the only adapter medtune injects
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PeftModel.save_pretrained prefixes every key with this; kept so PeftModel.from_pretrained(
# encoder, directory) loads our adapters too.
_PEFT_PREFIX = "base_model.model."

M = TypeVar("M", bound=nn.Module)


def join_targets(targets: Sequence[str]) -> str:
    """One regex for PEFT's ``target_modules`` (which full-matches a single string)."""
    return "|".join(f"(?:{target})" for target in targets)


def inject_lora(
    encoder: Encoder,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] | None = None,
    seed: int = 0,
) -> list[nn.Parameter]:
    """Wrap ``encoder``'s ``targets`` (default its ``lora_targets``) with LoRA adapters in place;
    return the adapter parameters, the only ones left trainable.

    Adapters start as PEFT initialises them (A random from ``seed``, B = 0): the encoder's
    outputs do not change until they train, and the same seed gives the same run."""
    from peft import LoraConfig

    targets = list(targets if targets is not None else encoder.lora_targets)
    if not targets:
        raise MedtuneError(f"{encoder.family} backbone: no layers for LoRA (set lora.targets)")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=join_targets(targets)
    )
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
        torch.manual_seed(seed)
        _inject(config, encoder)
    return lora_parameters(encoder)


def _inject(config: Any, encoder: Encoder) -> None:
    from peft import inject_adapter_in_model

    try:
        inject_adapter_in_model(config, encoder, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # PEFT: "Target modules ... not found in the base model"
        first = str(exc).strip().splitlines()[0]
        raise MedtuneError(f"{encoder.family} backbone: LoRA cannot wrap it ({first})") from exc
    _pin_attention_weights(encoder)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The LoRA adapter parameters (``lora_A``, ``lora_B``, ...) inside ``module``."""
    return [p for name, p in module.named_parameters() if _is_lora_name(name)]


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds PEFT LoRA layers."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


def merged_copy(encoder: M) -> M:
    """A copy of ``encoder`` (or any module) with every LoRA layer merged into its base layer and
    removed: plain weights, the same class and contract, the same outputs (within float
    rounding). ``encoder`` itself keeps its adapters (a run may still save them or train on)."""
    merged = copy.deepcopy(encoder)
    for name in _outermost_lora_layers(merged):
        parent_name, _, child_name = name.rpartition(".")
        parent = merged.get_submodule(parent_name)
        layer = getattr(parent, child_name)
        if hasattr(layer, "unload_and_optionally_merge_module"):
            # nn.MultiheadAttention: PEFT's own path re-registers its merged in/out weights.
            plain = layer.unload_and_optionally_merge_module(
                merge=True, safe_merge=True, adapter_names=None
            )
        else:
            layer.merge(safe_merge=True)
            plain = layer.get_base_layer()
        setattr(parent, child_name, plain)
    merged.__dict__.pop("peft_config", None)
    return merged


def save_adapter(encoder: Encoder, directory: str | os.PathLike[str]) -> Path:
    """Write ``encoder``'s adapter as PEFT does (``adapter_config.json`` and
    ``adapter_model.safetensors``, keys as ``PeftModel.save_pretrained`` writes them): a few MB
    a user can share, applied to the same backbone by :func:`load_adapter` or
    ``peft.PeftModel.from_pretrained(encoder, directory)``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = _peft_config(encoder)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(encoder, adapter_name=ADAPTER_NAME)
    state = {_PEFT_PREFIX + k: v.detach().contiguous() for k, v in state.items()}
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    record = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    atomic_write_text(directory / ADAPTER_CONFIG, json.dumps(record, indent=2, sort_keys=True))
    return directory


def load_adapter(encoder: Encoder, directory: str | os.PathLike[str]) -> list[nn.Parameter]:
    """Inject the adapter saved in ``directory`` into ``encoder`` (built as the adapter's base
    was) and load its weights; return the adapter parameters."""
    from peft import LoraConfig, set_peft_model_state_dict

    from medtune.models.weights import read_state_dict

    directory = Path(directory)
    try:
        config = LoraConfig.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as exc:
        raise MedtuneError(f"{directory}: not a PEFT LoRA adapter ({exc})") from exc
    state = read_state_dict(directory / ADAPTER_WEIGHTS)
    state = {k.removeprefix(_PEFT_PREFIX): v for k, v in state.items()}
    _inject(config, encoder)
    result = set_peft_model_state_dict(encoder, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if _is_lora_name(k)]
    if missing or result.unexpected_keys:
        raise MedtuneError(
            f"{directory}: the adapter does not fit this backbone "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected keys)"
        )
    return lora_parameters(encoder)


def _peft_config(encoder: Encoder) -> Any:
    configs = getattr(encoder, "peft_config", None)
    if not configs or ADAPTER_NAME not in configs:
        raise MedtuneError(f"{encoder.family} backbone: has no LoRA adapter to save")
    return configs[ADAPTER_NAME]


def _is_lora_name(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def _outermost_lora_layers(module: nn.Module) -> list[str]:
    """Names of the LoRA layers not nested in another (an attention's wrapped out_proj is
    merged by its attention layer)."""
    from peft.tuners.lora import LoraLayer

    names = [n for n, m in module.named_modules() if isinstance(m, LoraLayer)]
    return [n for n in names if not any(n.startswith(other + ".") for other in names)]


# --- nn.MultiheadAttention (open_clip towers) -----------------------------------------------
# PEFT's LoRA for nn.MultiheadAttention adds the adapter's update to the base weights before
# each forward and subtracts it after: (W + dW) - dW is W only up to rounding, so the frozen
# weights would drift a little at every step, and they become new Parameter objects each time.
# Hooks put the original Parameters back after each forward: frozen stays bit-identical. They
# live on PEFT's wrapper, so merging (which replaces the wrapper by its base) drops them.
# Also known: PEFT 0.21 adds out_proj's update twice, in the forward and in the merge alike
# (huggingface/peft PR #3774, open), so a merged export still equals the trained model; only an
# open_clip adapter file applied by a PEFT with that fix would see half the out_proj update.


def _pin_attention_weights(encoder: Encoder) -> None:
    from peft.tuners.lora.layer import MultiheadAttention

    for module in encoder.modules():
        if isinstance(module, MultiheadAttention) and not getattr(module, "_medtune_pinned", False):
            module.register_forward_pre_hook(_remember_weights)
            module.register_forward_hook(_restore_weights)
            module._medtune_pinned = True


def _remember_weights(module: nn.Module, args: Any) -> None:
    base = module.get_base_layer()
    module._medtune_weights = (base.in_proj_weight, base.out_proj.get_base_layer().weight)


def _restore_weights(module: nn.Module, args: Any, output: Any) -> None:
    in_proj, out_proj = module.__dict__.pop("_medtune_weights")
    base = module.get_base_layer()
    out_base = base.out_proj.get_base_layer()
    del base.in_proj_weight, out_base.weight
    base.register_parameter("in_proj_weight", in_proj)
    out_base.register_parameter("weight", out_proj)
