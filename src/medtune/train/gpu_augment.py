"""Augmentation of whole batches on the training device: uint8 pixels in, the contract's input out.

On a GPU the per-image OpenCV path of :mod:`medtune.train.augment` cannot keep up: a ViT-B/16
trains on thousands of images a second, and the loader's workers would have to decode, crop,
rotate and normalise each. Here the loader only memory-maps and collates the stored pixels
(:class:`StoredPixels`, uint8 or uint16), and :class:`BatchAugment` does the rest as a few tensor
ops on the device: one ``grid_sample`` for crop, rotation and resize together, then exposure
changes per image, noise, and normalisation to the backbone's :class:`InputContract`.

The steps and defaults are those of :data:`~medtune.train.augment.DEFAULT_AUGMENT`, drawn per
image: a square crop of ``scale`` of the area (aspect kept), a rotation of up to ``degrees``
(corners fill black), brightness, contrast and gamma; noise off unless ``noise_std`` is set; no
flip unless ``hflip_p`` is set (a flip changes laterality: see augment.py). Every random number
comes from the ``generator`` passed in (or torch's global one, which checkpoints save), a fixed
count per batch, so the same seed gives the same batch on the same device::

    augment = BatchAugment(encoder.contract)
    images = augment(batch["image"], torch.Generator("cuda").manual_seed(0))  # (B, C, S, S)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medtune.errors import MedtuneError
from medtune.models.contract import InputContract
from medtune.train.data import ImageDataset

_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}
# Draws per image, in this order: crop scale, crop x, crop y, angle, flip, brightness, contrast,
# gamma, noise on/off.
_DRAWS = 9


@dataclass(frozen=True)
class BatchAugment:
    """Random crop, rotation and exposure changes of a batch, then the contract's shape and
    normalisation; ``__call__(images, generator)`` takes (B, H, W) or (B, 1|C, H, W) pixels
    (uint8, uint16, or float in [0, 1]) on any device and returns (B, C, S, S) float32."""

    contract: InputContract
    scale: tuple[float, float] = (0.7, 1.0)  # fraction of the image's area the crop keeps
    degrees: float = 7.0  # rotation, either way
    brightness: float = 0.1  # intensities times a factor in [1 - b, 1 + b]
    contrast: float = 0.1  # blend with the image mean by a factor in [1 - c, 1 + c]
    gamma: float = 0.1  # x ** g, g log-uniform in [1 / (1 + a), 1 + a]
    noise_std: float = 0.0  # Gaussian noise in [0, 1] units, with probability noise_p
    noise_p: float = 0.5
    hflip_p: float = 0.0  # left-right mirror; off by default (laterality)

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise MedtuneError(f"batch augment: crop scale {self.scale} is not within (0, 1]")

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = _as_unit_float(images)
        draws = torch.rand(x.shape[0], _DRAWS, generator=generator, device=x.device)
        x = _presize(x, self.contract.size, self.scale[0])
        x = F.grid_sample(x, self._grid(draws, x.shape[0]), mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # fmt: skip
        x = self._exposure(x, draws)
        if self.noise_std > 0:
            on = (draws[:, 8] < self.noise_p).view(-1, 1, 1, 1)
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            x = torch.where(on, x + self.noise_std * noise, x).clamp_(0.0, 1.0)
        return _normalise(x, self.contract)

    def _grid(self, draws: torch.Tensor, batch: int) -> torch.Tensor:
        """The sampling grid: output pixel -> input position, in [-1, 1] coordinates."""
        low, high = self.scale
        side = torch.sqrt(low + (high - low) * draws[:, 0])  # crop side / image side
        room = 1.0 - side  # the crop's centre stays where the whole crop fits
        cx, cy = (2 * draws[:, 1] - 1) * room, (2 * draws[:, 2] - 1) * room
        angle = (2 * draws[:, 3] - 1) * math.radians(self.degrees)
        flip = torch.where(draws[:, 4] < self.hflip_p, -1.0, 1.0)
        cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, cx], 1), torch.stack([sin * flip, cos, cy], 1)], 1
        )
        size = self.contract.size
        return F.affine_grid(theta, [batch, 1, size, size], align_corners=False)

    def _exposure(self, x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        per_image = (-1, 1, 1, 1)
        factor = 1 + self.brightness * (2 * draws[:, 5] - 1)
        x = (x * factor.view(per_image)).clamp_(0.0, 1.0)
        factor = (1 + self.contrast * (2 * draws[:, 6] - 1)).view(per_image)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factor + mean).clamp_(0.0, 1.0)
        g = torch.exp(math.log1p(self.gamma) * (2 * draws[:, 7] - 1))
        return x.pow(g.view(per_image))


def build_batch_augment(
    config: Mapping[str, Mapping[str, Any] | None], contract: InputContract
) -> BatchAugment:
    """The :class:`BatchAugment` of an augmentation config of :func:`~medtune.train.augment.
    build_augment` (crop, rotate, hflip, brightness, contrast, gamma, noise), so one recipe
    section serves both paths; a step left out is off. Raises MedtuneError on a step or
    parameter the batch path does not have (blur; crop ratio or size)."""
    steps = {name: dict(params or {}) for name, params in config.items()}
    values: dict[str, Any] = {"degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0}
    known = {
        "crop": {"scale": "scale"},
        "rotate": {"degrees": "degrees"},
        "hflip": {"p": "hflip_p"},
        "brightness": {"amount": "brightness"},
        "contrast": {"amount": "contrast"},
        "gamma": {"amount": "gamma"},
        "noise": {"std": "noise_std", "p": "noise_p"},
    }
    defaults = BatchAugment(contract)
    for name, params in steps.items():
        if name not in known:
            raise MedtuneError(f"batch augment: no step {name!r} on the device (known: "
                               f"{', '.join(known)})")  # fmt: skip
        if name in ("rotate", "brightness", "contrast", "gamma") and "p" in params:
            raise MedtuneError(f"batch augment.{name}: 'p' is not supported (always applied)")
        unknown = sorted(set(params) - set(known[name]))
        if unknown:
            raise MedtuneError(f"batch augment.{name}: unknown parameter {unknown[0]!r}")
        for key, field in known[name].items():
            values[field] = params.get(key, getattr(defaults, field))
        if name == "hflip":
            values["hflip_p"] = params.get("p", 0.5)  # naming hflip turns it on, as augment.py
    if "scale" in values:
        values["scale"] = tuple(values["scale"])
    return BatchAugment(contract, **values)


class StoredPixels(ImageDataset):
    """:class:`ImageDataset` items whose image is the stored pixels as they lie in the shard,
    (1, H, W) uint8 or uint16, for :class:`BatchAugment` on the device: the loader's workers
    only copy from the memory map and collate. Takes ImageDataset's arguments but ``augment``."""

    def __init__(self, workspace: Any, *, contract: InputContract, **kwargs: Any) -> None:
        if kwargs.get("augment") is not None:
            raise MedtuneError("stored pixels: augmentation runs on the device (BatchAugment)")
        super().__init__(workspace, contract=contract, **kwargs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        position = key[0] if isinstance(key, tuple) else key
        return self.item(position, torch.from_numpy(self.stored(position).copy())[None])


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32 in [0, 1] from stored pixels."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise MedtuneError(f"batch augment: images of shape {tuple(images.shape)}, expected "
                           "(B, H, W) or (B, C, H, W)")  # fmt: skip
    if images.dtype in _SCALE:
        return images.float().div_(_SCALE[images.dtype])
    return images.float()


