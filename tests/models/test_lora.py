"""LoRA through PEFT on every backbone family: only adapters train, a fresh adapter changes
nothing, merging keeps the outputs, and a saved adapter loads back (also into PEFT itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models import Encoder, create_backbone
from medtune.models.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    has_lora,
    inject_lora,
    load_adapter,
    merged_copy,
    save_adapter,
)
from tests.models import forbid_network
from tests.models.test_families import TIMM_VIT, TINY_CLIP, hf_vit_directory, open_clip_directory

FAMILIES = [
    "medtune-vit",
    pytest.param("timm", marks=pytest.mark.slow),  # imports timm: seconds
    pytest.param("hf", marks=pytest.mark.slow),  # imports transformers
    pytest.param("open_clip", marks=pytest.mark.slow),  # imports open_clip
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the HF and open_clip checkpoints lie, saved as a user's would be (built lazily)."""
    return tmp_path_factory.mktemp("lora-families")


def build(family: str, saved: Path) -> Encoder:
    """A tiny encoder of ``family``, the same weights on every call."""
    if family == "medtune-vit":
        return create_backbone("medtune-vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2)
    if family == "timm":
        torch.manual_seed(0)
        return create_backbone("timm", **TIMM_VIT)
    if family == "hf":
        if not (saved / "hf").is_dir():
            hf_vit_directory(saved / "hf")
        return create_backbone("hf", path=str(saved / "hf"))
    if not (saved / "oc").is_dir():
        open_clip_directory(saved / "oc", TINY_CLIP)
    return create_backbone("open_clip", config_path=str(saved / "oc"))


def batch(encoder: Encoder) -> torch.Tensor:
    c = encoder.contract
    return torch.rand(4, c.channels, c.size, c.size, generator=torch.Generator().manual_seed(1))


def base_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights without adapters, under the names they had before injection."""
    return {k.replace(".base_layer", ""): v.detach().clone()
            for k, v in encoder.state_dict().items() if "lora_" not in k}  # fmt: skip


def train_a_little(encoder: Encoder, params: list[nn.Parameter], x: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    encoder.train()
    for _ in range(3):
        encoder(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    encoder.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_adapters_and_merges_exactly(family: str, saved: Path) -> None:
    encoder = build(family, saved).eval()
    x = batch(encoder)
    before, weights = encoder(x), base_state(encoder)
    params = inject_lora(encoder, rank=4, alpha=8)
    torch.testing.assert_close(encoder(x), before, rtol=0, atol=0)  # fresh: B = 0
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert params and trainable == {id(p) for p in params}

    train_a_little(encoder, params, x)
    after = encoder(x)
    assert (after - before).abs().max() > 1e-2  # the adapters are in the forward path
    now = base_state(encoder)
    assert now.keys() == weights.keys()
    changed = [k for k in weights if not torch.equal(now[k], weights[k])]
    assert not changed, changed  # base weights bit-identical (open_clip: see lora.py)

    merged = merged_copy(encoder)
    assert type(merged) is type(encoder) and merged.contract == encoder.contract
    assert not has_lora(merged) and has_lora(encoder)  # the original keeps its adapters
    assert merged.state_dict().keys() == weights.keys()  # loadable as a plain backbone
    torch.testing.assert_close(merged.eval()(x), after, atol=1e-5, rtol=1e-5)
    plain = build(family, saved)
    plain.load_state_dict(merged.state_dict())
    torch.testing.assert_close(plain.eval()(x), after, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_adapter_loads_back(family: str, saved: Path, tmp_path: Path) -> None:
    encoder = build(family, saved)
    x = batch(encoder)
    params = inject_lora(encoder, rank=2, dropout=0.1)
    train_a_little(encoder, params, x)
    expected = encoder(x)
    save_adapter(encoder, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    again = build(family, saved)
    load_adapter(again, tmp_path / "adapter")
    torch.testing.assert_close(again.eval()(x), expected, rtol=0, atol=0)


def test_adapter_is_peft_format(tmp_path: Path) -> None:
    """A user can apply the adapter with PEFT alone: PeftModel.from_pretrained."""
    from peft import PeftModel

    encoder = build("medtune-vit", tmp_path)
    x = batch(encoder)
    train_a_little(encoder, inject_lora(encoder, rank=2), x)
    save_adapter(encoder, tmp_path / "adapter")
    model = PeftModel.from_pretrained(build("medtune-vit", tmp_path), str(tmp_path / "adapter"))
    torch.testing.assert_close(model.eval()(x), encoder(x), rtol=0, atol=0)


def test_custom_targets_and_their_errors(tmp_path: Path) -> None:
    encoder = build("medtune-vit", tmp_path)
    params = inject_lora(encoder, targets=[r"(.*\.)?blocks\.\d+\.mlp\.fc1"])
    assert len(params) == 2 * 2  # A and B of fc1 in each of 2 blocks
    again = inject_lora(build("medtune-vit", tmp_path), targets=[r"(.*\.)?blocks\.\d+\.mlp\.fc1"])
    assert all(torch.equal(a, b) for a, b in zip(params, again, strict=True))  # seeded init
    with pytest.raises(MedtuneError, match="LoRA cannot wrap it"):
        inject_lora(build("medtune-vit", tmp_path), targets=["nothing\\.here"])
    with pytest.raises(MedtuneError, match="no LoRA adapter to save"):
        save_adapter(build("medtune-vit", tmp_path), tmp_path / "none")
    with pytest.raises(MedtuneError, match="not a PEFT LoRA adapter"):
        load_adapter(build("medtune-vit", tmp_path), tmp_path / "missing")
