"""The demo's training and evaluation stage: does full-body pretraining beat chest-only?

The question of the multi-anatomy X-ray foundation-model work, asked on the synthetic cohort
with the shipped recipes, as a user would run them:

1. Three backbones of the same architecture: **random** (no pretraining), **chest-only** and
   **full-body** (``pretrain/dino`` on the chest images, or on every image, of the training
   sites: the same steps, batch and image size, so the same compute).
2. ``medtune evaluate probe`` on all three: frozen features, a three-layer MLP per task
   (findings, sex, view, anatomy, lead marker, mirrored image, site), AUROC with patient-
   bootstrap CIs on the test patients and the held-out sites, split into chest and non-chest
   images, and paired comparisons.
3. ``finetune/report`` and ``finetune/ground`` from each backbone in ``finetune_from``, scored
   by ``medtune evaluate report-gen`` and ``grounding`` on the test split.
4. One HTML report, ``<workspace>/eval/demo/report.html``, whose first lines answer the
   question with the measured differences, whatever they are.

Runs live under ``<workspace>/runs/demo-*``; the demo replaces its own runs each time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from medtune.config import DemoConfig, load_recipe
from medtune.synth.cohort import Progress, Summary
from medtune.workspace import Workspace

RUN_PREFIX = "demo-"
# The three backbones: name shown -> the pretraining data (None: no pretraining).
BACKBONES = {"random": None, "chest-only": "body_part = 'CHEST'", "full-body": ""}
_SHORT = {"random": "random", "chest": "chest-only", "full": "full-body"}
QUESTION = (
    "Does full-body pretraining beat chest-only pretraining on non-chest tasks, and hold its "
    "own on chest tasks?"
)


def train(
    config: DemoConfig, workspace: Workspace, cohort_dir: Path, summary: Summary,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Pretrain, evaluate, fine-tune and evaluate; add the results to ``summary`` and write
    the report."""
    from medtune.evaluate.report_html import Evaluation, summary_lines, write_evaluation
    from medtune.evaluate.run import evaluation_dir, probe_notes, probe_tables

    options = config.train
    _remove_old_runs(workspace)
    split_column = _split_column(workspace)
    exports = pretrain_backbones(config, workspace, split_column, progress)
    evaluation = Evaluation(f"medtune demo: {QUESTION}")
    if "probe" in options.tasks:
        _import_truth_annotations(workspace, cohort_dir, summary)
        scores = _probe(config, workspace, exports, split_column, progress)
        evaluation.probe = scores
        pairs = [("full-body", "chest-only"), ("full-body", "random"), ("chest-only", "random")]
        evaluation.summary = summary_lines(scores, pairs)
        evaluation.notes = probe_notes(scores)
        summary.tables.update(probe_tables(scores))
    if "report" in options.tasks or "ground" in options.tasks:
        _finetune_and_evaluate(config, workspace, cohort_dir, exports, evaluation, summary,
                               progress)  # fmt: skip
    steps = options.pretrain_steps
    evaluation.notes.append(
        f"Pretraining: DINO, {steps} steps of batch {options.pretrain_batch} at "
        f"{options.image_size} px for both chest-only and full-body, on the training sites "
        f"('{split_column}' train rows); random: the same architecture, untrained."
    )
    html = write_evaluation(evaluation, evaluation_dir(workspace.root, "demo"))
    summary.lines.extend(f"answer: {line}" for line in evaluation.summary)
    summary.lines.append(f"evaluation report: {html}")
    summary.lines.append(f"runs and exports: {workspace.runs_dir}/{RUN_PREFIX}*")


def pretrain_backbones(
    config: DemoConfig, workspace: Workspace, split_column: str, progress: Progress | None
) -> dict[str, Path]:
    """Name -> export of the three backbones, pretrained under one budget."""
    from medtune.models.export import export_model
    from medtune.train.pretrain import run_pretrain
    from medtune.train.recipe import build_backbone

    options = config.train
    exports: dict[str, Path] = {}
    for name, where in BACKBONES.items():
        recipe = _recipe(config, workspace, "pretrain/dino", f"pretrain-{name}",
                         f"loop.max_steps={options.pretrain_steps}",
                         f"data.batch_size={options.pretrain_batch}",
                         f"data.split_column={split_column}", f'data.where="{where}"')  # fmt: skip
        if where is None:  # no pretraining: the recipe's backbone as initialised
            backbone = build_backbone(recipe.backbone, None)
            directory = workspace.runs_dir / f"{RUN_PREFIX}pretrain-{name}" / "export"
            exports[name] = export_model(directory, task="encoder", backbone=backbone.config,
                                         encoder=backbone.encoder,
                                         info={"pretraining": "none"})  # fmt: skip
            continue
        result = run_pretrain(recipe, progress=_StageProgress(
            progress, f"pretrain: {name}", options.pretrain_steps))  # fmt: skip
        exports[name] = result.export_dir
    return exports


