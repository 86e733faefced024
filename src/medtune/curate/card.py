"""``medtune card``: the dataset card of a workspace, as card.md and a self-contained card.html.

Writes, all atomically::

    dataset/card.md             Hugging Face dataset card: YAML front matter, then the sections
    dataset/card.html           the same card in one file (plots embedded, no external assets)
    dataset/card/<plot>.png     the plots card.md shows (paths relative to card.md)
    dataset/card/tables/*.csv   every table of the card, for a spreadsheet

The card says where the data came from (inputs and their fates, de-identification profile and
options, the config, the medtune version), what is in it (per site, vendor, anatomy, view, sex,
age; labels; splits; duplicates; pixels) and what could mislead a model trained on it (shortcut
warnings, see shortcuts.py). It shows pseudonyms and counts, never report text or file paths.
"""

from __future__ import annotations

import csv
import datetime
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from medtune.curate.card_doc import (
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    TableBlock,
    Text,
    render_html,
    render_markdown,
)
from medtune.curate.plots import Plot, card_plots
from medtune.curate.provenance import PROFILE
from medtune.curate.shortcuts import MIN_SITE_PATIENTS
from medtune.curate.stats import DatasetStats, dataset_stats
from medtune.curate.tables import Table
from medtune.dataset.phash import NEAR
from medtune.workspace import Workspace, atomic_write_bytes, atomic_write_text

CARD_DIR = "card"  # beside card.md, holding its PNGs and tables/
# Hugging Face's size_categories buckets: (upper bound, label).
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
)
DEID_OFF = (
    "DE-IDENTIFICATION OFF: this dataset was ingested without de-identification; headers, "
    "pixels and reports were kept as they came and may identify patients. Do not share it."
)
LABELS_READING = (
    "One label per finding from the report of each image's study (CheXpert convention): "
    "1 positive, 0 negative, -1 uncertain, empty when the report does not mention it. "
    "Positive % is of all images: 'not mentioned' is not counted as negative."
)
# Composition tables, in reading order (keys of DatasetStats.tables).
COMPOSITION = [
    "overview",
    "sites",
    "vendors",
    "models",
    "anatomy",
    "site_anatomy",
    "views",
    "sex",
    "age_bands",
    "age_sex",
    "missing",
    "size",
    "intensity",
]


@dataclass
class CardSummary:
    """What the CLI prints (titled tables, header row first; lines), and what was written."""

    tables: dict[str, list[list[object]]]
    lines: list[str]
    stats: DatasetStats
    card_md: Path
    card_html: Path


def write_card(
    workspace: Path,
    sample_per_site: int = 64,
    near_duplicate_bits: int = NEAR,
    min_site_patients: int = MIN_SITE_PATIENTS,
    title: str | None = None,
    tables_csv: bool = True,
    now: datetime.datetime | None = None,
) -> CardSummary:
    """Compute the statistics of the workspace at ``workspace`` and write its dataset card.

    ``title`` defaults to the workspace folder's name; ``now`` (UTC) stamps the card.
    See :func:`medtune.curate.stats.dataset_stats` for the other parameters.
    """
    ws = Workspace(Path(workspace))
    stats = dataset_stats(ws.root, sample_per_site, near_duplicate_bits, min_site_patients)
    title = title or f"medtune dataset {ws.root.resolve().name}"
    created = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    plots = card_plots(stats)
    blocks = card_blocks(stats, plots, title, created)
    card_dir = ws.dataset_dir / CARD_DIR
    written = {card_dir / f"{plot.name}.png" for plot in plots}
    for plot in plots:
        atomic_write_bytes(card_dir / f"{plot.name}.png", plot.png)
    if tables_csv:
        for slug, table in stats.tables.items():
            written.add(card_dir / "tables" / f"{slug}.csv")
            atomic_write_text(card_dir / "tables" / f"{slug}.csv", table_csv(table))
    _remove_stale(card_dir, written)
    atomic_write_text(
        ws.card_md_path, front_matter(stats, title) + render_markdown(blocks, CARD_DIR)
    )
    atomic_write_text(ws.card_html_path, render_html(title, blocks))
    return _summary(stats, ws)


def _remove_stale(card_dir: Path, keep: set[Path]) -> None:
    # A plot or table from an earlier card that this one no longer has (labels removed...).
    for path in [*card_dir.glob("*.png"), *card_dir.glob("tables/*.csv")]:
        if path not in keep:
            path.unlink(missing_ok=True)


def _summary(stats: DatasetStats, ws: Workspace) -> CardSummary:
    sites = stats.tables["sites"]
    tables: dict[str, list[list[object]]] = {
        "dataset": stats.tables["overview"].with_header(),
        "per site": [sites.columns[:4]] + [row[:4] for row in sites.rows],
    }
    if stats.findings:
        prevalence = stats.tables["prevalence"]
        tables["findings"] = [prevalence.columns, *prevalence.rows]
    lines = [f"warning: {w.message}" for w in stats.warnings]
    lines.append(f"card: {ws.card_md_path} and {ws.card_html_path}")
    return CardSummary(tables, lines, stats, ws.card_md_path, ws.card_html_path)


def table_csv(table: Table) -> str:
    """A table as CSV text: header, then rows (empty for a missing value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([["" if v is None else v for v in row] for row in table.rows])
    return out.getvalue()


def size_category(images: int) -> str:
    """Hugging Face's size_categories value for a dataset of ``images`` images."""
    for bound, label in SIZE_CATEGORIES:
        if images < bound:
            return label
    return "n>10M"


