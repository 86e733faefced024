"""``medtune evaluate``: score models like a paper does, with confidence intervals.

    medtune evaluate probe ws/runs/a ws/runs/b -w ws --label chest --label full
    medtune evaluate report-gen ws/runs/report -w ws --r2gen --json scores.json
    medtune evaluate report-gen --predictions preds.json --references refs.json --json out.json
    medtune evaluate grounding ws/runs/ground -w ws

Each command that reads a workspace writes ``<workspace>/eval/<name>/report.html`` (one
self-contained page) and ``results.json`` beside it, and prints the headline figures.
Registered in ``cli.py`` as a sub-app; each command imports its modules inside the function so
that ``medtune --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medtune.cli_output import print_summary

evaluate_app = typer.Typer(
    help="Evaluate models: probe suite, report generation, grounding.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

WorkspaceOption = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory.")]
NameOption = Annotated[
    str | None, typer.Option(help="Folder under <workspace>/eval/ (default: from the models).")
]
SplitColumn = Annotated[
    str | None,
    typer.Option(help="Catalog split column (default: split_site if present, else split)."),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write the scores here.")]


@evaluate_app.command()
def probe(
    models: Annotated[list[Path], typer.Argument(help="Exports or run directories.")],
    workspace: WorkspaceOption,
    label: Annotated[
        list[str] | None, typer.Option(help="A name per model, in order (repeatable).")
    ] = None,
    task: Annotated[
        list[str] | None, typer.Option(help="Probe task (repeatable; default: all defaults).")
    ] = None,
    split_column: SplitColumn = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    hidden: Annotated[int, typer.Option(help="Hidden width of the MLP heads.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the heads and the bootstrap.")] = 0,
    name: NameOption = None,
    json_out: JsonOption = None,
) -> None:
    """Frozen features once per model, a three-layer MLP per task, AUROC with patient-bootstrap
    CIs, subgroups, calibration; several models are compared pairwise."""
    from medtune.evaluate.probe import ProbeConfig
    from medtune.evaluate.probe_tasks import DEFAULT_TASKS
    from medtune.evaluate.run import evaluate_probe

    result = evaluate_probe(
        models, workspace, names=label, tasks=task or DEFAULT_TASKS, split_column=split_column,
        config=ProbeConfig(hidden=hidden, seed=seed), n_boot=bootstrap, seed=seed, name=name,
    )  # fmt: skip
    _finish(result, json_out)


@evaluate_app.command("report-gen")
def report_gen(
    model: Annotated[Path | None, typer.Argument(help="A report export or run.")] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", "-w", help="Workspace (with a model).")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="JSON: id -> [generated report] (no model needed).")
    ] = None,
    references: Annotated[
        Path | None, typer.Option(help="JSON: id -> [reference reports].")
    ] = None,
    r2gen: Annotated[
        bool, typer.Option(help="R2Gen's normalisation (lower case, punctuation stripped).")
    ] = False,
    split: Annotated[list[str] | None, typer.Option(help="Split values to generate on.")] = None,
    split_column: Annotated[str, typer.Option(help="Catalog split column.")] = "split",
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples for the CIs (each a whole corpus).")
    ] = 200,
    name: NameOption = None,
    json_out: JsonOption = None,
) -> None:
    """BLEU-1..4, ROUGE-L, CIDEr-D (pycocoevalcap's values), clinical efficacy from the report
    labeler, and the diversity guard; from a model on a workspace, or from two JSON files."""
    from medtune.errors import MedtuneError
    from medtune.evaluate.run import evaluate_report_files, evaluate_reports

    if (predictions is None) != (references is None):
        raise MedtuneError("report-gen: give both --predictions and --references, or neither")
    if predictions is not None:
        if model is not None:
            raise MedtuneError("report-gen: give a model or --predictions/--references, not both")
        result = evaluate_report_files(predictions, references, r2gen=r2gen)  # type: ignore[arg-type]
    else:
        if model is None or workspace is None:
            raise MedtuneError("report-gen: give a model and --workspace, or the two JSON files")
        result = evaluate_reports(model, workspace, splits=split or ["test"],
                                  split_column=split_column, r2gen=r2gen, name=name,
                                  n_boot=bootstrap)  # fmt: skip
    _finish(result, json_out)


@evaluate_app.command()
def grounding(
    model: Annotated[Path, typer.Argument(help="A grounding export or run.")],
    workspace: WorkspaceOption,
    split: Annotated[list[str] | None, typer.Option(help="Split values to score.")] = None,
    split_column: Annotated[str, typer.Option(help="Catalog split column.")] = "split",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    name: NameOption = None,
    json_out: JsonOption = None,
) -> None:
    """IoU of each predicted box with its true box, mIoU and CNR overall and per finding."""
    from medtune.evaluate.run import evaluate_grounding_model

    result = evaluate_grounding_model(model, workspace, splits=split or ["test"],
                                      split_column=split_column, name=name,
                                      n_boot=bootstrap)  # fmt: skip
    _finish(result, json_out)


def _finish(result, json_out: Path | None) -> None:  # type: ignore[no-untyped-def]
    if json_out is not None:
        from medtune.workspace import atomic_write_text

        atomic_write_text(json_out, json.dumps(result.json, indent=2) + "\n")
        result.lines.append(f"scores: {json_out}")
    print_summary(result)
