"""Fine-tuning modes: which of the backbone's parameters train. That is all that differs
between probing, LoRA and full fine-tuning (STYLE.md item 3); every task then runs the one
loop with ``prepared.trainable`` plus its own head's parameters::

    prepared = prepare_backbone(backbone.encoder, "lora", config.lora)
    features = prepared.features(batch["image"])       # Features(pooled, tokens, grid)
    fit(model, step, loader, loop, run, trainable=[*prepared.trainable, *head.parameters()])
    export_model(..., encoder=finish_backbone(prepared),
                 write_extra=lambda d: save_adapter(prepared, d / "adapter"))

- ``probe``: the backbone is frozen, in eval mode (no dropout, no norm statistics updates) and
  run under ``no_grad`` (no activations kept for backward: several times faster, less memory).
- ``lora``: PEFT LoRA adapters injected in place into the attention and MLP layers; only they
  train. For export they are merged into plain weights.
- ``full``: every backbone parameter trains.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from medtune.config_train import LoraSection
from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features

MODES = ("probe", "lora", "full")
Mode = Literal["probe", "lora", "full"]


@dataclass
class Prepared:
    """A backbone made ready for a fine-tuning mode."""

    encoder: Encoder  # the encoder to call: for "lora", the original one with adapters injected
    mode: str  # "probe" | "lora" | "full"
    trainable: list[nn.Parameter] = field(default_factory=list)  # the backbone's, to train
    frozen: bool = False  # probe: eval mode and no_grad

    def features(self, x: torch.Tensor) -> Features:
        """``encoder.forward_features(x)``; when frozen, in eval mode and under ``no_grad``
        (re-set each call: a task's ``model.train()`` would otherwise switch dropout back on)."""
        if not self.frozen:
            return self.encoder.forward_features(x)
        if self.encoder.training:
            self.encoder.eval()
        with torch.no_grad():
            return self.encoder.forward_features(x)

    def no_grad(self) -> contextlib.AbstractContextManager[None]:
        """``torch.no_grad()`` when frozen, else a no-op: for tasks that call the encoder's
        parts themselves."""
        return torch.no_grad() if self.frozen else contextlib.nullcontext()


def prepare_backbone(encoder: Encoder, mode: str, lora: LoraSection) -> Prepared:
    """Make ``encoder`` ready for ``mode`` ("probe", "lora" or "full"); ``lora`` gives the
    adapters' rank, alpha, dropout and target layers (used by "lora" only). LoRA is injected in
    place: the returned ``encoder`` is the same object."""
    if mode == "probe":
        encoder.requires_grad_(False)
        encoder.eval()
        return Prepared(encoder=encoder, mode=mode, trainable=[], frozen=True)
    if mode == "lora":
        from medtune.models.lora import inject_lora

        encoder.requires_grad_(False)
        params = inject_lora(
            encoder, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets
        )
        return Prepared(encoder=encoder, mode=mode, trainable=params)
    if mode == "full":
        encoder.requires_grad_(True)
        return Prepared(encoder=encoder, mode=mode, trainable=list(encoder.parameters()))
    raise MedtuneError(f"fine-tuning mode {mode!r}: unknown (use {', '.join(MODES)})")


def finish_backbone(prepared: Prepared) -> Encoder:
    """The encoder to export: for "lora", a copy with the adapters merged into plain weights
    (same class, contract and outputs; ``prepared`` keeps its adapters); else the encoder."""
    if prepared.mode != "lora":
        return prepared.encoder
    from medtune.models.lora import merged_copy

    return merged_copy(prepared.encoder)


def save_adapter(prepared: Prepared, directory: Path) -> None:
    """For "lora", write the PEFT adapter (``adapter_config.json`` and
    ``adapter_model.safetensors``) into ``directory``, to share without the backbone; for the
    other modes, nothing."""
    if prepared.mode != "lora":
        return
    from medtune.models.lora import save_adapter as save

    save(prepared.encoder, directory)
