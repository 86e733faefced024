"""Augmentations on the fly: a tensor in, a tensor out, seeded by a ``torch.Generator``.

Every step takes a (C, H, W) float image in [0, 1] and returns one in [0, 1] (STYLE.md item 9:
no dictionary twins). Randomness comes only from the generator passed in, so an image's
augmentation is a function of its seed: the data loader derives one seed per sample from
(run seed, epoch, row), and the result does not depend on the number of workers or on a resume.
The pixel work is OpenCV's for resampling and blur (5x faster than torchvision's for a crop or
a rotation, 20x for a blur, on one small image on a 2-core CPU, and the loader must outrun
training by 10x: benchmarks/bench_train.py); intensity changes are a line of torch each.
Images are on the CPU: the loader augments in its worker processes.

Steps are registered by name and composed from a small config (YAML: name -> parameters)::

    augment = build_augment({"crop": {"scale": [0.7, 1.0]}, "rotate": {"degrees": 7}}, size=224)
    view = augment(image, torch.Generator().manual_seed(0))

Steps run in registration order (crop, rotate, hflip, brightness, contrast, gamma, blur, noise),
whatever the order of the config: geometry first, at the output size, so the intensity steps
work on the fewer pixels; noise last, so blur does not smooth it away.

No horizontal flip unless a config names ``hflip``: in radiographs a flip changes laterality
(lead L/R markers, situs, the side of a finding), which is a label of the evaluation suite.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from medtune.errors import MedtuneError

Step = Callable[..., torch.Tensor]  # step(x, generator, **params) -> x
AUGMENTATIONS: dict[str, Step] = {}

# The default for fine-tuning: mild geometry and exposure changes, as between sites and
# acquisitions; no flip (see the module docstring).
DEFAULT_AUGMENT: dict[str, dict[str, Any]] = {
    "crop": {"scale": (0.7, 1.0)},
    "rotate": {"degrees": 7.0},
    "brightness": {"amount": 0.1},
    "contrast": {"amount": 0.1},
    "gamma": {"amount": 0.1},
}
# What each multi-crop view gets after its crop (DINO's colour jitter and blur, for gray images).
DEFAULT_VIEW: dict[str, dict[str, Any]] = {
    "brightness": {"amount": 0.2, "p": 0.8},
    "contrast": {"amount": 0.2, "p": 0.8},
    "gamma": {"amount": 0.2, "p": 0.5},
    "blur": {"sigma": (0.1, 1.5), "p": 0.5},
}


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` (C, H, W) resized to ``size`` px square, without aliasing when it shrinks. The one
    resize of the data path, augmented or not."""
    height, width = x.shape[-2:]
    if height == width == size:
        return x
    return _per_channel(x, lambda plane: _resize_plane(plane, size))


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    # Bilinear up to a whole multiple of the output, then OpenCV's area average by that whole
    # factor: as good as INTER_AREA by a fractional factor (no aliasing), in a third of the
    # time, because area averaging has a fast path for whole factors only.
    ky, kx = -(-plane.shape[0] // size), -(-plane.shape[1] // size)
    if plane.shape != (ky * size, kx * size):
        plane = cv2.resize(plane, (kx * size, ky * size), interpolation=cv2.INTER_LINEAR)
    if ky > 1 or kx > 1:
        plane = cv2.resize(plane, (size, size), interpolation=cv2.INTER_AREA)
    return plane


def _per_channel(x: torch.Tensor, op: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """An OpenCV operation on each (H, W) plane of ``x``, clamped to [0, 1]: a filter's float32
    weights may sum to 1 + 1e-7 (OpenCV's area averaging by a fractional factor did)."""
    planes = [op(np.ascontiguousarray(plane)) for plane in x.numpy()]
    return torch.from_numpy(np.stack(planes)).clamp_(0.0, 1.0)


def register_augment(step: Step) -> Step:
    """Add ``step`` to :data:`AUGMENTATIONS` under its function name."""
    AUGMENTATIONS[step.__name__] = step
    return step


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _happens(generator: torch.Generator | None, p: float) -> bool:
    # Always draw, so the numbers each later step sees do not depend on p.
    return torch.rand((), generator=generator).item() < p


# ---------------------------------------------------------------------------------------------
# The steps. Each takes x (C, H, W) in [0, 1] and the generator, and returns x's like.


@register_augment
def crop(
    x: torch.Tensor,
    generator: torch.Generator | None,
    size: int | None = None,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random resized crop: a box of ``scale`` of the area and ``ratio`` of width to height,
    resized to ``size`` px square (the input's side when None), as torchvision's
    RandomResizedCrop draws it."""
    height, width = x.shape[-2:]
    out = size or height
    top, left, h, w = 0, 0, height, width
    for _ in range(10):  # torchvision's rejection sampling; else the whole image
        area = height * width * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(torch.randint(0, height - ch + 1, (), generator=generator))
            left = int(torch.randint(0, width - cw + 1, (), generator=generator))
            h, w = ch, cw
            break
    return resize(x[:, top : top + h, left : left + w], out)


@register_augment
def rotate(
    x: torch.Tensor, generator: torch.Generator | None, degrees: float = 7.0, p: float = 1.0
) -> torch.Tensor:
    """Rotation by up to ``degrees`` either way (patient positioning); corners fill black."""
    angle = _uniform(generator, -degrees, degrees)
    if not _happens(generator, p):
        return x
    height, width = x.shape[-2:]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    return _per_channel(x, lambda plane: cv2.warpAffine(plane, matrix, (width, height),
                                                        flags=cv2.INTER_LINEAR))  # fmt: skip


@register_augment
def hflip(x: torch.Tensor, generator: torch.Generator | None, p: float = 0.5) -> torch.Tensor:
    """Left-right mirror with probability ``p``. Only when a config names it: a flip changes
    laterality (L/R markers, situs, the side of a finding), so use it only for tasks that do
    not depend on the side, never for models evaluated on laterality."""
    return x.flip(-1) if _happens(generator, p) else x


@register_augment
def brightness(
    x: torch.Tensor, generator: torch.Generator | None, amount: float = 0.1, p: float = 1.0
) -> torch.Tensor:
    """Multiply intensities by a factor in [1 - amount, 1 + amount] (exposure)."""
    factor = _uniform(generator, 1 - amount, 1 + amount)
    return (x * factor).clamp_(0.0, 1.0) if _happens(generator, p) else x


@register_augment
def contrast(
    x: torch.Tensor, generator: torch.Generator | None, amount: float = 0.1, p: float = 1.0
) -> torch.Tensor:
    """Blend with the image's mean by a factor in [1 - amount, 1 + amount] (window width)."""
    factor = _uniform(generator, 1 - amount, 1 + amount)
    if not _happens(generator, p):
        return x
    mean = x.mean()
    return ((x - mean) * factor + mean).clamp_(0.0, 1.0)


@register_augment
def gamma(
    x: torch.Tensor, generator: torch.Generator | None, amount: float = 0.1, p: float = 1.0
) -> torch.Tensor:
    """x ** g with g log-uniform in [1 / (1 + amount), 1 + amount] (detector response, LUT)."""
    g = math.exp(_uniform(generator, -math.log1p(amount), math.log1p(amount)))
    return x.pow(g) if _happens(generator, p) else x  # [0, 1] stays [0, 1]


@register_augment
def blur(
    x: torch.Tensor,
    generator: torch.Generator | None,
    sigma: tuple[float, float] = (0.1, 1.0),
    p: float = 0.5,
) -> torch.Tensor:
    """Gaussian blur with sigma (px) drawn in ``sigma`` (focal spot, scatter, resampling)."""
    s = _uniform(generator, *sigma)
    if not _happens(generator, p):
        return x
    k = 2 * math.ceil(3 * s) + 1  # odd, covers 3 sigma each side
    return _per_channel(x, lambda plane: cv2.GaussianBlur(plane, (k, k), s, sigmaY=s))


@register_augment
def noise(
    x: torch.Tensor, generator: torch.Generator | None, std: float = 0.02, p: float = 0.5
) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (in [0, 1] units: quantum noise of a lower dose)."""
    if not _happens(generator, p):
        return x
    return (x + std * torch.randn(x.shape, generator=generator)).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Composition.


@dataclass(frozen=True)
class Augment:
    """Steps with their parameters, applied in order; picklable for DataLoader workers."""

    steps: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for name, params in self.steps:
            x = AUGMENTATIONS[name](x, generator, **dict(params))
        return x


def build_augment(
    config: Mapping[str, Mapping[str, Any] | None], size: int | None = None
) -> Augment:
    """The steps ``config`` names (name -> parameters, {} or None for the defaults), in the
    canonical order; ``size`` is the crop's output side unless the config sets one.

    Raises MedtuneError on an unknown step or parameter, naming it."""
    unknown = sorted(set(config) - set(AUGMENTATIONS))
    if unknown:
        known = ", ".join(AUGMENTATIONS)
        raise MedtuneError(f"augment: unknown step {unknown[0]!r} (known: {known})")
    steps = []
    for name, step in AUGMENTATIONS.items():
        if name not in config:
            continue
        params = dict(config[name] or {})
        if name == "crop" and size is not None:
            params.setdefault("size", size)
        try:
            inspect.signature(step).bind(None, None, **params)
        except TypeError as err:
            raise MedtuneError(f"augment.{name}: {err}") from None
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        steps.append((name, tuple(params.items())))
    return Augment(tuple(steps))


class MultiCrop:
    """DINO-style views of one image: ``n_global`` crops of ``global_scale`` of the area at
    ``global_size`` px, then ``n_local`` crops of ``local_scale`` at ``local_size`` px, each
    followed by the steps of ``view`` (by default exposure jitter and blur; no flip).

    Returns the list of views, global first, as the self-distillation objective expects:
    the teacher sees the global views, the student all of them."""

    def __init__(
        self,
        global_size: int,
        local_size: int,
        n_local: int,
        n_global: int = 2,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        view: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        view = DEFAULT_VIEW if view is None else view
        if "crop" in view:
            raise MedtuneError("multi-crop: the view steps may not include 'crop' (set the scales)")
        self.n_global, self.n_local = n_global, n_local
        self.global_view = build_augment({"crop": {"scale": global_scale}, **view}, global_size)
        self.local_view = build_augment({"crop": {"scale": local_scale}, **view}, local_size)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        views = [self.global_view(x, generator) for _ in range(self.n_global)]
        return views + [self.local_view(x, generator) for _ in range(self.n_local)]
