"""medtune's ViT and the safetensors weight files, through the path a user's checkpoint takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtune.errors import MedtuneError
from medtune.models import create_backbone, load_weights, save_weights
from medtune.models.vit import MedtuneViT, resample_pos_embed

TINY = {"image_size": 32, "patch_size": 8, "dim": 32, "depth": 2, "heads": 2}


def tiny_vit(**overrides: object) -> MedtuneViT:
    return create_backbone("medtune-vit", **{**TINY, **overrides}).eval()


def test_features_follow_the_contract() -> None:
    vit = tiny_vit()
    features = vit.forward_features(torch.rand(3, 1, 32, 32))
    assert features.pooled.shape == (3, 32)
    assert features.tokens.shape == (3, 16, 32)
    assert features.grid == (4, 4)
    assert vit.dim == 32 and vit.contract.channels == 1 and vit.contract.size == 32
    assert torch.equal(
        vit(torch.zeros(1, 1, 32, 32)), vit.forward_features(torch.zeros(1, 1, 32, 32)).pooled
    )


def test_contract_mismatch_raises() -> None:
    vit = tiny_vit()
    with pytest.raises(MedtuneError, match=r"does not match.*\(B, 1, 32, 32\)"):
        vit(torch.rand(2, 3, 32, 32))  # an RGB batch for a grayscale backbone
    with pytest.raises(MedtuneError, match="does not match"):
        vit(torch.rand(2, 1, 48, 48))


def test_bad_shape_config_is_refused() -> None:
    with pytest.raises(MedtuneError, match="not a multiple of patch_size"):
        tiny_vit(image_size=36)
    with pytest.raises(MedtuneError, match="not a multiple of heads"):
        tiny_vit(heads=3)


def test_init_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    a = tiny_vit(seed=1)
    assert torch.equal(torch.rand(4), expected_next)
    b, c = tiny_vit(seed=1), tiny_vit(seed=2)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.pos_embed, c.pos_embed)


def test_presets_and_overrides() -> None:
    vit = create_backbone("medtune-vit-small", image_size=32, depth=1)
    assert (vit.dim, len(vit.blocks), vit.config.heads, vit.contract.size) == (384, 1, 6, 32)
    assert create_backbone("medtune-vit-tiny", depth=1).contract.size == 128


def test_weights_round_trip_through_pretrained_path(tmp_path: Path) -> None:
    vit = tiny_vit(seed=3)
    path = save_weights(vit, tmp_path / "vit.safetensors")
    loaded = tiny_vit(seed=4, pretrained_path=str(path))
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded(x), vit(x))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


@pytest.mark.slow  # importing timm, the reference, takes seconds
def test_same_weights_same_features_as_timms_vit() -> None:
    """timm's ViT is the reference implementation: the state dict loads strictly and the
    features agree, which checks attention, MLP, norms and pooling at once."""
    import timm

    vit = tiny_vit(seed=6)
    with torch.no_grad():  # weights far from init, so every nonlinearity matters
        for parameter in vit.parameters():
            parameter.normal_(0.0, 0.3)
    reference = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        in_chans=1, num_classes=0,
    ).eval()  # fmt: skip
    reference.load_state_dict(vit.state_dict(), strict=True)
    x = torch.rand(2, 1, 32, 32)
    tokens = reference.forward_features(x)
    features = vit.forward_features(x)
    torch.testing.assert_close(features.tokens, tokens[:, 1:])
    torch.testing.assert_close(features.pooled, reference.forward_head(tokens, pre_logits=True))


@pytest.mark.slow  # importing timm, the reference, takes seconds
def test_position_embedding_is_resampled_for_another_size(tmp_path: Path) -> None:
    from timm.layers import resample_abs_pos_embed  # the reference implementation

    small = tiny_vit(seed=5)
    path = save_weights(small, tmp_path / "vit32.safetensors")
    for size, grid in [(48, 6), (16, 2)]:
        other = tiny_vit(image_size=size, pretrained_path=str(path))
        expected = resample_abs_pos_embed(small.pos_embed.detach(), [grid, grid], [4, 4], 1)
        torch.testing.assert_close(other.pos_embed.detach(), expected)
        assert other.forward_features(torch.rand(1, 1, size, size)).grid == (grid, grid)
        assert torch.equal(other.blocks[0].attn.qkv.weight, small.blocks[0].attn.qkv.weight)
    assert resample_pos_embed(small.pos_embed, 4) is small.pos_embed


def test_mismatched_weights_fail_in_one_line(tmp_path: Path) -> None:
    path = save_weights(tiny_vit(depth=3), tmp_path / "deep.safetensors")
    with pytest.raises(
        MedtuneError, match=r"deep\.safetensors.*1[0-9] unexpected keys \(blocks\.2"
    ) as err:
        load_weights(tiny_vit(), path)
    assert "\n" not in str(err.value)
    missing, unexpected = load_weights(tiny_vit(depth=3), path)
    assert missing == unexpected == []
    with pytest.raises(MedtuneError, match=r"size mismatch for cls_token: .*\[1, 1, 32\]"):
        load_weights(tiny_vit(dim=64), path)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.bin", "model.ckpt"])
def test_pickle_checkpoints_are_refused_unread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save(tiny_vit().state_dict(), path)
    with pytest.raises(MedtuneError, match=r"refusing a pickle checkpoint.*execute code"):
        load_weights(tiny_vit(), path)
    with pytest.raises(MedtuneError, match="pickle"):
        tiny_vit(pretrained_path=str(path))


def test_a_pickle_under_a_safetensors_name_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "disguised.safetensors"
    torch.save(tiny_vit().state_dict(), path)
    with pytest.raises(MedtuneError, match="not a readable safetensors file"):
        load_weights(tiny_vit(), path)
    with pytest.raises(MedtuneError, match="no such weights file"):
        load_weights(tiny_vit(), tmp_path / "absent.safetensors")
    with pytest.raises(MedtuneError, match=r"only as \.safetensors"):
        save_weights(tiny_vit(), tmp_path / "out.pt")


def test_patch_embedding_is_the_strided_convolution_it_stores():
    from medtune.models.vit import PatchEmbed

    for channels, patch, shape in ((1, 16, (64, 48)), (3, 8, (32, 40))):
        embed = PatchEmbed(channels, 24, patch)
        x = torch.randn(2, channels, *shape)
        expected = embed.proj(x).flatten(2).transpose(1, 2)
        torch.testing.assert_close(embed(x), expected, atol=1e-5, rtol=1e-5)
