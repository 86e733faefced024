"""The evaluate commands as functions: run the parts, write the report, say what was found.

Each returns an :class:`EvaluationRun` (tables and lines for the terminal, the JSON of the
scores, the report's path), which ``medtune evaluate`` prints and the demo folds into its own
summary::

    run = evaluate_probe(["ws/runs/chest", "ws/runs/full"], "ws", names=["chest", "full"])
    run.html        # ws/eval/chest-vs-full/report.html
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.evaluate.report_html import (
    Evaluation,
    comparison_table,
    headline_table,
    results_json,
    task_table,
    text_metric_keys,
    write_evaluation,
)
from medtune.evaluate.suite import model_name
from medtune.workspace import Workspace

Progress = Any  # (label, done, total) -> None, as the demo's display takes


@dataclass
class EvaluationRun:
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    json: dict[str, Any] = field(default_factory=dict)
    html: Path | None = None
    evaluation: Evaluation | None = None


def evaluation_dir(workspace: str | os.PathLike[str], name: str) -> Path:
    """``<workspace>/eval/<name>``, the name made safe for a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "evaluation"
    return Workspace(Path(workspace)).root / "eval" / safe


def probe_suites(
    models: Sequence[str | os.PathLike[str]],
    workspace: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    split_column: str | None = None,
    config: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Any:
    """Run the probe suite on each model (features cached per model and data) and score them
    together: a :class:`medtune.evaluate.suite.SuiteScores`."""
    from medtune.evaluate.probe import ProbeConfig, run_probe_suite
    from medtune.evaluate.probe_tasks import DEFAULT_TASKS
    from medtune.evaluate.suite import score_suites

    results = []
    for k, model in enumerate(models):
        if progress:
            progress("probe suite", k, len(models))
        results.append(run_probe_suite(
            model, workspace, tasks=tuple(tasks or DEFAULT_TASKS), split_column=split_column,
            config=config or ProbeConfig(),
        ))  # fmt: skip
    if progress:
        progress("probe suite", len(models), len(models))
    return score_suites(results, names, n_boot=n_boot, seed=seed)


def evaluate_probe(
    models: Sequence[str | os.PathLike[str]],
    workspace: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    name: str | None = None,
    title: str | None = None,
    **options: Any,
) -> EvaluationRun:
    """``medtune evaluate probe``: the suite on each model, the report and its headline."""
    scores = probe_suites(models, workspace, names=names, **options)
    label = name or "-vs-".join(scores.models)
    evaluation = Evaluation(title or f"Probe suite: {', '.join(scores.models)}", probe=scores,
                            notes=probe_notes(scores))  # fmt: skip
    return _written(evaluation, evaluation_dir(workspace, label), probe_tables(scores))


def probe_tables(scores: Any) -> dict[str, list[list[object]]]:
    tables = {t.title: t.with_header() for t in (headline_table(scores), task_table(scores))}
    if scores.comparisons:
        table = comparison_table(scores)
        tables[table.title] = table.with_header()
    return tables


def probe_notes(scores: Any) -> list[str]:
    first = next(iter(scores.results.values()))
    return [
        f"Probe heads trained on the '{first.split_column}' split's train rows, early-stopped "
        "on its val rows, scored on the test rows and the held-out sites' rows.",
        f"95% confidence intervals: percentile bootstrap over patients, {scores.n_boot} "
        "resamples; p-values: two-sided paired bootstrap on the same resamples.",
        "Subgroups with fewer than 3 patients are not shown.",
    ]


def evaluate_reports(
    model: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    splits: Sequence[str] = ("test",),
    split_column: str = "split",
    r2gen: bool = False,
    name: str | None = None,
    label: str | None = None,
    n_boot: int = 200,
) -> EvaluationRun:
    """``medtune evaluate report-gen MODEL -w WS``: generate on the split, score (with
    patient-bootstrap CIs), report."""
    from medtune.evaluate.report_gen import evaluate_report_model

    scores, samples = evaluate_report_model(
        model, workspace, split_column=split_column, splits=splits, r2gen=r2gen
    )
    add_report_intervals(workspace, scores, samples, n_boot, r2gen=r2gen)
    label = label or model_name(model)
    evaluation = Evaluation(f"Report generation: {label}", reports={label: (scores, samples)})
    return _written(evaluation, evaluation_dir(workspace, name or f"report-{label}"),
                    report_tables({label: scores}))  # fmt: skip


def evaluate_report_files(
    predictions: str | os.PathLike[str], references: str | os.PathLike[str], *, r2gen: bool
) -> EvaluationRun:
    """``medtune evaluate report-gen --predictions P --references R``: scores only."""
    from medtune.evaluate.report_gen import read_reports_json, score_reports

    scores = score_reports(read_reports_json(predictions), read_reports_json(references),
                           r2gen=r2gen)  # fmt: skip
    run = EvaluationRun(tables=report_tables({Path(predictions).name: scores}),
                        json=scores.as_json())  # fmt: skip
    if scores.meteor_note:
        run.lines.append(scores.meteor_note)
    return run


def report_tables(scores: dict[str, Any]) -> dict[str, list[list[object]]]:
    keys = text_metric_keys(scores.values())
    rows: list[list[object]] = [["model", "reports", *keys, "CE F1", "distinct"]]
    for name, s in scores.items():
        ci = s.intervals
        rows.append([name, s.n, *(_fmt(s.scores.get(k), ci.get(k)) for k in keys),
                     _fmt(s.clinical.get("f1"), ci.get("clinical_f1")),
                     int(s.diversity.get("distinct", 0))])  # fmt: skip
    return {"report generation": rows}


def evaluate_grounding_model(
    model: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    splits: Sequence[str] = ("test",),
    split_column: str = "split",
    name: str | None = None,
    label: str | None = None,
    n_boot: int = 1000,
) -> EvaluationRun:
    """``medtune evaluate grounding MODEL -w WS``: mIoU, CNR and hit rate with
    patient-bootstrap CIs, overall and per finding."""
    from medtune.evaluate.grounding_eval import evaluate_grounding

    scores, samples = evaluate_grounding(model, workspace, split_column=split_column,
                                         splits=splits)  # fmt: skip
    add_grounding_intervals(workspace, scores, n_boot)
    label = label or model_name(model)
    evaluation = Evaluation(f"Grounding: {label}", grounding={label: (scores, samples)})
    return _written(evaluation, evaluation_dir(workspace, name or f"ground-{label}"),
                    grounding_tables({label: scores}))  # fmt: skip


def grounding_tables(scores: dict[str, Any]) -> dict[str, list[list[object]]]:
    rows: list[list[object]] = [["model", "finding", "boxes", "mIoU", "CNR", "hit rate"]]
    for name, s in scores.items():
        ci = s.intervals
        rows.append([name, "all", len(s.items), _fmt(s.miou, ci.get("miou")),
                     _fmt(s.cnr, ci.get("cnr")), _fmt(s.hit_rate, ci.get("hit_rate"))])  # fmt: skip
        for finding, f in sorted(s.per_finding.items()):
            rows.append([name, finding, int(f["n"]), _fmt(f["miou"]), _fmt(f["cnr"]),
                         _fmt(f["hit_rate"])])  # fmt: skip
    return {"grounding": rows}


def add_report_intervals(
    workspace: str | os.PathLike[str], scores: Any, samples: Sequence[Any], n_boot: int,
    *, r2gen: bool = False, seed: int = 0,
) -> None:  # fmt: skip
    """Set ``scores.intervals``: BLEU-4, ROUGE-L, CIDEr-D and clinical F1 with CIs."""
    from medtune.evaluate.intervals import patients_of, report_intervals

    if n_boot > 0 and samples:
        patients = patients_of(workspace, [s.row for s in samples])
        scores.intervals = report_intervals(samples, patients, n_boot, seed, r2gen=r2gen)


def add_grounding_intervals(
    workspace: str | os.PathLike[str], scores: Any, n_boot: int, seed: int = 0
) -> None:
    """Set ``scores.intervals``: mIoU, CNR and hit rate with CIs."""
    from medtune.evaluate.intervals import grounding_intervals, patients_of

    if n_boot > 0 and scores.items:
        patients = patients_of(workspace, [item.row for item in scores.items])
        scores.intervals = grounding_intervals(scores, patients, n_boot, seed)


def _written(
    evaluation: Evaluation, directory: Path, tables: dict[str, list[list[object]]]
) -> EvaluationRun:
    html = write_evaluation(evaluation, directory)
    return EvaluationRun(tables, [f"report: {html}"], results_json(evaluation), html, evaluation)


def _fmt(value: float | None, estimate: Any = None) -> str:
    """The value to 3 decimals, with its CI when ``estimate`` (an Estimate) is given."""
    import math

    if value is None or not math.isfinite(value):
        return "-"
    return estimate.format() if estimate is not None else f"{value:.3f}"
