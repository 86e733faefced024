"""One input file through the whole ingest: read, de-identify, check, decode, preprocess.

Runs in a worker process and returns plain values: catalog rows and pixel arrays for the parent
to write, or a quarantine reason. Nothing identifying leaves this module except inside the
de-identified results: every failure is reported by kind ("no pixel data", "leak: names in the
header") with the exception type, never with a value from the file.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medtune.config import IngestConfig
from medtune.dataset.phash import phash
from medtune.deid import leak
from medtune.deid.header import (
    DeidOptions,
    collect_identifiers,
    deidentify,
    patient_pseudonym,
    resolved_actions,
)
from medtune.deid.pseudonyms import Pseudonymizer
from medtune.errors import MedtuneError
from medtune.io import pixels
from medtune.io.folder import InputFile


@dataclass
class ItemResult:
    input_id: str
    status: str  # "ingested" or "quarantined"
    stage: str = ""
    reason: str = ""
    rows: list[dict[str, object]] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    deid: dict[str, object] = field(default_factory=dict)
    dedup_key: str | None = (
        None  # replaced SOP Instance UID: the same instance twice is a duplicate
    )


class Quarantine(Exception):
    """Stop this input with a reason; the batch goes on."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class ItemContext:
    """What every item needs, built once per worker."""

    config: IngestConfig
    pseudo: Pseudonymizer
    source_root: Path


def process(item: InputFile, ctx: ItemContext) -> ItemResult:
    """Ingest one file; any failure becomes a quarantine reason, never an exception."""
    try:
        return _process(item, ctx)
    except Quarantine as stop:
        return ItemResult(item.input_id, "quarantined", stop.stage, stop.reason)
    except Exception as err:  # a bug or an input nobody foresaw: quarantine, keep the batch going
        return ItemResult(
            item.input_id, "quarantined", "internal", f"unexpected {type(err).__name__}"
        )


@dataclass
class HeaderResult:
    """What the header stage learnt before removing it (pseudonyms, not values)."""

    known: object  # Identifiers of this file: for the pixel and leak checks, never written
    patient: str
    study: str
    site: str
    age: int | None
    deid: dict[str, object]


def read_checked(item: InputFile) -> Dataset:
    """Read ``item``; Quarantine when it is no image or declares an absurd matrix."""
    ds = read_dicom(item.path)
    if "PixelData" not in ds:
        raise Quarantine("read", f"no pixel data ({_sop_class_name(ds)})")
    try:
        pixels.check_declared_size(ds)
    except pixels.PixelError as err:
        raise Quarantine("pixels", str(err)) from None
    return ds


def deidentify_header(ds: Dataset, item: InputFile, ctx: ItemContext) -> HeaderResult:
    """Pseudonyms first (they need the original values), then the Annex E profile in place,
    then the leak scan of what is left (fail closed)."""
    known = collect_identifiers(ds)
    patient = patient_pseudonym(ds, ctx.pseudo)
    accession = str(ds.get("AccessionNumber", "") or "")
    study = ctx.pseudo.study(accession or str(ds.get("StudyInstanceUID", "")))
    site = _site(ds, item, ctx)
    age = _age_years(ds)
    record: dict[str, object] = {}
    if ctx.config.deid.enabled:
        options = DeidOptions.parse(ctx.config.deid.options)
        actions = _actions(options)
        # The elements as read (unconverted: pydicom parses values lazily, and converting all
        # of them here cost more than the de-identification itself).
        kept = {tag: element for tag, element in ds._dict.items()
                if not tag.is_private and actions.get(tag, "K") == "K"}  # fmt: skip
        record = _as_json(deidentify(ds, ctx.pseudo, options))
        hits = leak.scan_dataset(ds, known, kept)
        if hits:
            raise Quarantine("leak_scan", "leak: " + leak.describe(hits) + " left in the header")
    return HeaderResult(known, patient, study, site, age, record)


def clear_pixel_text(
    ds: Dataset, displays: list[np.ndarray], known: object, ctx: ItemContext
) -> list[list]:
    """Boxes of burned-in text blanked in each display frame (Quarantine if not cleared)."""
    if not (ctx.config.deid.enabled and needs_ocr(ds, ctx)):
        return [[] for _ in displays]
    from medtune.deid.burned_text import blank, clear_burned_text

    found = []
    for display in displays:
        seen = display if display.dtype == np.uint8 else (display >> 8).astype(np.uint8)
        result = clear_burned_text(
            seen,
            burned_in_annotation=_text(ds, "BurnedInAnnotation"),
            manufacturer=_text(ds, "Manufacturer"),
            model=_text(ds, "ManufacturerModelName"),
            known=known,  # type: ignore[arg-type]
        )
        if not result.cleared:
            raise Quarantine("burned_text", result.reason or "burned-in text not cleared")
        if result.boxes:
            blank(display, result.boxes, 0)
        found.append(list(result.boxes))
    return found


