"""From a thickness map to stored DICOM pixel values, as an X-ray room and its vendor would do.

Physics first (Beer-Lambert transmission, scatter, signal-dependent quantum noise, detector blur,
anti-scatter grid lines, collimation, the heel effect), then the vendor's image processing
(dynamic-range compression, edge enhancement, a tone curve), then quantisation to the device's
bit depth with either a window or a VOI LUT to display it, and MONOCHROME1 inversion where the
device stores it so. Every step differs between devices, which is what makes site and vendor a
real domain shift for a model trained on the result.

All steps before the photometric inversion are pointwise or use symmetric kernels, so a render
flipped left-right at the end equals the flip of the unflipped render (the mirror test relies on
it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

MU_WATER = 0.02  # 1/mm: effective linear attenuation of water at diagnostic energies (~60 keV)
SHUTTER_LINE_INTEGRAL = 9.0  # outside the collimated field almost nothing reaches the detector


@dataclass(frozen=True)
class Processing:
    """How one device turns detected X-rays into stored values: its image 'look'."""

    bits_stored: int  # 10..16
    photometric: str  # "MONOCHROME1" (high = dark) or "MONOCHROME2" (high = bright)
    voi: str  # "window": stored values are tone-mapped, a window displays them; "lut": linear
    # stored values and a VOI LUT Sequence holds the tone curve
    tone: str  # "sigmoid", "gamma" or "linear"
    tone_strength: float  # sigmoid slope or gamma exponent
    photons: float  # incident quanta per pixel at the reference size; sets the noise level
    blur_mm: float  # detector point-spread sigma
    scatter: float  # scatter-to-primary ratio without a grid
    grid_period_mm: float  # 0 = no anti-scatter grid lines visible
    grid_amplitude: float  # in log-signal units
    drc: float  # dynamic-range compression strength, 0..0.8
    edge_enhance: float  # unsharp-mask gain
    autorange: bool  # True: brightness normalised per image; False: follows the exposure
    heel: float  # relative intensity change across the field along the anode-cathode axis


@dataclass(frozen=True)
class Exposure:
    """What differs from one image to the next on the same device."""

    dose: float  # relative to the device's usual dose (0.5 under-, 2.0 over-exposed)
    heel_axis: int  # 0: heel gradient along rows, 1: along columns
    field_mm: tuple[float, float, float, float]  # collimated field x0, y0, x1, y1 (mm)
    field_angle_deg: float  # collimator rotation
    window_jitter: float  # technologist's window adjustment, relative


@dataclass
class StoredImage:
    """Stored pixel values with what a viewer needs to display them."""

    pixels: np.ndarray  # uint16 (rows, cols)
    bits_stored: int
    photometric: str
    window: tuple[float, float] | None  # (centre, width)
    voi_lut: np.ndarray | None  # uint16 table indexed by stored value (first mapped = 0)
    voi_lut_bits: int


def acquire(
    line_integral: np.ndarray,
    shape: tuple[int, int],
    mm_per_px: float,
    processing: Processing,
    exposure: Exposure,
    noise: np.ndarray,
    marker: tuple[np.ndarray, tuple[int, int, int, int]] | None = None,
) -> np.ndarray:
    """Detected and processed log signal (float32), 0..1 over the body, at ``shape``.

    ``line_integral`` is mu * thickness on the phantom's grid, the output ``shape`` or coarser by
    an integer factor. The physics of the anatomy (transmission, scatter, heel) and the vendor's
    processing of it run on that grid; what has detail at the pixel scale (the lead marker,
    quantum noise, detector blur, grid lines) at full resolution: the same picture, in a
    third of the full-resolution passes. ``noise`` is a unit normal field of ``shape`` (see
    :func:`unit_noise`); ``marker`` a lead letter's mu * t patch and its box (see glyphs.py).
    """
    rows, cols = shape
    small_rows, small_cols = line_integral.shape
    inside = _field(rows, cols, mm_per_px, exposure)
    transmission = cv2.exp(cv2.multiply(line_integral, -1.0))  # cv2's exp is ~10x numpy's
    small_mm = mm_per_px * cols / small_cols
    scatter = _scatter(transmission, small_mm, processing.scatter)
    # The heel effect scales intensity along one axis, primary and scatter alike.
    heel = _heel(small_rows, small_cols, processing.heel, exposure.heel_axis)
    scatter *= heel
    detected = transmission
    detected *= heel
    detected += scatter
    np.maximum(detected, 1e-9, out=detected)
    q_small = cv2.log(detected)
    np.negative(q_small, out=q_small)
    # The vendor's processing of the anatomy (its large-scale part depends on the anatomy, not
    # on the noise), done on the phantom's grid: gain * q - correction + offset.
    gain, correction, offset = _vendor_correction(q_small, small_mm, processing)
    processed = _upsample(cv2.addWeighted(q_small, gain, correction, -1.0, offset), rows, cols)
    # Quantum noise: relative std 1/sqrt(N) of the detected quanta, which in the log domain is
    # exp(q / 2) / sqrt(N0): dense parts (high q) are noisier, as in every radiograph. The
    # vendor's gain amplifies it with the anatomy.
    photons = processing.photons * exposure.dose * (mm_per_px / 0.2) ** 2
    noise_scale = gain / np.sqrt(photons)
    sigma = cv2.exp(q_small * np.float32(0.5))
    sigma *= np.float32(noise_scale)
    sigma = _upsample(sigma, rows, cols)
    if marker is not None:
        _put_lead(processed, sigma, q_small, marker, scatter, gain, noise_scale)
    sigma *= noise  # numpy: the noise is a strided view of the bank
    lo, span = _body_range(processed, sigma, line_integral, inside, processing, exposure)
    # 0..1 over the body, in one pass with the noise; then the detector's blur, grid lines,
    # and the vendors' blanking of the area outside the collimated field to white (it carries
    # only scatter): (x - 1.05) * inside + 1.05.
    signal = cv2.addWeighted(processed, 1.0 / span, sigma, 1.0 / span, -lo / span - 1.05)
    if processing.blur_mm > 0:
        signal = cv2.GaussianBlur(signal, (0, 0), processing.blur_mm / mm_per_px)
    if processing.grid_period_mm > 0:
        signal += _grid_lines(cols, mm_per_px, processing) * np.float32(gain / span)
    cv2.multiply(signal, inside, dst=signal)
    signal += np.float32(1.05)
    return signal


def _put_lead(
    processed: np.ndarray,
    sigma: np.ndarray,
    q_small: np.ndarray,
    marker: tuple[np.ndarray, tuple[int, int, int, int]],
    scatter: np.ndarray,
    gain: float,
    noise_scale: float,
) -> None:
    """Attenuate the primary beam under a lead letter: in place in the processed signal and
    the noise scale ``sigma`` (noise_scale * exp(q / 2)).

    Only the primary passes through the lead; the scatter (smooth over centimetres, so its
    value at the letter's centre serves) still reaches the detector behind it. The log signal
    q in the letter's box is interpolated from the phantom's grid as the upsampling does.
    """
    patch, (x0, y0, x1, y1) = marker
    sy, sx = q_small.shape[0] / processed.shape[0], q_small.shape[1] / processed.shape[1]
    # cv2.resize's pixel-centre convention: source = (target + 0.5) * scale - 0.5.
    map_x = (np.arange(x0, x1, dtype=np.float32) + 0.5) * np.float32(sx) - 0.5
    map_y = (np.arange(y0, y1, dtype=np.float32) + 0.5) * np.float32(sy) - 0.5
    map_x, map_y = np.meshgrid(map_x, map_y)
    q = cv2.remap(q_small, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    s = float(scatter[min(int((y0 + y1) / 2 * sy), scatter.shape[0] - 1),
                      min(int((x0 + x1) / 2 * sx), scatter.shape[1] - 1)])  # fmt: skip
    primary = np.maximum(np.exp(-q) - s, 0.0)
    q_lead = -np.log(np.maximum(primary * np.exp(-patch) + s, 1e-9))
    processed[y0:y1, x0:x1] += gain * (q_lead - q)
    sigma[y0:y1, x0:x1] = noise_scale * np.exp(q_lead * 0.5)


_NOISE_BANKS: dict[int, np.ndarray] = {}


def unit_noise(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A unit normal field, cut at a random offset from a per-process bank.

    Drawing a million normal numbers costs ~20 ms, a fifth of an image's budget; a bank 512 px
    larger than the image, drawn once per process, gives 512^2 distinct fields for nothing.
    The cut is a plain slice (rows contiguous): multiplying by a flipped view costs 3x and by
    a transposed one 6x as much. The bank's seed is fixed, so output stays deterministic.
    """
    side = max(rows, cols) + 512
    bank = _NOISE_BANKS.get(side)
    if bank is None:
        bank = np.random.default_rng(side).standard_normal((side, side), dtype=np.float32)
        _NOISE_BANKS.clear()  # one size at a time: a cohort has one matrix size
        _NOISE_BANKS[side] = bank
    y = int(rng.integers(0, side - rows + 1))
    x = int(rng.integers(0, side - cols + 1))
    return bank[y : y + rows, x : x + cols]


def _field(rows: int, cols: int, mm_per_px: float, exposure: Exposure) -> np.ndarray:
    """0..1 map of the collimated field, with a penumbra at its edges (about 1 mm).

    Drawn on a 4x coarser grid and upsampled: the edge is smooth anyway, and it is 10x cheaper.
    """
    f = 4
    small_rows, small_cols = -(-rows // f), -(-cols // f)
    x0, y0, x1, y1 = (v / (mm_per_px * f) for v in exposure.field_mm)
    corners = cv2.boxPoints(
        (((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), exposure.field_angle_deg)
    )
    field = np.zeros((small_rows, small_cols), np.float32)
    cv2.fillPoly(field, [np.round(corners * 16).astype(np.int32)], 1.0, cv2.LINE_8, 4)
    field = cv2.GaussianBlur(field, (0, 0), max(1.0 / (mm_per_px * f), 0.5))
    return _upsample(field, rows, cols)


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average by an integer factor (OpenCV's fast path; arbitrary sizes are 5x slower)."""
    if factor <= 1:
        return image
    return cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)


def _upsample(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    if image.shape == (rows, cols):
        return image
    return cv2.resize(image, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _scatter(transmission: np.ndarray, mm_per_px: float, ratio: float) -> np.ndarray:
    """Scatter: a very blurred copy of the primary (computed small, it has no detail)."""
    if ratio <= 0:
        return np.zeros_like(transmission)
    factor = max(int(8.0 / mm_per_px), 1)  # work on an ~8 mm grid
    small = _downsample(transmission, factor)
    small = cv2.GaussianBlur(small, (0, 0), 40.0 / (mm_per_px * factor))
    return _upsample(small * np.float32(ratio), *transmission.shape)


def _heel(rows: int, cols: int, heel: float, axis: int) -> np.ndarray:
    n = rows if axis == 0 else cols
    ramp = (1.0 + heel * (np.linspace(-0.5, 0.5, n, dtype=np.float32))).astype(np.float32)
    return ramp[:, None] if axis == 0 else ramp[None, :]


def _grid_lines(cols: int, mm_per_px: float, processing: Processing) -> np.ndarray:
    # Lines run along the columns (vertical stripes), as with most stationary grids.
    x = np.arange(cols, dtype=np.float32) * mm_per_px
    stripes = processing.grid_amplitude * np.sin(2 * np.pi * x / processing.grid_period_mm)
    return stripes[None, :].astype(np.float32)


def _vendor_correction(
    q: np.ndarray, mm_per_px: float, processing: Processing
) -> tuple[float, np.ndarray, float]:
    """The vendor's processing as (gain, correction, offset): out = gain q - correction + offset.

    Dynamic-range compression lowers large-scale contrast (lungs vs mediastinum) so both are
    readable, as every vendor's "multi-frequency" processing does: q - d low + c, with ``low`` a
    25 mm low-pass. An unsharp mask then adds detail: (1 + k) q1 - k blur(q1). ``low`` is so
    smooth that blur(low) = low, so together: (1 + k) q - (k blur(q) + d low) + c. Neither
    low-pass carries detail, so ``q`` here is the noise-free signal on a coarse grid.
    """
    d, k = processing.drc, processing.edge_enhance
    correction = np.zeros_like(q)
    if k > 0:
        correction = cv2.GaussianBlur(q, (0, 0), 1.5 / mm_per_px)
        correction *= np.float32(k)
    offset = 0.0
    if d > 0:
        factor = max(int(4.0 / mm_per_px), 1)  # a ~4 mm grid for the wide low-pass
        low_small = cv2.GaussianBlur(_downsample(q, factor), (0, 0), 25.0 / (mm_per_px * factor))
        correction = cv2.scaleAdd(_upsample(low_small, *q.shape), d, correction)
        offset = d * float(low_small.mean())
    return 1.0 + k, correction, offset


def _body_range(
    processed: np.ndarray,
    noise: np.ndarray,
    line_integral: np.ndarray,
    inside: np.ndarray,
    processing: Processing,
    exposure: Exposure,
) -> tuple[float, float]:
    """The range (low end, span) of the processed signal plus its noise that maps to 0..1:
    the body's.

    Autoranging devices normalise each image to its anatomy ("exposure recognition"); the
    others keep the range the technique chart gives for the body part, so a wrong dose shows:
    an over-exposed image comes out darker, an under-exposed one brighter and noisier.
    """
    # The range of the anatomy only, not the raw beam or the shutter, on a sparse grid (every
    # 4th pixel or so) that hits the phantom's grid (``line_integral``) on its points too.
    k = processed.shape[1] // line_integral.shape[1] or 1
    step = k * max(round(4 / k), 1)
    tissue = line_integral[:: step // k, :: step // k]
    grid_shape = processed[::step, ::step].shape
    rows, cols = (min(a, b) for a, b in zip(grid_shape, tissue.shape, strict=True))
    cut = (slice(0, rows * step, step), slice(0, cols * step, step))
    values = processed[cut] + noise[cut]
    body = (tissue[:rows, :cols] > 0.1) & (inside[cut] > 0.5)  # > 5 mm of tissue
    sample = values[body]
    if sample.size < 16:
        sample = values.ravel()
    lo, hi = np.percentile(sample, [1.0, 99.0])
    if not processing.autorange:
        shift = float(np.log(exposure.dose)) * 0.5 * (hi - lo)
        lo, hi = lo + shift, hi + shift
    return float(lo), max(float(hi - lo), 1e-3)


def tone_curve(v: np.ndarray, processing: Processing) -> np.ndarray:
    """The vendor's characteristic curve on 0..1 values (also used to build VOI LUTs)."""
    v = np.clip(v, 0.0, 1.0).astype(np.float32, copy=False)
    if processing.tone == "sigmoid":
        k = processing.tone_strength
        lo, hi = 1 / (1 + np.exp(k * 0.5)), 1 / (1 + np.exp(-k * 0.5))
        e = cv2.exp(v * np.float32(-k) + np.float32(k * 0.5))  # exp(-k (v - 0.5))
        e += 1.0
        curve = cv2.divide(1.0, e)
        curve -= np.float32(lo)
        curve *= np.float32(1.0 / (hi - lo))
        return curve
    if processing.tone == "gamma":
        return cv2.pow(v, processing.tone_strength)
    return v


def quantise(signal: np.ndarray, processing: Processing, exposure: Exposure) -> StoredImage:
    """Stored values at the device's bit depth, with the window or VOI LUT that displays them.

    Stored values never use the top and bottom few percent of the range, as real devices leave
    headroom; the VOI maps the body's range to the full display range. For "window" devices the
    tone curve is baked into the stored values through a fine table (see :func:`_tone_mapped`).
    """
    max_value = (1 << processing.bits_stored) - 1
    headroom = 0.04
    lo = headroom * max_value
    hi = (1 - headroom) * max_value
    window = voi_lut = None
    lut_bits = 0
    if processing.voi == "window":
        pixels = _tone_mapped(signal, processing, lo, hi, max_value)
        jitter = 1.0 + exposure.window_jitter
        window = ((lo + hi) / 2 * jitter, (hi - lo) * jitter)
    else:
        lut_bits = 12 if processing.bits_stored <= 12 else 16
        levels = np.arange(max_value + 1, dtype=np.float32)
        curve = tone_curve((levels - lo) / (hi - lo), processing)
        voi_lut = np.rint(curve * ((1 << lut_bits) - 1)).astype(np.uint16)
        scaled = signal * np.float32(hi - lo)
        scaled += np.float32(lo)
        np.clip(scaled, 0, max_value, out=scaled)
        pixels = np.rint(scaled, out=scaled).astype(np.uint16)
    if processing.photometric == "MONOCHROME1":
        if voi_lut is not None:  # the window devices' table is inverted already
            pixels = (max_value - pixels).astype(np.uint16)
        if window is not None:
            window = (max_value - window[0], window[1])
        if voi_lut is not None:
            # Display must not change: LUT'(v) = LUTmax - LUT(max - v), then shown inverted.
            voi_lut = ((1 << lut_bits) - 1 - voi_lut[::-1]).astype(np.uint16)
    return StoredImage(
        pixels, processing.bits_stored, processing.photometric, window, voi_lut, lut_bits
    )


TONE_TABLE_STEPS = 1 << 18  # signal resolution ~4e-6: under half a stored unit at 16 bits


def _tone_mapped(
    signal: np.ndarray, processing: Processing, lo: float, hi: float, max_value: int
) -> np.ndarray:
    """Stored values lo + (hi - lo) * tone(signal) over the body, linear beyond it (raw beam,
    shutter), clipped to the bit depth, and inverted for MONOCHROME1.

    Looked up in a table over the signal range that does not clip: the curve costs a few
    hundred thousand evaluations instead of one per pixel (3x faster at 1024 px).
    """
    first, last = -lo / (hi - lo), (max_value - lo) / (hi - lo)  # signal stored as 0 and max
    table = _tone_table(processing, lo, hi, max_value)
    scale = (TONE_TABLE_STEPS - 1) / (last - first)
    index = signal * np.float32(scale)
    index += np.float32(0.5 - first * scale)  # + 0.5: the cast below truncates
    np.clip(index, 0, TONE_TABLE_STEPS - 1, out=index)
    return table.take(index.astype(np.int32))


@functools.lru_cache(maxsize=16)  # one per device: a cohort has a dozen
def _tone_table(processing: Processing, lo: float, hi: float, max_value: int) -> np.ndarray:
    first, last = -lo / (hi - lo), (max_value - lo) / (hi - lo)
    v = np.linspace(first, last, TONE_TABLE_STEPS, dtype=np.float32)
    body = (v >= 0.0) & (v <= 1.0)
    v[body] = tone_curve(v[body], processing)
    table = np.clip(np.rint(lo + (hi - lo) * v), 0, max_value).astype(np.uint16)
    return max_value - table if processing.photometric == "MONOCHROME1" else table
