"""The timm, Hugging Face and open_clip families: each is built with random weights from a
config, saved the way a user's checkpoint looks, and loaded back through the user's path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models import Encoder, create_backbone, save_weights
from tests.models import forbid_network


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


# --- timm -----------------------------------------------------------------------------------

TIMM_VIT = {"model_name": "vit_tiny_patch16_224", "image_size": 32, "model_kwargs": {"depth": 2}}


def timm_checkpoint(path: Path, in_chans: int = 3, **kwargs: object) -> nn.Module:
    """A timm ViT with a classifier, saved as on the Hugging Face hub (model.safetensors)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, depth=2, num_classes=5, in_chans=in_chans, **kwargs
    ).eval()
    save_weights(model, path)
    return model


def test_timm_vit_loads_a_hub_style_checkpoint(tmp_path: Path) -> None:
    reference = timm_checkpoint(tmp_path / "model.safetensors")
    backbone = create_backbone(
        "timm", **TIMM_VIT, pretrained_path=str(tmp_path / "model.safetensors")
    )
    x = torch.rand(2, 3, 32, 32)
    features = backbone.eval().forward_features(x)
    expected_tokens = reference.forward_features(x)
    assert features.pooled.shape == (2, 192) and features.tokens.shape == (2, 4, 192)
    assert features.grid == (2, 2) and backbone.dim == 192 and backbone.family == "timm"
    torch.testing.assert_close(
        features.pooled, reference.forward_head(expected_tokens, pre_logits=True)
    )
    torch.testing.assert_close(features.tokens, expected_tokens[:, 1:])  # class token split off
    assert backbone.contract.mean == (0.5, 0.5, 0.5) and backbone.contract.size == 32


def test_timm_gray_input_folds_the_rgb_stem(tmp_path: Path) -> None:
    """in_chans=1 sums the RGB stem kernels: a gray image gives what its RGB repeat gave."""
    timm_checkpoint(tmp_path / "rgb.safetensors")
    rgb = create_backbone("timm", **TIMM_VIT, pretrained_path=str(tmp_path / "rgb.safetensors"))
    gray = create_backbone(
        "timm", **TIMM_VIT, in_chans=1, pretrained_path=str(tmp_path / "rgb.safetensors")
    )
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(gray.eval()(x), rgb.eval()(x.repeat(1, 3, 1, 1)))
    assert gray.contract.channels == 1 and gray.contract.mean == (0.5,)
    with pytest.raises(MedtuneError, match=r"\(B, 3, 32, 32\)"):
        rgb(x)  # the data path must repeat the gray channel for a 3-channel backbone
    # And back: a checkpoint trained on gray loads into an RGB backbone (stem spread over RGB).
    gray_trained = timm_checkpoint(tmp_path / "gray.safetensors", in_chans=1)
    spread = create_backbone("timm", **TIMM_VIT, pretrained_path=str(tmp_path / "gray.safetensors"))
    expected = gray_trained.forward_head(gray_trained.forward_features(x), pre_logits=True)
    torch.testing.assert_close(spread.eval()(x.repeat(1, 3, 1, 1)), expected)


def test_timm_resamples_position_embedding_and_refuses_wrong_files(tmp_path: Path) -> None:
    timm_checkpoint(tmp_path / "vit.safetensors")
    larger = create_backbone(
        "timm", **{**TIMM_VIT, "image_size": 48}, pretrained_path=str(tmp_path / "vit.safetensors")
    )
    assert larger.forward_features(torch.rand(1, 3, 48, 48)).tokens.shape == (1, 9, 192)
    with pytest.raises(MedtuneError, match=r"vit\.safetensors: cannot build timm model"):
        create_backbone(
            "timm",
            **{**TIMM_VIT, "model_kwargs": {"depth": 3}},
            pretrained_path=str(tmp_path / "vit.safetensors"),
        )
    torch.save({}, tmp_path / "vit.pth")
    with pytest.raises(MedtuneError, match="pickle"):
        create_backbone("timm", **TIMM_VIT, pretrained_path=str(tmp_path / "vit.pth"))
    with pytest.raises(MedtuneError, match="did you mean vit_tiny_patch16_224"):
        create_backbone("timm", model_name="vit_tiny_patch16_244")


