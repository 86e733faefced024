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
    field of the same shape (the caller supplies it so a render can reuse a noise bank).
    """
    rows, cols = line_integral.shape
    inside = _field(rows, cols, mm_per_px, exposure)
    p = line_integral * inside + SHUTTER_LINE_INTEGRAL * (1.0 - inside)
    transmission = np.exp(-p)
    transmission += _scatter(transmission, mm_per_px, processing.scatter)
    transmission *= _heel(rows, cols, processing.heel, exposure.heel_axis)
    # Quantum noise: relative std 1/sqrt(N) of the detected quanta, in the log domain.
    photons = processing.photons * exposure.dose * (mm_per_px / 0.2) ** 2
    sigma = 1.0 / np.sqrt(np.maximum(transmission * photons, 1.0))
    q = -np.log(transmission) + sigma * noise
    if processing.blur_mm > 0:
        q = cv2.GaussianBlur(q, (0, 0), processing.blur_mm / mm_per_px)
    if processing.grid_period_mm > 0:
        q += _grid_lines(rows, cols, mm_per_px, processing)
    q = _vendor_processing(q, mm_per_px, processing)
    signal = _normalise(q, p, processing, exposure)
    # Vendors blank the area outside the collimated field to white (it carries only scatter).
    return signal * inside + 1.05 * (1.0 - inside)


def _field(rows: int, cols: int, mm_per_px: float, exposure: Exposure) -> np.ndarray:
    """0..1 map of the collimated field, with a penumbra at its edges."""
    x0, y0, x1, y1 = exposure.field_mm
    centre = ((x0 + x1) / 2 / mm_per_px, (y0 + y1) / 2 / mm_per_px)
    size = ((x1 - x0) / mm_per_px, (y1 - y0) / mm_per_px)
    corners = cv2.boxPoints((centre, size, exposure.field_angle_deg))
    field = np.zeros((rows, cols), np.uint8)
    cv2.fillPoly(field, [np.round(corners * 4).astype(np.int32)], 255, cv2.LINE_AA, 2)
    # Penumbra: the collimator edge is blurred by the focal spot (about 1 mm).
    return cv2.GaussianBlur(field, (0, 0), max(1.0 / mm_per_px, 0.5)).astype(np.float32) / 255


def _scatter(transmission: np.ndarray, mm_per_px: float, ratio: float) -> np.ndarray:
    """Scatter: a very blurred copy of the primary (computed small, it has no detail)."""
    if ratio <= 0:
        return np.zeros_like(transmission)
    rows, cols = transmission.shape
    factor = max(int(8.0 / mm_per_px), 1)  # work on an ~8 mm grid
    small = cv2.resize(
        transmission, (max(cols // factor, 1), max(rows // factor, 1)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), 40.0 / (mm_per_px * factor))
    return ratio * cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)


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
        # vendor's "multi-frequency" processing does; computed on a coarse grid.
        factor = max(int(4.0 / mm_per_px), 1)
        small = cv2.resize(
            q, (max(cols // factor, 1), max(rows // factor, 1)), interpolation=cv2.INTER_AREA
        )
        low = cv2.GaussianBlur(small, (0, 0), 25.0 / (mm_per_px * factor))
        low = cv2.resize(low, (cols, rows), interpolation=cv2.INTER_LINEAR)
        q = q - processing.drc * (low - float(low.mean()))
    if processing.edge_enhance > 0:
        detail = q - cv2.GaussianBlur(q, (0, 0), 1.5 / mm_per_px)
        q = q + processing.edge_enhance * detail
    return q


def _normalise(
    q: np.ndarray, p: np.ndarray, processing: Processing, exposure: Exposure
) -> np.ndarray:
    """Map the log signal to 0..1 over the body: per image (autorange) or fixed per device."""
    # Exposure recognition: the range of the anatomy only, not the raw beam or the shutter.
    p_small = p[::4, ::4]
    sample = q[::4, ::4][(p_small > 0.6) & (p_small < SHUTTER_LINE_INTEGRAL * 0.9)]
    if sample.size < 16:
        sample = q[::4, ::4].ravel()
    if processing.autorange:
        lo, hi = np.percentile(sample, [1.0, 99.0])
    else:
        # Fixed mapping: an over-exposed image comes out darker, an under-exposed one brighter.
        shift = -np.log(exposure.dose) * 0.35
        lo, hi = 0.6 + shift, 6.0 + shift
    span = max(float(hi - lo), 1e-3)
    return ((q - lo) / span).astype(np.float32)


def tone_curve(v: np.ndarray, processing: Processing) -> np.ndarray:
    """The vendor's characteristic curve on 0..1 values (also used to build VOI LUTs)."""
    v = np.clip(v, 0.0, 1.0)
    if processing.tone == "sigmoid":
        k = processing.tone_strength
        lo, hi = 1 / (1 + np.exp(k * 0.5)), 1 / (1 + np.exp(-k * 0.5))
        return ((1 / (1 + np.exp(-k * (v - 0.5))) - lo) / (hi - lo)).astype(np.float32)
    if processing.tone == "gamma":
        return np.power(v, processing.tone_strength).astype(np.float32)
    return v.astype(np.float32)


def quantise(signal: np.ndarray, processing: Processing, exposure: Exposure) -> StoredImage:
    """Stored values at the device's bit depth, with the window or VOI LUT that displays them.

    Stored values never use the top and bottom few percent of the range, as real devices leave
    headroom; the VOI maps the body's range to the full display range.
    """
    max_value = (1 << processing.bits_stored) - 1
    headroom = 0.04
    v = np.clip(signal, -0.1, 1.1)
    if processing.voi == "window":
        v = tone_curve(v, processing)
    scaled = (headroom + v * (1 - 2 * headroom)) * max_value
    pixels = np.clip(np.rint(scaled), 0, max_value).astype(np.uint16)

    lo = headroom * max_value
    hi = (1 - headroom) * max_value
    window = voi_lut = None
    lut_bits = 0
    if processing.voi == "window":
        jitter = 1.0 + exposure.window_jitter
        window = ((lo + hi) / 2 * jitter, (hi - lo) * jitter)
    else:
        lut_bits = 12 if processing.bits_stored <= 12 else 16
        values = np.arange(max_value + 1, dtype=np.float32)
        curve = tone_curve((values - lo) / (hi - lo), processing)
        voi_lut = np.rint(curve * ((1 << lut_bits) - 1)).astype(np.uint16)
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
