"""The probe suite's figures: per-task and mean AUROC with patient-bootstrap CIs, subgroups,
calibration, and paired comparisons of several models on the same images.

:func:`medtune.evaluate.probe.run_probe_suite` gives each model's test-set probabilities; this
module turns them into what a paper reports::

    results = [run_probe_suite(export, ws) for export in exports]
    scored = score_suites(results, names=["random", "chest", "full"], n_boot=1000)
    scored.models["full"].mean.format()          # "0.812 [0.774, 0.851]"
    scored.comparisons["full"]["chest"].p_value  # paired bootstrap, same patient resamples

Every interval is a 95% percentile bootstrap over patients: one weight vector per resample,
shared by every task, subgroup and model, so a model's mean AUROC moves with its tasks and two
models are compared on the same resampled cohort (paired). A subgroup's figure is computed on
its rows of each resample; a group of one patient has no interval worth printing, so groups
with fewer than ``min_group_patients`` patients are left out of the breakdowns.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtune.errors import MedtuneError
from medtune.evaluate.probe import ProbeSuiteResult, TaskPredictions
from medtune.evaluate.stats import (
    Comparison,
    Estimate,
    age_band,
    comparison_from_samples,
    estimate_from_samples,
    expected_calibration_error,
    finite_or_none,
    per_class_auroc,
    resample_weights,
    task_auroc,
    task_auroc_metric,
)

# The subgroup dimensions of the breakdowns: (name shown, function of the suite's meta, rows).
DIMENSIONS = ("domain", "region", "site", "vendor", "sex", "age", "anatomy")
# What a split value means for the in-domain / held-out breakdown (medtune split's values).
HELD_OUT_SPLITS = ("ood",)
CALIBRATED_TASKS = ("findings",)  # ECE for the disease heads, as the issue asks


@dataclass
class TaskScore:
    task: str
    kind: str
    auroc: Estimate
    per_class: dict[str, float]  # class or label -> AUROC on all rows
    ece: float | None  # expected calibration error (disease heads only)
    rows: int


@dataclass
class ModelScore:
    name: str
    export: str
    tasks: dict[str, TaskScore]
    mean: Estimate  # mean AUROC over the scored tasks, bootstrapped jointly
    # dimension -> group -> mean AUROC over tasks on that group's rows
    subgroups: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    # dimension -> group -> task -> AUROC estimate
    subgroup_tasks: dict[str, dict[str, dict[str, Estimate]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class SuiteScores:
    models: dict[str, ModelScore]
    # model -> reference model -> figure ("mean", a task, or "region:chest") -> comparison
    comparisons: dict[str, dict[str, dict[str, Comparison]]]
    results: dict[str, ProbeSuiteResult]
    n_boot: int
    groups: dict[str, list[str]]  # dimension -> its groups, in display order

    def as_json(self) -> dict[str, Any]:
        """Every figure as plain JSON (NaN as null)."""
        return {
            "n_boot": self.n_boot,
            "models": {name: _model_json(score) for name, score in self.models.items()},
            "comparisons": {
                a: {
                    b: {k: _comparison_json(c) for k, c in figures.items()}
                    for b, figures in refs.items()
                }
                for a, refs in self.comparisons.items()
            },
        }


def group_labels(meta: Mapping[str, np.ndarray], split_column: str) -> dict[str, np.ndarray]:
    """Per catalog row, its group in each dimension (strings; "unknown" where not recorded)."""

    def text(name: str) -> np.ndarray:
        values = meta.get(name)
        if values is None:
            return np.full(len(meta["image_id"]), "unknown", dtype=object)
        return np.array(["unknown" if v is None or v == "" else str(v) for v in values], object)

    split = text("split")
    anatomy = text("body_part")
    return {
        "domain": np.where(np.isin(split, HELD_OUT_SPLITS), "held-out sites", "in-domain"),
        "region": np.where(anatomy == "CHEST", "chest", "non-chest"),
        "site": text("site"),
        "vendor": text("manufacturer"),
        "sex": text("sex"),
        "age": np.array([age_band(a) for a in meta["age"]], object),
        "anatomy": anatomy,
    }


def score_suites(
    results: Sequence[ProbeSuiteResult],
    names: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_group_patients: int = 3,
) -> SuiteScores:
    """Score each model's predictions and compare each model with every earlier one."""
    if not results:
        raise MedtuneError("evaluate: no model to score")
    names = list(names or [model_name(r.model) for r in results])
    if len(set(names)) != len(names) or len(names) != len(results):
        raise MedtuneError(f"evaluate: model names must be distinct, one per model: {names}")
    meta = results[0].meta
    for other in results[1:]:
        if not np.array_equal(other.meta["image_id"], meta["image_id"]):
            raise MedtuneError("evaluate: the models were run on different workspaces")
    evaluated = np.unique(np.concatenate(
        [p.rows for r in results for p in r.predictions.values()] or [np.zeros(0, int)]
    ))  # fmt: skip
    if evaluated.size == 0:
        raise MedtuneError("evaluate: no task could be scored (see the skipped reasons)")
    groups = group_labels(meta, results[0].split_column)
    weights = _Weights(np.asarray(meta["patient_id"], object), evaluated, n_boot, seed)
    shown = {
        dim: _shown_groups(groups[dim], evaluated, meta, min_group_patients) for dim in DIMENSIONS
    }
    selections = [None] + [(dim, group) for dim, names_ in shown.items() for group in names_]
    figures = {
        name: {sel: _task_figures(result, groups, weights, sel) for sel in selections}
        for name, result in zip(names, results, strict=True)
    }
    models = {
        name: _model_score(name, result, figures[name], weights)
        for name, result in zip(names, results, strict=True)
    }
    comparisons: dict[str, dict[str, dict[str, Comparison]]] = {}
    for i, name in enumerate(names):
        for reference in names[:i]:
            comparisons.setdefault(name, {})[reference] = _compare(
                figures[reference], figures[name]
            )
    return SuiteScores(models, comparisons, dict(zip(names, results, strict=True)), n_boot,
                       shown)  # fmt: skip


