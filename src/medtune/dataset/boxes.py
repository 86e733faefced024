"""Boxes for phrase grounding: ``dataset/boxes.parquet``, one row per (image, phrase, box).

Boxes are stored in the STORED image's pixels (the letterboxed square of the shards), so
training reads them beside the pixels without the original DICOM. Users draw boxes on the
original images, so :func:`import_boxes` takes original pixel coordinates and maps them with
the catalog's geometry (:func:`boxes_from_original`). Pixel coordinates are continuous: pixel
``i`` spans [i, i + 1), so a box of pixels 3..5 inclusive is x0 = 3, x1 = 6.

An annotation tool knows the ORIGINAL SOP Instance UID; the catalog holds only its keyed
replacement. With the workspace's pseudonym key, :func:`import_boxes` maps the original UID to
the replacement exactly as ingest did (``Pseudonymizer.uid``); the original never reaches the
workspace. Rows that match no image, and boxes clipped to the image, are counted, never
silently dropped; messages carry counts only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path

BOXES_FILE = "boxes.parquet"
METADATA_KEY = b"medtune"  # JSON: {"sources": {source: {counts of its last import}}}
COORDINATES = ("x0", "y0", "x1", "y1")
GEOMETRY = ("rows", "cols", "scale", "pad_x", "pad_y")
_UNMATCHED, _AMBIGUOUS = -1, -2  # catalog "rows" of input rows that found none

BOXES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # the catalog's
        ("phrase", pa.string()),  # the text query, e.g. "nodule in the right upper zone"
        ("finding", pa.string()),  # the finding it names, when known
        ("x0", pa.float32()),  # stored-image pixels, x1 > x0 and y1 > y0
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("source", pa.string()),  # which import made the row; re-importing it replaces them
    ]
)


def boxes_path(workspace: str | os.PathLike[str]) -> Path:
    """``<workspace>/dataset/boxes.parquet``."""
    return Workspace(Path(workspace)).dataset_dir / BOXES_FILE


# ---------------------------------------------------------------------------------------------
# Geometry: original pixels <-> stored pixels.


def _axis_scales(geometry: pa.Table | Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """Per image: (x scale, y scale, pad_x, pad_y) exactly as ``io.pixels.preprocess`` resized.

    The catalog's ``scale`` is size / long side, but each side was resized to a whole number
    of pixels (round(side x scale)), so the short side's true scale differs slightly; cv2
    maps pixel edges by new / old per axis. The stored side ``size`` is recovered from the long
    side (it maps to exactly ``size`` pixels)."""
    rows, cols, scale, pad_x, pad_y = (np.asarray(geometry[k], np.float64) for k in GEOMETRY)
    long_side = np.maximum(rows, cols)
    size = np.rint(long_side * scale)
    exact = size / long_side  # the float64 scale ingest computed (the catalog keeps float32)
    new_rows = np.maximum(np.rint(rows * exact), 1)  # np.rint rounds half to even, as round()
    new_cols = np.maximum(np.rint(cols * exact), 1)
    return new_cols / cols, new_rows / rows, pad_x, pad_y


def boxes_from_original(geometry: pa.Table | Mapping[str, Any], boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes x0, y0, x1, y1 in original pixels -> the same boxes in stored pixels.

    ``geometry`` holds the catalog columns rows, cols, scale, pad_x, pad_y, one row per box.
    Boxes are not clipped (see :func:`clip_boxes`). Example: a 256 x 208 original stored at
    64 px has scale 0.25 and pad_x 6, so the box (0, 0, 208, 256) becomes (6, 0, 58, 64)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    sx, sy, pad_x, pad_y = _axis_scales(geometry)
    scale, shift = np.stack([sx, sy, sx, sy], 1), np.stack([pad_x, pad_y, pad_x, pad_y], 1)
    return (boxes * scale + shift).astype(np.float32)


def boxes_to_original(geometry: pa.Table | Mapping[str, Any], boxes: np.ndarray) -> np.ndarray:
    """The inverse of :func:`boxes_from_original`: stored pixels -> original pixels."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    sx, sy, pad_x, pad_y = _axis_scales(geometry)
    scale, shift = np.stack([sx, sy, sx, sy], 1), np.stack([pad_x, pad_y, pad_x, pad_y], 1)
    return ((boxes - shift) / scale).astype(np.float32)


