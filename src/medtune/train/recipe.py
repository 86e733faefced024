"""What every training recipe does the same way: name its run, build its backbone (from the
registry or from an earlier export), read its rows, and record the recipe beside the run.

The recipes themselves (medtune.train.pretrain, medtune.train.finetune) read top to bottom
on these: build, prepare, ``fit``, export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medtune.config_train import BackboneSection, DataSection, FinetuneConfig, PretrainConfig
from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, InputContract
from medtune.workspace import Workspace, atomic_write_text

RECIPE_FILE = "recipe.yaml"


@dataclass
class Backbone:
    """A built backbone and the registry config that rebuilds it (recorded in exports)."""

    encoder: Encoder
    config: dict[str, Any]
    init: Path | None  # the export its weights came from, if any


def run_dir(config: PretrainConfig | FinetuneConfig, default_name: str) -> Path:
    """``<workspace>/runs/<name>``: the recipe's ``name``, else ``default_name``."""
    workspace = Workspace(Path(config.workspace))
    if not workspace.catalog_path.is_file():
        raise MedtuneError(f"{workspace.root}: no dataset (run `medtune ingest` first)")
    return workspace.run_dir(config.name or default_name)


def build_backbone(section: BackboneSection, init: Path | None) -> Backbone:
    """The recipe's backbone: with ``init`` (an export, or a run holding one), the exported
    backbone with its weights, and ``section`` must be left unset or name the same
    backbone; else a fresh one from the registry."""
    from medtune.models.export import load_encoder, read_export, resolve_export
    from medtune.models.registry import backbone_from_config

    if init is None:
        return Backbone(backbone_from_config(section.as_mapping()), section.as_mapping(), None)
    directory = resolve_export(init)
    recorded = read_export(directory)["backbone"]
    if section.model_fields_set and section.name != recorded.get("name"):
        raise MedtuneError(
            f"{directory}: init holds a {recorded.get('name')!r} backbone but the recipe asks "
            f"for {section.name!r}; drop the recipe's backbone section or the init"
        )
    return Backbone(load_encoder(directory), dict(recorded), directory)


def image_datasets(
    config: PretrainConfig | FinetuneConfig,
    contract: InputContract,
    *,
    train_augment: Any,
    val_augment: Any = None,
    recipe_augment: bool = True,
    **dataset_kwargs: Any,
) -> tuple[Any, Any | None]:
    """(train, val) :class:`medtune.train.data.ImageDataset` of the recipe's workspace and
    data section; val is None when ``data.val`` is empty. The recipe's ``data.augment``
    replaces ``train_augment`` unless ``recipe_augment`` is False (an objective that reads it
    otherwise, as DINO does per view). ``dataset_kwargs`` (label columns, policies, text) go to
    both."""
    from medtune.train.data import ImageDataset

    data: DataSection = config.data
    common = {"contract": contract, "split_column": data.split_column, "where": data.where,
              **dataset_kwargs}  # fmt: skip
    augment = train_augment
    if recipe_augment and data.augment is not None:
        augment = data.augment
    train = ImageDataset(config.workspace, split_values=data.train, augment=augment, **common)
    val = None
    if data.val:
        val = ImageDataset(config.workspace, split_values=data.val, augment=val_augment, **common)
    return train, val


def ranks() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1): loaders shard by them, rank 0 exports.
    Read from torchrun's environment: loaders are built before the loop joins the group."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def save_recipe(run: Path, config: PretrainConfig | FinetuneConfig) -> None:
    """Write the validated recipe as ``<run>/recipe.yaml``: the run's own record of how it was
    made (a resumed run checks it is the same)."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    path = run / RECIPE_FILE
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise MedtuneError(f"{path}: the run was made by another recipe; use another name")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def keep_best_weights(model: Any, run: Path, result: Any) -> int:
    """Put into ``model`` the weights to export after :func:`medtune.train.loop.fit`: those of
    the best evaluation (the loop keeps that checkpoint), with the EMA average if the run kept
    one; without evaluations, the last checkpoint's. Return the step they come from."""
    from medtune.train.checkpoint import checkpoint_dir, load_evaluated_weights

    step = result.best_step if result.best_step is not None else result.steps
    path = checkpoint_dir(run, step)
    if not path.is_dir():  # the best one pruned by hand, or no checkpoint at all: keep as is
        return result.steps
    return load_evaluated_weights(path, model)


def evaluation_at(run: Path, step: int) -> dict[str, float]:
    """The metrics the run's evaluation at ``step`` wrote to metrics.jsonl ({} if none): what
    an export made with :func:`keep_best_weights` scores."""
    from medtune.train.tracking import read_metrics

    for record in reversed(read_metrics(run / "metrics.jsonl")):
        if record.get("kind") == "eval" and record.get("step") == step:
            return {k: v for k, v in record.items() if k not in ("kind", "step")}
    return {}
