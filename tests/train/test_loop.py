"""The training loop: schedule, accumulation, trainable subsets, EMA, early stopping, records."""

from __future__ import annotations

import itertools
import math
import sys
import types

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medtune.errors import MedtuneError
from medtune.train.checkpoint import latest_complete, list_complete
from medtune.train.loop import LoopConfig, fit
from medtune.train.schedule import cosine_lr
from medtune.train.tracking import read_metrics


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def _data(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)}


def _mse(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    return {"loss": nn.functional.mse_loss(model(batch["x"]), batch["y"])}


def _config(**overrides) -> LoopConfig:
    # fp32 also on a GPU machine: the comparisons below are exact or nearly.
    base = dict(max_steps=4, lr=1e-2, warmup_steps=0, grad_clip=None, seed=0, precision="fp32")
    return LoopConfig(**(base | overrides))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def test_cosine_schedule_warms_up_then_decays_to_min():
    lr = lambda s: cosine_lr(s, 1e-3, warmup_steps=10, max_steps=110, min_lr=1e-5)  # noqa: E731
    assert lr(0) == pytest.approx(1e-4)
    assert lr(9) == pytest.approx(1e-3)
    assert lr(10) == pytest.approx(1e-3)  # end of warm-up: the peak
    assert lr(60) == pytest.approx((1e-3 + 1e-5) / 2)  # half way down the cosine
    assert lr(110) == pytest.approx(1e-5)  # the end
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_accumulating_two_batches_equals_one_batch_twice_the_size(tmp_path):
    data = _data(16)
    halves = [{k: v[:8] for k, v in data.items()}, {k: v[8:] for k, v in data.items()}]
    small, big = _mlp(), _mlp()
    fit(small, _mse, halves, _config(max_steps=1, batch_accumulation=2), tmp_path / "a")
    fit(big, _mse, [data], _config(max_steps=1), tmp_path / "b")
    for name, value in small.state_dict().items():
        torch.testing.assert_close(value, big.state_dict()[name], rtol=1e-5, atol=1e-6)
    # Adam's first update hides the gradient's scale; the logged norm does not.
    norm_a = read_metrics(tmp_path / "a" / "metrics.jsonl")[0]["grad_norm"]
    norm_b = read_metrics(tmp_path / "b" / "metrics.jsonl")[0]["grad_norm"]
    assert norm_a == pytest.approx(norm_b, rel=1e-5)


def test_trainable_subset_leaves_the_rest_unchanged(tmp_path):
    model = _mlp()
    before = _weights(model)
    fit(
        model,
        _mse,
        [_data(16)],
        _config(weight_decay=0.5),
        tmp_path / "r",
        trainable=model[2].parameters(),
    )
    after = _weights(model)
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert torch.equal(after["0.bias"], before["0.bias"])
    assert not torch.equal(after["2.weight"], before["2.weight"])
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad


def test_weight_decay_shrinks_matrices_but_not_biases(tmp_path):
    class Idle(nn.Module):  # parameters with zero gradients: only weight decay moves them
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(2, 2))
            self.bias = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x.sum() * 0 * (self.weight.sum() + self.bias.sum())

    model = Idle()
    step = lambda m, b: {"loss": m(b["x"])}  # noqa: E731
    fit(model, step, [_data(4)], _config(max_steps=3, weight_decay=0.5), tmp_path / "r")
    assert model.weight.detach().max() < 1.0
    assert torch.equal(model.bias.detach().cpu(), torch.ones(2))


def test_ema_is_what_evaluation_sees_and_is_saved(tmp_path):
    model = _mlp()
    seen = []
    evaluate = lambda m: seen.append(_weights(m)) or {"val_loss": 0.0}  # noqa: E731
    config = _config(max_steps=6, ema_decay=0.5, eval_every=3)
    fit(model, _mse, [_data(16)], config, tmp_path / "r", evaluate)
    raw = _weights(model)
    ema = load_file(latest_complete(tmp_path / "r") / "ema.safetensors")
    saved = load_file(latest_complete(tmp_path / "r") / "model.safetensors")
    assert set(ema) == set(raw)
    assert not torch.equal(ema["0.weight"], raw["0.weight"])  # the average lags the weights
    assert torch.equal(seen[-1]["0.weight"], ema["0.weight"])  # evaluation used the average
    assert torch.equal(saved["0.weight"], raw["0.weight"])  # and the raw weights came back
    assert not torch.equal(seen[0]["0.weight"], seen[1]["0.weight"])  # the average moves


def test_early_stopping_stops_and_keeps_the_best_checkpoint(tmp_path):
    values = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.4])
    evaluate = lambda m: {"val_loss": next(values)}  # noqa: E731
    config = _config(max_steps=20, eval_every=1, early_stopping_patience=2, keep_checkpoints=1)
    result = fit(_mlp(), _mse, [_data(8)], config, tmp_path / "r", evaluate)
    assert result.stopped_early and result.steps == 4
    assert (result.best_step, result.best_value) == (2, 0.5)
    steps = [p.name for p in list_complete(tmp_path / "r")]
    assert steps == ["step-00000002", "step-00000004"]  # the best survives keep_checkpoints=1
    evals = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["val_loss"] for r in evals] == [1.0, 0.5, 0.7, 0.8]


def test_metrics_record_every_step_with_the_scheduled_rate(tmp_path):
    config = _config(max_steps=6, warmup_steps=2, lr=0.1, min_lr=0.01)
    fit(_mlp(), _mse, [_data(8), _data(8, seed=2)], config, tmp_path / "r")
    train = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in train] == [0, 0, 1, 1, 2, 2]  # two batches an epoch
    for record in train:
        assert record["lr"] == pytest.approx(cosine_lr(record["step"] - 1, 0.1, 2, 6, 0.01))
        assert math.isfinite(record["loss"]) and record["samples_per_s"] > 0


