"""`medtune label`: findings read from the reports, as label columns of the catalog.

Every report of ``dataset/reports.parquet`` is labelled by the rule-based labeler
(:mod:`medtune.curate.labeler`); a study's labels go onto each of its images as one int8 column
per finding, ``label_<finding>``: 1 positive, 0 negative, -1 uncertain, null not mentioned (the
CheXpert convention). A study with several reports takes, per finding, the strongest statement
of any of them: positive > uncertain > negative > not mentioned. Images of a study without a
report get null in every label column.

What each label rests on is kept for audit in ``dataset/labels.parquet``: one row per mention,
with the matched words and their sentence. :func:`label_report_file` labels a plain report
export (CSV, JSON Lines, FHIR) outside any workspace.

Memory stays flat in the number of reports: reports are read and evidence written in batches;
what grows is a few bytes per study.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import medtune
from medtune.curate.labeler import SHIPPED, Label, Rules, label_report, load_rules
from medtune.dataset.catalog import catalog_metadata, read_catalog, write_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path

LABEL_PREFIX = "label_"
EVIDENCE_FILE = "labels.parquet"
# Ranks order a finding's statements for combining reports; VALUES[rank] is the column value.
RANK = {"not_mentioned": 0, "negative": 1, "uncertain": 2, "positive": 3}
VALUES = (None, 0, -1, 1)
STATUS_NAMES = ("positive", "negative", "uncertain", "not_mentioned")
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
_BATCH = 2_000  # reports read, and evidence rows written, at a time
_PROGRESS_EVERY = 500

EVIDENCE_SCHEMA = pa.schema(
    [
        ("study_id", pa.string()),
        ("source", pa.string()),  # the report row (reports.parquet "source") the span is in
        ("finding", pa.string()),
        ("status", pa.string()),  # of this mention: positive, negative, uncertain
        ("start", pa.int32()),  # character span of the matched words in the report text
        ("end", pa.int32()),
        ("phrase", pa.string()),  # the matched words
        ("sentence", pa.string()),  # the sentence they are in
        ("trigger", pa.string()),  # the negation or uncertainty words that applied, if any
        ("region", pa.string()),  # a side or site named in the sentence, if any
    ]
)

Progress = Callable[[str, int, int | None], None]


@dataclass
class LabelSummary:
    """What `medtune label` did; ``tables`` and ``lines`` are what the CLI prints."""

    reports: int = 0  # report rows labelled
    studies: int = 0  # distinct studies among them
    reports_without_images: int = 0  # reports of studies with no image in the catalog
    images: int = 0
    studies_without_report: int = 0
    images_without_report: int = 0
    columns: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # label columns of findings now gone
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # finding -> status -> images
    evidence_rows: int = 0
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass
class FileLabelSummary:
    """What :func:`label_report_file` did; every input row is labelled or rejected."""

    read: int = 0
    labelled: int = 0
    rejected: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (file:line, reason)
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # finding -> status -> reports
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# A workspace.


def label_workspace(
    workspace: str | os.PathLike[str],
    extra_rules: list[Path] | None = None,
    *,
    progress: Progress | None = None,
) -> LabelSummary:
    """Label every report of ``workspace`` and write the labels into its catalog.

    Writes ``label_<finding>`` columns (replacing those of an earlier run, dropping those of
    findings no longer in the rules), the catalog metadata key "labels" (findings, columns, rule
    files, version, counts) and the evidence table ``dataset/labels.parquet``.
    ``extra_rules`` are YAML files added to the shipped rules (see :func:`load_rules`).
    """
    ws = Workspace(Path(workspace))
    if not ws.reports_path.exists():
        raise MedtuneError(
            f"{ws.reports_path}: no reports to label; ingest them with `medtune ingest --reports`"
        )
    rules = load_rules(extra_rules)
    catalog = read_catalog(ws.catalog_path)
    studies = _label_reports(ws, rules, progress)
    summary = LabelSummary(reports=studies.reports, studies=len(studies.ranks))
    summary.evidence_rows = studies.evidence_rows
    columns = _label_columns(catalog.column("study_id"), studies.ranks, rules.findings, summary)
    known = set(pc.unique(catalog.column("study_id")).to_pylist())
    summary.reports_without_images = sum(
        n for study, n in studies.per_study.items() if study not in known
    )
    previous = catalog_metadata(catalog).get("labels", {}).get("columns", [])
    summary.dropped = [c for c in previous if c not in columns and c in catalog.column_names]
    catalog = catalog.drop_columns(summary.dropped)
    summary.columns = list(columns)
    metadata = {
        "findings": list(rules.findings),
        "columns": summary.columns,
        "rules": _rule_names(extra_rules),
        "rules_sha256": _rules_digest(extra_rules),
        "medtune_version": medtune.__version__,
        "reports": summary.reports,
        "studies_without_report": summary.studies_without_report,
        "images_without_report": summary.images_without_report,
    }
    write_catalog(ws.catalog_path, catalog, columns=columns, metadata={"labels": metadata})
    _fill_tables(summary, ws)
    return summary


@dataclass
class _StudyLabels:
    ranks: dict[str, bytearray]  # study -> rank (see RANK) per finding, in rules.findings order
    per_study: Counter[str]  # reports per study
    reports: int = 0
    evidence_rows: int = 0


def _label_reports(ws: Workspace, rules: Rules, progress: Progress | None) -> _StudyLabels:
    """Label each report row; combine per study; write the evidence table as it goes."""
    reports = pq.ParquetFile(ws.reports_path)
    names = set(reports.schema_arrow.names)
    missing = {"study_id", "text"} - names
    if missing:
        raise MedtuneError(f"{ws.reports_path}: no column {', '.join(sorted(missing))}")
    columns = ["study_id", "text"] + (["source"] if "source" in names else [])
    total = reports.metadata.num_rows
    out = _StudyLabels({}, Counter())
    evidence = _EvidenceBuffer()
    path = ws.dataset_dir / EVIDENCE_FILE
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, EVIDENCE_SCHEMA, compression="zstd") as writer,
    ):
        for batch in reports.iter_batches(batch_size=_BATCH, columns=columns):
            rows = batch.to_pydict()
            sources = rows.get("source") or [None] * batch.num_rows
            for study, text, source in zip(rows["study_id"], rows["text"], sources, strict=True):
                labels = label_report(text or "", rules)
                _combine(out, study, labels, rules.findings)
                evidence.add(study, source, text or "", labels)
                out.reports += 1
                if progress and out.reports % _PROGRESS_EVERY == 0:
                    progress("reports", out.reports, total)
            out.evidence_rows += evidence.flush(writer)  # a row group per batch
    if progress:
        progress("reports", out.reports, total)
    return out


def _combine(
    out: _StudyLabels, study: str | None, labels: dict[str, Label], findings: tuple[str, ...]
) -> None:
    """A study's rank per finding: the strongest statement of any of its reports."""
    if study is None:
        return
    ranks = out.ranks.get(study)
    if ranks is None:
        ranks = out.ranks[study] = bytearray(len(findings))
    out.per_study[study] += 1
    for i, finding in enumerate(findings):
        rank = RANK[labels[finding].status]
        if rank > ranks[i]:
            ranks[i] = rank


