"""The evaluation report: one self-contained HTML page (and its numbers as JSON).

What it says is decided here, as a list of the dataset card's blocks
(:mod:`medtune.curate.card_doc`); how it looks is the card's renderer, so the page needs
nothing but itself (inline CSS, plots as ``data:`` URIs, no scripts or links)::

    evaluation = Evaluation(title="chest-only vs full-body", probe=score_suites(results))
    write_evaluation(evaluation, ws / "eval" / "demo")   # report.html + results.json

Sections, each present when its part was evaluated: the headline table (mean AUROC with 95%
CIs overall, on chest and non-chest images, in-domain and on held-out sites, and paired
comparisons with p-values), per-task AUROC, ROC curves, calibration of the disease heads,
subgroup bars, report generation (scores, clinical efficacy, diversity, generated next to
reference reports) and grounding (mIoU and CNR per finding, heat-map samples).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtune.curate.card_doc import Block, Bullets, Figure, Heading, TableBlock, Text, render_html
from medtune.curate.tables import Table
from medtune.evaluate.stats import Comparison, Estimate, finite_or_none, reliability, roc_points
from medtune.evaluate.suite import SuiteScores
from medtune.workspace import atomic_write_text

# The headline's columns: (heading, dimension, group); None: every evaluated image.
HEADLINE = (
    ("all images", None, None),
    ("chest images", "region", "chest"),
    ("non-chest images", "region", "non-chest"),
    ("in-domain sites", "domain", "in-domain"),
    ("held-out sites", "domain", "held-out sites"),
)
SAMPLE_REPORTS = 8  # generated next to reference reports, per report model


@dataclass
class Evaluation:
    """Everything one report shows; any part may be missing."""

    title: str
    probe: SuiteScores | None = None
    reports: dict[str, tuple[Any, list[Any]]] = field(
        default_factory=dict
    )  # name -> scores, samples
    grounding: dict[str, tuple[Any, list[Any]]] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)  # lines shown first (the demo's answer)
    notes: list[str] = field(default_factory=list)  # how the figures were made


def write_evaluation(evaluation: Evaluation, directory: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` and ``results.json`` into ``directory``; return the HTML's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / "report.html"
    atomic_write_text(html_path, render_html(evaluation.title, report_blocks(evaluation)))
    atomic_write_text(directory / "results.json", json.dumps(results_json(evaluation), indent=2))
    return html_path


def results_json(evaluation: Evaluation) -> dict[str, Any]:
    """The report's numbers as JSON."""
    out: dict[str, Any] = {"title": evaluation.title, "summary": evaluation.summary}
    if evaluation.probe is not None:
        out["probe"] = evaluation.probe.as_json()
    out["report_generation"] = {n: s.as_json() for n, (s, _) in evaluation.reports.items()}
    out["grounding"] = {n: _grounding_json(s) for n, (s, _) in evaluation.grounding.items()}
    return out


def report_blocks(evaluation: Evaluation) -> list[Block]:
    blocks: list[Block] = [Heading(evaluation.title, 1)]
    if evaluation.summary:
        blocks.append(Bullets(tuple(evaluation.summary)))
    if evaluation.probe is not None:
        blocks += probe_blocks(evaluation.probe)
    if evaluation.reports:
        blocks += report_generation_blocks(evaluation.reports)
    if evaluation.grounding:
        blocks += grounding_blocks(evaluation.grounding)
    if evaluation.notes:
        blocks += [Heading("How these figures were made"), Bullets(tuple(evaluation.notes))]
    return blocks


# ---------------------------------------------------------------------------------------------
# Probe suite.


def headline_table(scores: SuiteScores) -> Table:
    """Mean AUROC [95% CI] per model: on every image, chest and non-chest, in-domain and
    held-out sites."""
    columns = [(title, dim, group) for title, dim, group in HEADLINE
               if dim is None or group in scores.groups.get(dim, [])]  # fmt: skip
    rows = []
    for name, model in scores.models.items():
        cells: list[Any] = [name]
        for _, dim, group in columns:
            estimate = model.mean if dim is None else model.subgroups.get(dim, {}).get(group)
            cells.append(estimate.format() if estimate is not None else "-")
        rows.append(cells)
    return Table(
        "Mean AUROC over the probe tasks",
        ["model", *(title for title, _, _ in columns)],
        rows,
        note=f"95% CIs: percentile bootstrap over patients ({scores.n_boot} resamples). "
        "Each probe task is a three-layer MLP on frozen features.",
    )


