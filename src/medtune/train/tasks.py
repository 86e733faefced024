"""The fine-tuning tasks: a plain dict from task name to its training function, filled by a
decorator (as the backbone registry). Adding a task is one decorated function in one file.

A task function takes the validated recipe, the built backbone, the backbone prepared for the
mode (probe, LoRA or full), and the run directory; it trains through
:func:`medtune.train.loop.fit`, exports the model, and returns a :class:`TrainResult`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from medtune.models.registry import build, registrar

TASKS: dict[str, Callable[..., TrainResult]] = {}

# The module of each built-in task: only the one asked for is imported (each pulls in its own
# libraries, and one task's import error must not stop another task).
_BUILTIN_MODULES = {
    "classify": "medtune.train.classify",
    "report": "medtune.train.report",
    "ground": "medtune.train.grounding",
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class TrainResult:
    """What a pretraining or fine-tuning run made, for the command line and the demo."""

    run_dir: Path
    export_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    lines: list[str] = field(default_factory=list)  # a short summary, one fact per line


def register_task(name: str) -> Callable[[F], F]:
    """Register a task's training function under ``name`` (the recipe's ``task``)."""
    return registrar(TASKS, "task")(name)


def run_task(name: str, **kwargs: Any) -> TrainResult:
    """Call the task registered as ``name`` with ``kwargs``."""
    if name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    return build(TASKS, "task", name, kwargs)
