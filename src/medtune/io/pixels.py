"""The one DICOM pixel reader: stored values to what a radiologist's viewer shows, then to the
fixed-size arrays a model trains on.

Every caller (ingest, de-identification's pixel check, the leak scan, the tests) goes through
here, so a MONOCHROME1 image is never shown inverted in one place and right in another.

The display transform follows PS3.3 C.11 in the standard's order: Modality LUT (rescale slope
and intercept, or a Modality LUT Sequence), VOI (window centre/width with its VOI LUT Function,
or a VOI LUT Sequence; the image's own range when a file has neither), then MONOCHROME1
inversion. pydicom implements each step; for integer pixels it runs once over every possible
stored value to build a lookup table, so a 2048 x 2048 image costs one table lookup instead of
several float64 passes (10 ms instead of 150 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medtune.errors import MedtuneError

FramePolicy = Literal["first", "middle", "all"]
OutputDtype = Literal["uint8", "uint16"]

# Refuse to decode more than this (declared rows x columns x frames x samples x bytes): a
# "decompression bomb" declares a huge matrix in a small compressed file.
MAX_DECODED_BYTES = 1 << 30
MAX_SIDE = 1 << 15  # larger than any detector


class PixelError(MedtuneError):
    """The pixel data cannot be turned into an image (the message names the problem)."""


@dataclass(frozen=True)
class Geometry:
    """How a preprocessed image sits in the original: out = original * scale + pad.

    Boxes map both ways with :meth:`to_output` and :meth:`to_original` (x0, y0, x1, y1).
    """

    rows: int  # original matrix
    cols: int
    size: int  # the square output side
    scale: float
    pad_x: int
    pad_y: int

    def to_output(self, box: tuple[float, float, float, float]) -> tuple[float, ...]:
        x0, y0, x1, y1 = box
        s = self.scale
        return (x0 * s + self.pad_x, y0 * s + self.pad_y, x1 * s + self.pad_x, y1 * s + self.pad_y)

    def to_original(self, box: tuple[float, float, float, float]) -> tuple[float, ...]:
        x0, y0, x1, y1 = box
        s = self.scale
        return ((x0 - self.pad_x) / s, (y0 - self.pad_y) / s,
                (x1 - self.pad_x) / s, (y1 - self.pad_y) / s)  # fmt: skip


def check_declared_size(ds: Dataset, require_pixels: bool = True) -> None:
    """Refuse before decoding a matrix no X-ray has (or a bomb): a :class:`PixelError`.
    ``require_pixels=False`` for a header read without its pixel data."""
    pixel_tags = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if require_pixels and not any(tag in ds for tag in pixel_tags):
        raise PixelError("no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as err:
        raise PixelError(f"image pixel attributes missing or malformed ({err})") from err
    if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE) or frames < 1 or samples not in (1, 3):
        raise PixelError(f"implausible matrix {rows}x{cols}, {frames} frames, {samples} samples")
    if bits not in (1, 8, 16, 32, 64):
        raise PixelError(f"unsupported Bits Allocated {bits}")
    declared = rows * cols * frames * samples * max(bits // 8, 1)
    if declared > MAX_DECODED_BYTES:
        raise PixelError(
            f"declares {declared >> 20} MiB of pixels, over the {MAX_DECODED_BYTES >> 20} MiB limit"
        )


def frame_indices(ds: Dataset, policy: FramePolicy) -> list[int]:
    """Which frames of a (possibly multi-frame) image to keep."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if policy == "first" or frames == 1:
        return [0]
    if policy == "middle":
        return [frames // 2]
    return list(range(frames))


def stored_frame(ds: Dataset, index: int = 0, writable: bool = True) -> np.ndarray:
    """Stored values of one frame, decoded by pydicom's plugins (2-D, or 3-D for colour).
    ``writable=False``: a caller that only reads may get a view of the file's bytes."""
    check_declared_size(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        if not writable and (view := _native_view(ds, index if frames > 1 else None)) is not None:
            return view
        if frames > 1:
            # Decode only the frame asked for (pydicom 3 decodes frames one at a time).
            return pixel_array(ds, index=index)
        return ds.pixel_array
    except MedtuneError:
        raise
    except Exception as err:  # decoders raise many types; all mean "cannot decode"
        raise PixelError(f"cannot decode pixel data ({type(err).__name__}: {_short(err)})") from err


def _native_view(ds: Dataset, index: int | None) -> np.ndarray | None:
    """Uncompressed little-endian grayscale: the frame as a read-only view of the pixel bytes,
    when no value uses the bits above Bits Stored. pydicom would copy the frame to clear those
    bits (a 2048 x 2048 image: 10 ms, against 3 ms for this check); None when they are used or
    the case does not apply (pydicom's decoding then)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    native = syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    if not native or int(ds.get("SamplesPerPixel", 1) or 1) != 1 or allocated not in (8, 16):
        return None
    view = pixel_array(ds, index=index, view_only=True, correct_unused_bits=False)
    bits = int(ds.get("BitsStored", allocated) or allocated)
    if bits >= allocated or view.size == 0:
        return view
    if view.dtype.kind == "u":
        low, high = 0, (1 << bits) - 1
    else:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return view if low <= view.min() and view.max() <= high else None


def to_display(ds: Dataset, stored: np.ndarray, dtype: OutputDtype = "uint8") -> np.ndarray:
    """The image as a viewer shows it (black = dark), scaled to the full range of ``dtype``."""
    top = 255 if dtype == "uint8" else 65535
    if stored.ndim == 3 or _photometric(ds) == "PALETTE COLOR":
        stored = _to_gray(ds, stored)
    if dtype == "uint8" and (fast := _linear_display(ds, stored)) is not None:
        return fast
    if stored.dtype.kind in "ui" and stored.dtype.itemsize <= 2:
        table = _display_table(ds, stored, top)
        offset = 0 if stored.dtype.kind == "u" else 1 << (8 * stored.dtype.itemsize - 1)
        return _look_up(table, stored, offset).astype(dtype, copy=False)
    values = _display_values(ds, stored.astype(np.float64))
    return np.rint(_normalise(values, ds) * top).astype(dtype)


def _look_up(table: np.ndarray, stored: np.ndarray, offset: int, rows: int = 16) -> np.ndarray:
    """``table[stored + offset]``, a few rows at a time. numpy first converts a 16-bit index to
    a 64-bit one: over a whole 2048 x 2048 image that is a fresh 32 MB array (page faults) and
    most of the time. Blocks of 16 rows reuse one small index buffer: 3x faster."""
    flat = stored.reshape(stored.shape[0], -1) if stored.ndim > 1 else stored.reshape(1, -1)
    out = np.empty(flat.shape, table.dtype)
    index = np.empty((min(rows, flat.shape[0]), flat.shape[1]), np.intp)
    for start in range(0, flat.shape[0], rows):
        block = index[: len(flat[start : start + rows])]
        np.copyto(block, flat[start : start + rows], casting="unsafe")
        if offset:
            block += offset
        np.take(table, block, out=out[start : start + rows], mode="wrap")  # in range: no check
    return out.reshape(stored.shape)


def _linear_display(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """The common case in two saturating OpenCV passes (5x faster than the table at 2048 px):
    unsigned pixels, a linear rescale, and a LINEAR window or none. Within one display level of
    the general path; None when the case does not apply."""
    if stored.dtype not in (np.uint8, np.uint16) or stored.ndim != 2:
        return None
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function != "LINEAR":
        return None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope <= 0:
        return None
    if _has_voi(ds):
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if width < 1:
            return None
        # PS3.3 C.11.2.1.2.1: below c - 0.5 - (w - 1) / 2 is black, above c - 0.5 + (w - 1) / 2
        # white; in stored values through the rescale.
        low = ((centre - 0.5 - (width - 1) / 2) - intercept) / slope
        span = (width - 1) / slope
    else:
        low, high = float(stored.min()), float(stored.max())
        span = max(high - low, 1.0)
    alpha = 255.0 / max(span, 1e-9)
    if alpha > 1.0:
        return None  # a window under 255 stored values: the table is exact
    # Shift by ceil(low) with saturation (values below it become 0), then add back the fraction:
    # beta is in [0, alpha), so a value below the window shows as 0 within one level.
    import cv2  # here, not at the top: `medtune deid` reads no pixels and skips its import

    low_int = min(max(int(np.ceil(low)), 0), int(np.iinfo(stored.dtype).max))
    shifted = cv2.subtract(stored, low_int) if low_int > 0 else stored  # saturates at 0
    beta = (low_int - low) * alpha
    display = cv2.convertScaleAbs(shifted, alpha=alpha, beta=beta)  # saturates at 255
    if _photometric(ds) == "MONOCHROME1":
        cv2.bitwise_not(display, dst=display)
    return display


def _first(value: object) -> float:
    if isinstance(value, MultiValue):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def preprocess(display: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """Fit ``display`` into a ``size`` x ``size`` square, aspect kept, padded with black."""
    import cv2

    rows, cols = display.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(round(rows * scale), 1), max(round(cols * scale), 1)
    # Area averaging for downsizing (no aliasing of grid lines and noise), linear for upsizing.
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(display, (new_cols, new_rows), interpolation=method)
    out = np.zeros((size, size), display.dtype)
    pad_y, pad_x = (size - new_rows) // 2, (size - new_cols) // 2
    out[pad_y : pad_y + new_rows, pad_x : pad_x + new_cols] = small
    return out, Geometry(rows, cols, size, scale, pad_x, pad_y)


# ---------------------------------------------------------------------------------------------


# Tables by the attributes that shape them: images of one device and protocol share one, and
# building it (65,536 values through pydicom's LUT functions) costs 5-10 ms.
_TABLES: dict[tuple[object, ...], np.ndarray] = {}
_MAX_TABLES = 64


def _display_table(ds: Dataset, stored: np.ndarray, top: int) -> np.ndarray:
    """display value for every value ``stored``'s dtype can hold (at most 65,536), cached."""
    key = _table_key(ds, stored, top)
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        table = _TABLES[key] = _build_display_table(ds, stored, top)
    return table


def _table_key(ds: Dataset, stored: np.ndarray, top: int) -> tuple[object, ...]:
    """Everything the table depends on: the Image Pixel, Modality LUT and VOI LUT attributes
    (all of group 0028, sequences included, as stored), the byte order LUT data is read in,
    and, without a VOI, the image's range."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    key: list[object] = [stored.dtype.str, top, syntax, ds.original_encoding]
    for tag, element in ds._dict.items():
        if tag >> 16 == 0x0028:
            value = element.value
            key.append((int(tag), value if isinstance(value, bytes) else repr(value)))
    if not _has_voi(ds):
        key.append((int(stored.min()), int(stored.max())))
    return tuple(key)


def _build_display_table(ds: Dataset, stored: np.ndarray, top: int) -> np.ndarray:
    info = np.iinfo(stored.dtype)
    levels = np.arange(info.min, info.max + 1, dtype=np.int64).astype(stored.dtype)
    values = _display_values(ds, levels, image=stored)
    return np.rint(_normalise(values, ds, image_levels=(stored.min(), stored.max()), levels=levels)
                   * top).astype(np.uint16 if top > 255 else np.uint8)  # fmt: skip


def _display_values(ds: Dataset, values: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """Modality LUT then VOI, as pydicom implements them; float64 output."""
    out = apply_modality_lut(values, ds)
    if "VOILUTSequence" in ds and out.dtype.kind == "f" and np.array_equal(out, np.rint(out)):
        out = out.astype(np.int64)  # a VOI LUT is indexed by integers (identity rescale)
    if _has_voi(ds):
        try:
            out = apply_voi_lut(out, ds, index=0)
        except Exception as err:
            raise PixelError(f"malformed VOI LUT or window ({_short(err)})") from err
    return np.asarray(out, dtype=np.float64)


def _has_voi(ds: Dataset) -> bool:
    if "VOILUTSequence" in ds:
        return True
    width = ds.get("WindowWidth")
    if isinstance(width, MultiValue):
        width = width[0] if len(width) else None
    try:
        return width is not None and float(width) > 0
    except (TypeError, ValueError):
        return False


def _normalise(
    values: np.ndarray,
    ds: Dataset,
    image_levels: tuple[int, int] | None = None,
    levels: np.ndarray | None = None,
) -> np.ndarray:
    """0..1 with black = dark. With a VOI the table's own range is the display range; without
    one, the range of the values the image actually holds (a viewer's default window)."""
    if _has_voi(ds):
        lo, hi = _voi_output_range(ds)
    elif levels is not None and image_levels is not None:
        lo_level, hi_level = image_levels
        inside = (levels >= lo_level) & (levels <= hi_level)
        lo, hi = values[inside].min(), values[inside].max()
    else:
        lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else 1.0
    out = np.clip((values - lo) / span, 0.0, 1.0)
    if _photometric(ds) == "MONOCHROME1":
        out = 1.0 - out
    return out


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The range a VOI maps onto black..white (PS3.3 C.11.2), as pydicom's functions output it:
    a LUT's descriptor bits, or for a window the range of the modality LUT's output."""
    if "VOILUTSequence" in ds:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", 16) or 16)
    if "ModalityLUTSequence" in ds:
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted(
            (lo * float(slope) + float(intercept), hi * float(slope) + float(intercept))
        )
    return lo, hi


def _to_gray(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Colour (ultrasound, secondary capture, palette) to luminance, in the stored value range."""
    from pydicom.pixels import apply_color_lut

    # pydicom 3's decoders already return RGB for YBR_FULL(_422) (as_rgb) and the JPEG 2000
    # colour transforms (YBR_ICT/RCT): only a palette still needs its lookup.
    photometric = _photometric(ds)
    try:
        rgb = apply_color_lut(stored, ds) if photometric == "PALETTE COLOR" else stored
    except Exception as err:
        raise PixelError(f"cannot convert {photometric} to grey ({_short(err)})") from err
    if rgb.ndim == 2:
        return rgb
    gray = np.nan_to_num(rgb[..., :3].astype(np.float64)) @ np.array([0.299, 0.587, 0.114])
    top = 65535 if rgb.dtype.itemsize > 1 else 255
    return np.clip(np.rint(gray), 0, top).astype(np.uint16 if top > 255 else np.uint8)


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _short(err: BaseException) -> str:
    """The first clause of a decoder's message, at most 100 characters, on one line."""
    text = " ".join(str(err).split())
    for stop in (" - ", ". ", "; "):
        text = text.split(stop, 1)[0]
    return text[:100] + ("..." if len(text) > 100 else "")