def front_matter(stats: DatasetStats, title: str) -> str:
    """The Hugging Face dataset-card metadata, as YAML between --- lines."""
    meta = {
        "pretty_name": title,
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["medical", "radiology", "x-ray", "medtune"],
        "size_categories": [size_category(stats.images)],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


# ---------------------------------------------------------------------------------------------
# What the card says, section by section.


def card_blocks(stats: DatasetStats, plots: list[Plot], title: str, created: str) -> list[Block]:
    """The whole card as blocks, in reading order."""
    return [
        Heading(title, 1),
        *_summary_section(stats, created),
        *_provenance_section(stats, created),
        *_composition_section(stats),
        *_labels_section(stats),
        *_splits_section(stats),
        *_duplicates_section(stats),
        *_warnings_section(stats),
        Heading("Plots"),
        *(Figure(plot) for plot in plots),
    ]


def _summary_section(stats: DatasetStats, created: str) -> list[Block]:
    blocks: list[Block] = [Heading("Summary")]
    deid = stats.provenance.deid
    if deid is not None and not deid["enabled"]:
        blocks.append(Text(DEID_OFF, alert=True))
    side = "x".join(str(n) for n in stats.pixels.shape)
    stored = f", stored as {side} {stats.pixels.dtype} letterboxed squares" if side else ""
    about = (
        f"{stats.images:,} images of {stats.studies:,} studies from {stats.patients:,} "
        f"patients at {stats.sites} sites{stored}. Card made by medtune "
        f"{stats.provenance.medtune_version} on {created}. Identifiers are pseudonyms and "
        "dates are shifted per patient."
    )
    blocks.append(Text(about))
    if stats.warnings:
        count = len(stats.warnings)
        blocks.append(Text(f"{count} warning{'s' if count > 1 else ''}: see Warnings below.", True))
    return blocks


def _provenance_section(stats: DatasetStats, created: str) -> list[Block]:
    p = stats.provenance
    blocks: list[Block] = [Heading("Provenance"), Heading("Sources", 3)]
    if p.inputs:
        fates = [[s, p.inputs.get(s, 0)] for s in ("ingested", "quarantined", "duplicate")]
        rows = [*fates, ["total", sum(p.inputs.values())]]
        note = "Quarantined inputs are counted by stage, never listed by path."
        blocks.append(TableBlock(Table("Inputs by fate", ["fate", "inputs"], rows, note)))
    else:
        blocks.append(Text("No input log (dataset/deid/inputs.parquet) in this workspace."))
    if p.quarantined_by_stage:
        rows = sorted(([k, v] for k, v in p.quarantined_by_stage.items()), key=lambda r: -r[1])
        blocks.append(TableBlock(Table("Quarantined, by stage", ["stage", "inputs"], rows)))
    if p.reports:
        rows = [[k, v] for k, v in p.reports.items()]
        blocks.append(TableBlock(Table("Reports", ["what", "count"], rows)))
    blocks += [Heading("De-identification", 3), *_deid_blocks(stats)]
    made_by = f"workspace made by `medtune {p.config_kind}`" if p.config_kind else "config unknown"
    software = (f"medtune {p.medtune_version}", f"card made {created}", made_by)
    blocks += [Heading("Software and config", 3), Bullets(software)]
    if p.config_text:
        intro = "The config that made the workspace (medtune.yaml, less the pseudonym key's path):"
        blocks += [Text(intro), Code(p.config_text)]
    else:
        blocks.append(Text("No medtune.yaml in this workspace: the config is unknown.", True))
    return blocks


def _deid_blocks(stats: DatasetStats) -> list[Block]:
    deid = stats.provenance.deid
    if deid is None:
        return [Text("De-identification settings unknown (no readable medtune.yaml).", True)]
    if not deid["enabled"]:
        return [Text(DEID_OFF, alert=True)]
    options = ", ".join(deid["options"]) or "none"
    items = (
        f"profile: {PROFILE}",
        f"options (PS3.15 E.3): {options}",
        f"burned-in text OCR: {deid['ocr']}",
        "report text de-identified and leak-scanned before it was stored",
    )
    return [Bullets(items)]


def _composition_section(stats: DatasetStats) -> list[Block]:
    blocks: list[Block] = [Heading("Composition")]
    return blocks + [TableBlock(stats.tables[key]) for key in COMPOSITION if key in stats.tables]


def _labels_section(stats: DatasetStats) -> list[Block]:
    blocks: list[Block] = [Heading("Labels")]
    if not stats.findings:
        return [*blocks, Text("Labels were not made yet: run `medtune label`.")]
    blocks.append(Text(LABELS_READING))
    keys = ("prevalence", "prevalence_site", "prevalence_vendor")
    blocks += [TableBlock(stats.tables[k]) for k in keys]
    if stats.labels:
        blocks += [
            Text("How the labels were made (catalog metadata):"),
            Code(yaml.safe_dump(stats.labels, sort_keys=False)),
        ]
    return blocks


def _splits_section(stats: DatasetStats) -> list[Block]:
    blocks: list[Block] = [Heading("Splits")]
    if not stats.splits:
        return [*blocks, Text("No splits yet: run `medtune split`.")]
    for column in stats.splits:
        blocks.append(Heading(f"Column `{column}`", 3))
        if stats.splits.get(column):
            blocks.append(Code(yaml.safe_dump(stats.splits[column], sort_keys=False)))
        blocks.append(TableBlock(stats.tables[f"split_{column}"]))
    return blocks


def _duplicates_section(stats: DatasetStats) -> list[Block]:
    return [
        Heading("Near-duplicates"),
        TableBlock(stats.tables["duplicates"]),
        TableBlock(stats.tables["duplicate_pairs"]),
    ]


def _warnings_section(stats: DatasetStats) -> list[Block]:
    blocks: list[Block] = [Heading("Warnings")]
    if not stats.warnings:
        return [*blocks, Text("No warnings.")]
    return [*blocks, Bullets(tuple(w.message for w in stats.warnings), alert=True)]
