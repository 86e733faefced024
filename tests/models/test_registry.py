"""The backbone and text-tower registries: names, config keys, and the errors users see."""

from __future__ import annotations

import pytest
import torch

from medtune.errors import MedtuneError
from medtune.models import (
    BACKBONES,
    Encoder,
    Features,
    InputContract,
    backbone_from_config,
    backbone_names,
    create_backbone,
    create_text_encoder,
    register_backbone,
)


def test_builtin_families_are_registered() -> None:
    names = backbone_names()
    for name in ["medtune-vit", "medtune-vit-tiny", "medtune-vit-small", "medtune-vit-base"]:
        assert name in names
    assert {"timm", "hf", "open_clip"} <= set(names)


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(MedtuneError, match=r"'medtune-vt': unknown name; did you mean medtune-vit"):
        create_backbone("medtune-vt")
    with pytest.raises(MedtuneError, match=r"known: .*open_clip"):
        create_backbone("resnet-from-mars")
    with pytest.raises(MedtuneError, match="did you mean all-minilm-l6-v2"):
        create_text_encoder("minilm")


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(MedtuneError, match=r"unknown key 'img_size'; did you mean 'image_size'\?"):
        create_backbone("medtune-vit", img_size=64)
    with pytest.raises(MedtuneError, match="unknown key 'colour'; it takes"):
        create_backbone("medtune-vit-tiny", colour="red")


def test_plain_dict_config_maps_to_kwargs() -> None:
    config = {"name": "medtune-vit-base", "image_size": 32, "patch_size": 16, "depth": 1}
    vit = backbone_from_config(config)
    assert (vit.dim, len(vit.blocks), vit.contract.size, vit.grid) == (768, 1, 32, (2, 2))
    assert config["name"] == "medtune-vit-base"  # the caller's mapping is left as it was
    assert backbone_from_config({"depth": 1}).family == "medtune-vit"  # the default backbone


class _Constant(Encoder):
    family = "test"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.lora_targets = dim, []
        self.contract = InputContract(channels=1, size=4, mean=(0.5,), std=(0.25,))

    def forward_features(self, x: torch.Tensor) -> Features:
        return Features(torch.zeros(len(x), self.dim), torch.zeros(len(x), 1, self.dim), (1, 1))


def test_a_new_backbone_is_one_decorated_function() -> None:
    @register_backbone("test-constant")
    def constant(dim: int = 3) -> Encoder:
        return _Constant(dim)

    try:
        assert create_backbone("test-constant", dim=5)(torch.zeros(2, 1, 4, 4)).shape == (2, 5)
        register_backbone("test-constant")(constant)  # the same function again is harmless
        with pytest.raises(MedtuneError, match="registered twice"):
            register_backbone("test-constant")(lambda: _Constant(1))
    finally:
        BACKBONES.pop("test-constant")
