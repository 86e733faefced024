"""``medtune deid SOURCE --out DIR``: de-identified DICOM files, for sharing or other tools.

The same header profile, burned-in text check and leak scan as ``medtune ingest``, writing
DICOM instead of a dataset. Output files are named by pseudonyms only:
``OUT/<patient>/<study>/<series UID>/<SOP UID>.dcm``. Pixels are rewritten only where text was
blanked (then stored uncompressed, since the compressed stream no longer matches).

Resumable: ``OUT/deid-log.jsonl`` gets one line per input once its output is safely written
(the de-identification log: actions and counts, never values); a rerun skips inputs already
logged. ``OUT/quarantine.csv`` lists the inputs that were not written, with reasons.
"""

from __future__ import annotations

import functools
import io
import json
import os
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtune.config import IngestConfig
from medtune.dataset.item import (
    ItemContext,
    Quarantine,
    clear_pixel_text,
    deidentify_header,
    needs_ocr,
    read_checked,
)
from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key
from medtune.io import pixels
from medtune.io.folder import InputFile, list_inputs
from medtune.parallel import ordered_map
from medtune.workspace import atomic_path, atomic_write_text

LOG = "deid-log.jsonl"
# Native (uncompressed) little-endian syntaxes: the pixel element can be copied as it is.
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


@dataclass
class ExportSummary:
    inputs: int = 0
    written: int = 0
    quarantined: int = 0
    skipped: int = 0  # done by an earlier run
    pixels_cleaned: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def export_deidentified(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: IngestConfig,
    key_path: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
    on_quarantine: Callable[[InputFile, str], None] | None = None,
) -> ExportSummary:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(key_path)
    inputs = list_inputs(source)
    log_path = out_dir / LOG
    done = _logged(log_path)
    todo = [item for item in inputs if item.input_id not in done]
    summary = ExportSummary(inputs=len(inputs), skipped=len(inputs) - len(todo))
    workers = config.workers or os.cpu_count() or 1
    with open(log_path, "a", encoding="utf-8") as log:
        results = _results(todo, config, key, Path(source), out_dir, workers)
        for count, (item, entry) in enumerate(zip(todo, results, strict=True), 1):
            if entry["status"] == "written":
                summary.written += 1
                summary.pixels_cleaned += bool(entry.get("pixels_cleaned"))
            else:
                summary.quarantined += 1
                summary.reasons[str(entry["reason"]).split(" (", 1)[0]] += 1
                if on_quarantine:
                    on_quarantine(item, str(entry["reason"]))
            log.write(json.dumps(entry, sort_keys=True) + "\n")
            if count % 64 == 0:
                log.flush()  # a kill loses at most these lines: their inputs are redone
            if progress:
                progress(summary.skipped + count, len(inputs))
    _write_quarantine(out_dir, log_path)
    _summarise(summary, log_path)
    return summary


# ---------------------------------------------------------------------------------------------

_STATE: dict[str, object] = {}


def _init(config: IngestConfig, key: bytes, root: Path, out: Path) -> None:
    _STATE.update(ctx=ItemContext(config, Pseudonymizer(key), root), out=out)


def _one(item: InputFile) -> dict[str, object]:
    ctx: ItemContext = _STATE["ctx"]  # type: ignore[assignment]
    out: Path = _STATE["out"]  # type: ignore[assignment]
    entry: dict[str, object] = {"input_id": item.input_id}
    try:
        entry.update(_export_one(item, ctx, out))
        entry["status"] = "written"
    except Quarantine as stop:
        entry.update(status="quarantined", stage=stop.stage, reason=stop.reason)
    except Exception as err:
        entry.update(
            status="quarantined", stage="internal", reason=f"unexpected {type(err).__name__}"
        )
    return entry