class _EvidenceBuffer:
    """Evidence rows as columns, written to the Parquet writer a batch at a time."""

    def __init__(self) -> None:
        self.columns: dict[str, list[object]] = {name: [] for name in EVIDENCE_SCHEMA.names}

    def add(
        self, study: str | None, source: str | None, text: str, labels: dict[str, Label]
    ) -> None:
        c = self.columns
        # In the order of the text, then of the findings.
        found = [(e.start, i, finding, e) for i, (finding, label) in enumerate(labels.items())
                 for e in label.evidence]  # fmt: skip
        for _, _, finding, e in sorted(found, key=lambda x: x[:2]):
            c["study_id"].append(study)
            c["source"].append(source)
            c["finding"].append(finding)
            c["status"].append(e.status)
            c["start"].append(e.start)
            c["end"].append(e.end)
            c["phrase"].append(text[e.start : e.end])
            c["sentence"].append(text[e.sentence[0] : e.sentence[1]])
            c["trigger"].append(e.trigger)
            c["region"].append(e.region)

    def flush(self, writer: pq.ParquetWriter) -> int:
        """Write what is buffered; the number of rows written."""
        rows = len(self.columns["study_id"])
        if rows:
            writer.write_table(pa.Table.from_pydict(self.columns, schema=EVIDENCE_SCHEMA))
            self.columns = {name: [] for name in EVIDENCE_SCHEMA.names}
        return rows


