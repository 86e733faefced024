"""Classification heads: shapes, configs that rebuild them, scale-free inputs, and the MLP's
reason to exist (it learns what a linear probe cannot)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.heads import LinearHead, MLPHead, head_from_config, make_head


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_head_rebuilds_from_its_config(kind: str) -> None:
    torch.manual_seed(0)
    head = make_head(kind, dim=24, classes=3, hidden=16, dropout=0.2).eval()
    again = head_from_config(head.config)
    again.load_state_dict(head.state_dict())  # same architecture: every key fits
    x = torch.randn(5, 24)
    assert head(x).shape == (5, 3)
    torch.testing.assert_close(again.eval()(x), head(x))
    assert type(again) is type(head) and again.config == head.config


def test_mlp_head_is_three_linear_layers_with_dropout() -> None:
    head = MLPHead(8, 2, hidden=32, dropout=0.5)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 32), (32, 32), (32, 2)]
    x = torch.randn(64, 8)
    assert not torch.equal(head.train()(x), head(x))  # dropout is active in training
    torch.testing.assert_close(head.eval()(x), head(x))


@pytest.mark.parametrize("head", [MLPHead(16, 2), LinearHead(16, 2)], ids=["mlp", "linear"])
def test_heads_ignore_the_scale_of_features(head: nn.Module) -> None:
    """The input LayerNorm: features 1000x larger (a convnet's raw average against a normed
    token) give the same logits, so one learning rate suits every backbone."""
    x = torch.randn(4, 16)
    torch.testing.assert_close(head.eval()(1000 * x), head(x), atol=1e-4, rtol=1e-4)


def test_mlp_learns_what_a_linear_probe_cannot() -> None:
    """label = x0 * x1 > 0 (XOR of signs): no linear boundary; three layers find it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=generator)
    y = ((x[:, 0] * x[:, 1]) > 0).float()[:, None]
    accuracy = {}
    for kind in ("mlp", "linear"):
        torch.manual_seed(0)
        head = make_head(kind, 4, 1, hidden=64, dropout=0.0)
        optimizer = torch.optim.Adam(head.parameters(), lr=3e-2)
        for _ in range(150):
            loss = F.binary_cross_entropy_with_logits(head(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        accuracy[kind] = ((head(x) > 0).float() == y).float().mean().item()
    assert accuracy["mlp"] > 0.9 and accuracy["linear"] < 0.7, accuracy


def test_bad_heads_are_named() -> None:
    with pytest.raises(MedtuneError, match="head 'conv': unknown"):
        make_head("conv", 8, 2)
    with pytest.raises(MedtuneError, match="at least 1 feature and 1 class"):
        make_head("mlp", 8, 0)
    with pytest.raises(MedtuneError, match="head config"):
        head_from_config({"kind": "linear", "dim": 8, "classes": 2, "depth": 3})