def _export_one(item: InputFile, ctx: ItemContext, out: Path) -> dict[str, object]:
    fast = _export_header_only(item, ctx, out)
    if fast is not None:
        return fast
    _one_cv2_thread()  # pixels are decoded from here on: one OpenCV thread per worker
    ds = read_checked(item)
    header = deidentify_header(ds, item, ctx)
    cleaned = False
    if ctx.config.deid.enabled and needs_ocr(ds, ctx):  # else the pixels are copied untouched
        frames_all = pixels.frame_indices(ds, "all")
        try:
            stored = [pixels.stored_frame(ds, i) for i in frames_all]
            displays = [pixels.to_display(ds, frame) for frame in stored]
        except pixels.PixelError as err:
            raise Quarantine("pixels", str(err)) from None
        boxes = clear_pixel_text(ds, displays, header.known, ctx)
        if any(boxes):
            from medtune.deid.burned_text import blank

            dark = _darkest_stored_value(ds)
            for frame, frame_boxes in zip(stored, boxes, strict=True):
                if frame_boxes:
                    blank(frame, frame_boxes, dark)
            array = np.stack(stored) if len(stored) > 1 else stored[0]
            ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
            ds["PixelData"].VR = "OW" if array.dtype.itemsize > 1 else "OB"
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.BurnedInAnnotation = "NO"
            cleaned = True
    target = _target(out, ds, header, item)
    with atomic_path(target, durable=False) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return {"file": target.relative_to(out).as_posix(), "deid": header.deid,
            "pixels_cleaned": cleaned}  # fmt: skip


@functools.cache
def _one_cv2_thread() -> None:
    import cv2

    cv2.setNumThreads(1)


def _export_header_only(item: InputFile, ctx: ItemContext, out: Path) -> dict[str, object] | None:
    """The common case without reading the pixels: native (uncompressed) pixel data as the
    file's last element, and no text to check. The header is read and de-identified; the pixel
    element is copied byte for byte by the kernel (copy_file_range), so an 8 MB image costs
    what its header does. None when the case does not apply (the caller reads everything)."""
    read = _read_header(item.path)
    if read is None:
        return None  # the full path reports what is wrong
    ds, start, head, size = read
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.get("file_meta") else ""
    if head[:4] != b"\xe0\x7f\x10\x00" or syntax not in _NATIVE:
        return None
    if syntax == ImplicitVRLittleEndian:
        header_length, length = 8, int.from_bytes(head[4:8], "little")
    elif head[4:6] in (b"OB", b"OW"):
        header_length, length = 12, int.from_bytes(head[8:12], "little")
    else:
        return None
    if length == 0xFFFFFFFF or start + header_length + length != size:
        return None  # encapsulated, or elements after the pixels: the full path
    try:
        pixels.check_declared_size(ds, require_pixels=False)
    except pixels.PixelError as err:
        raise Quarantine("pixels", str(err)) from None
    if ctx.config.deid.enabled and needs_ocr(ds, ctx):
        return None
    header = deidentify_header(ds, item, ctx)
    if str(ds.file_meta.get("TransferSyntaxUID", "")) != syntax:
        return None  # de-identification changed the encoding: write it the usual way
    encoded = _encode_header(ds, implicit=syntax == ImplicitVRLittleEndian)
    target = _target(out, ds, header, item)
    with (
        atomic_path(target, durable=False) as tmp,
        open(item.path, "rb") as src,
        open(tmp, "r+b") as dst,
    ):
        dst.write(encoded + head[:header_length])
        _copy_range(src, dst, start + header_length, length)
    return {"file": target.relative_to(out).as_posix(), "deid": header.deid,
            "pixels_cleaned": False}  # fmt: skip


# Most headers fit: parsed from one read, not pydicom's hundred small reads and seeks per file.
_HEAD_BYTES = 1 << 16


def _read_header(path: Path) -> tuple[pydicom.Dataset, int, bytes, int] | None:
    """The data set up to the pixel element, where that element starts, its first 12 bytes
    and the file's size; None if pydicom cannot read the header."""
    with open(path, "rb") as fh:
        chunk = fh.read(_HEAD_BYTES)
        size = os.fstat(fh.fileno()).st_size
        buffer = io.BytesIO(chunk)
        try:
            ds = pydicom.dcmread(buffer, stop_before_pixels=True)
            start = buffer.tell()
            if start + 12 <= len(chunk) or len(chunk) == size:
                return ds, start, chunk[start : start + 12], size
        except Exception:
            if len(chunk) == size:
                return None
        fh.seek(0)  # a header longer than the chunk (cut by it): read the file itself
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        except Exception:
            return None
        start = fh.tell()
        return ds, start, fh.read(12), size


