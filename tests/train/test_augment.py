"""Augmentations: shape and range kept, seeded, never a flip unless asked; multi-crop views."""

from __future__ import annotations

import pytest
import torch

from medtune.errors import MedtuneError
from medtune.train.augment import (
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    DEFAULT_VIEW,
    MultiCrop,
    build_augment,
    resize,
)

# Every step at full strength and probability, so each one surely changes the image.
STRONG = {
    "crop": {"scale": (0.5, 1.0)},
    "rotate": {"degrees": 20.0},
    "hflip": {"p": 1.0},
    "brightness": {"amount": 0.3},
    "contrast": {"amount": 0.3},
    "gamma": {"amount": 0.3},
    "blur": {"sigma": (1.0, 2.0), "p": 1.0},
    "noise": {"std": 0.05, "p": 1.0},
}


def _image(size: int = 48) -> torch.Tensor:
    """A gray ramp from left (black) to right (white), with some texture and both ends
    saturated, where resampling would overshoot: (1, size, size)."""
    ramp = torch.linspace(-0.2, 1.2, size).expand(size, size)
    texture = torch.rand(size, size, generator=torch.Generator().manual_seed(0)) * 0.1
    return (ramp + texture).clamp(0, 1)[None].contiguous()


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_strong_config_names_every_step() -> None:
    assert set(STRONG) == set(AUGMENTATIONS)


@pytest.mark.parametrize("name", list(STRONG))
def test_each_step_keeps_shape_dtype_and_range_and_changes_the_image(name: str) -> None:
    x = _image()
    augment = build_augment({name: STRONG[name]}, size=24)  # the crop also downscales
    for seed in range(8):
        out = augment(x, _seeded(seed))
        assert out.shape == ((1, 24, 24) if name == "crop" else x.shape)
        assert out.dtype == torch.float32
        assert out.min() >= 0.0 and out.max() <= 1.0  # resampling may overshoot by rounding
        if name != "crop":
            assert not torch.equal(out, x)


def test_crop_gives_the_asked_size() -> None:
    out = build_augment({"crop": {}}, size=24)(_image(48), _seeded(0))
    assert out.shape == (1, 24, 24)


def test_full_crop_is_a_resize() -> None:
    x = _image(32)
    out = build_augment({"crop": {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}})(x, _seeded(0))
    torch.testing.assert_close(out, x)


def test_shrinking_averages_instead_of_aliasing() -> None:
    # A 1-px checkerboard halved is mid-gray everywhere; subsampling would keep 0s and 1s.
    board = (torch.arange(64)[:, None] + torch.arange(64)).remainder(2).float()[None]
    torch.testing.assert_close(resize(board, 32), torch.full((1, 32, 32), 0.5))
    shrunk = build_augment({"crop": {"scale": (0.8, 0.9)}}, size=20)(board, _seeded(0))
    assert (shrunk - 0.5).abs().max() < 0.1


def test_rotation_fills_corners_black() -> None:
    rotate = build_augment({"rotate": {"degrees": 30.0}})
    outs = [rotate(torch.ones(1, 32, 32), _seeded(seed)) for seed in range(10)]
    assert all(out[0, 16, 16] == 1.0 for out in outs)  # the centre stays
    assert sum(out[0, 0, 0] == 0.0 for out in outs) >= 5  # most angles clear the corner


def test_same_seed_same_result_other_seed_differs() -> None:
    augment = build_augment(STRONG, size=32)
    x = _image()
    a, b, c = augment(x, _seeded(7)), augment(x, _seeded(7)), augment(x, _seeded(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_default_augment_never_flips() -> None:
    # The ramp is darker on the left: after any default augmentation it still is.
    assert "hflip" not in DEFAULT_AUGMENT and "hflip" not in DEFAULT_VIEW
    augment = build_augment(DEFAULT_AUGMENT, size=32)
    for seed in range(40):
        out = augment(_image(), _seeded(seed))[0]
        assert out[:, :8].mean() < out[:, -8:].mean(), seed


def test_flip_only_when_asked() -> None:
    x = _image()
    out = build_augment({"hflip": {"p": 1.0}})(x, _seeded(0))
    assert torch.equal(out, x.flip(-1))


def test_probability_zero_leaves_the_image() -> None:
    x = _image()
    off = {name: {**params, "p": 0.0} for name, params in STRONG.items() if "p" in params}
    assert torch.equal(build_augment(off)(x, _seeded(3)), x)


def test_steps_run_in_the_canonical_order_whatever_the_config_order() -> None:
    forward = build_augment({"crop": {}, "noise": {"p": 1.0}}, size=32)
    backward = build_augment({"noise": {"p": 1.0}, "blur": {}, "crop": {}}, size=32)
    assert [name for name, _ in backward.steps] == ["crop", "blur", "noise"]
    assert [name for name, _ in forward.steps] == ["crop", "noise"]


def test_lists_from_yaml_become_tuples_and_pickle() -> None:
    import pickle

    augment = build_augment({"crop": {"scale": [0.5, 1.0]}}, size=16)
    assert pickle.loads(pickle.dumps(augment)) == augment


@pytest.mark.parametrize(
    ("config", "message"),
    [({"flip": {}}, "unknown step 'flip'"), ({"rotate": {"angle": 3}}, "augment.rotate")],
)
def test_bad_config_is_an_error(config: dict, message: str) -> None:
    with pytest.raises(MedtuneError, match=message):
        build_augment(config)


def test_multi_crop_views() -> None:
    crops = MultiCrop(global_size=32, local_size=16, n_local=3)
    views = crops(_image(), _seeded(0))
    assert [v.shape for v in views] == [(1, 32, 32)] * 2 + [(1, 16, 16)] * 3
    assert not torch.equal(views[0], views[1])  # two different global crops
    again = crops(_image(), _seeded(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)


def test_multi_crop_local_views_cover_less() -> None:
    # A local crop of a ramp spans a narrower range of intensities than a global one.
    crops = MultiCrop(32, 32, n_local=1, global_scale=(1.0, 1.0), local_scale=(0.05, 0.1),
                      view={})  # fmt: skip
    for seed in range(5):
        whole, _, local = crops(_image(), _seeded(seed))
        assert local.amax() - local.amin() < whole.amax() - whole.amin()


def test_multi_crop_refuses_a_crop_step() -> None:
    with pytest.raises(MedtuneError, match="crop"):
        MultiCrop(32, 16, 2, view={"crop": {}})
