"""Fine-tuning modes: what trains, how a frozen backbone runs, and what is exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medtune.config_train import LoraSection
from medtune.errors import MedtuneError
from medtune.models import create_backbone
from medtune.models.contract import Encoder
from medtune.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, has_lora
from medtune.train.modes import finish_backbone, prepare_backbone, save_adapter


def tiny_vit() -> Encoder:
    return create_backbone("medtune-vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2)


def images() -> torch.Tensor:
    return torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def test_probe_freezes_the_backbone_even_under_a_training_parent(tmp_path: Path) -> None:
    encoder = tiny_vit()
    prepared = prepare_backbone(encoder, "probe", LoraSection())
    assert prepared.encoder is encoder and prepared.frozen and prepared.trainable == []
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = nn.ModuleDict({"encoder": encoder}).train()  # as a task's model.train() would
    assert encoder.training
    features = prepared.features(images())
    assert not encoder.training  # back in eval mode: no dropout, no norm statistics updates
    assert features.pooled.shape == (3, 32) and features.tokens.shape == (3, 16, 32)
    assert features.pooled.grad_fn is None  # no graph kept: run under no_grad
    assert finish_backbone(prepared) is encoder
    save_adapter(prepared, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    del parent


def test_full_trains_every_backbone_parameter() -> None:
    encoder = tiny_vit().requires_grad_(False)  # as an earlier probe might have left it
    prepared = prepare_backbone(encoder, "full", LoraSection())
    assert not prepared.frozen
    assert {id(p) for p in prepared.trainable} == {id(p) for p in encoder.parameters()}
    assert all(p.requires_grad for p in prepared.trainable)
    features = prepared.features(images())
    assert features.pooled.grad_fn is not None
    assert finish_backbone(prepared) is encoder


def test_lora_trains_adapters_and_exports_them_merged(tmp_path: Path) -> None:
    encoder = tiny_vit()
    x = images()
    prepared = prepare_backbone(encoder, "lora", LoraSection(rank=2, alpha=4.0))
    assert prepared.encoder is encoder and has_lora(encoder) and not prepared.frozen
    names = {id(p): n for n, p in encoder.named_parameters()}
    assert prepared.trainable and all("lora_" in names[id(p)] for p in prepared.trainable)
    requiring = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert requiring == {id(p) for p in prepared.trainable}
    # 2 blocks x (qkv, proj, fc1, fc2) x (A, B)
    assert len(prepared.trainable) == 16
    optimizer = torch.optim.SGD(prepared.trainable, lr=0.5)
    prepared.features(x).pooled.pow(2).sum().backward()
    optimizer.step()
    expected = encoder.eval()(x)
    exported = finish_backbone(prepared)
    assert exported is not encoder and not has_lora(exported) and has_lora(encoder)
    assert exported.state_dict().keys() == tiny_vit().state_dict().keys()
    torch.testing.assert_close(exported.eval()(x), expected, atol=1e-5, rtol=1e-5)
    save_adapter(prepared, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}


def test_lora_section_sets_targets_and_rank() -> None:
    section = LoraSection(rank=3, targets=[r"(.*\.)?blocks\.\d+\.attn\.qkv"])
    prepared = prepare_backbone(tiny_vit(), "lora", section)
    shapes = sorted(tuple(p.shape) for p in prepared.trainable)
    assert shapes == [(3, 32), (3, 32), (96, 3), (96, 3)]  # A (r x in), B (out x r), 2 blocks


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(MedtuneError, match="mode 'linear': unknown"):
        prepare_backbone(tiny_vit(), "linear", LoraSection())