def test_timm_convnet_gives_its_last_feature_map_as_tokens() -> None:
    backbone = create_backbone("timm", model_name="resnet18", image_size=64, in_chans=1).eval()
    features = backbone.forward_features(torch.rand(2, 1, 64, 64))
    assert features.pooled.shape == (2, 512) and features.tokens.shape == (2, 4, 512)
    assert features.grid == (2, 2)
    torch.testing.assert_close(features.pooled, features.tokens.mean(dim=1))  # average pooling
    assert "(.*\\.)?layer1\\.\\d+\\.conv1" in backbone.lora_targets
    assert backbone.contract.mean == pytest.approx((0.449,), abs=1e-3)  # ImageNet's, averaged


# --- Hugging Face ---------------------------------------------------------------------------


def hf_vit_directory(path: Path, preprocessor: dict | None = None) -> nn.Module:
    """A tiny ViT saved as a user's export: config.json, model.safetensors, preprocessor."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    model = ViTModel(config).eval()
    model.save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model


def test_hf_vit_from_a_local_directory(tmp_path: Path) -> None:
    processor = {
        "image_mean": [0.4, 0.4, 0.4],
        "image_std": [0.2, 0.2, 0.2],
        "size": {"height": 32},
    }
    reference = hf_vit_directory(tmp_path, processor)
    backbone = create_backbone("hf", path=str(tmp_path)).eval()
    x = torch.rand(2, 3, 32, 32)
    features = backbone.forward_features(x)
    hidden = reference(pixel_values=x).last_hidden_state
    torch.testing.assert_close(features.pooled, hidden[:, 0])  # the class token
    torch.testing.assert_close(features.tokens, hidden[:, 1:])
    assert features.grid == (4, 4) and backbone.dim == 32 and backbone.family == "hf"
    assert backbone.contract.mean == (0.4, 0.4, 0.4) and backbone.contract.std == (0.2, 0.2, 0.2)
    assert backbone.model.pooler is None  # unused: it would hold parameters with no gradient
    with pytest.raises(MedtuneError, match=r"\(B, 3, 32, 32\)"):
        backbone(torch.rand(2, 1, 32, 32))


def test_hf_vit_at_another_size_interpolates(tmp_path: Path) -> None:
    hf_vit_directory(tmp_path)
    backbone = create_backbone("hf", path=str(tmp_path), image_size=48)
    assert backbone.forward_features(torch.rand(1, 3, 48, 48)).grid == (6, 6)
    assert backbone.contract.mean == (0.485, 0.456, 0.406)  # no preprocessor: ImageNet's


def test_hf_dinov2_with_registers_drops_the_special_tokens(tmp_path: Path) -> None:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
        image_size=32, patch_size=8, num_register_tokens=4,
    )  # fmt: skip
    reference = Dinov2WithRegistersModel(config).eval()
    reference.save_pretrained(tmp_path)
    backbone = create_backbone("hf", path=str(tmp_path)).eval()
    x = torch.rand(2, 3, 32, 32)
    features = backbone.forward_features(x)
    hidden = reference(pixel_values=x).last_hidden_state  # class, 4 registers, 16 patches
    torch.testing.assert_close(features.pooled, hidden[:, 0])
    torch.testing.assert_close(features.tokens, hidden[:, 5:])
    assert features.grid == (4, 4)


def test_hf_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    hf_vit_directory(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(MedtuneError, match=r"only pickle weights \(pytorch_model\.bin\)"):
        create_backbone("hf", path=str(tmp_path))
    with pytest.raises(MedtuneError, match=r"no config\.json"):
        create_backbone("hf", path=str(tmp_path / "absent"))


# --- open_clip ------------------------------------------------------------------------------

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def open_clip_directory(path: Path, model_cfg: dict) -> nn.Module:
    """A whole CLIP saved as open_clip's local-dir layout: config JSON and safetensors."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg).eval()
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps(config))
    save_weights(model, path / "open_clip_model.safetensors")
    return model