def _label_columns(
    study_ids: pa.ChunkedArray,
    ranks: dict[str, bytearray],
    findings: tuple[str, ...],
    summary: LabelSummary,
) -> dict[str, pa.Array]:
    """One int8 column per finding, for the catalog rows in their order."""
    keys = list(ranks)
    matrix = np.frombuffer(b"".join(ranks[k] for k in keys), dtype=np.uint8)
    matrix = matrix.reshape(len(keys), len(findings))
    # Catalog row -> its study's row of the matrix; -1 where the study has no report.
    where = pc.index_in(study_ids, value_set=pa.array(keys, pa.string()))
    index = pc.fill_null(where, -1).to_numpy().astype(np.int64)
    reported = index >= 0
    index[~reported] = 0
    unreported = pc.filter(study_ids, pa.array(~reported))
    summary.images = len(study_ids)
    summary.images_without_report = int((~reported).sum())
    summary.studies_without_report = len(pc.unique(pc.drop_null(unreported)))
    values = np.array([0, 0, -1, 1], dtype=np.int8)  # by rank; rank 0 is masked to null
    columns: dict[str, pa.Array] = {}
    for j, finding in enumerate(findings):
        rank = matrix[index, j] if len(keys) else np.zeros(len(index), np.uint8)
        mask = ~reported | (rank == 0)
        columns[LABEL_PREFIX + finding] = pa.array(values[rank], pa.int8(), mask=mask)
        summary.counts[finding] = Counter(
            {name: int((rank[~mask] == RANK[name]).sum()) for name in STATUS_NAMES[:3]}
        )
        summary.counts[finding]["not_mentioned"] = int(mask.sum())
    return columns


def _rule_names(extra: list[Path] | None) -> list[str]:
    return [*SHIPPED, *(str(p) for p in extra or [])]


def _rules_digest(extra: list[Path] | None) -> str:
    """SHA-256 of the rule files' text, in order: which rules made the labels, exactly."""
    digest = hashlib.sha256()
    folder = resources.files("medtune.curate").joinpath("rules")
    for name in SHIPPED:
        digest.update(folder.joinpath(name).read_bytes())
    for path in extra or []:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _fill_tables(summary: LabelSummary, ws: Workspace) -> None:
    summary.tables["labels (images)"] = [
        ["finding", "positive", "negative", "uncertain", "not mentioned"],
        *(
            [finding, c["positive"], c["negative"], c["uncertain"], c["not_mentioned"]]
            for finding, c in summary.counts.items()
        ),
    ]
    summary.lines.append(
        f"{summary.reports} reports of {summary.studies} studies labelled; "
        f"{summary.images_without_report} images of {summary.studies_without_report} studies "
        "have no report (null labels)"
    )
    if summary.reports_without_images:
        summary.lines.append(f"{summary.reports_without_images} reports have no image")
    if summary.dropped:
        summary.lines.append(f"dropped label columns: {', '.join(summary.dropped)}")
    summary.lines.append(f"catalog: {ws.catalog_path}; evidence: {ws.dataset_dir / EVIDENCE_FILE}")