# ---------------------------------------------------------------------------------------------

Selection = tuple[str, str] | None  # (dimension, group), or None for every evaluated row


@dataclass(frozen=True)
class _Figure:
    """One task's AUROC on a selection of rows: on all of them and on each resample."""

    value: float
    samples: np.ndarray  # (n_boot,)
    rows: np.ndarray  # catalog rows that count (masked-out rows left out)


class _Weights:
    """Bootstrap weights of the evaluated catalog rows, drawn once by patient and shared by
    every task, group and model (which makes comparisons paired)."""

    def __init__(self, patients: np.ndarray, evaluated: np.ndarray, n: int, seed: int) -> None:
        self.position = np.full(len(patients), -1, np.int64)
        self.position[evaluated] = np.arange(len(evaluated))
        self.patients = patients
        self.n = n
        self.matrix = resample_weights(patients[evaluated], n, seed) if n > 0 else None

    def of(self, rows: np.ndarray) -> np.ndarray:
        """(n, len(rows)) weights of catalog ``rows`` (a row may repeat: a flipped copy)."""
        if self.matrix is None:
            return np.zeros((0, len(rows)))
        return self.matrix[:, self.position[rows]]

    def estimate(self, value: float, samples: np.ndarray, rows: np.ndarray) -> Estimate:
        return estimate_from_samples(value, samples, len(rows), len(set(self.patients[rows])))


def _task_figures(
    result: ProbeSuiteResult, groups: dict[str, np.ndarray], weights: _Weights, sel: Selection
) -> dict[str, _Figure]:
    figures = {}
    for task, pred in result.predictions.items():
        if sel is not None:
            pred = _restricted(pred, groups[sel[0]][pred.rows] == sel[1])
        used = _used(pred)
        if not used.any():
            continue
        metric = task_auroc_metric(pred.kind, pred.truth, pred.scores, pred.mask)
        samples = np.array([metric(w) for w in weights.of(pred.rows)], float)
        figures[task] = _Figure(metric(None), samples, pred.rows[used])
    return figures


def _mean(figures: Mapping[str, _Figure]) -> tuple[float, np.ndarray]:
    """Mean AUROC over the tasks scorable on the rows (NaN tasks left out), and per resample."""
    if not figures:
        return float("nan"), np.zeros(0)
    values = np.array([f.value for f in figures.values()])
    samples = np.stack([f.samples for f in figures.values()])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: nan, as wanted
        value = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return value, np.nanmean(samples, axis=0) if samples.size else samples


def _model_score(
    name: str,
    result: ProbeSuiteResult,
    figures: Mapping[Selection, Mapping[str, _Figure]],
    weights: _Weights,
) -> ModelScore:
    every = figures[None]
    tasks = {}
    for task, pred in result.predictions.items():
        if task not in every:
            continue
        f = every[task]
        ece = _ece(pred) if task in CALIBRATED_TASKS else None
        tasks[task] = TaskScore(task, pred.kind, weights.estimate(f.value, f.samples, f.rows),
                                _per_class(pred), ece, len(f.rows))  # fmt: skip
    score = ModelScore(name, result.model, tasks, _mean_estimate(every, weights),
                       skipped=dict(result.skipped))  # fmt: skip
    for sel, per_task in figures.items():
        if sel is None or not per_task:
            continue
        dim, group = sel
        score.subgroups.setdefault(dim, {})[group] = _mean_estimate(per_task, weights)
        score.subgroup_tasks.setdefault(dim, {})[group] = {
            t: weights.estimate(f.value, f.samples, f.rows) for t, f in per_task.items()
        }
    return score


