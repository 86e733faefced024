"""The one training loop: pretraining, probing, LoRA and full fine-tuning all run :func:`fit`.

The loop knows nothing of images or reports. A recipe hands it a model, a ``step_fn`` that turns
a batch into ``{"loss": ..., other scalars}``, a re-iterable of batches (a DataLoader) and, for
probe or LoRA, the parameters that train. Modes differ only by those parameters (STYLE.md 3).

Each optimizer step takes ``batch_accumulation`` batches. The rate follows
:func:`~medtune.train.schedule.cosine_lr`; AdamW decays matrices only (not norms, biases, or what
the model's ``no_weight_decay()`` names, timm's convention). Under ``torchrun`` every rank runs
``fit``; gradients are averaged across ranks after the last micro-batch, and only rank 0 writes.

A checkpoint records the data position and every generator's state, so a run resumed after a
kill trains on the same batches with the same randomness as an uninterrupted one (see
:class:`~medtune.train.checkpoint.BatchStream`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from medtune.errors import MedtuneError
from medtune.train.checkpoint import (
    BatchStream,
    latest_complete,
    list_complete,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
)
from medtune.train.schedule import WeightEma, cosine_lr
from medtune.train.tracking import MetricsLog, MlflowLog, NoProgress, Progress, make_progress

StepFn = Callable[[nn.Module, dict], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """How to train; steps count optimizer steps (each of ``batch_accumulation`` batches)."""

    max_steps: int
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr: float = 0.0  # the cosine ends here
    batch_accumulation: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA only
    grad_clip: float | None = 1.0  # max global L2 norm of the gradients
    ema_decay: float | None = None  # e.g. 0.999; evaluation and export then use the average
    eval_every: int | None = None  # None: evaluate once, at the end
    checkpoint_every: int = 1000  # also at the end, at an early stop and at each new best
    keep_checkpoints: int = 3  # the best one is kept as well
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 1  # steps between metrics.jsonl lines (each line syncs with the GPU)
    tracking_uri: str | None = None  # MLflow store, e.g. "sqlite:///workspace/mlflow.db"
    compile: bool = False  # torch.compile the model's layers in place (GPU speed; see _compile)

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_accumulation", "checkpoint_every", "keep_checkpoints")
        for name in (*positive, "log_every"):
            if getattr(self, name) < 1:
                raise MedtuneError(f"loop config: {name} must be at least 1")
        if self.eval_every is not None and self.eval_every < 1:
            raise MedtuneError("loop config: eval_every must be at least 1 (or None)")
        if self.precision not in ("auto", "fp32", "bf16") or self.mode not in ("min", "max"):
            raise MedtuneError(
                f"loop config: bad precision {self.precision!r} or mode {self.mode!r}"
            )


@dataclass
class RunResult:
    steps: int
    stopped_early: bool
    best_step: int | None
    best_value: float | None
    last_eval: dict[str, float]
    checkpoint: Path | None  # the newest complete checkpoint


@dataclass
class _State:
    """What state.json records of the loop, besides the RNG states."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches drawn in this epoch
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped: bool = False
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _Ranks:
    world: int
    rank: int
    device: torch.device
    owns_group: bool


def fit(
    model: nn.Module,
    step_fn: StepFn,
    train_batches: Iterable[dict],
    config: LoopConfig,
    run_dir: Path,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: bool = False,
    trainable: Iterable[nn.Parameter] | None = None,
    progress: bool | Progress | None = None,
    lr_scale: Mapping[str, float] | None = None,
) -> RunResult:
    """Train ``model`` for ``config.max_steps`` optimizer steps; record everything in ``run_dir``.

    ``step_fn(model, batch)`` runs under autocast and returns ``{"loss": tensor, ...}``; batches
    arrive on the model's device. ``trainable`` (default: all parameters that require grad)
    trains; every other parameter is frozen. ``evaluate(model)`` gets the unwrapped model in eval
    mode under ``no_grad`` (with the EMA weights if any) and returns metrics including
    ``config.monitor``; each module's train/eval mode is restored afterwards, so a recipe may keep
    a frozen backbone in eval mode. ``resume`` continues from the newest complete checkpoint.
    ``progress``: None for a rich bar on a terminal, False for none. ``lr_scale`` multiplies
    the learning rate of parameters by name prefix (``{"text.": 0.1}``: a pretrained text
    tower adapts ten times slower than the rest). Example::

        fit(model, lambda m, b: {"loss": F.mse_loss(m(b["x"]), b["y"])}, loader,
            LoopConfig(max_steps=100, lr=1e-3), ws.run_dir("mlp"))
    """
    run_dir = Path(run_dir)
    ranks = _setup_ranks()
    try:
        with _determinism(config.deterministic):
            return _fit(model, step_fn, train_batches, config, run_dir, evaluate, resume,
                        trainable, progress, ranks, lr_scale or {})  # fmt: skip
    finally:
        if ranks.owns_group:
            dist.destroy_process_group()


