"""The probe suite: one MLP head per task on a frozen encoder's cached features.

"Linear probing with a three-layer MLP head, reported as per-task AUROC" (the multi-anatomy
X-ray foundation-model papers): the encoder runs once over every image (evaluate/features.py),
then each registered task (evaluate/probe_tasks.py) trains a small head on the training rows'
features, stops early on the validation loss, and predicts the test rows. This module produces
predictions only; evaluate/stats.py turns them into AUROCs and confidence intervals::

    result = run_probe_suite("runs/pretrain/export", "ws", device="cuda")
    result.predictions["sex"].scores    # P(M) of each test row
    result.skipped                      # {"marker": "no labels in this workspace (...)"}

Rows: the split column ("split_site" when the catalog has one, else "split") says which rows
train, validate and test; test rows of every value in ``test`` ("test", and "ood" for held-out
sites) are predicted. Classes a head never saw in training are masked in the predictions, so a
held-out site cannot be scored as a site class.

:func:`run_probe_suite_end_to_end` is the naive baseline the benchmark compares against: the same
training loop, fed by running the encoder on each batch's images instead of the cache.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import MedtuneError
from medtune.evaluate.features import FeatureSet, encoder_dataset, extract_features, model_digest
from medtune.evaluate.probe_tasks import (
    DEFAULT_TASKS,
    PROBE_TASKS,
    Kind,
    TaskLabels,
    probe_table,
)

META_COLUMNS = ("image_id", "patient_id", "site", "manufacturer", "sex", "body_part")


@dataclass(frozen=True)
class ProbeConfig:
    """How every head trains (the same for every task, so tasks compare)."""

    hidden: int = 256  # units of the MLP's two hidden layers
    dropout: float = 0.1
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 20  # epochs without a better validation loss before stopping
    seed: int = 0  # head initialisation, dropout and batch order

    def __post_init__(self) -> None:
        positive = ("hidden", "lr", "batch_size", "max_epochs", "patience")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise MedtuneError(f"probe config: {name} must be a positive number, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise MedtuneError(f"probe config: dropout must be in [0, 1), got {self.dropout!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise MedtuneError(f"probe config: weight_decay must be >= 0, got {self.weight_decay}")
        if self.seed < 0:
            raise MedtuneError(f"probe config: seed must be >= 0, got {self.seed}")


@dataclass
class TaskPredictions:
    """One task's test predictions; ``truth``, ``mask`` and ``scores`` shaped as TaskLabels."""

    task: str
    kind: Kind
    classes: list[str]  # the classes the head was trained on (absent ones dropped)
    rows: np.ndarray  # (M,) catalog row of each item (a flipped copy repeats its row)
    flipped: np.ndarray  # (M,) bool
    split: np.ndarray  # (M,) the split value of the row ("test", "ood", ...)
    truth: np.ndarray
    mask: np.ndarray
    scores: np.ndarray  # probabilities: sigmoid (binary, multilabel) or softmax (multiclass)
    epochs: int
    best_epoch: int
    val_loss: float


@dataclass
class ProbeSuiteResult:
    """Every task's predictions, why others were skipped, and per-row metadata for subgroups."""

    model: str  # the export dir as given
    digest: str  # model_digest
    split_column: str
    predictions: dict[str, TaskPredictions] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> one-line reason
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per catalog row, catalog order


@dataclass(frozen=True)
class FeatureRows:
    """Features of ``size`` items made on demand: ``of(positions)`` -> (len, dim) float tensor
    on the training device. Cached features index an array; the end-to-end baseline runs the
    encoder."""

    of: Callable[[np.ndarray], torch.Tensor]
    size: int
    dim: int


Features = np.ndarray | torch.Tensor | FeatureRows


