"""Checkpoints: safetensors + JSON round trips, atomic directories, pruning, no pickle."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.train.checkpoint import (
    checkpoint_dir,
    flatten_state,
    latest_complete,
    list_complete,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)


class Tied(nn.Module):
    """A tiny model with tied weights, as GPT-2's embedding and output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(self.norm(self.embed(tokens)))


def _trained(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(2):
        _step(model, opt)
    return model, opt


def _step(model, opt) -> None:
    tokens = torch.arange(10).reshape(2, 5)
    loss = nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    loss.backward()
    opt.step()
    opt.zero_grad()


def _save(run_dir, step, model, opt, **state):
    return save_checkpoint(run_dir, step, model, opt, {"loop": state})


def test_round_trip_restores_weights_and_optimizer_exactly(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 2, model, opt, note="x")
    fresh = Tied()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    state, ema = load_checkpoint(path, fresh, fresh_opt)
    assert state["step"] == 2 and state["loop"] == {"note": "x"} and ema is None
    assert fresh.out.weight is fresh.embed.weight  # still tied
    assert fresh_opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert fresh_opt.state[fresh.embed.weight]["exp_avg"].abs().sum() > 0  # int keys survived
    # The next step from the restored state is the next step of the original.
    _step(model, opt)
    _step(fresh, fresh_opt)
    for name, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[name]), name


def test_checkpoint_holds_only_safetensors_and_json_and_loads_without_pickle(tmp_path, monkeypatch):
    model, opt = _trained()
    path = save_checkpoint(tmp_path, 5, model, opt, {}, ema={"w": torch.ones(3)})
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "complete",
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled something")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    _, ema = load_checkpoint(path, Tied(), torch.optim.AdamW(Tied().parameters()))
    assert torch.equal(ema["w"], torch.ones(3))


def test_latest_complete_ignores_partial_directories(tmp_path):
    model, opt = _trained()
    _save(tmp_path, 3, model, opt)
    good = _save(tmp_path, 7, model, opt)
    # A copy cut short (no marker) and a write killed before its rename, both newer.
    checkpoint_dir(tmp_path, 9).mkdir()
    (checkpoint_dir(tmp_path, 9) / "model.safetensors").write_bytes(b"half")
    (good.parent / ".partial-step-00000011-123").mkdir()
    assert latest_complete(tmp_path) == good
    assert latest_complete(tmp_path / "elsewhere") is None
    _save(tmp_path, 8, model, opt)  # the next save clears the killed write's leftovers
    assert not list(good.parent.glob(".partial-*"))


def test_truncated_or_mismatched_checkpoints_are_refused(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 1, model, opt)
    with pytest.raises(MedtuneError, match="do not fit"):
        load_checkpoint(path, nn.Linear(8, 10))
    with open(path / "optimizer.safetensors", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(MedtuneError, match=r"optimizer\.safetensors is missing or truncated"):
        load_checkpoint(path, Tied())
    (path / "complete").unlink()
    with pytest.raises(MedtuneError, match="incomplete"):
        load_checkpoint(path, Tied())


def test_saving_a_step_again_replaces_it(tmp_path):
    model, opt = _trained()
    _save(tmp_path, 4, model, opt, version=1)
    path = _save(tmp_path, 4, model, opt, version=2)
    state, _ = load_checkpoint(path, Tied())
    assert state["loop"] == {"version": 2}
    assert [p.name for p in path.parent.iterdir()] == ["step-00000004"]


def test_prune_keeps_the_last_n_and_the_protected(tmp_path):
    model, opt = _trained()
    for step in range(1, 7):
        _save(tmp_path, step, model, opt)
    prune_checkpoints(tmp_path, keep=2, protect={3})
    assert [p.name for p in list_complete(tmp_path)] == [
        "step-00000003",
        "step-00000005",
        "step-00000006",
    ]


def test_state_flattening_keeps_key_types_and_tuples():
    state = {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"betas": (0.9, 0.99)}]}
    tensors, skeleton = flatten_state(state)
    back = unflatten_state(skeleton, tensors)
    assert list(back["state"]) == [0]
    assert back["groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back["state"][0]["step"], torch.tensor(3.0))


def test_rng_state_round_trips_through_json():
    import json

    saved = json.loads(json.dumps(rng_state()))
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


class _Seeded(torch.utils.data.Dataset):
    """Items keyed by (position, seed) as SeededSampler yields them; counts the loads."""

    def __init__(self) -> None:
        self.loads = 0

    def __len__(self) -> int:
        return 23

    def __getitem__(self, key):
        self.loads += 1
        position, seed = key
        noise = torch.rand(2, generator=torch.Generator().manual_seed(seed))
        return {"x": torch.tensor([float(position)]), "noise": noise}


def test_resume_mid_epoch_starts_the_sampler_there_without_loading_used_batches():
    from medtune.train.checkpoint import BatchStream
    from medtune.train.data import make_loader

    first = BatchStream(make_loader(_Seeded(), batch_size=4, seed=3))
    first.start_epoch(0)
    for _ in range(8):  # 6 batches an epoch: into the second epoch
        first.next()
    saved = (first.epoch, first.position, first.epoch_rng, rng_state())
    expected = [first.next() for _ in range(5)]

    data = _Seeded()
    again = BatchStream(make_loader(data, batch_size=4, seed=3))
    again.resume(*saved)
    got = [again.next() for _ in range(5)]
    assert again.position == first.position and again.epoch == first.epoch
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["noise"], b["noise"])
    # Only the 5 new batches were read: 3 of epoch 1 (the last one 3 items), 2 of epoch 2.
    assert data.loads == 4 + 4 + 3 + 4 + 4