def _mean_estimate(figures: Mapping[str, _Figure], weights: _Weights) -> Estimate:
    value, samples = _mean(figures)
    rows = np.unique(np.concatenate([f.rows for f in figures.values()] or [np.zeros(0, int)]))
    return weights.estimate(value, samples, rows)


def _compare(
    reference: Mapping[Selection, Mapping[str, _Figure]],
    model: Mapping[Selection, Mapping[str, _Figure]],
) -> dict[str, Comparison]:
    """``model`` minus ``reference``: the mean AUROC, the mean on each region and domain (the
    headline's columns) and each shared task, over the same patient resamples."""
    out: dict[str, Comparison] = {}
    for sel, per_task in model.items():
        if sel is not None and sel[0] not in ("region", "domain"):
            continue
        shared = [t for t in per_task if t in reference.get(sel, {})]
        if not shared:
            continue
        a_value, a_samples = _mean({t: reference[sel][t] for t in shared})
        b_value, b_samples = _mean({t: per_task[t] for t in shared})
        label = "mean" if sel is None else f"{sel[0]}:{sel[1]}"
        out[label] = comparison_from_samples(b_value - a_value, b_samples - a_samples)
        if sel is None:
            for t in shared:
                out[t] = comparison_from_samples(
                    per_task[t].value - reference[sel][t].value,
                    per_task[t].samples - reference[sel][t].samples,
                )
    return out


def _auroc(pred: TaskPredictions, weights: np.ndarray | None = None) -> float:
    return task_auroc(pred.kind, pred.truth, pred.scores, pred.mask, weights)


def _restricted(pred: TaskPredictions, keep: np.ndarray) -> TaskPredictions:
    mask = pred.mask & (keep[:, None] if pred.mask.ndim == 2 else keep)
    return replace(pred, mask=mask)


def _used(pred: TaskPredictions) -> np.ndarray:
    return pred.mask.any(axis=1) if pred.mask.ndim == 2 else pred.mask.astype(bool)


def _per_class(pred: TaskPredictions) -> dict[str, float]:
    values = per_class_auroc(pred.kind, pred.truth, pred.scores, pred.mask)
    return {name: float(v) for name, v in zip(pred.classes, values, strict=False)}


def _ece(pred: TaskPredictions) -> float | None:
    if pred.kind == "multiclass":
        return None
    mask = pred.mask.astype(bool)
    truth, prob = np.asarray(pred.truth)[mask], np.asarray(pred.scores)[mask]
    return expected_calibration_error(truth, prob) if truth.size else None


def _shown_groups(
    labels: np.ndarray, evaluated: np.ndarray, meta: Mapping[str, np.ndarray], minimum: int
) -> list[str]:
    patients = np.asarray(meta["patient_id"], object)
    shown = []
    for group in sorted(set(labels[evaluated])):
        rows = evaluated[labels[evaluated] == group]
        if len(set(patients[rows])) >= minimum:
            shown.append(str(group))
    return shown


def model_name(path: str | os.PathLike[str]) -> str:
    """A model's name from its path: the run's folder for ``<run>/export``, else the folder."""
    p = Path(path)
    return p.parent.name if p.name == "export" else p.name


def _model_json(score: ModelScore) -> dict[str, Any]:
    return {
        "export": score.export,
        "mean_auroc": score.mean.as_json(),
        "tasks": {
            t: {
                "kind": s.kind,
                "auroc": s.auroc.as_json(),
                "per_class": _clean(s.per_class),
                "ece": finite_or_none(s.ece),
                "rows": s.rows,
            }
            for t, s in score.tasks.items()
        },
        "subgroups": {
            dim: {g: e.as_json() for g, e in groups.items()}
            for dim, groups in score.subgroups.items()
        },
        "skipped": score.skipped,
    }


def _comparison_json(c: Comparison) -> dict[str, Any]:
    values = {"difference": c.difference, "low": c.low, "high": c.high, "p_value": c.p_value}
    return {k: finite_or_none(v) for k, v in values.items()}


def _clean(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in values.items()}
