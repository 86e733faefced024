"""``medtune pretrain``: pretrain a backbone on a workspace's images (DINO self-distillation)
or on its images and reports (contrastive), then export it for fine-tuning's ``init``.

Read top to bottom: name the run, record the recipe, build the backbone, let the objective
build its model and data, :func:`~medtune.train.loop.fit`, export. An objective is one function
that returns an :class:`Objective`; the loop, checkpoints and export are the same for all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medtune.config_train import PretrainConfig
from medtune.models.contract import Encoder
from medtune.models.export import export_model
from medtune.train.loop import StepFn, fit
from medtune.train.recipe import (
    Backbone,
    build_backbone,
    evaluation_at,
    image_datasets,
    keep_best_weights,
    ranks,
    run_dir,
    save_recipe,
)
from medtune.train.tasks import TrainResult


@dataclass
class Objective:
    """What an objective hands the loop, and what it exports after training."""

    model: nn.Module
    step_fn: StepFn
    trainable: list[nn.Parameter]
    train: Any  # ImageDataset
    val: Any | None
    evaluate: Callable[[nn.Module, Iterable[dict]], dict[str, float]]
    # After training: (the encoder to export, named parts, info for medtune.json).
    finish: Callable[[], tuple[Encoder, dict[str, nn.Module], dict[str, Any]]]
    export_best: bool  # export the best evaluation's weights (else the last ones)
    lines: list[str] = field(default_factory=list)
    lr_scale: dict[str, float] = field(default_factory=dict)  # by parameter-name prefix


def run_pretrain(
    config: PretrainConfig, *, resume: bool = False, progress: Any = None
) -> TrainResult:
    """Pretrain ``config.backbone`` (or the export named by ``config.init``) with
    ``config.objective``; the run lives in ``<workspace>/runs/<name>`` (default
    ``pretrain-<objective>``) and its export in ``<run>/export``. ``resume`` continues the run
    from its newest checkpoint. Example::

        run_pretrain(load_recipe("configs/pretrain/dino.yaml"))
    """
    run = run_dir(config, f"pretrain-{config.objective}")
    save_recipe(run, config)
    backbone = build_backbone(config.backbone, config.init)
    objective = OBJECTIVES[config.objective](config, backbone)

    data, loop = config.data, config.loop.to_loop_config("val_loss", "min")
    rank, world = ranks()
    shards = {"workers": data.workers, "seed": loop.seed, "rank": rank, "world": world}
    train_batches = make_batches(objective.train, data.batch_size, shuffle=True, **shards)
    evaluate = None
    if objective.val is not None:
        val_size = data.eval_batch_size or data.batch_size
        val_batches = make_batches(objective.val, val_size, shuffle=False, **shards)
        evaluate = lambda model: objective.evaluate(model, val_batches)  # noqa: E731
    result = fit(objective.model, objective.step_fn, train_batches, loop, run, evaluate=evaluate,
                 resume=resume, trainable=objective.trainable, progress=progress,
                 lr_scale=objective.lr_scale)  # fmt: skip

    chosen = result if objective.export_best else dataclasses.replace(result, best_step=None)
    exported_step = keep_best_weights(objective.model, run, chosen)  # with EMA weights, if any
    exported_metrics = evaluation_at(run, exported_step) or dict(result.last_eval)
    encoder, parts, info = objective.finish()
    export_dir = run / "export"
    if rank == 0:
        export_model(export_dir, task="encoder", backbone=backbone.config, encoder=encoder,
                     parts=parts, info={
                         "objective": config.objective,
                         "metrics": exported_metrics,
                         "step": exported_step,
                         "steps": result.steps,
                         "best": {"step": result.best_step, "value": result.best_value},
                         "recipe": config.model_dump(mode="json"),
                         "init": str(backbone.init) if backbone.init else None,
                         **info,
                     })  # fmt: skip
    lines = [f"{config.objective}: {result.steps} steps in {run}", *objective.lines]
    if result.last_eval:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.last_eval.items()))
        lines.append(f"last evaluation: {shown}")
    lines.append(f"export: {export_dir}, weights of step {exported_step} (use it as a "
                 "fine-tuning recipe's init)")  # fmt: skip
    return TrainResult(run, export_dir, result.steps, exported_metrics, lines)


def make_batches(
    dataset: Any, batch_size: int, *, shuffle: bool, workers: int, seed: int, rank: int, world: int
) -> Any:
    """A seeded loader; training drops a last partial batch when there is a full one (a batch
    of one gives contrastive learning no negatives)."""
    from medtune.train.data import make_loader

    drop_last = shuffle and len(dataset) // world >= batch_size
    return make_loader(dataset, batch_size, shuffle=shuffle, workers=workers, seed=seed,
                       drop_last=drop_last, rank=rank, world_size=world)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The objectives.


def dino_objective(config: PretrainConfig, backbone: Backbone) -> Objective:
    """DINO (iBOT with ``dino.ibot``): multi-crop views, EMA teacher. The last teacher's
    backbone is exported (DINO evaluates and releases the teacher: it is the better of the
    two); not the best validation loss's, which is no measure of the features (it rises as the
    centre spreads the teacher's outputs). ``data.augment``, when set, replaces the steps each
    view gets after its crop."""
    from medtune.train.dino import Dino, dino_step, evaluate_dino, multi_crop, view_sizes

    section, encoder = config.dino, backbone.encoder
    model = Dino(encoder, section, config.loop.max_steps, config.loop.batch_accumulation,
                 seed=config.loop.seed)  # fmt: skip
    view = config.data.augment
    # The validation loss compares global views, seeded: the same each time.
    train, val = image_datasets(
        config, encoder.contract, train_augment=multi_crop(section, encoder, view),
        val_augment=multi_crop(section, encoder, view, local=False), recipe_augment=False,
        label_columns=[],
    )  # fmt: skip
    lines = []
    global_size, local_size = view_sizes(section, encoder)
    sizes = {global_size, local_size} if section.local_crops else {global_size}
    if not encoder.any_size and sizes != {encoder.contract.size}:
        lines.append(f"dino: {encoder.family} backbones take {encoder.contract.size} px only: "
                     "other views are resized to it in each step (correct, slower)")  # fmt: skip

    def finish() -> tuple[Encoder, dict[str, nn.Module], dict[str, Any]]:
        model.catch_up_teacher()  # the EMA update of the last optimizer step
        return model.teacher["backbone"], {}, {"exported": "teacher"}

    return Objective(model, dino_step, model.student_parameters(), train, val, evaluate_dino,
                     finish, export_best=False, lines=lines)  # fmt: skip


def contrastive_objective(config: PretrainConfig, backbone: Backbone) -> Objective:
    """Image-report InfoNCE; exports the best evaluation's image tower, and the projections
    and text tower as parts (``image_projection``, ``text_projection``, ``text``) for
    zero-shot use."""
    from medtune.models.text import text_encoder_from_config
    from medtune.train.augment import DEFAULT_AUGMENT
    from medtune.train.contrastive import Contrastive, contrastive_step, evaluate_contrastive

    section, encoder = config.contrastive, backbone.encoder
    text = text_encoder_from_config(section.text.as_mapping())
    model = Contrastive(encoder, text, section, seed=config.loop.seed)
    rows = {"label_columns": [], "text": True, "text_sections": section.sections}
    train, val = image_datasets(config, encoder.contract, train_augment=DEFAULT_AUGMENT, **rows)
    lines = []

    def finish() -> tuple[Encoder, dict[str, nn.Module], dict[str, Any]]:
        parts = {"image_projection": model.image_projection,
                 "text_projection": model.text_projection, "text": model.text}  # fmt: skip
        info = {"text": section.text.as_mapping(), "projection_dim": section.projection_dim,
                "logit_scale": float(model.logit_scale().detach())}  # fmt: skip
        return model.image, parts, info

    return Objective(model, contrastive_step, model.trainable_parameters(), train, val,
                     evaluate_contrastive, finish, export_best=True, lines=lines,
                     lr_scale={"text.": section.text_lr_scale})  # fmt: skip


OBJECTIVES: dict[str, Callable[[PretrainConfig, Backbone], Objective]] = {
    "dino": dino_objective,
    "contrastive": contrastive_objective,
}