def test_evaluation_restores_each_modules_mode(tmp_path):
    model = _mlp()
    model[0].eval()  # a frozen backbone a probe keeps in eval mode
    modes = []
    evaluate = lambda m: modes.append(m.training) or {"val_loss": 1.0}  # noqa: E731
    fit(model, _mse, [_data(8)], _config(max_steps=2, eval_every=1), tmp_path / "r", evaluate)
    assert modes == [False, False]
    assert model.training and model[2].training and not model[0].training


def test_bf16_autocast_only_when_asked(tmp_path):
    enabled = []

    def step(model, batch):
        enabled.append(torch.is_autocast_enabled(batch["x"].device.type))
        return _mse(model, batch)

    fit(_mlp(), step, [_data(8)], _config(max_steps=1), tmp_path / "a")
    fit(_mlp(), step, [_data(8)], _config(max_steps=1, precision="bf16"), tmp_path / "b")
    assert enabled == [False, True]


def test_refuses_to_overwrite_a_run_and_stops_on_nan(tmp_path):
    fit(_mlp(), _mse, [_data(8)], _config(max_steps=1), tmp_path / "r")
    with pytest.raises(MedtuneError, match="previous run"):
        fit(_mlp(), _mse, [_data(8)], _config(max_steps=1), tmp_path / "r")
    nan = lambda m, b: {"loss": _mse(m, b)["loss"] * float("nan")}  # noqa: E731
    with pytest.raises(MedtuneError, match="loss is nan at step 1"):
        fit(_mlp(), nan, [_data(8)], _config(max_steps=2), tmp_path / "nan")


def test_resuming_a_finished_run_does_not_train_again(tmp_path):
    model = _mlp()
    fit(model, _mse, [_data(8)], _config(max_steps=3), tmp_path / "r")
    done = _weights(model)
    again = _mlp(seed=5)
    result = fit(again, _mse, [_data(8)], _config(max_steps=3), tmp_path / "r", resume=True)
    assert result.steps == 3
    assert all(torch.equal(v, done[k]) for k, v in _weights(again).items())


def test_mlflow_mirror_gets_the_records(tmp_path, monkeypatch):
    logged = []
    fake = types.SimpleNamespace(
        set_tracking_uri=lambda uri: logged.append(("uri", uri)),
        set_experiment=lambda name: None,
        start_run=lambda run_name: logged.append(("run", run_name)),
        log_params=lambda params: None,
        log_metrics=lambda values, step: logged.append((step, values)),
        end_run=lambda: logged.append("end"),
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    config = _config(max_steps=2, tracking_uri="sqlite:///x.db")
    fit(_mlp(), _mse, [_data(8)], config, tmp_path / "r", lambda m: {"val_loss": 0.25})
    assert logged[:2] == [("uri", "sqlite:///x.db"), ("run", "r")]
    assert logged[-2] == (2, {"val_loss": 0.25}) and logged[-1] == "end"
    assert set(logged[2][1]) >= {"train/loss", "train/lr", "train/grad_norm"}


def test_keep_best_weights_loads_the_best_evaluation_with_its_ema(tmp_path):
    from medtune.train.recipe import keep_best_weights

    scores = iter([0.9, 0.2, 0.5, 0.7])  # val_loss at steps 1..4: the best is step 2
    seen = {}

    def evaluate(model):
        seen[len(seen) + 1] = _weights(model)  # what evaluation saw: the EMA weights
        return {"val_loss": next(scores)}

    model = _mlp()
    config = _config(max_steps=4, eval_every=1, ema_decay=0.5, keep_checkpoints=1)
    result = fit(model, _mse, itertools.cycle([_data(8)]), config, tmp_path / "r", evaluate)
    assert result.best_step == 2
    assert not all(torch.equal(v, seen[2][k]) for k, v in _weights(model).items())
    assert keep_best_weights(model, tmp_path / "r", result) == 2
    assert all(torch.equal(v, seen[2][k]) for k, v in _weights(model).items())


def test_lr_scale_slows_the_parameters_it_names(tmp_path):
    model = _mlp()
    before = _weights(model)
    config = _config(max_steps=3, weight_decay=0.0)
    fit(model, _mse, [_data(8)], config, tmp_path / "r", lr_scale={"0.": 0.0, "2.": 0.5})
    after = _weights(model)
    assert torch.equal(before["0.weight"], after["0.weight"])  # scale 0: frozen in effect
    assert not torch.equal(before["2.weight"], after["2.weight"])
    # Adam's first step moves each weight by about lr x scale, whatever its gradient.
    plain = _mlp()
    fit(plain, _mse, [_data(8)], _config(max_steps=1, weight_decay=0.0), tmp_path / "p")
    half = _mlp()
    fit(half, _mse, [_data(8)], _config(max_steps=1, weight_decay=0.0), tmp_path / "h",
        lr_scale={"2.": 0.5})  # fmt: skip
    step_plain = float((plain.state_dict()["2.weight"] - before["2.weight"]).abs().max())
    step_half = float((half.state_dict()["2.weight"] - before["2.weight"]).abs().max())
    assert step_half == pytest.approx(step_plain / 2, rel=1e-4)


def test_multi_crop_batches_count_images_not_views(tmp_path):
    from medtune.train.loop import _batch_size

    views = [torch.zeros(6, 1, 8, 8), torch.zeros(6, 1, 8, 8), torch.zeros(6, 1, 4, 4)]
    assert _batch_size({"image": views}) == 6
    assert _batch_size({"text": ["a", "b"]}) == 2
