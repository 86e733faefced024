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
    mm_per_px: float,
    processing: Processing,
    exposure: Exposure,
    noise: np.ndarray,
) -> np.ndarray:
    """Detected and processed log signal (float32), 0..1 over the body, from mu * thickness.

    ``line_integral`` is the full-resolution attenuation (unitless); ``noise`` a unit normal
    field of the same shape (see :func:`unit_noise`). Runs in place on ``line_integral``'s
    buffer where it can: at 1024 px every full-image pass costs about a millisecond.
    """
    rows, cols = line_integral.shape
    inside = _field(rows, cols, mm_per_px, exposure)
    transmission = cv2.exp(cv2.multiply(line_integral, -1.0))  # cv2's exp is ~10x numpy's
    transmission += _scatter(transmission, mm_per_px, processing.scatter)
    np.maximum(transmission, 1e-9, out=transmission)
    q = cv2.log(transmission)
    # The heel effect scales intensity along one axis: in the log domain, a broadcast add.
    q -= np.log(_heel(rows, cols, processing.heel, exposure.heel_axis))
    np.negative(q, out=q)
    # Quantum noise: relative std 1/sqrt(N) of the detected quanta, which in the log domain is
    # exp(q / 2) / sqrt(N0): dense parts (high q) are noisier, as in every radiograph.
    photons = processing.photons * exposure.dose * (mm_per_px / 0.2) ** 2
    sigma = cv2.exp(q * np.float32(0.5))
    sigma *= noise  # numpy: the noise is a strided view of the bank
    q = cv2.scaleAdd(sigma, 1.0 / np.sqrt(photons), q)
    if processing.blur_mm > 0:
        q = cv2.GaussianBlur(q, (0, 0), processing.blur_mm / mm_per_px)
    if processing.grid_period_mm > 0:
        q += _grid_lines(rows, cols, mm_per_px, processing)
    q = _vendor_processing(q, mm_per_px, processing)
    signal = _normalise(q, line_integral, inside, processing, exposure)
    # Vendors blank the area outside the collimated field to white (it carries only scatter):
    # signal * inside + 1.05 * (1 - inside), in place.
    signal -= 1.05
    signal *= inside
    signal += 1.05
    return signal


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


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur; wide ones run on a halved image (identical to the eye, 3x cheaper)."""
    if sigma_px < 2.5:
        return cv2.GaussianBlur(image, (0, 0), sigma_px)
    small = cv2.GaussianBlur(_downsample(image, 2), (0, 0), sigma_px / 2)
    return _upsample(small, *image.shape)


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


def _grid_lines(rows: int, cols: int, mm_per_px: float, processing: Processing) -> np.ndarray:
    # Lines run along the columns (vertical stripes), as with most stationary grids.
    x = np.arange(cols, dtype=np.float32) * mm_per_px
    stripes = processing.grid_amplitude * np.sin(2 * np.pi * x / processing.grid_period_mm)
    return stripes[None, :].astype(np.float32)


def _vendor_processing(q: np.ndarray, mm_per_px: float, processing: Processing) -> np.ndarray:
    rows, cols = q.shape
    if processing.drc > 0:
        # Compress large-scale contrast (lungs vs mediastinum) so both are readable, as every
        # vendor's "multi-frequency" processing does; the low-pass runs on a coarse grid.
        factor = max(int(4.0 / mm_per_px), 1)
        small = _downsample(q, factor)
        low_small = cv2.GaussianBlur(small, (0, 0), 25.0 / (mm_per_px * factor))
        low = _upsample(low_small, rows, cols)
        d = processing.drc
        q = cv2.addWeighted(q, 1.0, low, -d, d * float(low_small.mean()))
    if processing.edge_enhance > 0:
        # Unsharp mask: q + k (q - blur) in one fused pass.
        k = processing.edge_enhance
        q = cv2.addWeighted(q, 1.0 + k, _blur(q, 1.5 / mm_per_px), -k, 0.0)
    return q


def _normalise(
    q: np.ndarray,
    line_integral: np.ndarray,
    inside: np.ndarray,
    processing: Processing,
    exposure: Exposure,
) -> np.ndarray:
    """Map the log signal to 0..1 over the body.

    Autoranging devices normalise each image to its anatomy ("exposure recognition"); the
    others keep the range the technique chart gives for the body part, so a wrong dose shows:
    an over-exposed image comes out darker, an under-exposed one brighter and noisier.
    """
    # The range of the anatomy only, not the raw beam or the shutter.
    body = (line_integral[::4, ::4] > 0.1) & (inside[::4, ::4] > 0.5)  # > 5 mm of tissue
    sample = q[::4, ::4][body]
    if sample.size < 16:
        sample = q[::4, ::4].ravel()
    lo, hi = np.percentile(sample, [1.0, 99.0])
    if not processing.autorange:
        shift = float(np.log(exposure.dose)) * 0.5 * (hi - lo)
        lo, hi = lo + shift, hi + shift
    span = max(float(hi - lo), 1e-3)
    q -= np.float32(lo)
    q *= np.float32(1.0 / span)
    return q


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
    tone curve is applied to the stored values through a table (cheaper than per pixel).
    """
    max_value = (1 << processing.bits_stored) - 1
    headroom = 0.04
    lo = headroom * max_value
    hi = (1 - headroom) * max_value
    window = voi_lut = None
    lut_bits = 0
    if processing.voi == "window":
        # Tone-map inside the body's range; beyond it (raw beam, shutter) values stay linear.
        inside = (signal >= 0.0) & (signal <= 1.0)
        signal = np.where(inside, tone_curve(signal, processing), signal)
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
        pixels = (max_value - pixels).astype(np.uint16)
        if window is not None:
            window = (max_value - window[0], window[1])
        if voi_lut is not None:
            # Display must not change: LUT'(v) = LUTmax - LUT(max - v), then shown inverted.
            voi_lut = ((1 << lut_bits) - 1 - voi_lut[::-1]).astype(np.uint16)
    return StoredImage(
        pixels, processing.bits_stored, processing.photometric, window, voi_lut, lut_bits
    )
