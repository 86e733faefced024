"""The curation verbs: ``label``, ``card``, ``split``, ``query``, ``subset`` and ``boxes``.

    medtune label -w ws                       # report labels into the catalog
    medtune label --reports ris.csv --text-column findings --id-column id --out labels.csv
    medtune split -w ws --method site         # hold out sites: train/val/test + ood
    medtune split -w ws --check split         # the leakage check alone, on any column
    medtune card -w ws                        # dataset/card.md and card.html
    medtune query -w ws "SELECT site, count(*) FROM catalog GROUP BY site"
    medtune subset -w ws --where "body_part = 'CHEST'" --to ws-chest
    medtune boxes annotations.csv -w ws --key ~/medtune.key   # boxes for phrase grounding

Registered on the main app by ``cli.py``; like every command there, each imports its module
inside the function so that ``medtune --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from medtune.cli_output import print_summary, with_progress

WorkspaceOption = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory.")]


def label(
    workspace: Annotated[
        Path | None, typer.Option("--workspace", "-w", help="Label this workspace's reports.")
    ] = None,
    rules: Annotated[
        list[Path] | None,
        typer.Option(help="Extra rules (YAML), added to the shipped ones (repeatable)."),
    ] = None,
    reports: Annotated[
        Path | None, typer.Option(help="Label this report export (CSV/JSONL/FHIR) instead.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="With --reports: output file (.csv, .jsonl, .parquet).")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="With --reports: text column.")] = None,
    id_column: Annotated[str | None, typer.Option(help="With --reports: id column.")] = None,
) -> None:
    """Label findings from report text: positive, negative, uncertain or not mentioned.

    Into the workspace catalog (label_<finding> columns: 1, 0, -1, empty) with the evidence
    of each label in dataset/labels.parquet; or, with --reports, one row per report to --out.
    """
    from medtune.curate import labels

    if reports is not None:
        if out is None:
            raise typer.BadParameter("--out is required with --reports", param_hint="--out")
        summary = labels.label_report_file(reports, out, text_column, id_column, rules)
        for source, reason in summary.rejects:
            print(f"rejected {source}: {reason}", file=sys.stderr)
        print_summary(summary)
        return
    if workspace is None:
        raise typer.BadParameter("give --workspace, or --reports FILE --out FILE", param_hint="-w")
    summary = with_progress(
        "label", lambda progress: labels.label_workspace(workspace, rules, progress=progress)
    )
    print_summary(summary)


def card(
    workspace: WorkspaceOption,
    sample_per_site: Annotated[
        int, typer.Option(help="Images per site for pixel statistics and sample grids.")
    ] = 64,
    near_bits: Annotated[
        int | None, typer.Option(help="Near-duplicate threshold, bits of the 256-bit hash.")
    ] = None,
    min_site_patients: Annotated[
        int, typer.Option(help="Warn about sites with fewer patients than this.")
    ] = 20,
) -> None:
    """Write the dataset card (dataset/card.md and a self-contained card.html)."""
    from medtune.curate.card import write_card
    from medtune.dataset.phash import NEAR

    summary = write_card(workspace, sample_per_site, NEAR if near_bits is None else near_bits,
                         min_site_patients)  # fmt: skip
    print_summary(summary)


def split(
    workspace: WorkspaceOption,
    method: Annotated[
        str, typer.Option(help="patient, kfold, or out-of-domain: site, vendor, anatomy.")
    ] = "patient",
    column: Annotated[
        str | None, typer.Option(help="Catalog column to write (default split, or fold).")
    ] = None,
    fractions: Annotated[str, typer.Option(help="train,val,test fractions.")] = "0.7,0.1,0.2",
    folds: Annotated[int, typer.Option(help="kfold: number of folds.")] = 5,
    hold_out: Annotated[
        str | None, typer.Option(help="Out-of-domain: values to hold out, comma-separated.")
    ] = None,
    stratify: Annotated[
        str, typer.Option(help="auto (every label column), none, or label columns, comma-sep.")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same split).")] = 0,
    check: Annotated[
        str | None, typer.Option(help="Only check this existing column for leakage.")
    ] = None,
) -> None:
    """Patient-grouped, leakage-free splits, stored as a catalog column with how they were made.

    Every split is checked for leakage (a patient, or near-duplicate pixels, in two parts); a
    leak fails the command.
    """
    from medtune.curate.leakage import check_workspace_split, describe
    from medtune.errors import MedtuneError

    if check is not None:
        leaks = check_workspace_split(workspace, check)
        if leaks:
            raise MedtuneError(f"split {check!r}: {describe(leaks)}")
        print(f"split {check!r}: no patient and no near-duplicate image in two parts")
        return
    from medtune.curate.splits import SplitSpec, make_split

    spec = SplitSpec(
        method=method,
        column=column or "",
        fractions=tuple(_numbers(fractions, "--fractions")),  # type: ignore[arg-type]
        folds=folds,
        hold_out=tuple(_names(hold_out)),
        stratify=() if stratify == "none" else "auto" if stratify == "auto" else
        tuple(_names(stratify)),
        seed=seed,
    )  # fmt: skip
    print_summary(make_split(workspace, spec))


def query(
    sql: Annotated[str, typer.Argument(help="SQL over catalog, reports, labels, inputs.")],
    workspace: WorkspaceOption,
    out: Annotated[
        Path | None, typer.Option(help="Write the result (.csv, .parquet, .jsonl).")
    ] = None,
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 40,
) -> None:
    """Run SQL (DuckDB) over the workspace's tables; print the result or write it."""
    from medtune.curate.query import format_table, run_query, write_result

    result = run_query(workspace, sql)
    if out is not None:
        write_result(result, out)
        print(f"{result.num_rows} rows -> {out}")
    else:
        print(format_table(result, max_rows=max_rows))