def _process(item: InputFile, ctx: ItemContext) -> ItemResult:
    ds = read_checked(item)
    header = deidentify_header(ds, item, ctx)
    frame_numbers = pixels.frame_indices(ds, ctx.config.frames)
    try:
        stored = [pixels.stored_frame(ds, i, writable=False) for i in frame_numbers]
        displays = [pixels.to_display(ds, frame, ctx.config.dtype) for frame in stored]
    except pixels.PixelError as err:
        raise Quarantine("pixels", str(err)) from None
    boxes = clear_pixel_text(ds, displays, header.known, ctx)
    burned = any(boxes)

    rows: list[dict[str, object]] = []
    images: list[np.ndarray] = []
    for frame, display in zip(frame_numbers, displays, strict=True):
        image, geometry = pixels.preprocess(display, ctx.config.size)
        images.append(image)
        row = _row(ds, item, frame, header, geometry, burned, ctx)
        row["phash"] = phash(image)  # finds near-duplicates for the card and the split check
        rows.append(row)
    sop = str(ds.get("SOPInstanceUID", ""))
    return ItemResult(item.input_id, "ingested", rows=rows, images=images, deid=header.deid,
                      dedup_key=sop or None)  # fmt: skip


@functools.cache
def _actions(options: object) -> dict[int, str]:

    return resolved_actions(options)  # type: ignore[arg-type]


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM file, with or without its 128-byte preamble; Quarantine when it is not one."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as err:
        raise Quarantine("read", f"unreadable DICOM ({type(err).__name__})") from None
    # Some exports drop the preamble and file meta: accept a raw dataset only if it looks like an
    # image instance (forced reads turn any file into a dataset of garbage otherwise).
    try:
        ds = pydicom.dcmread(path, force=True)
        if "SOPClassUID" in ds and ("PixelData" in ds or "Rows" in ds):
            if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta = ds.get("file_meta") or pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
            return ds
    except Exception:
        pass
    raise Quarantine("read", "not a DICOM file")


def _row(
    ds: Dataset,
    item: InputFile,
    frame: int,
    header: HeaderResult,
    geometry: pixels.Geometry,
    burned: bool,
    ctx: ItemContext,
) -> dict[str, object]:
    sop = str(ds.get("SOPInstanceUID", ""))
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return {
        "image_id": "I" + ctx.pseudo.pseudonym("image", f"{sop}/{frame}"),
        "input_id": item.input_id,
        "frame": frame,
        "patient_id": header.patient,
        "study_id": header.study,
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_uid": sop,
        "site": header.site,
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined"),
        "view": _text(ds, "ViewPosition"),
        "laterality": _text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        "sex": _text(ds, "PatientSex"),
        "age": header.age,
        "study_date": _date(ds.get("StudyDate")),
        "photometric": _text(ds, "PhotometricInterpretation"),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
        "pixel_spacing_mm": float(spacing[0]) if spacing else None,
        "rows": geometry.rows,
        "cols": geometry.cols,
        "scale": geometry.scale,
        "pad_x": geometry.pad_x,
        "pad_y": geometry.pad_y,
        "burned_in_text": burned,
    }


def _site(ds: Dataset, item: InputFile, ctx: ItemContext) -> str:
    """A pseudonymous site: from the institution, else the top folder of the export."""
    institution = " ".join(
        str(ds.get(k, "") or "") for k in ("InstitutionName", "InstitutionAddress")
    )
    basis = institution.strip() or item.relative.split("/", 1)[0]
    return "site-" + ctx.pseudo.pseudonym("site", basis)[:8].lower()


def _age_years(ds: Dataset) -> int | None:
    """Age at the study from Patient's Age, else from the birth and study dates; 90 for 90+."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    years: float | None = None
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        years = int(text[:3]) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[text[3]]
    else:
        born, seen = _date(ds.get("PatientBirthDate")), _date(ds.get("StudyDate"))
        if born and seen and seen >= born:
            years = (seen - born).days / 365.25
    if years is None:
        return None
    return min(int(years), 90)


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def needs_ocr(ds: Dataset, ctx: ItemContext) -> bool:
    mode = ctx.config.deid.ocr
    if mode == "off":
        return False
    if mode == "all":
        return True
    flagged = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    return flagged or _has_known_regions(
        _text(ds, "Manufacturer"), _text(ds, "ManufacturerModelName")
    )


@functools.cache
def _has_known_regions(manufacturer: str | None, model: str | None) -> bool:
    """Whether this device is known to burn text in (deid/data/text_regions.yaml)."""
    import fnmatch

    from medtune.deid.burned_text import text_regions

    return any(
        fnmatch.fnmatch((manufacturer or "").lower(), region.manufacturer.lower())
        and fnmatch.fnmatch((model or "").lower(), region.model.lower())
        for region in text_regions()
    )


def _sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return name or "unknown SOP class"


def _as_json(record: object) -> dict[str, object]:
    if hasattr(record, "to_dict"):
        return json.loads(json.dumps(record.to_dict(), default=str))  # type: ignore[no-any-return]
    if hasattr(record, "__dataclass_fields__"):
        from dataclasses import asdict

        return json.loads(json.dumps(asdict(record), default=str))  # type: ignore[call-overload]
    return {}


__all__ = ["ItemContext", "ItemResult", "MedtuneError", "Quarantine", "process", "read_dicom"]