def feature_rows(x: Features, device: str | torch.device = "cpu") -> FeatureRows:
    """``x`` as :class:`FeatureRows` (an (N, dim) array is moved to ``device`` once)."""
    if isinstance(x, FeatureRows):
        return x
    tensor = torch.as_tensor(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x)
    tensor = tensor.float().to(device)
    if tensor.ndim != 2:
        raise MedtuneError(f"probe: features must be (rows, dim), got {tuple(tensor.shape)}")
    return FeatureRows(lambda i: tensor[torch.as_tensor(i, device=tensor.device)], *tensor.shape)


# ---------------------------------------------------------------------------------------------
# One head.


def train_head(
    kind: Kind,
    classes_or_labels: int,
    x_train: Features,
    y_train: np.ndarray,
    m_train: np.ndarray,
    x_val: Features,
    y_val: np.ndarray,
    m_val: np.ndarray,
    config: ProbeConfig,
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, object]]:
    """Train an MLP head (``classes_or_labels`` outputs) on masked rows and return the one of
    the best validation loss, in eval mode, with {"epochs", "best_epoch", "val_loss"}.

    Loss: masked BCE-with-logits (binary, multilabel) or cross-entropy on masked rows
    (multiclass). AdamW on shuffled mini-batches drawn from a generator seeded by
    ``config.seed``; head initialisation and dropout draw from torch's generator reseeded in a
    forked state, so the same inputs give the same head whatever ran before. Training stops
    after ``config.patience`` epochs without a better validation loss; without validation rows
    it runs ``config.max_epochs`` and the info says so."""
    from medtune.models.heads import make_head

    train, val = feature_rows(x_train, device), feature_rows(x_val, device)
    if train.size == 0:
        raise MedtuneError("probe: no training rows")
    y_tr, m_tr = _targets(kind, y_train, m_train, device)
    y_va, m_va = _targets(kind, y_val, m_val, device)
    validate = val.size > 0 and bool(m_va.any())
    order_generator = torch.Generator().manual_seed(config.seed)
    info: dict[str, object] = {}
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(config.seed)
        head = make_head("mlp", train.dim, classes_or_labels, config.hidden, config.dropout)
        head = head.to(device)
        optimizer = torch.optim.AdamW(head.parameters(), config.lr,
                                      weight_decay=config.weight_decay)  # fmt: skip
        best_loss, best_epoch, best_state = math.inf, 0, _copy_state(head)
        for epoch in range(1, config.max_epochs + 1):
            head.train()
            order = torch.randperm(train.size, generator=order_generator).numpy()
            for start in range(0, train.size, config.batch_size):
                batch = order[start : start + config.batch_size]
                total, count = _loss_sum(kind, head(train.of(batch)), y_tr[batch], m_tr[batch])
                optimizer.zero_grad(set_to_none=True)
                (total / count.clamp(min=1)).backward()
                optimizer.step()
            info["epochs"] = epoch
            if not validate:
                continue
            loss = _val_loss(head, kind, val, y_va, m_va, config.batch_size)
            if loss < best_loss:
                best_loss, best_epoch, best_state = loss, epoch, _copy_state(head)
            elif epoch - best_epoch >= config.patience:
                break
    if validate:
        head.load_state_dict(best_state)
        info |= {"best_epoch": best_epoch, "val_loss": best_loss}
    else:
        info |= {"best_epoch": info["epochs"], "val_loss": math.nan,
                 "note": "no validation rows: trained max_epochs"}  # fmt: skip
    return head.eval(), info


def predict_head(head: nn.Module, kind: Kind, x: Features, batch_size: int = 4096) -> np.ndarray:
    """Probabilities of ``head`` on features ``x``: sigmoid (binary: (N,), multilabel: (N, L))
    or softmax (multiclass: (N, C))."""
    device = next(head.parameters()).device
    rows = feature_rows(x, device)
    outputs = []
    head.eval()
    with torch.no_grad():
        for start in range(0, rows.size, batch_size):
            logits = head(rows.of(np.arange(start, min(start + batch_size, rows.size)))).float()
            probs = logits.softmax(-1) if kind == "multiclass" else logits.sigmoid()
            outputs.append(probs[:, 0] if kind == "binary" else probs)
    if not outputs:
        width = () if kind == "binary" else (_out_features(head),)
        return np.zeros((0, *width), np.float32)
    return torch.cat(outputs).cpu().numpy()