def clip_boxes(
    boxes: np.ndarray, width: np.ndarray | float, height: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to [0, width] x [0, height] (per box or one size for all); returns
    (clipped boxes, which changed, which are left with no area: wholly outside)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = np.broadcast_to(np.asarray(width, np.float64), len(boxes))
    height = np.broadcast_to(np.asarray(height, np.float64), len(boxes))
    low, high = np.zeros((len(boxes), 4)), np.stack([width, height, width, height], axis=1)
    clipped = np.clip(boxes, low, high)
    changed = (clipped != boxes).any(axis=1)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    return clipped, changed, empty


# ---------------------------------------------------------------------------------------------
# Import.


@dataclass
class ImportResult:
    """What one import did, in counts (never a value from the rows)."""

    source: str
    rows: int = 0  # rows in the input table
    written: int = 0  # boxes of this source now in boxes.parquet
    unmatched: int = 0  # no catalog image (unknown id, UID or frame)
    ambiguous: int = 0  # no frame given for an instance with several frames in the catalog
    invalid: int = 0  # a coordinate or the phrase missing, or x1 <= x0 or y1 <= y0
    clipped: int = 0  # partly outside the original image: clipped to it (and written)
    outside: int = 0  # wholly outside the original image: not written
    total: int = 0  # rows of boxes.parquet, all sources

    def lines(self) -> list[str]:
        """A short account for the command line."""
        lines = [
            f"boxes: {self.written} of {self.rows} rows imported as {self.source!r} "
            f"({self.total} in the workspace)"
        ]
        dropped = {
            "match no image": self.unmatched,
            "name no frame of a multi-frame instance": self.ambiguous,
            "are incomplete or empty": self.invalid,
            "lie wholly outside their image": self.outside,
        }
        lines += [f"  {n} rows {why}: not imported" for why, n in dropped.items() if n]
        if self.clipped:
            lines.append(f"  {self.clipped} boxes clipped to their image")
        return lines


def import_boxes(
    workspace: str | os.PathLike[str],
    table: pa.Table,
    *,
    key_path: str | os.PathLike[str] | None = None,
    source: str = "import",
) -> ImportResult:
    """Add the boxes of ``table`` to ``dataset/boxes.parquet``, replacing earlier rows of the
    same ``source`` and keeping other sources' rows.

    ``table`` columns: ``image_id`` (the catalog's pseudonymous id) or ``sop_uid`` (the
    ORIGINAL SOP Instance UID, mapped with the pseudonym key in ``key_path``; ``frame``
    optional, needed only for multi-frame instances), x0, y0, x1, y1 in ORIGINAL pixels,
    ``phrase`` and/or ``finding`` (a missing phrase is the finding's name)."""
    ws = Workspace(Path(workspace))
    if not source or "\n" in source:
        raise MedtuneError("boxes import: the source must be a one-line name")
    catalog = read_catalog(ws.catalog_path, columns=["image_id", "sop_uid", "frame", *GEOMETRY])
    result = ImportResult(source=source, rows=table.num_rows)
    catalog_rows = _match_rows(table, catalog, key_path, result)
    boxes, phrases, findings, complete = _input_boxes(table)
    matched = catalog_rows >= 0
    result.invalid = int((matched & ~complete).sum())
    taken = np.flatnonzero(matched & complete)
    geometry = catalog.select(list(GEOMETRY)).take(pa.array(catalog_rows[taken]))
    clipped, changed, empty = clip_boxes(boxes[taken], geometry["cols"], geometry["rows"])
    result.clipped = int((changed & ~empty).sum())
    result.outside = int(empty.sum())
    kept = taken[~empty]
    stored = boxes_from_original(geometry.filter(pa.array(~empty)), clipped[~empty])
    columns = {
        "image_id": catalog.column("image_id").take(pa.array(catalog_rows[kept])),
        "phrase": [phrases[i] for i in kept],
        "finding": [findings[i] for i in kept],
        **{name: stored[:, k] for k, name in enumerate(COORDINATES)},
        "source": [source] * len(kept),
    }
    new = pa.table(columns, schema=BOXES_SCHEMA)
    result.written = new.num_rows
    result.total = _write_merged(boxes_path(ws.root), new, result)
    return result


def read_box_table(path: str | os.PathLike[str]) -> pa.Table:
    """An annotation export to import (boxes, or per-image annotations): CSV, JSON Lines or
    Parquet, by suffix. Id and text columns are read as strings (a UID such as "1.2" must not
    become a number)."""
    import pyarrow.csv as csv
    import pyarrow.json as pj

    path = Path(path)
    text = {name: pa.string() for name in ("image_id", "sop_uid", "phrase", "finding", "marker")}
    try:
        if path.suffix.lower() == ".csv":
            return csv.read_csv(path, convert_options=csv.ConvertOptions(column_types=text))
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return pj.read_json(path)
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise MedtuneError(f"{path}: cannot read the table ({type(err).__name__})") from None
    raise MedtuneError(f"{path}: not a table medtune reads (use .csv, .jsonl or .parquet)")


def _match_rows(
    table: pa.Table,
    catalog: pa.Table,
    key_path: str | os.PathLike[str] | None,
    result: ImportResult,
) -> np.ndarray:
    """The catalog row of each input row; _UNMATCHED or _AMBIGUOUS where none (counted)."""
    names = set(table.column_names)
    if "image_id" in names:
        position = {v: i for i, v in enumerate(catalog.column("image_id").to_pylist())}
        rows = np.array([position.get(v, -1) for v in table.column("image_id").to_pylist()])
    elif "sop_uid" in names:
        rows = _match_uids(table, catalog, key_path)
    else:
        raise MedtuneError("boxes import: the table needs an image_id or a sop_uid column")
    rows = rows.astype(np.int64).reshape(-1)
    result.unmatched = int((rows == _UNMATCHED).sum())
    result.ambiguous = int((rows == _AMBIGUOUS).sum())
    return rows


def _match_uids(
    table: pa.Table, catalog: pa.Table, key_path: str | os.PathLike[str] | None
) -> np.ndarray:
    """Original SOP Instance UIDs (+ frame) to catalog rows, through the keyed replacement
    ingest made (a catalog that kept its UIDs matches them as they are)."""
    from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key

    if key_path is None or not Path(key_path).is_file():
        raise MedtuneError(f"{key_path}: rows keyed by sop_uid need the workspace's pseudonym key")
    pseudo = Pseudonymizer(load_or_create_key(key_path))
    frames: dict[str, list[tuple[int, int]]] = {}
    uids, numbers = catalog.column("sop_uid").to_pylist(), catalog.column("frame").to_pylist()
    for i, (uid, frame) in enumerate(zip(uids, numbers, strict=True)):
        frames.setdefault(uid, []).append((frame or 0, i))
    given = table.column("sop_uid").to_pylist()
    wanted = _column(table, "frame")
    rows = np.full(table.num_rows, _UNMATCHED, np.int64)
    for i, (uid, frame) in enumerate(zip(given, wanted, strict=True)):
        uid = str(uid or "").strip()
        found = (frames.get(pseudo.uid(uid)) or frames.get(uid) or []) if uid else []
        if frame is not None:
            found = [pair for pair in found if pair[0] == int(frame)]
        if len(found) == 1:
            rows[i] = found[0][1]
        elif len(found) > 1:
            rows[i] = _AMBIGUOUS
    return rows


def _input_boxes(
    table: pa.Table,
) -> tuple[np.ndarray, list[str | None], list[str | None], np.ndarray]:
    """(N, 4) float boxes, phrases, findings, and which rows are complete and non-empty."""
    missing = [c for c in COORDINATES if c not in table.column_names]
    if missing:
        raise MedtuneError(f"boxes import: the table has no {', '.join(missing)} column")
    if "phrase" not in table.column_names and "finding" not in table.column_names:
        raise MedtuneError("boxes import: the table needs a phrase or a finding column")
    columns = [
        table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in COORDINATES
    ]
    boxes = np.stack(columns, axis=1) if table.num_rows else np.zeros((0, 4))
    findings = [_text(v) for v in _column(table, "finding")]
    phrases = [_text(v) for v in _column(table, "phrase")]
    phrases = [
        p or (f.replace("_", " ") if f else None) for p, f in zip(phrases, findings, strict=True)
    ]
    valid = (
        np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )
    valid &= np.array([bool(p) for p in phrases], bool).reshape(-1)
    return boxes, phrases, findings, valid


def _column(table: pa.Table, name: str) -> list[Any]:
    """The values of column ``name``, or nulls when the table has no such column."""
    if name not in table.column_names:
        return [None] * table.num_rows
    return table.column(name).to_pylist()


def _text(value: Any) -> str | None:
    return (str(value).strip() or None) if value is not None else None


def _write_merged(path: Path, new: pa.Table, result: ImportResult) -> int:
    """Write ``new`` with the other sources' rows of ``path``; record the import's counts."""
    from medtune import __version__

    sources: dict[str, Any] = {}
    parts = [new]
    if path.exists():
        old = pq.read_table(path)
        sources = _metadata(old).get("sources", {})
        source = old.column("source").to_numpy(False)
        parts.insert(0, old.filter(pa.array(source != result.source)).cast(BOXES_SCHEMA))
    merged = pa.concat_tables(parts).sort_by([("source", "ascending"), ("image_id", "ascending")])
    record = asdict(result) | {"total": merged.num_rows, "medtune_version": __version__}
    sources[result.source] = record
    metadata = {METADATA_KEY: json.dumps({"sources": sources}, sort_keys=True).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(merged.replace_schema_metadata(metadata), tmp, compression="zstd")
    return merged.num_rows


def _metadata(table: pa.Table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_boxes(
    workspace: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> pa.Table:
    """The workspace's boxes (``path`` overrides ``dataset/boxes.parquet``); MedtuneError
    when there are none."""
    path = Path(path) if path is not None else boxes_path(workspace)
    if not path.is_file():
        raise MedtuneError(f"{path}: no boxes; run `medtune boxes import` first")
    table = pq.read_table(path)
    missing = [c for c in BOXES_SCHEMA.names if c not in table.column_names]
    if missing:
        raise MedtuneError(f"{path}: not a box table (no {', '.join(missing)} column)")
    return table.select(BOXES_SCHEMA.names).cast(BOXES_SCHEMA)


def box_sources(workspace: str | os.PathLike[str]) -> dict[str, Any]:
    """What each source's last import recorded (counts, version), by source name."""
    path = boxes_path(workspace)
    return _metadata(pq.read_table(path)).get("sources", {}) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# The synthetic cohort's truth as boxes.


def synth_truth_boxes(
    workspace: str | os.PathLike[str], cohort_dir: str | os.PathLike[str]
) -> pa.Table:
    """The synthetic cohort's findings as an import table (image_id, phrase, finding, boxes in
    ORIGINAL pixels) for the workspace's images: pass it to :func:`import_boxes`.

    Truth is joined to the catalog through ``input_id`` (the opaque id of each source file),
    as the demo does, since the catalog holds only pseudonyms. Phrases are written from the
    finding, its location and side: "consolidation in the right lower zone"."""
    from medtune.io.folder import input_id

    truth = pq.read_table(
        Path(cohort_dir) / "truth" / "images.parquet", columns=["file", "findings"]
    )
    files, findings = truth.column("file").to_pylist(), truth.column("findings").to_pylist()
    # The cohort was ingested from its dicom/ folder: input ids are relative to it.
    findings_of = {
        input_id(f.removeprefix("dicom/")): items for f, items in zip(files, findings, strict=True)
    }
    catalog = read_catalog(
        Workspace(Path(workspace)).catalog_path, columns=["image_id", "input_id"]
    )
    rows: list[dict[str, Any]] = []
    for image_id, source in zip(*catalog.to_pydict().values(), strict=True):
        for item in findings_of.get(source) or []:
            box = {k: float(item[k]) for k in COORDINATES}
            phrase = synth_phrase(item)
            rows.append({"image_id": image_id, "phrase": phrase, "finding": item["finding"], **box})
    return pa.Table.from_pylist(
        rows, schema=BOXES_SCHEMA.remove(BOXES_SCHEMA.get_field_index("source"))
    )


def synth_phrase(item: Mapping[str, Any]) -> str:
    """A grounding query for a truth finding: "nodule in the right upper zone",
    "fracture in the distal femur, left", "pleural effusion"."""
    phrase = str(item["finding"]).replace("_", " ")
    location, side = item.get("location"), item.get("side")
    if location:
        phrase += f" in the {location}"
    if side and side not in (location or ""):
        phrase += f", {side}"
    return phrase