def _probe(
    config: DemoConfig, workspace: Workspace, exports: dict[str, Path], split_column: str,
    progress: Progress | None,
) -> Any:  # fmt: skip
    from medtune.evaluate.probe import ProbeConfig
    from medtune.evaluate.run import probe_suites

    options = config.train
    return probe_suites(
        list(exports.values()), workspace.root, names=list(exports), split_column=split_column,
        config=ProbeConfig(seed=config.curate.seed), n_boot=options.bootstrap,
        seed=config.curate.seed, progress=progress,
    )  # fmt: skip


def _finetune_and_evaluate(
    config: DemoConfig, workspace: Workspace, cohort_dir: Path, exports: dict[str, Path],
    evaluation: Any, summary: Summary, progress: Progress | None,
) -> None:  # fmt: skip
    from medtune.evaluate.grounding_eval import evaluate_grounding
    from medtune.evaluate.report_gen import evaluate_report_model
    from medtune.evaluate.run import (
        add_grounding_intervals,
        add_report_intervals,
        grounding_tables,
        report_tables,
    )
    from medtune.train.finetune import run_finetune

    options = config.train
    steps = f"loop.max_steps={options.finetune_steps}"
    if "ground" in options.tasks:
        _import_truth_boxes(workspace, cohort_dir, summary)
    for short in options.finetune_from:
        name = _SHORT[short]
        init = f"init={exports[name]}"
        if "report" in options.tasks:
            run = run_finetune(
                _recipe(config, workspace, "finetune/report", f"report-{name}", steps, init),
                progress=_StageProgress(progress, f"report: {name}", options.finetune_steps),
            )
            summary.lines.extend(f"report-{name}: {line}" for line in run.lines
                                 if line.startswith("warning"))  # fmt: skip
            scores, samples = evaluate_report_model(
                run.export_dir, workspace.root, splits=("test",), meteor=options.meteor
            )
            # Each resample is a corpus scored whole: a fifth of the probe suite's resamples.
            add_report_intervals(workspace.root, scores, samples, options.bootstrap // 5)
            evaluation.reports[name] = (scores, samples)
        if "ground" in options.tasks:
            run = run_finetune(
                _recipe(config, workspace, "finetune/ground", f"ground-{name}", steps, init),
                progress=_StageProgress(progress, f"ground: {name}", options.finetune_steps),
            )
            scores, pictures = evaluate_grounding(run.export_dir, workspace.root,
                                                  splits=("test",))  # fmt: skip
            add_grounding_intervals(workspace.root, scores, options.bootstrap)
            evaluation.grounding[name] = (scores, pictures)
    if evaluation.reports:
        summary.tables.update(report_tables({n: s for n, (s, _) in evaluation.reports.items()}))
    if evaluation.grounding:
        scores = {n: s for n, (s, _) in evaluation.grounding.items()}
        rows = grounding_tables(scores)["grounding"]
        summary.tables["grounding"] = [rows[0]] + [r for r in rows[1:] if r[1] == "all"]


def _recipe(config: DemoConfig, workspace: Workspace, name: str, run: str, *extra: str) -> Any:
    common = [f"workspace={workspace.root}", f"backbone.image_size={config.train.image_size}"]
    return load_recipe(name, [*common, f"name={RUN_PREFIX}{run}", *extra])


def _split_column(workspace: Workspace) -> str:
    """Pretrain and probe on the site split when curation made one (held-out sites then stay
    unseen by every model), else on the patient split."""
    import pyarrow.parquet as pq

    names = pq.read_schema(workspace.catalog_path).names
    return "split_site" if "split_site" in names else "split"


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


def _import_truth_annotations(workspace: Workspace, cohort_dir: Path, summary: Summary) -> None:
    # Lead-marker side and mirrored images are not in DICOM: a user imports them from their own
    # annotations; the demo takes them from the cohort's truth.
    from medtune.dataset.annotations import import_annotations, synth_truth_annotations

    rows = import_annotations(workspace.root, synth_truth_annotations(workspace.root, cohort_dir),
                              source="synth-truth")  # fmt: skip
    summary.lines.append(f"annotations: lead marker and mirrored image for {rows} images")


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