def _out_features(head: nn.Module) -> int:
    return int(head.config["classes"]) if hasattr(head, "config") else 0


def _targets(
    kind: Kind, y: np.ndarray, m: np.ndarray, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.int64 if kind == "multiclass" else torch.float32
    truth = torch.as_tensor(np.asarray(y), dtype=dtype, device=device)
    return truth, torch.as_tensor(np.asarray(m, bool), device=device)


def _loss_sum(
    kind: Kind, logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss over usable entries, their count)."""
    if kind == "multiclass":
        per = F.cross_entropy(logits, y.clamp(min=0), reduction="none")
    else:
        per = F.binary_cross_entropy_with_logits(logits.reshape(y.shape), y, reduction="none")
    weight = m.to(per.dtype)
    return (per * weight).sum(), weight.sum()


def _val_loss(
    head: nn.Module, kind: Kind, val: FeatureRows, y: torch.Tensor, m: torch.Tensor, size: int
) -> float:
    head.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, val.size, size):
            batch = np.arange(start, min(start + size, val.size))
            loss, n = _loss_sum(kind, head(val.of(batch)), y[batch], m[batch])
            total, count = total + float(loss), count + float(n)
    return total / max(count, 1.0)


def _copy_state(head: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _cuda_devices(device: str | torch.device) -> list[int]:
    device = torch.device(device)
    return [device.index or 0] if device.type == "cuda" else []


# ---------------------------------------------------------------------------------------------
# The suite.

# Features of catalog rows, some of them mirrored: (rows, flipped) -> array or FeatureRows.
FeatureSource = Callable[[np.ndarray, np.ndarray], Features]


def run_probe_suite(
    export_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    tasks: Sequence[str] = DEFAULT_TASKS,
    split_column: str | None = None,
    train: str = "train",
    val: str = "val",
    test: Sequence[str] = ("test", "ood"),
    config: ProbeConfig = ProbeConfig(),  # frozen, so a shared default is safe
    cache: bool = True,
    features: tuple[FeatureSet, FeatureSet | None] | None = None,
    device: str = "cpu",
) -> ProbeSuiteResult:
    """Probe the export on every task in ``tasks``: a head per task on cached features
    (extracted here unless ``features`` gives (original, flipped or None)); flipped features
    are extracted only when a selected task needs them."""
    plan = _Plan.make(workspace, tasks, split_column)
    if features is None:
        orig = extract_features(export_dir, workspace, cache=cache, device=device)
        flip = None
        if plan.needs_flipped:
            flip = extract_features(export_dir, workspace, flipped=True, cache=cache,
                                    device=device)  # fmt: skip
    else:
        orig, flip = features
    for given in (orig, flip):
        if given is not None and len(given.features) != plan.table.num_rows:
            raise MedtuneError(
                f"probe: {len(given.features)} feature rows for {plan.table.num_rows} catalog rows"
            )

    def source(rows: np.ndarray, flipped: np.ndarray) -> Features:
        x = orig.features[rows]
        if flipped.any():
            x[flipped] = flip.features[rows[flipped]]  # type: ignore[union-attr]
        return x

    return plan.run(str(export_dir), orig.model, source, flip is not None, train, val, test,
                    config, device)  # fmt: skip


def run_probe_suite_end_to_end(
    export_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    tasks: Sequence[str] = DEFAULT_TASKS,
    split_column: str | None = None,
    train: str = "train",
    val: str = "val",
    test: Sequence[str] = ("test", "ood"),
    config: ProbeConfig = ProbeConfig(),
    cache: bool = True,
    device: str = "cpu",
) -> ProbeSuiteResult:
    """The naive baseline: the same heads (config, seed, batches, early stopping), fed by the
    frozen encoder run on each batch's images at every step instead of the feature cache.
    Gives the same predictions as :func:`run_probe_suite` up to float noise, much slower.
    ``cache`` is accepted so that both take the same keywords, and ignored: nothing is cached."""
    from medtune.models.export import load_encoder

    plan = _Plan.make(workspace, tasks, split_column)
    encoder = load_encoder(export_dir).eval().to(device)
    datasets = {flip: encoder_dataset(encoder, workspace, flip) for flip in (False, True)}

    def source(rows: np.ndarray, flipped: np.ndarray) -> Features:
        def of(positions: np.ndarray) -> torch.Tensor:
            images = [datasets[bool(flipped[p])][int(rows[p])]["image"] for p in positions]
            with torch.no_grad():
                return encoder(torch.stack(images).to(device)).float()

        return FeatureRows(of, len(rows), encoder.dim)  # type: ignore[arg-type]

    return plan.run(str(export_dir), model_digest(export_dir), source, True, train, val, test,
                    config, device)  # fmt: skip


@dataclass
class _Plan:
    """The probe table, split column and each selected task's labels (None: unavailable)."""

    table: pa.Table
    split_column: str
    labels: dict[str, TaskLabels | None]

    @classmethod
    def make(
        cls, workspace: str | os.PathLike[str], tasks: Sequence[str], split_column: str | None
    ) -> _Plan:
        from medtune.config_base import close_matches

        for name in tasks:
            if name not in PROBE_TASKS:
                hint = close_matches(name, PROBE_TASKS)
                near = f"; did you mean {hint[0]!r}?" if hint else ""
                raise MedtuneError(
                    f"probe task {name!r}: unknown (registered: {', '.join(PROBE_TASKS)}){near}"
                )
        table = probe_table(Path(workspace))
        if split_column is None:
            split_column = "split_site" if "split_site" in table.column_names else "split"
        if split_column not in table.column_names:
            raise MedtuneError(f"{workspace}: no column {split_column!r}; run `medtune split`")
        labels = {name: PROBE_TASKS[name].labels(table) for name in dict.fromkeys(tasks)}
        return cls(table, split_column, labels)

    @property
    def needs_flipped(self) -> bool:
        return any(PROBE_TASKS[n].flipped and lab is not None for n, lab in self.labels.items())

    def meta(self) -> dict[str, np.ndarray]:
        names = self.table.column_names
        meta = {
            c: np.array(self.table.column(c).to_pylist(), dtype=object)
            for c in META_COLUMNS
            if c in names
        }
        if "age" in names:
            meta["age"] = self.table.column("age").cast(pa.float64()).to_numpy(False)
        meta["split"] = np.array(self.table.column(self.split_column).to_pylist(), dtype=object)
        return meta

    def run(
        self,
        model: str,
        digest: str,
        source: FeatureSource,
        have_flipped: bool,
        train: str,
        val: str,
        test: Sequence[str],
        config: ProbeConfig,
        device: str,
    ) -> ProbeSuiteResult:
        result = ProbeSuiteResult(model, digest, self.split_column, meta=self.meta())
        split = result.meta["split"]
        for name, labels in self.labels.items():
            task = PROBE_TASKS[name]
            if labels is None:
                about = f" ({task.description})" if task.description else ""
                result.skipped[name] = f"no labels in this workspace{about}"
                continue
            if task.flipped and not have_flipped:
                result.skipped[name] = "needs features of flipped images (none given)"
                continue
            items = _items(name, labels, task.flipped)
            outcome = _select(items, split, train, val, test)
            if isinstance(outcome, str):
                result.skipped[name] = outcome
                continue
            result.predictions[name] = _probe(name, outcome, split, source, config, device)
        return result


@dataclass
class _Items:
    """A task's items: catalog rows, some of them mirrored copies, with truth and mask."""

    kind: Kind
    classes: list[str]
    rows: np.ndarray
    flipped: np.ndarray
    truth: np.ndarray
    mask: np.ndarray
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # item positions
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def usable(self) -> np.ndarray:
        return self.mask if self.mask.ndim == 1 else self.mask.any(axis=1)


def _items(name: str, labels: TaskLabels, flipped: bool) -> _Items:
    n = len(labels.truth)
    rows, flips = np.arange(n), np.zeros(n, bool)
    truth, mask = np.asarray(labels.truth), np.asarray(labels.mask, bool)
    if flipped:
        if labels.flipped_truth is None:
            raise MedtuneError(
                f"probe task {name!r}: flipped, but its labels give no flipped_truth"
            )
        rows, flips = np.concatenate([rows, rows]), np.concatenate([flips, ~flips])
        truth = np.concatenate([truth, np.asarray(labels.flipped_truth, truth.dtype)])
        mask = np.concatenate([mask, mask])
    return _Items(labels.kind, list(labels.classes), rows, flips, truth, mask)


def _select(
    items: _Items, split: np.ndarray, train: str, val: str, test: Sequence[str]
) -> _Items | str:
    """The items' train, val and test positions with the classes training can learn; or why
    the task is skipped."""
    of_item = split[items.rows]
    items.train = np.flatnonzero((of_item == train) & items.usable())
    if not len(items.train):
        return f"no usable rows with {train!r}"
    truth, mask = items.truth[items.train], items.mask[items.train]
    if items.kind == "multilabel":
        positive = ((truth == 1) & mask).any(axis=0)
        negative = ((truth == 0) & mask).any(axis=0)
        keep = np.flatnonzero(positive & negative)
        if not len(keep):
            return "no label has both classes in train"
        items.truth, items.mask = items.truth[:, keep], items.mask[:, keep]
        items.classes = [items.classes[k] for k in keep]
    elif items.kind == "multiclass":
        present = np.unique(truth[mask])
        if len(present) < 2:
            return "fewer than 2 classes in train"
        # Classes training never saw are masked everywhere (a held-out site, a rare view).
        new_id = np.full(len(items.classes), -1, np.int64)
        new_id[present] = np.arange(len(present))
        seen = items.mask & (items.truth >= 0)
        items.truth = np.where(seen, new_id[np.where(seen, items.truth, 0)], -1)
        items.mask = items.truth >= 0
        items.classes = [items.classes[k] for k in present]
    elif len(np.unique(truth[mask])) < 2:
        return "one class in train"
    usable = items.usable()
    items.train = np.flatnonzero((of_item == train) & usable)
    items.val = np.flatnonzero((of_item == val) & usable)
    items.test = np.flatnonzero(np.isin(of_item, list(test)))
    if not len(items.test):
        return f"no rows in {', '.join(test)}"
    return items


def _probe(
    name: str,
    items: _Items,
    split: np.ndarray,
    source: FeatureSource,
    config: ProbeConfig,
    device: str,
) -> TaskPredictions:
    """Train the task's head and predict its test items."""

    def x(positions: np.ndarray) -> Features:
        return source(items.rows[positions], items.flipped[positions])

    outputs = 1 if items.kind == "binary" else len(items.classes)
    tr, va, te = items.train, items.val, items.test
    head, info = train_head(items.kind, outputs, x(tr), items.truth[tr], items.mask[tr],
                            x(va), items.truth[va], items.mask[va], config,
                            device=device)  # fmt: skip
    return TaskPredictions(
        task=name,
        kind=items.kind,
        classes=items.classes,
        rows=items.rows[te],
        flipped=items.flipped[te],
        split=split[items.rows[te]],
        truth=items.truth[te],
        mask=items.mask[te],
        scores=predict_head(head, items.kind, x(te), config.batch_size),
        epochs=int(info["epochs"]),  # type: ignore[call-overload]
        best_epoch=int(info["best_epoch"]),  # type: ignore[call-overload]
        val_loss=float(info["val_loss"]),  # type: ignore[arg-type]
    )