@pytest.mark.slow  # importing open_clip takes seconds
@pytest.mark.parametrize("pool", ["tok", "avg"])
def test_open_clip_vit_tower_from_a_local_directory(tmp_path: Path, pool: str) -> None:
    model_cfg = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "pool_type": pool}}
    reference = open_clip_directory(tmp_path, model_cfg)
    backbone = create_backbone("open_clip", config_path=str(tmp_path)).eval()
    x = torch.rand(2, 3, 32, 32)
    features = backbone.forward_features(x)
    reference.visual.output_tokens = True
    pooled, tokens = reference.visual(x)
    torch.testing.assert_close(features.tokens, tokens)
    torch.testing.assert_close(features.pooled @ reference.visual.proj, pooled)  # pre-projection
    assert features.grid == (4, 4) and backbone.dim == 64 and backbone.family == "open_clip"
    assert backbone.contract.std == (0.25, 0.25, 0.25)
    # A config file plus an explicit weights file is the same model.
    again = create_backbone(
        "open_clip",
        config_path=str(tmp_path / "open_clip_config.json"),
        pretrained_path=str(tmp_path / "open_clip_model.safetensors"),
    )
    torch.testing.assert_close(again.eval()(x), features.pooled)


@pytest.mark.slow  # importing open_clip takes seconds
def test_open_clip_timm_tower_is_a_timm_encoder(tmp_path: Path) -> None:
    """A BiomedCLIP-style tower (a timm ViT trunk and a linear projection)."""
    vision = {"timm_model_name": "test_vit", "timm_pool": "", "timm_proj": "linear"}
    model_cfg = {**TINY_CLIP, "vision_cfg": {**vision, "image_size": 160}}  # timm's test_vit
    reference = open_clip_directory(tmp_path, model_cfg)
    backbone = create_backbone("open_clip", config_path=str(tmp_path)).eval()
    x = torch.rand(1, 3, 160, 160)
    trunk_tokens = reference.visual.trunk.forward_features(x)
    torch.testing.assert_close(backbone(x), trunk_tokens[:, 0])
    assert backbone.family == "open_clip" and backbone.forward_features(x).grid == (10, 10)


def test_open_clip_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match="did you mean ViT-B-32"):
        create_backbone("open_clip", model_name="ViT-B-23")
    with pytest.raises(MedtuneError, match="use config_path"):
        create_backbone("open_clip", model_name="hf-hub:microsoft/BiomedCLIP")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.save({}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(MedtuneError, match="pickle"):
        create_backbone("open_clip", config_path=str(tmp_path))


# --- LoRA targets, every family -------------------------------------------------------------


def _encoders(tmp_path: Path) -> dict[str, tuple[Encoder, int]]:
    """Each family's encoder and how many modules its LoRA should wrap."""
    hf_vit_directory(tmp_path / "hf")
    open_clip_directory(tmp_path / "oc", TINY_CLIP)
    return {
        "medtune-vit": (create_backbone("medtune-vit", image_size=32, dim=32, depth=2, heads=2), 8),
        "timm": (create_backbone("timm", **TIMM_VIT), 8),  # qkv, proj, fc1, fc2 per block
        "hf": (create_backbone("hf", path=str(tmp_path / "hf")), 12),  # q, k, v, o, fc1, fc2
        # PEFT wraps nn.MultiheadAttention whole and its out_proj inside it: 2 + 2 per block.
        "open_clip": (create_backbone("open_clip", config_path=str(tmp_path / "oc")), 8),
    }


@pytest.mark.slow  # imports peft and every family's library
def test_lora_targets_work_with_peft(tmp_path: Path) -> None:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    for family, (encoder, expected) in _encoders(tmp_path).items():
        x = torch.rand(2, encoder.contract.channels, encoder.contract.size, encoder.contract.size)
        before = encoder.eval()(x)
        regex = "|".join(f"(?:{target})" for target in encoder.lora_targets)
        wrapper = nn.ModuleDict({"backbone": encoder})  # targets must match when nested too
        inject_adapter_in_model(
            LoraConfig(r=2, target_modules=regex, init_lora_weights=False), wrapper
        )
        wrapped = [
            name for name, module in wrapper.named_modules() if isinstance(module, LoraLayer)
        ]
        assert len(wrapped) == expected, (family, wrapped)
        trainable = [name for name, p in wrapper.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in name for name in trainable), family
        after = encoder(x)
        assert not torch.allclose(after, before), family  # the adapters are in the forward path
        after.sum().backward()
        assert all(p.grad is not None for p in wrapper.parameters() if p.requires_grad), family
