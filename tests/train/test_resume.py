"""Crash safety and multi-process training: kill -9 then resume, and two ranks on gloo.

Run as a script, this file is the training job the tests start in other processes:
``python test_resume.py train RUN_DIR SLEEP_S RESUME`` or, under torchrun, ``... ddp OUT_DIR``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medtune.train.checkpoint import latest_complete
from medtune.train.loop import LoopConfig, fit
from medtune.train.tracking import read_metrics

MAX_STEPS = 24
CONFIG = LoopConfig(
    max_steps=MAX_STEPS,
    lr=3e-2,
    warmup_steps=3,
    batch_accumulation=2,
    grad_clip=1.0,
    ema_decay=0.9,
    eval_every=5,
    checkpoint_every=2,
    keep_checkpoints=2,
    seed=7,
    deterministic=True,
)


class Noisy(Dataset):
    """Random regression pairs; each item draws fresh noise from the global generator."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 6, generator=g)
        self.y = self.x @ torch.randn(6, 2, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i] + 0.05 * torch.randn(6), "y": self.y[i]}  # "augmentation"


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 2))


def _step_fn(sleep_s: float = 0.0):
    def step(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        time.sleep(sleep_s)  # slows the job the test kills, so the kill lands mid-run
        loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return {"loss": loss, "abs_err": (model(batch["x"]) - batch["y"]).abs().mean()}

    return step


def _evaluate(model: nn.Module) -> dict[str, float]:
    data, device = Noisy(), next(model.parameters()).device
    return {"val_loss": nn.functional.mse_loss(model(data.x.to(device)), data.y.to(device)).item()}


def train(run_dir: Path, resume: bool = False, sleep_s: float = 0.0) -> nn.Module:
    """The job: shuffled batches (seeded from the global generator), noise, dropout, EMA."""
    model = _model()
    loader = DataLoader(Noisy(), batch_size=4, shuffle=True)
    fit(model, _step_fn(sleep_s), loader, CONFIG, run_dir, _evaluate, resume, progress=False)
    return model


def train_ddp(out: Path) -> None:
    """One rank of a 2-process job: each rank its own shard of the data."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dataset = Noisy()
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=1)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    model = _model()
    if rank == 1:  # a different start: fit must hand every rank rank 0's weights
        nn.init.zeros_(model[0].weight)
    config = LoopConfig(max_steps=6, lr=3e-2, checkpoint_every=3, eval_every=3, seed=7)
    # One run folder per rank, so the test can tell that rank 1 wrote nothing.
    fit(model, _step_fn(), loader, config, out / f"run-rank{rank}", _evaluate, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"w{rank}.st")


def _job(run_dir: Path, sleep_s: float = 0.0, resume: bool = False) -> list[str]:
    return [sys.executable, __file__, "train", str(run_dir), str(sleep_s), str(int(resume))]


def _env() -> dict[str, str]:
    # One thread: the same kernels, hence the same bits, in every process.
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _last_step(run_dir: Path) -> int:
    return max((r["step"] for r in read_metrics(run_dir / "metrics.jsonl")), default=0)


def _records(run_dir: Path, after: int) -> list[dict]:
    drop = ("samples_per_s", "time_s")
    records = read_metrics(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in drop} for r in records if r["step"] > after]


@pytest.mark.slow
def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    job = subprocess.Popen(_job(killed, sleep_s=0.05), env=_env())
    deadline = time.monotonic() + 120
    while _last_step(killed) < 9:  # one step past the checkpoint of step 8
        assert job.poll() is None and time.monotonic() < deadline, "job ended before the kill"
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    resumed_from = int(latest_complete(killed).name.split("-")[1])
    assert resumed_from < _last_step(killed) < MAX_STEPS  # metrics ran past the checkpoint

    subprocess.run(_job(killed, resume=True), env=_env(), check=True)
    reference = tmp_path / "reference"
    subprocess.run(_job(reference), env=_env(), check=True)

    final_a, final_b = latest_complete(killed), latest_complete(reference)
    assert final_a.name == final_b.name == f"step-{MAX_STEPS:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(final_a / name), load_file(final_b / name)
        assert all(torch.equal(a[k], b[k]) for k in b), name
    assert _records(killed, resumed_from) == _records(reference, resumed_from)
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, MAX_STEPS + 1))  # lines past the checkpoint were dropped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_on_gloo_end_identical_and_only_rank_0_writes(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(_free_port()), __file__, "ddp", str(tmp_path)]
    # Two CPU processes even where a GPU is (two ranks cannot share one GPU under NCCL).
    subprocess.run(command, env=_env() | {"CUDA_VISIBLE_DEVICES": ""}, check=True, timeout=300)
    w0, w1 = load_file(tmp_path / "w0.st"), load_file(tmp_path / "w1.st")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not torch.equal(w0["0.weight"], _model().state_dict()["0.weight"])  # it trained
    assert not (tmp_path / "run-rank1").exists()
    rank0 = tmp_path / "run-rank0"
    assert latest_complete(rank0).name == "step-00000006"
    steps = [r["step"] for r in read_metrics(rank0 / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


if __name__ == "__main__":
    if sys.argv[1] == "ddp":
        train_ddp(Path(sys.argv[2]))
    else:
        train(Path(sys.argv[2]), sleep_s=float(sys.argv[3]), resume=sys.argv[4] == "1")
