"""The GPU training path: batch augmentation on the device (run here on CPU tensors), stored
pixels for it, and the loop's compile option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import InputContract
from medtune.train.augment import DEFAULT_AUGMENT
from medtune.train.checkpoint import latest_complete
from medtune.train.data import ImageDataset
from medtune.train.gpu_augment import BatchAugment, StoredPixels, build_batch_augment
from medtune.train.loop import LoopConfig, fit

GRAY = InputContract(channels=1, size=32, mean=(0.5,), std=(0.25,))
RGB = InputContract(channels=3, size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
# Geometry and exposure off: what is left is the resize and the normalisation.
PLAIN = dict(scale=(1.0, 1.0), degrees=0.0, brightness=0.0, contrast=0.0, gamma=0.0)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 8, side: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, side, side), generator=_seeded(seed), dtype=torch.uint8)


@pytest.mark.parametrize("contract", [GRAY, RGB], ids=["gray", "rgb"])
def test_output_has_the_contracts_shape_dtype_and_normalisation(contract) -> None:
    out = BatchAugment(contract)(_batch(), _seeded(0))
    assert out.shape == (8, contract.channels, 32, 32) and out.dtype == torch.float32
    # A flat gray image, not augmented: each channel is (value / 255 - mean) / std.
    flat = torch.full((2, 64, 64), 200, dtype=torch.uint8)
    plain = BatchAugment(contract, **PLAIN)(flat, _seeded(0))
    for c in range(contract.channels):
        expected = (200 / 255 - contract.mean[c]) / contract.std[c]
        torch.testing.assert_close(plain[:, c], torch.full((2, 32, 32), expected))


def test_pixels_of_any_stored_dtype_scale_to_the_same_input() -> None:
    images = _batch(4)
    augment = BatchAugment(GRAY)
    as_uint16 = images.to(torch.int32).mul(257).to(torch.uint16)  # 255 -> 65535
    as_float = images.float() / 255
    reference = augment(images, _seeded(3))
    torch.testing.assert_close(augment(as_uint16, _seeded(3)), reference)
    torch.testing.assert_close(augment(as_float, _seeded(3)), reference)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    augment = BatchAugment(GRAY, noise_std=0.05)
    images = _batch()
    first, again = augment(images, _seeded(7)), augment(images, _seeded(7))
    assert torch.equal(first, again)
    assert not torch.equal(first, augment(images, _seeded(8)))
    # Each image of a batch gets its own draw: identical inputs come out different.
    same = images[:1].expand(8, -1, -1, -1)
    out = augment(same, _seeded(7))
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("hflip_p", [0.0, 1.0])
def test_no_flip_by_default(hflip_p: float) -> None:
    # Left half bright, right half dark: the default augmentation (crop of 70-100 %, up to 7
    # degrees, exposure) keeps the left brighter in every image; a flip asked for reverses it.
    images = torch.zeros(16, 1, 64, 64, dtype=torch.uint8)
    images[..., :32] = 230
    augment = BatchAugment(GRAY) if hflip_p == 0.0 else BatchAugment(GRAY, hflip_p=hflip_p)
    out = augment(images, _seeded(0))
    left, right = out[..., :8].mean(dim=(1, 2, 3)), out[..., -8:].mean(dim=(1, 2, 3))
    assert bool((left > right).all()) == (hflip_p == 0.0)


@pytest.mark.parametrize("scale", [(0.25, 0.25), (0.5, 0.9), (0.7, 1.0)])
def test_crop_keeps_the_asked_share_of_the_area_and_the_aspect(scale) -> None:
    # Pixel values are their own x (or y) position in [0, 1]: an unrotated crop seen through
    # linear interpolation spans (side of the crop) * (S - 1) / S of that range.
    side = 64
    ramp = (torch.arange(side) + 0.5) / side
    for axis in (-1, -2):
        shape = (1, side) if axis == -1 else (side, 1)
        images = ramp.view(shape).expand(side, side).expand(32, 1, side, side)
        augment = BatchAugment(GRAY, scale=scale, degrees=0.0, brightness=0.0, contrast=0.0,
                               gamma=0.0)  # fmt: skip
        out = augment(images, _seeded(1)) * GRAY.std[0] + GRAY.mean[0]  # back to [0, 1]
        span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
        crop_side = span * 32 / 31
        area = crop_side**2
        assert area.min() >= scale[0] - 1e-3 and area.max() <= scale[1] + 1e-3
        assert out.min() >= 0 and out.max() <= 1  # the crop lies inside the image
        if scale[0] < scale[1]:
            assert area.max() - area.min() > 0.5 * (scale[1] - scale[0])  # drawn, not fixed


def test_rotation_turns_a_line() -> None:
    # A vertical bright line through the centre tilts by up to ``degrees``.
    images = torch.zeros(16, 1, 64, 64, dtype=torch.uint8)
    images[..., 31:33] = 255
    augment = BatchAugment(GRAY, scale=(1.0, 1.0), degrees=20.0, brightness=0.0,
                           contrast=0.0, gamma=0.0)  # fmt: skip
    out = augment(images, _seeded(0))
    weights = out[:, 0] * GRAY.std[0] + GRAY.mean[0]  # the line's brightness, row by row
    centre = (weights * torch.arange(32.0)).sum(-1) / weights.sum(-1)  # (16, 32): x per row
    tilt = torch.rad2deg(torch.atan((centre[:, 29] - centre[:, 2]).abs() / 27))
    assert tilt.max() > 5 and tilt.max() <= 21


def test_shrinking_averages_instead_of_aliasing() -> None:
    # A 1-px checkerboard shrunk 3x is mid-gray; sampling without a low-pass would land on
    # pixel centres and keep 0s and 1s (the batch is first resized with antialiasing).
    board = ((torch.arange(96)[:, None] + torch.arange(96)).remainder(2) * 255).to(torch.uint8)
    out = BatchAugment(GRAY, **PLAIN)(board.expand(2, 1, 96, 96), _seeded(0))
    unit = out * GRAY.std[0] + GRAY.mean[0]
    assert (unit - 0.5).abs().max() < 0.05


def test_config_of_the_cpu_path_maps_onto_the_batch_path() -> None:
    augment = build_batch_augment(DEFAULT_AUGMENT, GRAY)
    assert augment == BatchAugment(GRAY)  # the defaults are the CPU path's defaults
    only_crop = build_batch_augment({"crop": {"scale": [0.5, 1.0]}, "hflip": {}}, GRAY)
    assert only_crop.scale == (0.5, 1.0) and only_crop.degrees == 0.0
    assert only_crop.brightness == 0.0 and only_crop.hflip_p == 0.5
    with pytest.raises(MedtuneError, match="blur"):
        build_batch_augment({"blur": {}}, GRAY)
    with pytest.raises(MedtuneError, match="ratio"):
        build_batch_augment({"crop": {"ratio": [0.75, 1.33]}}, GRAY)
    with pytest.raises(MedtuneError, match="scale"):
        BatchAugment(GRAY, scale=(0.0, 1.0))


def test_stored_pixels_are_the_shards_uint8(ingested_workspace: Path) -> None:
    contract = InputContract(channels=1, size=64, mean=(0.5,), std=(0.25,))
    raw = StoredPixels(ingested_workspace, contract=contract)
    floats = ImageDataset(ingested_workspace, contract=contract)
    assert len(raw) == len(floats)
    for position in (0, len(raw) - 1):
        item = raw[position, 12345]  # a sampler's (position, seed) key
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 64, 64)
        torch.testing.assert_close(item["image"].float() / 255, floats.pixels(position))
        assert item["index"] == floats[position]["index"]
    with pytest.raises(MedtuneError, match="device"):
        StoredPixels(ingested_workspace, contract=contract, augment=DEFAULT_AUGMENT)


# ---------------------------------------------------------------------------------------------
# The loop's compile option (torch.compile in place, by region).


class _Stack(nn.Module):
    """A stem, a stack of repeated layers (the region compile picks), a head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(4, 16)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2))
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


