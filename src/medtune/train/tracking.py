"""Where a run's numbers go: ``metrics.jsonl`` (the full record), a progress display, MLflow.

``metrics.jsonl`` holds one JSON object a line: ``{"kind": "train", "step": 12, "loss": ...,
"lr": ..., "grad_norm": ..., "samples_per_s": ..., "time_s": ...}`` after optimizer steps and
``{"kind": "eval", "step": 12, "val_loss": ...}`` after evaluations. Each line is written and
flushed whole; a resumed run first drops the lines past its checkpoint (and a line cut by a
kill), so every step appears once. MLflow is an optional extra (``medtune[mlflow]``): without
it the run folder is the full record.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from medtune.errors import MedtuneError
from medtune.workspace import atomic_write_text


class MetricsLog:
    """Appends records to ``metrics.jsonl``; ``resume_step`` keeps only the lines up to it."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, skipping a last line cut short by a kill."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))


class MlflowLog:
    """Mirrors the records into MLflow (``medtune[mlflow]``), e.g. ``sqlite:///ws/mlflow.db``."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, params: dict) -> None:
        try:
            import mlflow
        except ImportError:
            raise MedtuneError(
                f"{tracking_uri}: MLflow tracking needs the extra: pip install 'medtune[mlflow]'"
            ) from None
        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        mlflow.start_run(run_name=run_name)
        mlflow.log_params(params)

    def write(self, record: dict[str, Any]) -> None:
        values = {
            f"{record['kind']}/{k}" if record["kind"] == "train" else k: float(v)
            for k, v in record.items()
            if k not in ("kind", "step") and isinstance(v, int | float) and math.isfinite(v)
        }
        self._mlflow.log_metrics(values, step=record["step"])

    def close(self) -> None:
        self._mlflow.end_run()


class Progress(Protocol):
    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """A rich bar with step, samples/s, loss and ETA (for a terminal)."""

    def __init__(self, total: int, start: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.1f} samples/s  loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task("train", total=total, completed=start, rate=0.0, loss=0.0)
        self._bar.start()

    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None:
        loss = metrics.get("loss", float("nan"))
        self._bar.update(self._task, completed=step, rate=samples_per_s, loss=loss)

    def close(self) -> None:
        self._bar.stop()


class PlainProgress:
    """One line on stderr every ``every_s`` seconds (logs, CI, batch schedulers)."""

    def __init__(self, total: int, every_s: float = 60.0) -> None:
        self._total = total
        self._every_s = every_s
        self._last = time.monotonic()

    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s and step < self._total:
            return
        self._last = now
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"step {step}/{self._total} {samples_per_s:.1f} samples/s {shown}", file=sys.stderr)

    def close(self) -> None:
        pass


def make_progress(choice: bool | Progress | None, total: int, start: int) -> Progress:
    """``None``: a rich bar on a terminal, else a plain line a minute; ``False``: nothing."""
    if choice is False:
        return NoProgress()
    if choice is None or choice is True:
        if choice is True or sys.stderr.isatty():
            return RichProgress(total, start)
        return PlainProgress(total)
    return choice
