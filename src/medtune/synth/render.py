"""One image, end to end: anatomy -> findings -> lead marker -> physics -> stored values.

The anatomy is drawn on a coarse internal grid (at most ``PHANTOM_MAX_PX`` on the long side;
a body part has no detail finer than that), upsampled to the detector matrix, and everything
after that (marker, noise, blur, grid lines, processing) runs at full resolution. Mirroring is
the last step before burned-in text, so a mirrored render is exactly the flip of the unmirrored
render of the same spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth import acquisition
from medtune.synth.anatomy import ANATOMY_RENDERERS, Subject
from medtune.synth.anatomy.base import Lesion, LesionSeed
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture
from medtune.synth.glyphs import burn_text, place_marker

PHANTOM_MAX_PX = 512
MARKER_HEIGHT_MM = 14.0


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one image's pixels (picklable, so workers can take it)."""

    anatomy: Anatomy
    view: str
    subject: Subject
    findings: tuple[tuple[Finding, LesionSeed], ...]
    processing: acquisition.Processing
    detector_mm: tuple[float, float]  # (width, height) of the detector, portrait
    size: int  # long side of the stored matrix, px
    mirrored: bool
    marker: str | None
    burned_text: tuple[str, ...]  # lines written into the pixels; empty for none
    dose: float
    seed: int


@dataclass
class FindingBox:
    finding: Finding
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in stored pixels (x1, y1 exclusive)
    mask: np.ndarray = field(repr=False)  # bool, stored-image shaped
    location: str = ""
    side: str | None = None
    size_mm: float | None = None


@dataclass
class RenderedImage:
    stored: acquisition.StoredImage
    pixel_spacing_mm: float
    findings: list[FindingBox]
    marker_box: tuple[int, int, int, int] | None
    text_box: tuple[int, int, int, int] | None


def render_image(spec: ImageSpec) -> RenderedImage:
    """Render ``spec`` to stored pixel values with its ground truth (boxes, masks, marker)."""
    renderer = ANATOMY_RENDERERS[spec.anatomy]
    # Separate streams, so a finding added to a study changes its own pixels and nothing else.
    anatomy_rng, lesion_rng, acquisition_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(3)
    )
    width_mm, height_mm = _detector_for(renderer.field_for(spec.view), spec.detector_mm)
    mm = max(width_mm, height_mm) / spec.size
    rows, cols = round(height_mm / mm), round(width_mm / mm)
    k = max(int(np.ceil(spec.size / PHANTOM_MAX_PX)), 1)
    canvas = Canvas.blank(int(np.ceil(rows / k)), int(np.ceil(cols / k)), mm * k)

    findings = dict(spec.findings)
    result = renderer.render(canvas, spec.subject, spec.view, findings, anatomy_rng)
    lesions = list(result.lesions)
    if Finding.FRACTURE in findings:
        lesion = apply_fracture(canvas, findings[Finding.FRACTURE], lesion_rng)
        if lesion is not None and lesion.mask.any():
            lesions.append(lesion)

    canvas.att *= acquisition.MU_WATER  # now the line integral, on the phantom's grid
    field_px, exposure = _collimation(
        result.field_mm, width_mm, height_mm, mm, spec, acquisition_rng
    )
    marker = marker_box = None
    if spec.marker:
        height = max(int(MARKER_HEIGHT_MM / mm), 7)
        marker = place_marker((rows, cols), spec.marker, field_px, height)
        marker_box = marker[1]
    noise = acquisition.unit_noise(acquisition_rng, rows, cols)
    signal = acquisition.acquire(
        canvas.att, (rows, cols), mm, spec.processing, exposure, noise, marker
    )
    stored = acquisition.quantise(signal, spec.processing, exposure)
    boxes = [_finding_box(lesion, rows, cols) for lesion in lesions]
    boxes = [b for b in boxes if b is not None]

    if spec.mirrored:
        stored.pixels = np.ascontiguousarray(stored.pixels[:, ::-1])
        for item in boxes:
            item.mask = np.ascontiguousarray(item.mask[:, ::-1])
            item.box = _flip_box(item.box, cols)
        marker_box = _flip_box(marker_box, cols) if marker_box else None

    text_box = None
    if spec.burned_text:
        top = (1 << spec.processing.bits_stored) - 1
        m1 = spec.processing.photometric == "MONOCHROME1"
        text_box = burn_text(stored.pixels, spec.burned_text, 0 if m1 else top, top if m1 else 0)
    return RenderedImage(stored, mm, boxes, marker_box, text_box)


def _detector_for(
    field_mm: tuple[float, float], detector_mm: tuple[float, float]
) -> tuple[float, float]:
    """Turn the detector (or pick the cassette) to suit the part: landscape for wide parts."""
    w, h = detector_mm
    fw, fh = field_mm
    if (fw > fh) != (w > h):
        w, h = h, w
    if max(fw, fh) < 300 and min(w, h) >= 350:
        # Extremities go on the smallest cassette that holds them (CR) or are collimated (DR);
        # either way the matrix covers about the part, as a 24x30 cm cassette would.
        w, h = (240.0, 300.0) if fh >= fw else (300.0, 240.0)
    return w, h


def _collimation(
    field_mm: tuple[float, float, float, float] | None,
    width_mm: float,
    height_mm: float,
    mm: float,
    spec: ImageSpec,
    rng: np.random.Generator,
) -> tuple[tuple[int, int, int, int], acquisition.Exposure]:
    """The technologist's collimation: the part plus a margin, sometimes the whole detector."""
    if field_mm is None or rng.random() < 0.25:
        x0, y0, x1, y1 = 0.0, 0.0, width_mm, height_mm
    else:
        fx0, fy0, fx1, fy1 = field_mm
        margin = rng.uniform(10, 35)
        x0, y0 = max(fx0 - margin, 0.0), max(fy0 - margin, 0.0)
        x1, y1 = min(fx1 + margin, width_mm), min(fy1 + margin, height_mm)
    exposure = acquisition.Exposure(
        dose=spec.dose,
        heel_axis=int(rng.integers(0, 2)),
        field_mm=(x0, y0, x1, y1),
        field_angle_deg=float(rng.normal(0, 1.2)),
        window_jitter=float(rng.normal(0, 0.05)),
    )
    # The marker stays a little inside the field even if the collimator is turned.
    inset = 0.03 * min(x1 - x0, y1 - y0)
    field_px = tuple(round(v / mm) for v in (x0 + inset, y0 + inset, x1 - inset, y1 - inset))
    return field_px, exposure  # type: ignore[return-value]


def _finding_box(lesion: Lesion, rows: int, cols: int) -> FindingBox | None:
    upsampled = cv2.resize(lesion.mask.astype(np.uint8) * 255, (cols, rows),
                           interpolation=cv2.INTER_LINEAR)  # fmt: skip
    _, binary = cv2.threshold(upsampled, 127, 255, cv2.THRESH_BINARY)
    x, y, w, h = cv2.boundingRect(binary)  # 10x faster than np.nonzero at 1024 px
    if w == 0 or h == 0:
        return None
    box = (x, y, x + w, y + h)
    return FindingBox(lesion.finding, box, binary > 0, lesion.location, lesion.side, lesion.size_mm)


def _flip_box(box: tuple[int, int, int, int], cols: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return cols - x1, y0, cols - x0, y1