def _data(seed: int) -> dict[str, torch.Tensor]:
    x = torch.randn(16, 4, generator=_seeded(seed))
    return {"x": x, "y": torch.sin(x.sum(1, keepdim=True))}


def _mse(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    return {"loss": nn.functional.mse_loss(model(batch["x"]), batch["y"])}


def _loop(**overrides) -> LoopConfig:
    # A constant rate (min_lr = lr), so a run stopped early and resumed with more steps
    # follows the same schedule as one run straight through.
    base = dict(max_steps=4, lr=1e-2, min_lr=1e-2, grad_clip=None, precision="fp32",
                checkpoint_every=2)  # fmt: skip
    return LoopConfig(**(base | overrides))


def _compiles_here() -> str | None:
    try:
        probe = nn.Linear(2, 2)
        probe.compile()
        probe(torch.ones(1, 2)).sum().backward()
    except Exception as err:  # any failure means: no working compiler on this machine
        return f"torch.compile cannot run here: {type(err).__name__}: {str(err)[:80]}"
    return None


@pytest.mark.slow
def test_compiled_run_trains_as_eager_and_its_checkpoints_load_uncompiled(tmp_path) -> None:
    reason = _compiles_here()
    if reason:
        pytest.skip(reason)
    batches = [_data(s) for s in range(3)]
    eager, compiled = _Stack(), _Stack()
    fit(eager, _mse, batches, _loop(), tmp_path / "eager", progress=False)
    fit(compiled, _mse, batches, _loop(compile=True), tmp_path / "compiled", progress=False)
    assert all(layer._compiled_call_impl is not None for layer in compiled.layers)
    assert compiled._compiled_call_impl is None  # by region: the stack, not the whole model
    for name, value in compiled.state_dict().items():  # same names, same training
        torch.testing.assert_close(value, eager.state_dict()[name], rtol=1e-4, atol=1e-5)
    # The compiled run's checkpoint loads, strictly, into a plain model.
    tensors = load_file(latest_complete(tmp_path / "compiled") / "model.safetensors")
    plain = _Stack(seed=9)
    plain.load_state_dict(tensors, strict=True)
    x = _data(5)["x"]
    torch.testing.assert_close(plain(x), compiled(x))

    # Stopped at step 2 and resumed with compile on: the same weights as straight through.
    first = _Stack()
    fit(first, _mse, batches, _loop(max_steps=2, compile=True), tmp_path / "resumed",
        progress=False)  # fmt: skip
    again = _Stack(seed=3)
    result = fit(again, _mse, batches, _loop(compile=True), tmp_path / "resumed", resume=True,
                 progress=False)  # fmt: skip
    assert result.steps == 4
    for name, value in again.state_dict().items():
        torch.testing.assert_close(value, eager.state_dict()[name], rtol=1e-4, atol=1e-5)
