"""Learning-rate schedule (cosine with linear warm-up) and an exponential moving average of weights.

The schedule is a pure function of the optimizer step, as in nanoGPT's ``get_lr``: nothing to
save in a checkpoint beyond the step, and a resumed run sets the same rate as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def cosine_lr(step: int, base_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0):
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` (``base_lr / warmup_steps`` at step 0, ``base_lr`` at
    step ``warmup_steps``), then a half cosine down to ``min_lr`` at ``max_steps``::

        cosine_lr(10, 1e-3, warmup_steps=10, max_steps=100)   # 1e-3
        cosine_lr(100, 1e-3, warmup_steps=10, max_steps=100)  # 0.0
    """
    if step < warmup_steps:
        # (step + 1) so the first step already moves the weights.
        return base_lr * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WeightEma:
    """An exponential moving average of the parameters being trained.

    Only the trainable parameters are shadowed: for a probe or LoRA run that is the head and the
    adapters, not a frozen backbone (torch's ``AveragedModel`` and timm's ``ModelEmaV3`` copy the
    whole model). Shadows are keyed by parameter name, so they save to safetensors as they are.
    """

    def __init__(self, named: Iterable[tuple[str, nn.Parameter]], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay {decay} is not in (0, 1)")
        self.decay = decay
        self.params = dict(named)
        self.shadow = {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, after each optimizer step."""
        names = list(self.params)
        torch._foreach_lerp_(
            [self.shadow[n] for n in names],
            [self.params[n].detach() for n in names],
            1 - self.decay,
        )

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the averaged weights into the model for the ``with`` block (evaluation)."""
        backup = {name: p.detach().clone() for name, p in self.params.items()}
        self._copy_into_params(self.shadow)
        try:
            yield
        finally:
            self._copy_into_params(backup)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if set(tensors) != set(self.shadow):
            raise ValueError("ema tensors do not name the parameters being trained")
        for name, value in tensors.items():
            self.shadow[name].copy_(value)

    @torch.no_grad()
    def _copy_into_params(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, p in self.params.items():
            p.copy_(tensors[name])
