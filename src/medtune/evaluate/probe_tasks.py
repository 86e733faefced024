"""The probe tasks: what a frozen encoder's features are asked to tell apart.

As in the multi-anatomy X-ray foundation-model papers, a probe suite asks one small head per
task for findings, and for what a shortcut would reveal (sex, view, anatomy, the lead marker's
side, a mirrored image, the site). A task is a function from the probe table (every catalog
row, in catalog order, joined with ``dataset/annotations.parquet``) to :class:`TaskLabels`, or
None when the workspace cannot say (no such column). Adding one is a registered function::

    @register_probe_task("portable", description="portable (AP) chest films")
    def portable(table: pa.Table) -> TaskLabels | None:
        if "portable" not in table.column_names:
            return None
        values = table.column("portable").to_pylist()
        truth = np.array([v is True for v in values], np.float32)
        mask = np.array([v is not None for v in values], bool)
        return TaskLabels("binary", ["portable"], truth, mask)

Multiclass truth is a class id per row, -1 where the row is masked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medtune.errors import MedtuneError

Kind = Literal["binary", "multiclass", "multilabel"]
LabelsFn = Callable[[pa.Table], "TaskLabels | None"]
LABEL_PREFIX = "label_"
DEFAULT_TASKS = ("findings", "sex", "view", "anatomy", "marker", "mirrored", "site")


@dataclass(frozen=True)
class TaskLabels:
    """A task's truth for every row of the probe table."""

    kind: Kind
    classes: list[str]  # binary: [positive class]; multiclass: index = class id; multilabel: labels
    truth: np.ndarray  # (N,) float 0/1 | (N,) int64 class ids | (N, L) float 0/1
    mask: np.ndarray  # (N,) bool usable rows | (N, L) bool for multilabel
    flipped_truth: np.ndarray | None = None  # the truth of each image's mirrored copy


@dataclass(frozen=True)
class ProbeTask:
    """A registered task: ``labels(table)`` gives its truth; ``flipped`` tasks are also probed on
    the mirrored copy of each image."""

    name: str
    labels: LabelsFn
    flipped: bool = False
    description: str = ""


PROBE_TASKS: dict[str, ProbeTask] = {}


def register_probe_task(
    name: str, *, flipped: bool = False, description: str = ""
) -> Callable[[LabelsFn], LabelsFn]:
    """Register the decorated function as task ``name`` (a later registration of the same name
    replaces it); the description defaults to the docstring's first line."""

    def register(labels: LabelsFn) -> LabelsFn:
        text = description or (labels.__doc__ or "").strip().split("\n")[0]
        PROBE_TASKS[name] = ProbeTask(name, labels, flipped, text)
        return labels

    return register


def probe_table(workspace: str | os.PathLike[str]) -> pa.Table:
    """Every catalog row, in catalog order, with the annotation columns (null where an image
    has none). An annotation column named like a catalog column overrides it where not null."""
    from medtune.dataset.annotations import read_annotations
    from medtune.dataset.catalog import read_catalog
    from medtune.workspace import Workspace

    catalog = read_catalog(Workspace(Path(workspace)).catalog_path)
    notes = read_annotations(workspace)
    if notes is None:
        return catalog
    position = {v: i for i, v in enumerate(notes.column("image_id").to_pylist())}
    at = np.array([position.get(v, -1) for v in catalog.column("image_id").to_pylist()], np.int64)
    indices = pa.array(at, pa.int64(), mask=at < 0)
    for name in notes.column_names:
        if name == "image_id":
            continue
        values = notes.column(name).take(indices)
        if name in catalog.column_names:
            old = catalog.column(name)
            try:
                values = pc.coalesce(values.cast(old.type), old)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise MedtuneError(
                    f"annotations column {name!r} ({values.type}) cannot stand for the "
                    f"catalog's ({old.type})"
                ) from None
            catalog = catalog.set_column(catalog.schema.get_field_index(name), name, values)
        else:
            catalog = catalog.append_column(name, values)
    return catalog


def categorical(
    values: Sequence[object], classes: Sequence[str], aliases: Mapping[str, str] | None = None
) -> TaskLabels:
    """A multiclass task from one value per row: ``aliases`` maps raw values to class names;
    values of no class (and nulls) are masked, with truth -1."""
    index = {c: i for i, c in enumerate(classes)}
    aliases = aliases or {}
    ids = [index.get(aliases.get(str(v), str(v)), -1) if v is not None else -1 for v in values]
    truth = np.array(ids, np.int64).reshape(-1)
    return TaskLabels("multiclass", list(classes), truth, truth >= 0)


def _values(table: pa.Table, name: str) -> list[object] | None:
    return table.column(name).to_pylist() if name in table.column_names else None


def _distinct(values: Sequence[object]) -> list[str]:
    return sorted({str(v) for v in values if v is not None})


@register_probe_task("findings", description="report findings (every label_ column)")
def findings(table: pa.Table) -> TaskLabels | None:
    columns = [c for c in table.column_names if c.startswith(LABEL_PREFIX)]
    if not columns:
        return None
    raw = np.stack(
        [table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in columns], 1
    ).reshape(table.num_rows, len(columns))  # null -> nan: masked with the uncertain -1
    names = [c.removeprefix(LABEL_PREFIX) for c in columns]
    return TaskLabels("multilabel", names, (raw == 1).astype(np.float32), (raw == 0) | (raw == 1))


@register_probe_task("sex", description="patient sex, M against F")
def sex(table: pa.Table) -> TaskLabels | None:
    values = _values(table, "sex")
    if values is None:
        return None
    truth = np.array([v == "M" for v in values], np.float32).reshape(-1)
    mask = np.array([v in ("M", "F") for v in values], bool).reshape(-1)
    return TaskLabels("binary", ["M"], truth, mask)


VIEW_ALIASES = {"LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral"}


@register_probe_task("view", description="projection: PA, AP or lateral")
def view(table: pa.Table) -> TaskLabels | None:
    values = _values(table, "view")
    if values is None:
        return None
    upper = [str(v).strip().upper() if v is not None else None for v in values]
    return categorical(upper, ["PA", "AP", "lateral"], VIEW_ALIASES)


@register_probe_task("anatomy", description="body part examined")
def anatomy(table: pa.Table) -> TaskLabels | None:
    values = _values(table, "body_part")
    classes = _distinct(values or [])
    return categorical(values, classes) if values is not None and classes else None


@register_probe_task("marker", description="lead marker side: L, R or none (annotations)")
def marker(table: pa.Table) -> TaskLabels | None:
    values = _values(table, "marker")
    if values is None or all(v is None for v in values):
        return None
    return categorical(values, ["L", "R", "none"])


@register_probe_task("mirrored", flipped=True, description="image mirrored left-right")
def mirrored(table: pa.Table) -> TaskLabels | None:
    # A stored image is mirrored only where annotated so; its flipped copy is the opposite.
    values = _values(table, "mirrored") or [None] * table.num_rows
    truth = np.array([bool(v) for v in values], np.float32).reshape(-1)  # null: False
    mask = np.ones(table.num_rows, bool)
    return TaskLabels("binary", ["mirrored"], truth, mask, flipped_truth=1.0 - truth)


@register_probe_task("site", description="acquiring site")
def site(table: pa.Table) -> TaskLabels | None:
    values = _values(table, "site")
    classes = _distinct(values or [])
    return categorical(values, classes) if values is not None and classes else None
