"""The classification task: multi-label findings from any label columns of the catalog.

A head (``medtune.models.heads``) on the backbone's pooled features, trained with binary
cross-entropy over the labels a row has (a label the policy ignores, uncertain or not
mentioned, is masked out of the loss), validated by AUROC per label. The model is exported
with its labels, so evaluation and serving need nothing but the export::

    encoder, head, labels = load_classifier("ws/runs/finetune-classify-lora/export")
    probabilities = predict((encoder, head, labels), images)  # (B, len(labels))

A LoRA run's export also holds ``adapter/``: the PEFT adapter, ``head.safetensors`` and
``medtune_head.json`` (labels, head and backbone configs), a few MB to share with a site that
has the same backbone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtune.config_train import FinetuneConfig
from medtune.errors import MedtuneError
from medtune.models.contract import Encoder
from medtune.models.heads import head_from_config, make_head
from medtune.models.weights import save_weights
from medtune.train.augment import DEFAULT_AUGMENT
from medtune.train.loop import fit
from medtune.train.modes import Prepared, finish_backbone, save_adapter
from medtune.train.recipe import Backbone, evaluation_at, image_datasets, keep_best_weights, ranks
from medtune.train.tasks import TrainResult, register_task
from medtune.workspace import atomic_write_text

# Mild changes of geometry and exposure, as between sites; never a flip (laterality).
CLASSIFY_AUGMENT: dict[str, dict[str, Any]] = DEFAULT_AUGMENT
MONITOR = ("val_auroc", "max")
ADAPTER_DIR = "adapter"  # in the export, for LoRA: the PEFT adapter, the head and its labels
ADAPTER_HEAD = "medtune_head.json"

Loaded = tuple[Encoder, nn.Module, list[str]]


class Classifier(nn.Module):
    """Backbone and head in one module, so the loop's checkpoints hold both."""

    def __init__(self, prepared: Prepared, head: nn.Module) -> None:
        super().__init__()
        self.encoder = prepared.encoder
        self.head = head
        self.prepared = prepared  # plain attribute: its encoder is registered above

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, labels)."""
        return self.head(self.prepared.features(images).pooled)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the entries ``mask`` keeps; 0 (still differentiable)
    when it keeps none, so a batch of only ignored labels does not stop the run."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


@register_task("classify")
def train_classify(
    config: FinetuneConfig,
    backbone: Backbone,
    prepared: Prepared,
    run: Path,
    *,
    resume: bool,
    progress: Any = None,
) -> TrainResult:
    """Train a multi-label classifier on ``config.classify.labels`` and export it to
    ``run/export`` (see :func:`load_classifier`)."""
    section = config.classify
    train, val = image_datasets(
        config, prepared.encoder.contract, train_augment=CLASSIFY_AUGMENT,
        label_columns=section.labels, uncertain=section.uncertain,
        unmentioned=section.unmentioned,
    )  # fmt: skip
    if not train.label_columns:
        raise MedtuneError(f"{config.workspace}: no label columns (run `medtune label` first)")
    with torch.random.fork_rng(devices=[]):  # the head's init: a function of the seed alone
        torch.manual_seed(config.loop.seed)
        head = make_head(section.head, prepared.encoder.dim, len(train.label_columns),
                         section.hidden, section.dropout)  # fmt: skip
    model = Classifier(prepared, head).train()
    evaluate = _evaluator(val, train.label_names, config) if val is not None else None
    result = fit(
        model, _step, _train_loader(train, config), config.loop.to_loop_config(*MONITOR), run,
        evaluate=evaluate, resume=resume, trainable=[*prepared.trainable, *head.parameters()],
        progress=progress,
    )  # fmt: skip
    export = run / "export"
    exported_step = keep_best_weights(model, run, result)
    exported_metrics = evaluation_at(run, exported_step) or dict(result.last_eval)
    if ranks()[0] == 0:  # under torchrun every rank gets here; one writes
        info = {
            "labels": train.label_names,
            "label_columns": train.label_columns,
            "head": head.config,
            "mode": prepared.mode,
            "metrics": exported_metrics,
            "step": exported_step,
            "steps": result.steps,
            "best": {"step": result.best_step, "value": result.best_value},
            "recipe": config.model_dump(mode="json"),
            "init": str(backbone.init) if backbone.init is not None else None,
        }
        _export(export, backbone, prepared, head, info)
    return TrainResult(run, export, result.steps, exported_metrics,
                       _summary(prepared, model, train, val, result))  # fmt: skip


def _step(model: Classifier, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {"loss": masked_bce(model(batch["image"]), batch["labels"], batch["label_mask"])}


def _train_loader(train: Any, config: FinetuneConfig) -> Any:
    from medtune.train.data import make_loader

    rank, world = ranks()  # under torchrun each rank reads its share of every epoch
    return make_loader(train, config.data.batch_size, shuffle=True, workers=config.data.workers,
                       seed=config.loop.seed, rank=rank, world_size=world)  # fmt: skip


def _evaluator(
    val: Any, names: list[str], config: FinetuneConfig
) -> Callable[[nn.Module], dict[str, float]]:
    from medtune.train.data import make_loader

    batch_size = config.data.eval_batch_size or config.data.batch_size
    loader = make_loader(val, batch_size, shuffle=False, workers=config.data.workers,
                         seed=config.loop.seed)  # fmt: skip

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        logits, labels, masks = [], [], []
        for batch in loader:
            logits.append(model(batch["image"].to(device)).float().cpu())
            labels.append(batch["labels"])
            masks.append(batch["label_mask"])
        return classification_metrics(torch.cat(logits), torch.cat(labels), torch.cat(masks),
                                       names)  # fmt: skip

    return evaluate


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, names: list[str]
) -> dict[str, float]:
    """``val_loss``, ``val_auroc_<name>`` for each label with both classes among its unmasked
    entries, ``val_auroc`` their mean (0.5 when no label has both: chance, never NaN) and
    ``val_auroc_labels``, how many labels the mean covers."""
    from sklearn.metrics import roc_auc_score

    metrics = {"val_loss": float(masked_bce(logits, labels, mask))}
    scores = []
    for k, name in enumerate(names):
        kept = mask[:, k] > 0
        truth = labels[kept, k].numpy()
        if len(np.unique(truth)) < 2:
            continue
        score = float(roc_auc_score(truth, logits[kept, k].numpy()))
        metrics[f"val_auroc_{name}"] = score
        scores.append(score)
    metrics["val_auroc"] = float(np.mean(scores)) if scores else 0.5
    metrics["val_auroc_labels"] = float(len(scores))
    return metrics


def _export(
    directory: Path, backbone: Backbone, prepared: Prepared, head: nn.Module, info: dict
) -> Path:
    from medtune.models.export import export_model

    def write_adapter(tmp: Path) -> None:
        # LoRA: the adapter folder alone is the shareable model (a few MB): the PEFT adapter for
        # the backbone, plus the head and what its outputs mean. Other modes write none.
        if prepared.mode != "lora":
            return
        save_adapter(prepared, tmp / ADAPTER_DIR)
        save_weights(head, tmp / ADAPTER_DIR / "head.safetensors")
        keys = ("labels", "label_columns", "head")
        text = json.dumps({k: info[k] for k in keys} | {"backbone": backbone.config}, indent=2)
        atomic_write_text(tmp / ADAPTER_DIR / ADAPTER_HEAD, text + "\n")

    return export_model(
        directory, task="classify", backbone=backbone.config, encoder=finish_backbone(prepared),
        parts={"head": head}, info=info, write_extra=write_adapter,
    )  # fmt: skip


def _summary(prepared: Prepared, model: nn.Module, train: Any, val: Any, result: Any) -> list[str]:
    trained = sum(p.numel() for p in prepared.trainable)
    head = sum(p.numel() for p in model.head.parameters())
    lines = [
        f"{prepared.mode}: {trained:,} backbone parameters trained, head {head:,} "
        f"({len(train.label_names)} labels: {', '.join(train.label_names)})",
        f"{len(train)} training images, {len(val) if val is not None else 0} validation images",
    ]
    scores = result.last_eval
    if val is None:
        lines.append("no validation split: the export holds the last weights, not evaluated")
    elif scores.get("val_auroc_labels", 0) == 0:
        lines.append("val_auroc 0.5: no label has both classes in validation (nothing to score)")
    else:
        auroc, scored = scores["val_auroc"], int(scores["val_auroc_labels"])
        lines.append(f"val_auroc {auroc:.3f} over {scored} labels at step {result.steps}")
    if result.best_step is not None and result.best_step != result.steps:
        lines.append(f"best val_auroc {result.best_value:.3f} at step {result.best_step}")
    return lines


def load_classifier(directory: str | os.PathLike[str]) -> Loaded:
    """(encoder, head, labels) of a classifier export (or a run holding one), in eval mode."""
    from medtune.models.export import load_encoder, load_part, read_export, resolve_export

    directory = resolve_export(directory)
    record = read_export(directory)
    if record.get("task") != "classify":
        raise MedtuneError(f"{directory}: a {record.get('task')!r} model, not a classifier")
    encoder = load_encoder(directory).eval()
    head = load_part(directory, "head", head_from_config(record["head"])).eval()
    return encoder, head, list(record["labels"])


def predict(
    model: str | os.PathLike[str] | Loaded, images: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Probabilities (B, labels) for ``images`` (B, C, H, W), shaped by the model's input
    contract; ``model`` is an export directory or what :func:`load_classifier` returned."""
    encoder, head, _ = model if isinstance(model, tuple) else load_classifier(model)
    encoder.eval(), head.eval()
    device = next(encoder.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            out.append(torch.sigmoid(head(encoder(x)).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0, head.config["classes"])
