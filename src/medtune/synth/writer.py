"""Stream a cohort's rows into Parquet tables and per-site RIS exports, atomically.

Rows are buffered a few hundred at a time and written as Parquet row groups, so memory stays flat.
Every table streams into :func:`medtune.workspace.atomic_path` (temp + fsync + rename) held open
until :meth:`CohortWriter.close`, so an interrupted run never leaves a truncated table under its
final name.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from medtune.config import Finding
from medtune.synth.patient import PatientRecords
from medtune.synth.sites import Site
from medtune.workspace import atomic_path

BOX = pa.list_(pa.int32())
IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()), ("file", pa.string()), ("site_id", pa.string()),
        ("vendor", pa.string()), ("model", pa.string()), ("portable", pa.bool_()),
        ("modality", pa.string()), ("transfer_syntax", pa.string()),
        ("photometric", pa.string()), ("bits_stored", pa.int8()), ("voi", pa.string()),
        ("rows", pa.int32()), ("cols", pa.int32()), ("pixel_spacing_mm", pa.float32()),
        ("patient_key", pa.string()), ("study_key", pa.string()), ("accession", pa.string()),
        ("study_date", pa.date32()), ("study_uid", pa.string()), ("sop_uid", pa.string()),
        ("anatomy", pa.string()), ("view", pa.string()), ("laterality", pa.string()),
        ("sex", pa.string()), ("age", pa.int16()), ("body_scale", pa.float32()),
        ("habitus", pa.float32()), ("bone_density", pa.float32()), ("marker", pa.string()),
        ("marker_box", BOX), ("mirrored", pa.bool_()), ("burned_in_text", pa.bool_()),
        ("text_box", BOX),
        *[(f"label_{f.value}", pa.bool_()) for f in Finding],
        ("findings", pa.list_(pa.struct([
            ("finding", pa.string()), ("x0", pa.int32()), ("y0", pa.int32()),
            ("x1", pa.int32()), ("y1", pa.int32()), ("mask", pa.string()),
            ("location", pa.string()), ("side", pa.string()), ("size_mm", pa.float32()),
        ]))),
    ]
)  # fmt: skip
REPORT_TRUTH_SCHEMA = pa.schema(
    [
        ("accession", pa.string()), ("study_key", pa.string()), ("site_id", pa.string()),
        ("anatomy", pa.string()), ("finding", pa.string()), ("present", pa.bool_()),
        ("status", pa.string()), ("location", pa.string()), ("side", pa.string()),
    ]
)  # fmt: skip
PHI_SCHEMA = pa.schema(
    [
        ("value", pa.string()), ("kind", pa.string()), ("location", pa.string()),
        ("field", pa.string()), ("image_id", pa.string()), ("accession", pa.string()),
        ("patient_index", pa.int32()),
    ]
)  # fmt: skip
RIS_COLUMNS = (
    "accession_number", "patient_id", "patient_name", "patient_birth_date", "exam_datetime",
    "exam_description", "report_status", "radiologist", "signed_datetime", "report_text",
)  # fmt: skip


class _Table:
    """One Parquet file written in row groups into an :func:`atomic_path` kept open."""

    def __init__(self, path: Path, schema: pa.Schema, flush_rows: int = 512) -> None:
        self._atomic = atomic_path(path)
        self.tmp = self._atomic.__enter__()
        self.schema = schema
        self.rows: list[dict[str, object]] = []
        self.flush_rows = flush_rows
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")

    def add(self, rows: list[dict[str, object]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self._atomic.__exit__(None, None, None)  # fsync and rename into place

    def abort(self) -> None:
        self.writer.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temp


class _RisExport:
    """A site's RIS export: CSV or JSON Lines, one report per line, keyed by accession."""

    def __init__(self, path: Path, fmt: str) -> None:
        self._atomic = atomic_path(path)
        self.fh: IO[str] = open(self._atomic.__enter__(), "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.csv = csv.DictWriter(self.fh, RIS_COLUMNS) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def add(self, row: dict[str, object]) -> None:
        if self.csv:
            self.csv.writerow(row)
        else:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.fh.close()
        self._atomic.__exit__(None, None, None)  # fsync and rename into place

    def abort(self) -> None:
        self.fh.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temp


class CohortWriter:
    """All of a cohort's tables; feed it :class:`PatientRecords` in order, then close it."""

    def __init__(self, out: Path, sites: list[Site]) -> None:
        truth = out / "truth"
        self.images = _Table(truth / "images.parquet", IMAGE_SCHEMA)
        self.report_truth = _Table(truth / "reports.parquet", REPORT_TRUTH_SCHEMA)
        self.phi = _Table(truth / "phi.parquet", PHI_SCHEMA, flush_rows=4096)
        self.ris = {
            site.index: _RisExport(out / "reports" / f"{site.site_id}.{site.report_format}",
                                   site.report_format)
            for site in sites
        }  # fmt: skip
        self.studies = 0

    def add(self, records: PatientRecords) -> None:
        self.images.add(records.images)
        self.report_truth.add(records.report_truth)
        self.phi.add(records.phi)
        for row in records.ris:
            self.ris[records.site_index].add(row)
        self.studies += len(records.ris)

    def close(self) -> None:
        for table in (self.images, self.report_truth, self.phi):
            table.close()
        for export in self.ris.values():
            export.close()

    def abort(self) -> None:
        for table in (self.images, self.report_truth, self.phi):
            table.abort()
        for export in self.ris.values():
            export.abort()