# ---------------------------------------------------------------------------------------------
# A report file.


def label_report_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    text_column: str | None = None,
    id_column: str | None = None,
    extra_rules: list[Path] | None = None,
) -> FileLabelSummary:
    """Label a report export (CSV, JSON Lines, FHIR; see :func:`read_reports`) into ``out``.

    ``out`` is .csv, .jsonl or .parquet: one row per labelled report, in input order, with its
    id (column named ``id_column``, default "id") and one column per finding: 1, 0, -1, or
    empty when not mentioned. No report text is written. Rows that cannot be read are listed in
    the summary with their reason.
    """
    from medtune.io.reports import RejectedRow, read_reports

    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise MedtuneError(f"{out}: write labels to a .csv, .jsonl or .parquet file")
    if out_path.exists() and out_path.resolve() == Path(path).resolve():
        raise MedtuneError(f"{out}: is the input file; write the labels elsewhere")
    rules = load_rules(extra_rules)
    summary = FileLabelSummary(counts={f: Counter() for f in rules.findings})
    id_name = id_column or "id"
    items = read_reports(path, text_column, id_column)
    with atomic_path(out_path) as tmp, _Rows(tmp, suffix, id_name, rules.findings) as write:
        for item in items:
            summary.read += 1
            if isinstance(item, RejectedRow):
                summary.rejects.append((item.source, item.reason))
                continue
            labels = label_report(item.text, rules)
            for finding, label in labels.items():
                summary.counts[finding][label.status] += 1
            write(item.id, [VALUES[RANK[labels[f].status]] for f in rules.findings])
            summary.labelled += 1
    summary.rejected = len(summary.rejects)
    _fill_file_tables(summary, out_path)
    return summary


class _Rows:
    """Rows to one output file; a context manager yielding ``write(id, values)``."""

    def __init__(self, path: Path, suffix: str, id_name: str, findings: tuple[str, ...]) -> None:
        self.path, self.suffix, self.names = path, suffix, [id_name, *findings]

    def __enter__(self) -> Callable[[str, list[int | None]], None]:
        if self.suffix == ".parquet":
            self.columns: list[list[object]] = [[] for _ in self.names]
            return self._buffer
        self.fh = open(self.path, "w", encoding="utf-8", newline="")
        if self.suffix == ".csv":
            self.csv = csv.writer(self.fh)
            self.csv.writerow(self.names)
            return lambda key, values: self.csv.writerow(
                [key, *("" if v is None else v for v in values)]
            )
        return lambda key, values: self.fh.write(
            json.dumps(dict(zip(self.names, [key, *values], strict=True))) + "\n"
        )

    def _buffer(self, key: str, values: list[int | None]) -> None:
        for column, value in zip(self.columns, [key, *values], strict=True):
            column.append(value)

    def __exit__(self, kind: object, *_: object) -> None:
        if self.suffix != ".parquet":
            self.fh.close()
        elif kind is None:
            types = [pa.string()] + [pa.int8()] * (len(self.names) - 1)
            arrays = [pa.array(c, t) for c, t in zip(self.columns, types, strict=True)]
            pq.write_table(pa.Table.from_arrays(arrays, names=self.names), self.path)


def _fill_file_tables(summary: FileLabelSummary, out: Path) -> None:
    summary.tables["reports"] = [
        ["read", "labelled", "rejected"],
        [summary.read, summary.labelled, summary.rejected],
    ]
    summary.tables["labels (reports)"] = [
        ["finding", "positive", "negative", "uncertain", "not mentioned"],
        *(
            [finding, c["positive"], c["negative"], c["uncertain"], c["not_mentioned"]]
            for finding, c in summary.counts.items()
        ),
    ]
    summary.lines += [f"rejected {source}: {reason}" for source, reason in summary.rejects]
    summary.lines.append(f"labels: {out}")
