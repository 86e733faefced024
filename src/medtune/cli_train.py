"""The training verbs: ``pretrain`` and ``finetune``, each running one recipe.

    medtune pretrain pretrain/dino -w ws                 # self-distillation on ws's images
    medtune pretrain pretrain/contrastive -w ws --set loop.max_steps=2000
    medtune finetune finetune/classify-lora -w ws --set init=ws/runs/pretrain-dino
    medtune finetune finetune/classify-probe -w ws --resume   # after a crash or a kill

A run lives in ``<workspace>/runs/<name>`` (the recipe's ``name``, else one made from the
objective or task and mode): recipe.yaml, checkpoints/, metrics.jsonl and, at the end,
export/ (the model as a self-describing directory; a later recipe's ``init``).

Registered on the main app by ``cli.py``; each command imports torch and its recipe inside the
function so that ``medtune --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtune.cli_output import print_summary

RecipeArgument = Annotated[
    str, typer.Argument(help="Recipe name (such as 'finetune/classify-probe') or YAML path.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value: --set loop.max_steps=200 (repeatable)."),
]
WorkspaceOption = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default from the recipe)."),
]
NameOption = Annotated[
    str | None, typer.Option(help="Run name under runs/ (default: the recipe's).")
]
ResumeOption = Annotated[
    bool, typer.Option(help="Continue the run from its newest complete checkpoint.")
]


def pretrain(
    recipe: RecipeArgument,
    workspace: WorkspaceOption = None,
    name: NameOption = None,
    resume: ResumeOption = False,
    set_: SetOption = None,
) -> None:
    """Pretrain a backbone on the workspace's images: self-distillation (DINO, optional iBOT)
    or image-report contrastive learning."""
    from medtune.config_train import PretrainConfig
    from medtune.train.pretrain import run_pretrain

    config = _load(recipe, PretrainConfig, set_, workspace, name)
    print_summary(_Summary(run_pretrain(config, resume=resume).lines))


def finetune(
    recipe: RecipeArgument,
    workspace: WorkspaceOption = None,
    name: NameOption = None,
    resume: ResumeOption = False,
    set_: SetOption = None,
) -> None:
    """Fine-tune a backbone to a task (classify, report, ground) by probe, LoRA or full."""
    from medtune.config_train import FinetuneConfig
    from medtune.train.finetune import run_finetune

    config = _load(recipe, FinetuneConfig, set_, workspace, name)
    print_summary(_Summary(run_finetune(config, resume=resume).lines))


def _load(recipe, expect, set_, workspace, name):  # type: ignore[no-untyped-def]
    from medtune.config import load_recipe

    overrides = list(set_ or [])
    flags = {}
    for key, flag, value in (("workspace", "--workspace", workspace), ("name", "--name", name)):
        if value is not None:
            overrides.append(f"{key}={value}")
            flags[key] = flag
    return load_recipe(recipe, overrides, expect=expect, flags=flags)


class _Summary:
    """The shape print_summary takes: no tables, the run's lines."""

    def __init__(self, lines: list[str]) -> None:
        self.tables: dict[str, list[list[object]]] = {}
        self.lines = lines


COMMANDS = (pretrain, finetune)