def _encode_header(ds: pydicom.Dataset, implicit: bool) -> bytes:
    """Preamble, file meta and data set as a DICOM file encodes them, up to the pixel element.
    The file meta goes through pydicom's writer; so do the data set's elements that
    de-identification replaced. The elements left as read (raw) are re-emitted from their
    bytes here: pydicom's per-element writer and dcmwrite's deep copy of the file meta were
    a third of this path's time. A test checks the result against pydicom's save_as."""
    buffer = DicomBytesIO()
    buffer.write(getattr(ds, "preamble", None) or b"\0" * 128)
    buffer.write(b"DICM")
    meta = _encode_file_meta(ds.file_meta)
    if meta is None:
        write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    else:
        buffer.write(meta)
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    same = (ds.original_encoding == (implicit, True)
            and ds.original_character_set == ds._character_set)  # fmt: skip
    if not same:  # pydicom re-encodes everything (VR lookup, character set)
        write_dataset(buffer, ds)
        return buffer.getvalue()
    charset = ds.get("SpecificCharacterSet", default_encoding)
    for tag, element in sorted(ds._dict.items(), key=lambda pair: pair[0]):
        if not tag & 0xFFFF and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does
        raw = _raw_bytes(element, implicit)
        if raw is None:
            raw = _text_bytes(element, implicit)
        if raw is not None:
            buffer.write(raw)
        else:
            write_data_element(buffer, ds[tag], charset)
    return buffer.getvalue()


# Text VRs whose values de-identification writes as plain strings (UIDs, dates, pseudonyms,
# emptied values), with their padding byte. DS and IS are left to pydicom, which keeps their
# original formatting.
_TEXT_VRS = {vr: b"\0" if vr == "UI" else b" " for vr in
             ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UC", "UR",
              "UT")}  # fmt: skip


def _text_bytes(element: object, implicit: bool) -> bytes | None:
    """A replaced text element's encoding, for ASCII str values (one or several): pydicom's
    per-element writer costs about 50 us an element, and de-identification replaces dozens per
    file. None for anything else, which pydicom then writes."""
    if type(element) is not pydicom.DataElement:
        return None
    pad = _TEXT_VRS.get(element.VR)
    value = element.value
    if pad is None:
        return None
    if value is None or value == "":
        data = b""
    elif isinstance(value, str) and value.isascii():  # str, or pydicom's UID (a str)
        data = value.encode("ascii")
    elif type(value) is pydicom.multival.MultiValue and all(
        isinstance(v, str) and v.isascii() for v in value
    ):
        data = "\\".join(value).encode("ascii")
    else:
        return None
    data += pad * (len(data) % 2)
    tag = element.tag
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", len(data)) + data
    if element.VR in _LONG_VRS:
        return head + element.VR.encode("ascii") + struct.pack("<HL", 0, len(data)) + data
    if len(data) > 0xFFFF:
        return None
    return head + element.VR.encode("ascii") + struct.pack("<H", len(data)) + data


# The File Meta Information medtune writes (see deid.header._replace_file_meta): these VRs,
# and the elements PS3.10 7.1 requires.
_META_VRS = {"OB": b"\0", "UI": b"\0", "SH": b" ", "AE": b" "}  # VR -> padding byte
_META_REQUIRED = {0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012}


def _encode_file_meta(meta: pydicom.Dataset) -> bytes | None:
    """Group 0002 in Explicit VR Little Endian, group length first, as pydicom writes it
    (tested byte for byte); None for anything but the plain meta medtune builds, which then
    goes through pydicom's validating writer."""
    if not set(meta._dict) >= _META_REQUIRED:
        return None
    body = bytearray()
    for tag, element in sorted(meta._dict.items(), key=lambda pair: pair[0]):
        if tag == 0x00020000:
            continue  # recomputed below
        pad = _META_VRS.get(element.VR or "")
        value = element.value
        if type(element) is RawDataElement or pad is None:
            return None
        if element.VR == "OB" and isinstance(value, bytes):
            data = value
        elif element.VR != "OB" and isinstance(value, str) and value.isascii():
            data = value.encode("ascii")
        else:
            return None
        data += pad * (len(data) % 2)
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + element.VR.encode("ascii")
        long_form = element.VR in _LONG_VRS
        body += head + (struct.pack("<HL", 0, len(data)) if long_form else
                        struct.pack("<H", len(data))) + data  # fmt: skip
    group_length = struct.pack("<HH", 2, 0) + b"UL" + struct.pack("<HL", 4, len(body))
    return group_length + bytes(body)


