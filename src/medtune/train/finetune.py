"""``medtune finetune RECIPE``: adapt a backbone to a task by probe, LoRA or full fine-tuning.

Read top to bottom: name the run and record its recipe, build the backbone (from the registry
or an earlier export), make it ready for the mode (which parameters train), then hand it to the
task (classify, report, ground), which trains through the one loop and exports the model.
"""

from __future__ import annotations

from typing import Any

from medtune.config_train import FinetuneConfig
from medtune.train.modes import prepare_backbone
from medtune.train.recipe import build_backbone, run_dir, save_recipe
from medtune.train.tasks import TrainResult, run_task


def run_finetune(
    config: FinetuneConfig, *, resume: bool = False, progress: Any = None
) -> TrainResult:
    """Fine-tune as ``config`` says, in ``<workspace>/runs/<name>`` (default
    ``finetune-<task>-<mode>``); ``resume`` continues that run from its newest checkpoint.
    Returns where the run and its export are, with the last evaluation."""
    run = run_dir(config, f"finetune-{config.task}-{config.mode}")
    save_recipe(run, config)
    backbone = build_backbone(config.backbone, config.init)
    prepared = prepare_backbone(backbone.encoder, config.mode, config.lora)
    return run_task(
        config.task, config=config, backbone=backbone, prepared=prepared, run=run,
        resume=resume, progress=progress,
    )  # fmt: skip
