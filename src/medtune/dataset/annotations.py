"""Per-image annotations DICOM does not carry: ``dataset/annotations.parquet``.

Some evaluation tasks need labels no header holds: the side of the lead marker ("L", "R" or
"none"), whether the stored image is mirrored. A reader or an annotation tool supplies them as a
table keyed by the catalog's ``image_id``; imports merge into one file, so several sources (two
readers, a later correction) each add or replace their columns::

    table = pa.table({"image_id": ["img-1", "img-2"], "marker": ["L", "none"]})
    import_annotations("ws", table, source="reader-1")
    read_annotations("ws")  # image_id, marker (and any column an earlier import added)

A later value replaces the earlier one of the same image and column, nulls included (an import
states what it knows of the columns it has); columns and rows it does not name are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path

ANNOTATIONS_FILE = "annotations.parquet"
METADATA_KEY = b"medtune"  # JSON: {"sources": [names of the imports, in order]}


def annotations_path(workspace: str | os.PathLike[str]) -> Path:
    """``<workspace>/dataset/annotations.parquet``."""
    return Workspace(Path(workspace)).dataset_dir / ANNOTATIONS_FILE


def read_annotations(workspace: str | os.PathLike[str]) -> pa.Table | None:
    """The workspace's annotations (image_id and the annotated columns), None when there are
    none."""
    path = annotations_path(workspace)
    return pq.read_table(path) if path.is_file() else None


def annotation_sources(workspace: str | os.PathLike[str]) -> list[str]:
    """The sources imported so far, oldest first."""
    table = read_annotations(workspace)
    raw = (table.schema.metadata or {}).get(METADATA_KEY) if table is not None else None
    return list(json.loads(raw).get("sources", [])) if raw else []


def import_annotations(workspace: str | os.PathLike[str], table: pa.Table, *, source: str) -> int:
    """Merge ``table`` (``image_id`` plus any columns) into ``annotations.parquet``; return the
    number of rows imported.

    Every image_id must be a catalog image and appear once. Values of this table replace those
    stored for the same image and column; other columns and rows are kept."""
    ws = Workspace(Path(workspace))
    if not source or "\n" in source:
        raise MedtuneError("annotations import: the source must be a one-line name")
    if "image_id" not in table.column_names:
        raise MedtuneError(f"annotations import {source!r}: the table has no image_id column")
    ids = table.column("image_id").cast(pa.string())
    if ids.null_count:
        raise MedtuneError(f"annotations import {source!r}: {ids.null_count} rows have no image_id")
    if len(pc.unique(ids)) != len(ids):
        raise MedtuneError(f"annotations import {source!r}: image_id values repeat")
    known = read_catalog(ws.catalog_path, columns=["image_id"]).column("image_id")
    unknown = int((~pc.is_in(ids, known).to_numpy(zero_copy_only=False)).sum())
    if unknown:
        raise MedtuneError(
            f"annotations import {source!r}: {unknown} image_id values are not in the catalog"
        )
    new = table.set_column(table.schema.get_field_index("image_id"), "image_id", ids)
    path = annotations_path(ws.root)
    old = read_annotations(ws.root)
    merged = new if old is None else _merge(old, new, source)
    sources = [s for s in annotation_sources(ws.root) if s != source] + [source]
    metadata = {METADATA_KEY: json.dumps({"sources": sources}).encode()}
    merged = merged.sort_by("image_id").replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(merged, tmp, compression="zstd")
    return table.num_rows


def _merge(old: pa.Table, new: pa.Table, source: str) -> pa.Table:
    """Rows of both keyed by image_id; a column of ``new`` wins on the images ``new`` holds."""
    old_ids = old.column("image_id").to_pylist()
    new_ids = new.column("image_id").to_pylist()
    old_at = {v: k for k, v in enumerate(old_ids)}
    ids = old_ids + [i for i in new_ids if i not in old_at]
    new_at = {v: k for k, v in enumerate(new_ids)}
    in_old = np.array([old_at.get(i, -1) for i in ids], np.int64)
    in_new = np.array([new_at.get(i, -1) for i in ids], np.int64)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {"image_id": pa.array(ids, pa.string())}
    names = dict.fromkeys(old.column_names + new.column_names)
    for name in (n for n in names if n != "image_id"):
        if name not in new.column_names:
            columns[name] = _take(old.column(name), in_old)
            continue
        fresh = new.column(name)
        if name not in old.column_names:
            columns[name] = _take(fresh, in_new)
            continue
        try:
            stored = old.column(name).cast(fresh.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise MedtuneError(
                f"annotations import {source!r}: column {name!r} is {fresh.type}, but the "
                f"stored one is {old.column(name).type}"
            ) from None
        both = pa.chunked_array(stored.chunks + fresh.chunks, fresh.type)
        at = np.where(in_new >= 0, len(old_ids) + in_new, in_old)
        columns[name] = _take(both, at)
    return pa.table(columns)


def _take(column: pa.ChunkedArray, positions: np.ndarray) -> pa.ChunkedArray:
    """``column`` at ``positions``; -1 gives a null."""
    return column.take(pa.array(positions, pa.int64(), mask=positions < 0))


def synth_truth_annotations(
    workspace: str | os.PathLike[str], cohort_dir: str | os.PathLike[str]
) -> pa.Table:
    """The synthetic cohort's marker side ("L", "R" or "none") and mirroring per catalog image,
    as an import table (image_id, marker, mirrored): pass it to :func:`import_annotations`.

    Truth is joined to the catalog through ``input_id`` (the opaque id of each source file), as
    the demo does, since the catalog holds only pseudonyms."""
    from medtune.io.folder import input_id

    truth = pq.read_table(
        Path(cohort_dir) / "truth" / "images.parquet", columns=["file", "marker", "mirrored"]
    )
    # The cohort was ingested from its dicom/ folder: input ids are relative to it.
    truth_of = {
        input_id(f.removeprefix("dicom/")): (marker or "none", bool(mirrored))
        for f, marker, mirrored in zip(*truth.to_pydict().values(), strict=True)
    }
    catalog = read_catalog(
        Workspace(Path(workspace)).catalog_path, columns=["image_id", "input_id"]
    )
    rows = [
        {"image_id": image_id, "marker": truth_of[source][0], "mirrored": truth_of[source][1]}
        for image_id, source in zip(*catalog.to_pydict().values(), strict=True)
        if source in truth_of
    ]
    schema = pa.schema([("image_id", pa.string()), ("marker", pa.string()),
                        ("mirrored", pa.bool_())])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)