def _fit(model, step_fn, batches, config, run_dir, evaluate, resume, trainable, progress, ranks,
         lr_scale):  # fmt: skip
    if not resume:
        _refuse_existing_run(run_dir)
    _seed_all(config.seed + ranks.rank)
    model.to(ranks.device)
    if ranks.world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)  # every rank starts from rank 0's weights
    if config.compile:
        _compile(_unwrap(model))
    named = _trainable(_unwrap(model), trainable)
    optimizer = _make_optimizer(_unwrap(model), named, config, ranks.device, lr_scale)
    ema = WeightEma(named, config.ema_decay) if config.ema_decay else None
    stream = BatchStream(batches)
    state = _restore(run_dir, _unwrap(model), optimizer, ema, stream, ranks) if resume else None
    if state is None:
        state = _State()
        stream.start_epoch(0)
    writer = _Writer(run_dir, config, ranks, state.step if resume else None, progress)
    try:
        _train(model, step_fn, stream, optimizer, ema, named, config, state, evaluate, writer)
    finally:
        writer.close()
    return RunResult(
        steps=state.step,
        stopped_early=state.stopped,
        best_step=state.best_step,
        best_value=state.best_value,
        last_eval=state.last_eval,
        checkpoint=latest_complete(run_dir),
    )


def _train(model, step_fn, stream, optimizer, ema, named, config, state, evaluate, writer):
    params = [p for _, p in named]
    amp = _autocast(config.precision, writer.ranks.device)
    while state.step < config.max_steps and not state.stopped:
        lr = cosine_lr(state.step, config.lr, config.warmup_steps, config.max_steps, config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        metrics, samples = _accumulate(model, step_fn, stream, config, amp, writer.ranks)
        _sync_gradients(params, writer.ranks)
        metrics["grad_norm"] = _clip(params, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        state.step += 1
        state.epoch, state.position = stream.epoch, stream.position
        writer.train_step(state.step, state.epoch, lr, metrics, samples, config.log_every)
        last = state.step == config.max_steps
        improved = False
        if evaluate is not None and (last or _every(state.step, config.eval_every)):
            improved = _evaluate(_unwrap(model), evaluate, ema, config, state, writer)
        if improved or state.stopped or last or state.step % config.checkpoint_every == 0:
            writer.checkpoint(_unwrap(model), optimizer, ema, state, stream)


def _accumulate(model, step_fn, stream, config, amp, ranks) -> tuple[dict, int]:
    """Forward and backward over ``batch_accumulation`` batches; return mean metrics, samples."""
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    n = config.batch_accumulation
    for _ in range(n):
        batch = _to_device(stream.next(), ranks.device)
        samples += _batch_size(batch)
        with amp:
            out = step_fn(model, batch)
        if "loss" not in out:
            raise MedtuneError("step_fn: returned no 'loss'")
        # Each batch's mean loss / n: the gradient of the mean over all n batches.
        (out["loss"] / n).backward()
        for key, value in out.items():
            value = torch.as_tensor(value, device=ranks.device).detach().float()
            sums[key] = sums.get(key, 0.0) + value / n
    return sums, samples


def _evaluate(model, evaluate, ema, config, state, writer) -> bool:
    """Evaluate, update early stopping, log; return whether the monitored metric improved."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), ema.applied() if ema is not None else contextlib.nullcontext():
            metrics = {k: float(v) for k, v in evaluate(model).items()}
    finally:
        for module, training in modes.items():
            module.train(training)
    if config.monitor not in metrics:
        raise MedtuneError(f"evaluate: returned no {config.monitor!r} (got {sorted(metrics)})")
    value = metrics[config.monitor]
    better = state.best_value is None or (
        value < state.best_value if config.mode == "min" else value > state.best_value
    )
    if better:
        state.best_value, state.best_step, state.bad_evals = value, state.step, 0
    else:
        state.bad_evals += 1
    patience = config.early_stopping_patience
    state.stopped = patience is not None and state.bad_evals >= patience
    state.last_eval = metrics
    writer.eval_step(state.step, metrics)
    # Ranks may see different validation shards: rank 0's decision holds for all.
    flags = writer.ranks_agree([better, state.stopped])
    state.stopped = flags[1]
    return flags[0]


class _Writer:
    """Everything that leaves the process: metrics, progress, checkpoints (rank 0 writes)."""

    def __init__(self, run_dir: Path, config: LoopConfig, ranks: _Ranks, resume_step, progress):
        self.run_dir, self.config, self.ranks = run_dir, config, ranks
        self.sinks: list[Any] = []
        self.progress: Progress = NoProgress()
        if ranks.rank == 0:
            self.sinks.append(MetricsLog(run_dir / "metrics.jsonl", resume_step))
            if config.tracking_uri:
                experiment = run_dir.parent.parent.name or "medtune"
                params = dataclasses.asdict(config)
                self.sinks.append(MlflowLog(config.tracking_uri, experiment, run_dir.name, params))
            self.progress = make_progress(progress, config.max_steps, resume_step or 0)
        self._start = self._last = time.perf_counter()
        self._samples = 0

    def train_step(self, step, epoch, lr, metrics, samples, log_every) -> None:
        self._samples += samples * self.ranks.world
        if step % log_every and step != self.config.max_steps:
            return
        values = self._mean_over_ranks(metrics)
        if not math.isfinite(values["loss"]):
            raise MedtuneError(f"training: loss is {values['loss']} at step {step}; lower the lr?")
        now = time.perf_counter()
        rate = self._samples / max(now - self._last, 1e-9)
        self._samples, self._last = 0, now
        record = {"kind": "train", "step": step, "epoch": epoch, "lr": lr, **values}
        self._write(record | {"samples_per_s": rate, "time_s": now - self._start})
        self.progress.update(step, rate, values)

    def eval_step(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"kind": "eval", "step": step, **metrics})

    def checkpoint(self, model, optimizer, ema, state, stream) -> None:
        rngs = {"epoch_start": stream.epoch_rng, "now": rng_state()}
        every = [rngs]
        if self.ranks.world > 1:
            every = [None] * self.ranks.world
            dist.all_gather_object(every, rngs)  # in memory between ranks, never from disk
        if self.ranks.rank != 0:
            return
        record = {"loop": dataclasses.asdict(state), "rng": every}
        ema_tensors = ema.state_dict() if ema else None
        save_checkpoint(self.run_dir, state.step, model, optimizer, record, ema_tensors)
        protect = {state.best_step} if state.best_step is not None else set()
        prune_checkpoints(self.run_dir, self.config.keep_checkpoints, protect)

    def ranks_agree(self, flags: list[bool]) -> list[bool]:
        if self.ranks.world == 1:
            return flags
        tensor = torch.tensor([int(f) for f in flags], device=self.ranks.device)
        dist.broadcast(tensor, src=0)
        return [bool(v) for v in tensor.tolist()]

    def close(self) -> None:
        self.progress.close()
        for sink in self.sinks:
            sink.close()

    def _mean_over_ranks(self, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(metrics)
        stacked = torch.stack([metrics[n].float().reshape(()) for n in names])
        if self.ranks.world > 1:
            dist.all_reduce(stacked)
            stacked /= self.ranks.world
        return dict(zip(names, stacked.tolist(), strict=True))

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)


def _restore(run_dir, model, optimizer, ema, stream, ranks) -> _State | None:
    path = latest_complete(run_dir)
    if path is None:
        return None
    saved, ema_tensors = load_checkpoint(path, model, optimizer)
    if ema is not None:
        if ema_tensors is None:
            raise MedtuneError(f"{path}: has no EMA weights but the config asks for an EMA")
        ema.load_state_dict(ema_tensors)
    state = _State(**saved["loop"])
    rngs = saved["rng"]
    mine = rngs[ranks.rank] if len(rngs) == ranks.world else None
    if mine is None:  # another number of ranks: the data order cannot be replayed exactly
        print(f"{path}: saved by {len(rngs)} ranks, resuming with {ranks.world}", file=sys.stderr)
        _seed_all(state.step * 1000 + ranks.rank)
    stream.resume(state.epoch, state.position, mine and mine["epoch_start"], mine and mine["now"])
    return state


def _refuse_existing_run(run_dir: Path) -> None:
    metrics = run_dir / "metrics.jsonl"
    if list_complete(run_dir) or (metrics.exists() and metrics.stat().st_size > 0):
        raise MedtuneError(f"{run_dir}: holds a previous run; resume it or choose another name")


def _trainable(model: nn.Module, trainable) -> list[tuple[str, nn.Parameter]]:
    named = list(model.named_parameters())
    if trainable is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        ids = {id(p) for p in trainable}
        if not ids <= {id(p) for _, p in named}:
            raise MedtuneError("trainable: holds parameters that are not the model's")
        chosen = [(n, p) for n, p in named if id(p) in ids]
        for _, p in named:  # frozen parameters need no gradients: less memory and compute
            p.requires_grad_(id(p) in ids)
    if not chosen:
        raise MedtuneError("trainable: no parameters to train")
    return chosen


def _make_optimizer(model, named, config: LoopConfig, device, lr_scale) -> torch.optim.Optimizer:
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in named:
        # Norm scales, biases (1-d) and named embeddings are not shrunk toward zero.
        decays = not (p.ndim < 2 or name in no_decay_names)
        groups.setdefault((decays, _scale_of(name, lr_scale)), []).append(p)
    for key in ((True, 1.0), (False, 1.0)):  # always both: resumed runs see the same groups
        groups.setdefault(key, [])
    param_groups = [
        {"params": params, "weight_decay": config.weight_decay if decays else 0.0,
         "lr_scale": scale}
        for (decays, scale), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))
    ]  # fmt: skip
    return torch.optim.AdamW(param_groups, lr=config.lr, fused=device.type == "cuda" or None)


def _scale_of(name: str, lr_scale: Mapping[str, float]) -> float:
    """The learning-rate factor of the longest prefix of ``name`` in ``lr_scale`` (else 1)."""
    matches = [prefix for prefix in lr_scale if name.startswith(prefix)]
    return float(lr_scale[max(matches, key=len)]) if matches else 1.0


def _sync_gradients(params: list[nn.Parameter], ranks: _Ranks) -> None:
    """Average gradients over ranks once per optimizer step (accumulation needs no sync).

    Not DDP's wrapper: it syncs only through the wrapped module's forward, and step functions
    reach into towers (image, text) directly.
    """
    if ranks.world == 1:
        return
    for p in params:
        if p.grad is None:  # unused on this rank: all ranks must reduce the same tensors
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    works = [dist.all_reduce(g, async_op=True) for g in grads]
    for work in works:
        work.wait()
    torch._foreach_div_(grads, ranks.world)


def _clip(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    if max_norm is None:
        grads = [p.grad for p in params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else params[0].new_zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _autocast(precision: str, device: torch.device):
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _setup_ranks() -> _Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        owns = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world, rank = 1, 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return _Ranks(world, rank, device, owns)


@contextlib.contextmanager
def _determinism(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    # warn_only: an op without a deterministic kernel warns (naming it) instead of killing a run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before_warn)
        torch.backends.cudnn.benchmark = before[1]


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device


def _compile(model: nn.Module) -> None:
    """torch.compile ``model`` in place, by region: each layer of a repeated stack (the
    transformer blocks of any family: a ModuleList or Sequential of one layer type), else the
    whole model. Regions are compiled wherever a step function enters the model (``model(x)``,
    ``forward_features``, ``forward_patches``), one graph serves all blocks (compile time of
    one block), and ``Module.compile`` keeps parameter names: checkpoints stay interchangeable
    with uncompiled models."""
    if not _compile_repeated(model):
        model.compile()


def _compile_repeated(module: nn.Module) -> int:
    children = list(module.children())
    repeated = len(children) > 1 and len({type(c) for c in children}) == 1
    if repeated and isinstance(module, nn.ModuleList | nn.Sequential):
        for child in children:
            child.compile()
        return len(children)
    return sum(_compile_repeated(child) for child in children)


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the module; checkpoints and evaluation use the original names.
    return getattr(model, "_orig_mod", model)


def _every(step: int, interval: int | None) -> bool:
    return interval is not None and step % interval == 0


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _batch_size(batch: Any) -> int:
    for value in batch.values() if isinstance(batch, dict) else [batch]:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
        if isinstance(value, list | tuple):  # multi-crop views: a list of (B, ...) tensors
            first = value[0] if value else None
            return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(value)
    return 1