# Explicit VRs with a 4-byte length (PS3.5 7.1.2); the others have 2 bytes.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})  # fmt: skip


def _raw_bytes(element: object, implicit: bool) -> bytes | None:
    """A raw element's encoding as read, or None where pydicom must write it (a parsed
    element, a sequence, an undefined length, a VR the encoding cannot carry)."""
    if type(element) is not RawDataElement:
        return None
    value, length, vr = element.value or b"", element.length, element.VR
    if length == 0xFFFFFFFF or len(value) != length or vr == "SQ":
        return None
    head = struct.pack("<HH", element.tag >> 16, element.tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", length) + value
    if not vr or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return head + vr.encode("ascii") + struct.pack("<HL", 0, length) + value
    if length > 0xFFFF:
        return None
    return head + vr.encode("ascii") + struct.pack("<H", length) + value


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``src`` from ``offset`` to ``dst`` (open for writing, not
    appending: the kernel refuses copy_file_range into an O_APPEND file)."""
    dst.flush()
    at = dst.seek(0, os.SEEK_END)
    copied = 0
    try:
        while copied < length:
            n = os.copy_file_range(src.fileno(), dst.fileno(), length - copied,
                                   offset + copied, at + copied)  # fmt: skip
            if n == 0:
                break
            copied += n
    except OSError:
        pass  # a filesystem without it: copy through user space below
    if copied < length:
        src.seek(offset + copied)
        dst.seek(at + copied)
        remaining = length - copied
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise Quarantine("pixels", "pixel data shorter than declared")
            dst.write(chunk)
            remaining -= len(chunk)


def _target(out: Path, ds: object, header: object, item: InputFile) -> Path:
    sop = str(getattr(ds, "SOPInstanceUID", "") or "") or item.input_id
    series = str(getattr(ds, "SeriesInstanceUID", "") or "") or "series"
    return out / header.patient / header.study / _safe(series) / f"{_safe(sop)}.dcm"  # type: ignore[attr-defined]


def _darkest_stored_value(ds: object) -> int:
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    monochrome1 = str(getattr(ds, "PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return high if monochrome1 else low


def _safe(uid: str) -> str:
    # UIDs are digits and dots; anything else (a malformed file) must not shape a path.
    return "".join(c for c in uid if c.isdigit() or c == ".")[:64] or "x"


def _results(todo, config, key, root, out, workers):  # type: ignore[no-untyped-def]
    workers = 1 if len(todo) < 4 else workers
    # The parent only lists files and appends to the log: forking it is safe and saves
    # every worker a second of imports.
    yield from ordered_map(_one, todo, workers, _init, (config, key, root, out), start="fork",
                          batch=8)  # fmt: skip


def _logged(log_path: Path) -> set[str]:
    done: set[str] = set()
    if not log_path.exists():
        return done
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                done.add(json.loads(line)["input_id"])
            except (ValueError, KeyError):
                continue  # a line cut by a kill: that input is redone
    return done


def _write_quarantine(out: Path, log_path: Path) -> None:
    lines = ["input_id,stage,reason"]
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("status") == "quarantined":
                reason = str(entry.get("reason", "")).replace('"', "'")
                lines.append(f'{entry["input_id"]},{entry.get("stage", "")},"{reason}"')
    atomic_write_text(out / "quarantine.csv", "\n".join(lines) + "\n")


def _summarise(summary: ExportSummary, log_path: Path) -> None:
    summary.tables["files"] = [
        ["inputs", "written", "quarantined", "earlier run", "pixels cleaned"],
        [summary.inputs, summary.written, summary.quarantined, summary.skipped,
         summary.pixels_cleaned],
    ]  # fmt: skip
    if summary.reasons:
        summary.tables["quarantined, by reason"] = [["reason", "files"]] + [
            [r, n] for r, n in summary.reasons.most_common()
        ]
    summary.lines.append(f"log: {log_path}")