def comparison_table(scores: SuiteScores) -> Table:
    """Each later model minus each earlier one: difference [CI] and paired-bootstrap p."""
    figures = ["mean", "region:chest", "region:non-chest", "domain:held-out sites"]
    shown = [f for f in figures if any(f in c for refs in scores.comparisons.values()
                                       for c in refs.values())]  # fmt: skip
    rows = []
    for name, refs in scores.comparisons.items():
        for reference, figures_ in refs.items():
            rows.append([f"{name} - {reference}", *(_difference(figures_.get(f)) for f in shown)])
    titles = {"mean": "all images", "region:chest": "chest images",
              "region:non-chest": "non-chest images",
              "domain:held-out sites": "held-out sites"}  # fmt: skip
    return Table(
        "Paired comparisons of mean AUROC",
        ["comparison", *(titles[f] for f in shown)],
        rows,
        note="difference [95% CI] (p: two-sided paired bootstrap, the same patient resamples "
        "for both models)",
    )


def task_table(scores: SuiteScores) -> Table:
    tasks = list(dict.fromkeys(t for m in scores.models.values() for t in m.tasks))
    rows = []
    for task in tasks:
        row: list[Any] = [task]
        for model in scores.models.values():
            score = model.tasks.get(task)
            row.append(score.auroc.format() if score else "skipped")
        rows.append(row)
    rows.append(["mean", *(m.mean.format() for m in scores.models.values())])
    return Table("AUROC per probe task", ["task", *scores.models], rows,
                 note="one-vs-rest macro AUROC for multi-class tasks; mean over labels for the "
                 "findings")  # fmt: skip


def task_comparison_table(scores: SuiteScores) -> Table | None:
    rows = []
    for name, refs in scores.comparisons.items():
        for reference, figures in refs.items():
            for task, comparison in figures.items():
                if ":" not in task and task != "mean":
                    rows.append([task, f"{name} - {reference}", _difference(comparison)])
    if not rows:
        return None
    return Table("Paired comparisons per task", ["task", "comparison", "difference [CI] (p)"],
                 rows)  # fmt: skip


def probe_blocks(scores: SuiteScores) -> list[Block]:
    from medtune.evaluate import plots

    blocks: list[Block] = [Heading("Probe suite"), TableBlock(headline_table(scores))]
    if scores.comparisons:
        blocks.append(TableBlock(comparison_table(scores)))
    blocks.append(TableBlock(task_table(scores)))
    per_task = task_comparison_table(scores)
    if per_task is not None:
        blocks.append(TableBlock(per_task))
    skipped = sorted(
        {f"{t}: {why}" for m in scores.models.values() for t, why in m.skipped.items()}
    )
    if skipped:
        blocks.append(Text("Tasks not run: " + "; ".join(skipped) + "."))
    panels = roc_panels(scores)
    if panels:
        blocks.append(Figure(plots.roc_grid(panels, "ROC curves per task (pooled one-vs-rest)")))
    curves = calibration_curves(scores)
    if curves:
        rows = [[name, _num(curve["ece"])] for name, curve in curves.items()]
        blocks.append(TableBlock(Table(
            "Calibration of the findings heads", ["model", "ECE"], rows,
            note="expected calibration error: 10 equal-width bins over every scored label",
        )))  # fmt: skip
        blocks.append(Figure(plots.reliability_plot(curves, "Reliability of the findings heads")))
    for dim, groups in scores.groups.items():
        if len(groups) < 2:
            continue
        series = {
            name: [_triple(model.subgroups.get(dim, {}).get(g)) for g in groups]
            for name, model in scores.models.items()
        }
        title = f"Mean AUROC by {dim}"
        blocks.append(Figure(plots.subgroup_plot(groups, series, title)))
    blocks += _subgroup_tables(scores)
    return blocks


