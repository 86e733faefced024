"""The demo's training stage: the shipped recipes, run on the demo workspace as a user runs them.

1. ``pretrain/dino``: self-distillation of the tiny ViT on the workspace's training images.
2. ``finetune/classify-probe`` twice, from random weights and from the DINO export: the
   per-finding validation AUROC of both shows what local pretraining bought.
3. ``finetune/report``: a small report decoder trained from scratch, with its collapse check.
4. ``finetune/ground``: the synthetic truth's finding boxes imported (``medtune boxes import``
   would do this for a user's annotations), then phrase grounding trained on them.

Each run is a folder under ``<workspace>/runs/demo-*`` with its recipe, checkpoints, metrics
and export; the demo replaces its own runs each time it is run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from medtune.config import DemoConfig, load_recipe
from medtune.synth.cohort import Progress, Summary
from medtune.workspace import Workspace

RUN_PREFIX = "demo-"


def train(
    config: DemoConfig, workspace: Workspace, cohort_dir: Path, summary: Summary,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Pretrain, then fine-tune each of ``config.train.tasks``; add their results to
    ``summary``."""
    from medtune.train.finetune import run_finetune
    from medtune.train.pretrain import run_pretrain

    options = config.train
    _remove_old_runs(workspace)
    common = [f"workspace={workspace.root}", f"backbone.image_size={options.image_size}"]
    steps = [f"loop.max_steps={options.finetune_steps}"]

    def recipe(name: str, run: str, *extra: str) -> Any:
        return load_recipe(name, [*common, f"name={RUN_PREFIX}{run}", *extra])

    runs: dict[str, Any] = {}
    runs["pretrain: dino"] = dino = run_pretrain(
        recipe("pretrain/dino", "dino", f"loop.max_steps={options.pretrain_steps}"),
        progress=_StageProgress(progress, "pretrain: dino", options.pretrain_steps),
    )
    if "classify" in options.tasks:
        probes = {}
        for start, init in (("random init", []), ("DINO init", [f"init={dino.export_dir}"])):
            run = "probe-" + start.split()[0].lower()
            probes[start] = runs[f"probe: {start}"] = run_finetune(
                recipe("finetune/classify-probe", run, *steps, *init),
                progress=_StageProgress(progress, f"probe: {start}", options.finetune_steps),
            )
        # A demo-sized validation split holds a few positives per finding: read these as a
        # sign that the pipeline runs, not as a comparison (issue 6 brings confidence intervals).
        summary.tables["probe: validation AUROC per finding"] = _auroc_table(probes)
    if "report" in options.tasks:
        runs["report generation"] = report = run_finetune(
            recipe("finetune/report", "report", *steps, f"init={dino.export_dir}"),
            progress=_StageProgress(progress, "report generation", options.finetune_steps),
        )
        summary.lines.extend(line for line in report.lines if line.startswith("warning"))
    if "ground" in options.tasks:
        _import_truth_boxes(workspace, cohort_dir, summary)
        runs["grounding"] = run_finetune(
            recipe("finetune/ground", "ground", *steps, f"init={dino.export_dir}"),
            progress=_StageProgress(progress, "grounding", options.finetune_steps),
        )
    summary.tables["training runs (last validation)"] = _runs_table(runs)
    summary.lines.append(f"runs and exports: {workspace.runs_dir}/{RUN_PREFIX}*")


def _remove_old_runs(workspace: Workspace) -> None:
    # The demo regenerates its cohort each time, so runs of an earlier demo describe other data.
    if workspace.runs_dir.is_dir():
        for run in workspace.runs_dir.glob(f"{RUN_PREFIX}*"):
            shutil.rmtree(run)


def _import_truth_boxes(workspace: Workspace, cohort_dir: Path, summary: Summary) -> None:
    from medtune.dataset.boxes import import_boxes, synth_truth_boxes

    table = synth_truth_boxes(workspace.root, cohort_dir)
    result = import_boxes(workspace.root, table, source="synth-truth")
    summary.lines.extend(result.lines()[:1])


def _auroc_table(results: dict[str, Any]) -> list[list[object]]:
    """Rows per finding (and the mean): the validation AUROC of each run."""
    names = list(results)
    per_run = [{k.removeprefix("val_auroc_"): v for k, v in r.metrics.items()
                if k.startswith("val_auroc_") and k != "val_auroc_labels"}
               for r in results.values()]  # fmt: skip
    findings = sorted(set().union(*per_run))
    rows: list[list[object]] = [["finding", *names]]
    for finding in findings:
        rows.append([finding, *(_fmt(run.get(finding)) for run in per_run)])
    rows.append(["mean", *(_fmt(r.metrics.get("val_auroc")) for r in results.values())])
    return rows


# What each run's row shows: its headline validation metrics, in this order.
SHOWN = ("val_loss", "feature_std", "val_auroc", "distinct", "val_miou", "val_hit_rate")


def _runs_table(runs: dict[str, Any]) -> list[list[object]]:
    shown = [m for m in SHOWN if any(m in r.metrics for r in runs.values())]
    rows: list[list[object]] = [["run", "steps", *shown]]
    for name, result in runs.items():
        rows.append([name, result.steps, *(_fmt(result.metrics.get(m)) for m in shown)])
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class _StageProgress:
    """fit's progress protocol, shown as one bar of the demo's own display."""

    def __init__(self, progress: Progress | None, label: str, total: int) -> None:
        self.progress, self.label, self.total = progress, label, total

    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None:
        if self.progress:
            self.progress(self.label, step, self.total)

    def close(self) -> None:
        if self.progress:
            self.progress(self.label, self.total, self.total)
