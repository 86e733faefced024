"""Image-report contrastive learning: InfoNCE, the temperature, a frozen text tower, retrieval."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from medtune.config_train import ContrastiveSection, TextSection
from medtune.models.registry import create_backbone
from medtune.models.text import create_text_encoder
from medtune.train.contrastive import (
    Contrastive,
    contrastive_step,
    evaluate_contrastive,
    info_nce,
    recall_at,
    text_groups,
)
from medtune.train.loop import LoopConfig, fit

# Four report phrases, each with its own image: a bright square of 0, 8, 16 or 24 px.
PHRASES = ["no opacity", "small opacity", "medium opacity", "large opacity"]


def _pairs(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    kinds = torch.randint(0, len(PHRASES), (n,), generator=g).tolist()
    images = 0.3 * torch.randn(n, 1, 32, 32, generator=g)
    for i, kind in enumerate(kinds):
        images[i, :, : 8 * kind, : 8 * kind] += 2.0
    return {"image": images, "text": [PHRASES[k] for k in kinds]}


def _model(**section: object) -> Contrastive:
    image = create_backbone("medtune-vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2)
    text = create_text_encoder("tiny-bert", dim=32, depth=1, heads=2, max_length=16)
    options = {"projection_dim": 16, "text": TextSection(name="tiny-bert"), **section}
    return Contrastive(image, text, ContrastiveSection(**options))


def _train(model: Contrastive, run: Path, steps: int, lr: float = 1e-3) -> None:
    batches = [_pairs(16, seed) for seed in range(8)]
    fit(model, contrastive_step, batches, LoopConfig(max_steps=steps, lr=lr, checkpoint_every=100),
        run, trainable=model.trainable_parameters(), progress=False)  # fmt: skip


def _evaluate(model: Contrastive) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        return evaluate_contrastive(model, [_pairs(16, 100), _pairs(16, 101)])


def test_info_nce_is_low_for_matched_pairs_and_symmetric() -> None:
    unit = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(100.0)
    matched = info_nce(unit, unit, scale)
    shuffled = info_nce(unit, unit.roll(1, dims=0), scale)
    assert matched < 0.1 < 1.0 < shuffled
    other = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    torch.testing.assert_close(info_nce(unit, other, scale), info_nce(other, unit, scale))
    same = torch.zeros(5, 8)  # every pair alike: chance, log B
    assert info_nce(same, same, scale).item() == pytest.approx(math.log(5))


def test_recall_counts_any_copy_of_the_report() -> None:
    queries = torch.eye(4)
    # Images 0 and 1 find each other's text first and their own second.
    keys = torch.tensor([[0.5, 1, 0, 0], [1, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    groups = text_groups(["a", "b", "c", "d"])
    assert recall_at(queries, keys, groups, 1) == 0.5
    assert recall_at(queries, keys, groups, 2) == 1.0
    same = text_groups(["a", "a", "c", "d"])  # images 0 and 1 share a report
    assert same.tolist() == [0, 0, 1, 2]
    assert recall_at(queries, keys, same, 1) == 1.0


@pytest.mark.slow
def test_loss_falls_and_retrieval_beats_chance_on_a_shared_signal(tmp_path: Path) -> None:
    model = _model()
    before = _evaluate(model)
    _train(model, tmp_path, steps=20)
    after = _evaluate(model)
    assert after["val_loss"] < before["val_loss"] - 0.3
    chance = 1 / len(PHRASES)  # a hit is any image of the phrase
    assert after["i2t_recall@1"] > chance + 0.2 and after["t2i_recall@1"] > chance + 0.2
    assert {"i2t_recall@5", "t2i_recall@5"} <= set(after)


def test_logit_scale_starts_at_one_over_temperature_and_is_clamped() -> None:
    assert _model(temperature=0.05).logit_scale().item() == pytest.approx(20.0)
    assert _model(temperature=0.001).logit_scale().item() == 100.0


@pytest.mark.slow
def test_a_fixed_temperature_does_not_train(tmp_path: Path) -> None:
    fixed = _model(learn_temperature=False, temperature=0.1)
    assert all(p is not fixed.log_logit_scale for p in fixed.trainable_parameters())
    _train(fixed, tmp_path / "fixed", steps=3, lr=1e-2)
    assert fixed.logit_scale().item() == pytest.approx(10.0)
    learned = _model(temperature=0.1)
    _train(learned, tmp_path / "learned", steps=3, lr=1e-2)
    assert learned.logit_scale().item() != pytest.approx(10.0)


def test_text_lr_scale_zero_freezes_the_text_tower(tmp_path: Path) -> None:
    model = _model(text_lr_scale=0.0)
    text_ids = {id(p) for p in model.text.parameters()}
    assert not text_ids & {id(p) for p in model.trainable_parameters()}
    model.train()
    assert model.training and model.image.training and not model.text.training  # no dropout
    before = [p.detach().clone() for p in model.text.parameters()]
    image_before = [p.detach().clone() for p in model.image.parameters()]
    _train(model, tmp_path, steps=2, lr=1e-2)
    after = list(model.text.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    changed = [not torch.equal(a, b) for a, b in zip(image_before, model.image.parameters(),
                                                     strict=True)]  # fmt: skip
    assert any(changed)