def _presize(x: torch.Tensor, size: int, min_scale: float) -> torch.Tensor:
    # grid_sample interpolates without low-pass filtering: shrinking by more than ~1.2x would
    # alias (moire in rib edges and grids). An antialiased resize of the whole batch first brings
    # the smallest crop near the output size; larger crops then shrink by at most
    # 1 / sqrt(min_scale), about 1.2x at the default 0.7.
    target = math.ceil(size / math.sqrt(min_scale))
    if max(x.shape[-2:]) <= target:
        return x
    return F.interpolate(x, size=(target, target), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0.0, 1.0)  # fmt: skip


def _normalise(x: torch.Tensor, contract: InputContract) -> torch.Tensor:
    # Python floats, not tensors made from the contract: a host-to-device copy each batch would
    # wait for the GPU to finish the previous step.
    if x.shape[1] == contract.channels:
        planes = x.unbind(1)
    elif x.shape[1] == 1:
        planes = (x[:, 0],) * contract.channels  # gray repeated for a 3-channel backbone
    else:
        raise MedtuneError(f"batch augment: {x.shape[1]} channels for a contract of "
                           f"{contract.channels}")  # fmt: skip
    normalised = [(p - m) / s for p, m, s in zip(planes, contract.mean, contract.std, strict=True)]
    return torch.stack(normalised, 1)
