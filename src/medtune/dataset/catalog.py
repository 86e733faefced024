"""The catalog: one row per preprocessed image, holding only pseudonymous and clinical values.

Ids are pseudonyms (keyed, see deid/pseudonyms.py); dates are shifted per patient; ages over 89
read 90. Later stages add columns (labels, splits) but never rename these. ``shard`` and
``index`` locate the pixels: ``np.load(images/shard-NNNNN.npy, mmap_mode="r")[index]``.
The original geometry (rows, cols) with ``scale``, ``pad_x`` and ``pad_y`` maps boxes between
the original image and the stored one (see io/pixels.Geometry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medtune.errors import MedtuneError
from medtune.workspace import atomic_path

CATALOG_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # pseudonym of the SOP Instance UID (+ frame)
        ("input_id", pa.string()),  # opaque id of the source file (io/folder.input_id)
        ("frame", pa.int32()),
        ("patient_id", pa.string()),  # patient pseudonym
        ("study_id", pa.string()),  # study pseudonym (from the accession number or study UID)
        ("series_uid", pa.string()),  # replaced UID
        ("sop_uid", pa.string()),  # replaced UID
        ("site", pa.string()),  # pseudonym of the institution (or the source's top folder)
        ("manufacturer", pa.string()),
        ("model", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("view", pa.string()),
        ("laterality", pa.string()),
        ("sex", pa.string()),
        ("age", pa.int16()),  # years at the study, 90 for 90 and over; null when unknown
        ("study_date", pa.date32()),  # shifted
        ("photometric", pa.string()),
        ("bits_stored", pa.int16()),
        ("transfer_syntax", pa.string()),
        ("pixel_spacing_mm", pa.float32()),
        ("rows", pa.int32()),
        ("cols", pa.int32()),
        ("scale", pa.float32()),
        ("pad_x", pa.int32()),
        ("pad_y", pa.int32()),
        ("burned_in_text", pa.bool_()),  # text was found in the pixels and blanked
        ("phash", pa.binary(32)),  # perceptual hash of the stored image (dataset/phash.py)
        ("shard", pa.int32()),
        ("shard_file", pa.string()),  # images/<shard_file>.npy
        ("index", pa.int32()),
    ]
)

# Every input, whatever became of it: ingested + quarantined + duplicate = inputs.
INPUTS_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("status", pa.string()),  # ingested, quarantined, duplicate
        ("stage", pa.string()),  # where a quarantined input stopped: read, pixels, deid, ...
        ("reason", pa.string()),  # one line, never a value from the file
        ("images", pa.int32()),  # catalog rows it produced
        ("deid", pa.string()),  # JSON: what de-identification did (actions and counts only)
    ]
)


# ---------------------------------------------------------------------------------------------
# Reading and rewriting the catalog. Curation adds columns (labels, splits) and records how
# they were made in the file's key-value metadata; every writer goes through these two
# functions so nothing else is lost on the way.

METADATA_KEY = b"medtune"  # JSON: {"labels": {...}, "splits": {"split": {...}}, ...}


def read_catalog(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """The catalog as an Arrow table (all columns, or ``columns``); its metadata kept."""
    path = Path(path)
    if not path.exists():
        raise MedtuneError(f"{path}: no catalog here; run `medtune ingest` first")
    return pq.read_table(path, columns=columns)


def catalog_metadata(table: pa.Table) -> dict[str, Any]:
    """medtune's metadata of a catalog table ({} when there is none)."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_catalog(
    path: str | os.PathLike[str],
    table: pa.Table,
    columns: dict[str, pa.Array | list[object]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> pa.Table:
    """Write ``table`` atomically, with ``columns`` added or replaced (same row order) and
    ``metadata`` merged into medtune's metadata (one level deep: {"splits": {...}} updates the
    splits it names, keeps the others). Returns the table written."""
    for name, values in (columns or {}).items():
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        if len(array) != table.num_rows:
            raise MedtuneError(f"column {name}: {len(array)} values for {table.num_rows} rows")
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, array) if index >= 0 else (
            table.append_column(name, array))  # fmt: skip
    merged = catalog_metadata(table)
    for key, value in (metadata or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    schema_metadata = dict(table.schema.metadata or {})
    schema_metadata[METADATA_KEY] = json.dumps(merged, sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table