def roc_panels(scores: SuiteScores) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]]:
    """Task -> model -> (fpr, tpr, AUROC): every class or label pooled one-vs-rest."""
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]] = {}
    for name, result in scores.results.items():
        for task, pred in result.predictions.items():
            truth, score = pooled(pred)
            if len(np.unique(truth)) < 2 or task not in scores.models[name].tasks:
                continue
            fpr, tpr = roc_points(truth, score)
            auroc = scores.models[name].tasks[task].auroc.value
            panels.setdefault(task, {})[name] = (fpr, tpr, auroc)
    return panels


def pooled(pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """(truth, score) of a task's predictions flattened to binary pairs: a binary task's rows,
    a multi-label task's unmasked entries, a multi-class task's one-vs-rest entries."""
    mask = np.asarray(pred.mask, bool)
    if pred.kind == "multiclass":
        onehot = np.eye(len(pred.classes))[np.asarray(pred.truth, int)[mask]]
        return onehot.ravel(), np.asarray(pred.scores)[mask].ravel()
    return np.asarray(pred.truth)[mask].ravel(), np.asarray(pred.scores)[mask].ravel()


def calibration_curves(scores: SuiteScores) -> dict[str, dict[str, Any]]:
    curves = {}
    for name, result in scores.results.items():
        pred = result.predictions.get("findings")
        task = scores.models[name].tasks.get("findings")
        if pred is None or task is None:
            continue
        truth, prob = pooled(pred)
        curve = dict(reliability(truth, prob))
        curve["ece"] = task.ece
        curves[name] = curve
    return curves


def _subgroup_tables(scores: SuiteScores) -> list[Block]:
    blocks: list[Block] = []
    for dim, groups in scores.groups.items():
        rows = []
        for group in groups:
            row: list[Any] = [group]
            for model in scores.models.values():
                estimate = model.subgroups.get(dim, {}).get(group)
                row.append(estimate.format() if estimate else "-")
            patients = max((m.subgroups.get(dim, {}).get(group, _EMPTY).groups
                            for m in scores.models.values()), default=0)  # fmt: skip
            rows.append([*row, patients])
        if rows:
            blocks.append(TableBlock(Table(f"Mean AUROC by {dim}",
                                           [dim, *scores.models, "patients"], rows)))  # fmt: skip
    return blocks


# ---------------------------------------------------------------------------------------------
# Report generation and grounding.


def report_generation_blocks(reports: dict[str, tuple[Any, list[Any]]]) -> list[Block]:
    keys = text_metric_keys(s for s, _ in reports.values())
    rows, clinical, blocks = [], [], [Heading("Report generation")]
    for name, (scores, _) in reports.items():
        ci = scores.intervals
        rows.append([name, scores.n, *(_ci(scores.scores.get(k), ci.get(k)) for k in keys)])
        c, d = scores.clinical, scores.diversity
        clinical.append([name, _num(c.get("precision")), _num(c.get("recall")),
                         _ci(c.get("f1"), ci.get("clinical_f1")), _num(c.get("macro_f1")),
                         int(d.get("distinct", 0)), _num(d.get("distinct_share")),
                         "collapsed" if scores.collapsed else "ok"])  # fmt: skip
    tokens = "R2Gen's normalisation" if any(s.r2gen for s, _ in reports.values()) else "medtune's"
    note = (f"tokens: {tokens}; [95% CI] by patient bootstrap, each resample scored as its "
            "own corpus")  # fmt: skip
    blocks.append(TableBlock(Table("Text metrics (pycocoevalcap's scorers)",
                                   ["model", "reports", *keys], rows, note=note)))  # fmt: skip
    blocks.append(TableBlock(Table(
        "Clinical efficacy and diversity",
        ["model", "precision", "recall", "F1", "macro F1", "distinct reports", "distinct share",
         "collapse guard"],
        clinical,
        note="findings the report labeler reads as positive in the generated report against "
        "the reference (uncertain counts as not positive); [95% CI] by patient bootstrap",
    )))  # fmt: skip
    for name, (scores, samples) in reports.items():
        if scores.collapsed:
            blocks.append(Text(f"{name}: the generated reports collapsed to a few distinct "
                               "texts; its scores describe one report, not the images.",
                               alert=True))  # fmt: skip
        rows = [[s.image_id, s.generated, s.reference] for s in samples[:SAMPLE_REPORTS]]
        blocks.append(TableBlock(Table(f"{name}: generated and reference reports",
                                       ["image", "generated", "reference"], rows)))  # fmt: skip
    return blocks


def text_metric_keys(scores: Any) -> tuple[str, ...]:
    """pycocoevalcap's score names, with METEOR when any of ``scores`` has it."""
    keys = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
    return keys + ("METEOR",) * any("METEOR" in s.scores for s in scores)


def grounding_blocks(grounding: dict[str, tuple[Any, list[Any]]]) -> list[Block]:
    from medtune.evaluate import plots

    blocks: list[Block] = [Heading("Phrase grounding")]
    for name, (scores, samples) in grounding.items():
        ci = scores.intervals
        rows = [["all", len(scores.items), _ci(scores.miou, ci.get("miou")),
                 _ci(scores.cnr, ci.get("cnr")),
                 _ci(scores.hit_rate, ci.get("hit_rate"))]]  # fmt: skip
        for finding, f in sorted(scores.per_finding.items()):
            rows.append([finding, int(f["n"]), _num(f["miou"]), _num(f["cnr"]),
                         _num(f["hit_rate"])])  # fmt: skip
        blocks.append(TableBlock(Table(f"{name}: grounding per finding",
                                       ["finding", "boxes", "mIoU", "CNR", "hit rate"], rows,
                                       note="hit: IoU >= 0.5")))  # fmt: skip
        if samples:
            pictures = [{"image": s.image, "heat": s.heat, "predicted": s.predicted,
                         "truth": s.truth, "caption": f"{s.phrase} (IoU {s.iou:.2f})"}
                        for s in samples]  # fmt: skip
            blocks.append(
                Figure(
                    plots.grounding_samples_plot(
                        pictures, f"{name}: heat maps, true (green) and predicted (red) boxes"
                    )
                )
            )
    return blocks


def _grounding_json(scores: Any) -> dict[str, Any]:
    return {"miou": finite_or_none(scores.miou), "cnr": finite_or_none(scores.cnr),
            "hit_rate": finite_or_none(scores.hit_rate), "n": len(scores.items),
            "intervals": {k: e.as_json() for k, e in scores.intervals.items()},
            "per_finding": {k: {m: finite_or_none(v) for m, v in f.items()}
                            for k, f in scores.per_finding.items()}}  # fmt: skip


# ---------------------------------------------------------------------------------------------


_EMPTY = Estimate(float("nan"), float("nan"), float("nan"), 0, 0)


def _difference(c: Comparison | None) -> str:
    if c is None or not np.isfinite(c.difference):
        return "-"
    return f"{c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}] (p={_p(c.p_value)})"


def _ci(value: float | None, estimate: Estimate | None) -> str:
    """The value with its patient-bootstrap interval when one was computed."""
    if estimate is None or value is None or not np.isfinite(value):
        return _num(value)
    return estimate.format()


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _triple(e: Estimate | None) -> tuple[float, float, float]:
    return (float("nan"),) * 3 if e is None else (e.value, e.low, e.high)


def _num(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def summary_lines(scores: SuiteScores, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """One sentence per (model, reference) pair: the mean AUROC difference on chest and
    non-chest images with CIs and p-values, as measured (no verdict beyond the numbers)."""
    lines = []
    for model, reference in pairs:
        figures = scores.comparisons.get(model, {}).get(reference, {})
        parts = []
        for label, key in (("non-chest", "region:non-chest"), ("chest", "region:chest")):
            c = figures.get(key)
            if c is None or not np.isfinite(c.difference):
                continue
            # Significant: the paired p-value under 0.05 and the interval clear of zero (the two
            # can disagree at the edge, where "no significant difference" is the honest word).
            significant = c.p_value < 0.05 and (c.low > 0 or c.high < 0)
            verdict = (
                "no significant difference"
                if not significant
                else ("better" if c.difference > 0 else "worse")
            )
            interval = f"[{c.low:+.3f}, {c.high:+.3f}]"
            parts.append(
                f"on {label} images {c.difference:+.3f} AUROC {interval}, "
                f"p={_p(c.p_value)} ({verdict})"
            )
        if parts:
            lines.append(f"{model} vs {reference}: " + "; ".join(parts) + ".")
    return lines