def subset(
    workspace: WorkspaceOption,
    where: Annotated[str, typer.Option(help="SQL condition on catalog columns.")],
    to: Annotated[Path, typer.Option("--to", help="New workspace (must not exist or be empty).")],
) -> None:
    """A new workspace with the matching rows; its images link to the same shards (no copies)."""
    from medtune.curate.subset import make_subset

    print_summary(make_subset(workspace, where, to))


def boxes(
    table: Annotated[Path, typer.Argument(help="Boxes: .csv, .parquet or .jsonl.")],
    workspace: WorkspaceOption,
    key: Annotated[
        Path | None,
        typer.Option(help="Pseudonym key, to match rows by original sop_uid (as at ingest)."),
    ] = None,
    source: Annotated[
        str, typer.Option(help="Name of this set of boxes; importing it again replaces it.")
    ] = "import",
) -> None:
    """Import boxes (for phrase grounding) into dataset/boxes.parquet.

    Rows name an image by image_id, or by its original sop_uid (and frame) with --key; boxes
    x0, y0, x1, y1 in the original image's pixels; a phrase and/or a finding.
    """
    from medtune.dataset.boxes import import_boxes, read_box_table

    result = import_boxes(workspace, read_box_table(table), key_path=key, source=source)
    for line in result.lines():
        print(line)


def annotations(
    table: Annotated[Path, typer.Argument(help="Annotations: .csv, .parquet or .jsonl.")],
    workspace: WorkspaceOption,
    source: Annotated[str, typer.Option(help="Name of this set of annotations.")] = "import",
) -> None:
    """Import per-image annotations DICOM does not carry into dataset/annotations.parquet.

    Rows name an image by image_id; the other columns are the annotations (the probe suite's
    lead-marker task reads `marker`: L, R or none; its mirrored-image task `mirrored`: true or
    false). Importing again replaces the values of the same images and columns.
    """
    from medtune.dataset.annotations import import_annotations
    from medtune.dataset.boxes import read_box_table

    rows = import_annotations(workspace, read_box_table(table), source=source)
    print(f"annotations: {rows} rows imported as {source!r}")


COMMANDS = (label, card, split, query, subset, boxes, annotations)


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in _names(text)]
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 0.7,0.1,0.2, got {text!r}",
                                 param_hint=flag) from None  # fmt: skip
