"""The five chest findings, drawn inside the lungs and heart of a rendered chest.

Each finding reads its study-level :class:`LesionSeed` so that the PA and the lateral of one study
show it in the same place. What each seed number means:

- nodule: u0 side, u1 height in the lung, u2 medial-to-lateral, u3 front-to-back, u4 size
- pleural_effusion: u0 side, u1 fluid height
- cardiomegaly: u0 degree (read by the heart drawing in chest.py)
- pneumothorax: u0 side, u1 rim width
- consolidation: u0 side, u1 height, u2 medial-to-lateral, u3 front-to-back, u4 extent

Every lesion returns a mask that covers exactly the pixels it changed, and the location words
(side and zone) that a report would use for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import cv2
import numpy as np

from medtune.config import Finding
from medtune.synth.anatomy.base import Lesion, LesionSeed
from medtune.synth.canvas import LUNG, SOFT_TISSUE, Canvas, smooth_noise

if TYPE_CHECKING:
    from medtune.synth.anatomy.chest import ChestGeometry

AIR_TO_TISSUE = SOFT_TISSUE - LUNG  # density a lesion adds where it replaces aerated lung
MIN_FILL = 0.02  # a lesion's mask is where it fills more than this of the air
AIR_FILL = 0.97  # fraction of the air that fluid or pus replaces where the lung is full of it
PLEURAL_LINE = 9.0  # mm of water-equivalent: the visceral pleura seen edge-on, one pixel wide
CONSOLIDATION_FILL = 0.6  # of the air along the ray: the consolidated lobe, not the whole lung
CONSOLIDATION_LOBULES = 6  # merging acinar clusters that make one consolidation
BRONCHOGRAM_AIR = 0.45  # of the local filling that an air-filled bronchus gives back


def draw(
    canvas: Canvas,
    geo: ChestGeometry,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> list[Lesion]:
    """Draw every requested chest finding; return the visible ones with their masks."""
    lesions: list[Lesion] = []
    drawers = {
        Finding.NODULE: _nodule,
        Finding.PLEURAL_EFFUSION: _effusion,
        Finding.CARDIOMEGALY: _cardiomegaly,
        Finding.PNEUMOTHORAX: _pneumothorax,
        Finding.CONSOLIDATION: _consolidation,
    }
    for finding, drawer in drawers.items():
        if finding in findings:
            lesion = drawer(canvas, geo, findings[finding], rng)
            if lesion is not None and lesion.mask.any():
                lesions.append(lesion)
    return lesions


def _side(seed: LesionSeed) -> str:
    return "right" if seed.at(0) < 0.5 else "left"


def _zone(fraction: float) -> str:
    return "upper" if fraction < 0.36 else "middle" if fraction < 0.64 else "lower"


def _point_in_lung(
    canvas: Canvas, geo: ChestGeometry, side: str, height: float, across: float, depth: float
) -> tuple[float, float]:
    """A point (mm) inside one lung: ``height`` 0 apex..1 base, ``across`` or ``depth`` 0..1."""
    y = geo.y_apex + height * (geo.y_cp[side] - geo.y_apex)
    row = int(np.clip(y / canvas.mm_per_px, 0, canvas.rows - 1))
    cols = np.flatnonzero(geo.open_lung.get(side, geo.lung_masks[side])[row])
    if cols.size < 4:
        return geo.hila[side]
    lo, hi = cols[0] * canvas.mm_per_px, cols[-1] * canvas.mm_per_px
    if geo.view == "LAT":
        t = depth
    else:  # medial-to-lateral in patient terms, whichever image side the lung is on
        t = across if geo.image_sign(side) > 0 else 1.0 - across
    t = 0.18 + 0.64 * t
    return lo + t * (hi - lo), y


def _nodule(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    side = _side(seed)
    height = 0.12 + 0.72 * seed.at(1)
    x, y = _point_in_lung(canvas, geo, side, height, seed.at(2), seed.at(3))
    radius = (4.0 + 10.0 * seed.at(4)) * geo.s
    canvas.ellipsoid(x, y, radius, radius * 0.92, 2 * radius, AIR_TO_TISSUE * 1.15)
    mask = canvas.mask_of_ellipse(x, y, radius, radius * 0.92)
    return Lesion(Finding.NODULE, mask, f"{side} {_zone(height)} zone", side, round(2 * radius, 1))


def _smoothstep(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return v * v * (3.0 - 2.0 * v)


def _replace_air(
    canvas: Canvas, geo: ChestGeometry, side: str, box: tuple[slice, slice], fill: np.ndarray
) -> None:
    """Fill a fraction ``fill`` (0..1, on ``box``) of one lung's air with fluid or pus; the
    vessel markings there vanish with the air that made them visible. Fillings combine (an
    effusion under a consolidation) without filling any air twice."""
    filled = geo.filled.setdefault(side, np.zeros_like(canvas.att))
    before = filled[box].copy()
    filled[box] = 1.0 - (1.0 - before) * (1.0 - fill)
    delta = filled[box] - before
    air = geo.air_side[side][box]  # negative thickness
    canvas.att[box] -= delta * (air * AIR_FILL)
    if geo.markings is not None:
        canvas.att[box] -= delta * geo.markings[box]


def _effusion(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    """Fluid at the lung base: homogeneous below, with a meniscus (concave upper edge, higher
    at the chest wall; on the lateral, higher at the back) fading upward as the layer thins.
    It replaces the air, so the hemidiaphragm and costophrenic angle vanish into it."""
    side = _side(seed)
    height = (18.0 + 60.0 * seed.at(1)) * geo.s  # fluid level above the lowest point, mm
    lung = geo.lung_masks[side]
    rise = 10.0 * geo.s + 0.5 * height  # how much higher the meniscus climbs at the wall
    fade = 10.0 * geo.s + 0.25 * height  # mm over which the layer thins out upward
    if geo.view == "LAT":  # fluid gathers in the posterior sulcus (image right)
        base = geo.y_cp[side] + 22.0 * geo.s
    else:
        base = geo.y_cp[side]
    top = int(max((base - height - rise - fade) / canvas.mm_per_px, 0))
    rows = np.flatnonzero(lung[top:].any(axis=1)) + top
    cols = np.flatnonzero(lung[top:].any(axis=0))
    mask = np.zeros_like(lung)
    if rows.size == 0:
        return Lesion(Finding.PLEURAL_EFFUSION, mask, f"{side} costophrenic angle", side)
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    x, y = canvas.grid(box)
    if geo.view == "LAT":
        span = geo.posterior_x - geo.anterior_x
        closeness = np.clip((x - geo.anterior_x) / span, 0.0, 1.0)
        medial = 1.0
    else:
        wall = abs(geo.x_lung_wall[side] - geo.cx)
        closeness = np.clip(1.0 - np.abs(geo.x_lung_wall[side] - x) / (0.9 * wall), 0.0, 1.0)
        # Behind the heart the layer thins toward the spine: no seam at the midline.
        medial = _smoothstep((x - geo.cx) * geo.image_sign(side) / (0.3 * wall))
    level = base - height - rise * closeness**1.7  # the meniscus: concave, up at the wall
    fill = _smoothstep((y - level) / fade) * lung[box] * medial
    mask[box] = fill > MIN_FILL
    _replace_air(canvas, geo, side, box, fill * mask[box])
    return Lesion(
        Finding.PLEURAL_EFFUSION, mask, f"{side} costophrenic angle", side, round(height, 1)
    )


def _cardiomegaly(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    # The heart was drawn enlarged by chest.py; the lesion is its silhouette.
    assert geo.heart_mask is not None
    return Lesion(Finding.CARDIOMEGALY, geo.heart_mask, "heart", None, round(geo.heart_width, 1))


def pneumothorax_region(canvas: Canvas, geo: ChestGeometry, seed: LesionSeed) -> np.ndarray:
    """The air crescent between the chest wall and the collapsed lung's edge (apex and side).

    Computed once per image (the anatomy needs it to stop the vessels, the finding to draw it).
    """
    if geo.pneumothorax is None:
        geo.pneumothorax = _pneumothorax_region(canvas, geo, seed)
    return geo.pneumothorax


def _pneumothorax_region(canvas: Canvas, geo: ChestGeometry, seed: LesionSeed) -> np.ndarray:
    side = _side(seed)
    rim = (8.0 + 28.0 * seed.at(1)) * geo.s
    region = np.zeros((canvas.rows, canvas.cols), bool)
    # Only the upper lung can hold the crescent: work on that box (a distance transform of the
    # whole canvas costs ~2 ms).
    frac = 0.3 if geo.view == "LAT" else 0.62
    bottom = int(np.ceil((geo.y_apex + frac * (geo.y_cp[side] - geo.y_apex)) / canvas.mm_per_px))
    lung = geo.lung_masks[side][: max(bottom, 0)]
    rows, cols = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
    if rows.size == 0:
        return region
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    inside = lung[box].astype(np.uint8)
    # Distance to the lung's edge, but not to the box's cut at the bottom.
    padded = np.pad(inside, ((1, 0), (1, 1)))
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:, 1:-1] * canvas.mm_per_px
    # Air rises: the rim is widest at the apex and along the upper lateral wall, and narrows
    # smoothly toward the mediastinum and the base, so the pleural line is one smooth curve.
    x, y = canvas.grid(box)
    height = (y - geo.y_apex) / (geo.y_cp[side] - geo.y_apex)
    apical = np.clip(1.0 - height / 0.25, 0.0, 1.0)
    if geo.view == "LAT":
        width = apical
    else:
        lateral = (x - geo.cx) * geo.image_sign(side) / abs(geo.x_lung_wall[side] - geo.cx)
        lower = np.clip(1.0 - (height / frac) ** 2, 0.0, 1.0)
        width = np.maximum(apical, np.clip((lateral - 0.3) / 0.3, 0.0, 1.0) * lower)
    region[box] = (inside > 0) & (dist < rim * np.sqrt(width))
    return region


def _pneumothorax(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    side = _side(seed)
    region = pneumothorax_region(canvas, geo, seed)
    rim = (8.0 + 28.0 * seed.at(1)) * geo.s
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return Lesion(Finding.PNEUMOTHORAX, region, f"{side} apex", side, round(rim, 1))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    # No lung tissue in the crescent: it is darker, and the vessels stop at a thin pleural line.
    crescent = region[box]
    canvas.att[box] -= crescent * np.float32(LUNG * 95.0 * geo.s)
    edge = cv2.dilate(crescent.astype(np.uint8), np.ones((3, 3), np.uint8)) > crescent
    edge &= geo.lung_masks[side][box]
    canvas.att[box] += edge * np.float32(PLEURAL_LINE)
    mask = region.copy()
    mask[box] |= edge
    return Lesion(Finding.PNEUMOTHORAX, mask, f"{side} apex", side, round(rim, 1))


def _consolidation_field(
    rng: np.random.Generator, shape: tuple[int, int], u: np.ndarray, v: np.ndarray, px_mm: float
) -> np.ndarray:
    """Airspace filling, 0..1: a confluent core with merging acinar clusters around it, and a
    ragged margin that fades out over a centimetre or so."""
    field = np.exp(-(u * u + v * v) / (2 * 0.42**2))
    for _ in range(CONSOLIDATION_LOBULES):
        cx, cy = rng.normal(0.0, 0.38, 2)
        sigma = rng.uniform(0.2, 0.34)
        field += 0.55 * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma * sigma))
    # Coarse noise frays the margin only; the core stays full (confluent).
    field += 0.18 * smooth_noise(rng, shape[0], shape[1], scale_px=9.0 / px_mm)
    opacity = _smoothstep((field - 0.1) / 0.95).astype(np.float32)
    # Fine mottling: the fluffy, acinar texture; then a blur, as no margin of it is sharp.
    opacity *= 1.0 + 0.15 * smooth_noise(rng, shape[0], shape[1], scale_px=3.0 / px_mm)
    opacity = cv2.GaussianBlur(opacity, (0, 0), 2.0 / px_mm)
    return np.clip(opacity, 0.0, 1.0)


def _air_bronchograms(
    rng: np.random.Generator, shape: tuple[int, int], start: np.ndarray, reach: float, dirn: float
) -> np.ndarray:
    """0..1 map (pixels) of a few branching air-filled bronchi running out from ``start``."""
    layer = np.zeros(shape, np.float32)
    tips = [(start, dirn, reach * 0.45, 3)]
    while tips:
        p, a, length, width = tips.pop()
        q = p + length * np.array([np.cos(a), np.sin(a)])
        p0, p1 = np.round(p * 16).astype(int), np.round(q * 16).astype(int)
        cv2.line(layer, (p0[0], p0[1]), (p1[0], p1[1]), 1.0, width, cv2.LINE_8, 4)
        if length > reach * 0.2:
            for turn in (-1.0, 1.0):
                branch = a + turn * rng.uniform(0.25, 0.55)
                tips.append((q, branch, length * 0.7, max(width - 1, 1)))
    return cv2.GaussianBlur(layer, (0, 0), 0.8)


def _consolidation(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    """Fluffy, ill-defined airspace opacity in one zone, confluent in its middle, with air
    bronchograms inside it only; everything it draws stays within its own mask."""
    side = _side(seed)
    height = 0.3 + 0.6 * seed.at(1)
    x, y = _point_in_lung(canvas, geo, side, height, seed.at(2), seed.at(3))
    rx = (25.0 + 30.0 * seed.at(4)) * geo.s
    ry = rx * 0.8
    location = f"{side} {_zone(height)} zone"
    box = canvas.box(x - 1.4 * rx, y - 1.4 * ry, x + 1.4 * rx, y + 1.4 * ry)
    mask = np.zeros((canvas.rows, canvas.cols), bool)
    if box is None:
        return Lesion(Finding.CONSOLIDATION, mask, location, side)
    gx, gy = canvas.grid(box)
    shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
    u, v = (gx - x) / rx, (gy - y) / ry
    opacity = _consolidation_field(rng, shape, u, v, canvas.mm_per_px)
    opacity *= geo.lung_masks[side][box] * CONSOLIDATION_FILL
    # Bronchi run out from the hilum side of the opacity toward the periphery.
    hx, hy = geo.hila[side]
    dirn = float(np.arctan2(y - hy, x - hx))
    start = np.array([x - 0.6 * rx * np.cos(dirn), y - 0.6 * ry * np.sin(dirn)])
    start_px = start / canvas.mm_per_px - np.array([box[1].start, box[0].start])
    bronchi = _air_bronchograms(rng, shape, start_px, 1.3 * rx / canvas.mm_per_px, dirn)
    full = opacity / CONSOLIDATION_FILL
    bronchi *= _smoothstep((full - 0.55) / 0.35)  # visible only where the alveoli are full
    fill = opacity * (1.0 - BRONCHOGRAM_AIR * bronchi)
    mask[box] = fill > MIN_FILL
    _replace_air(canvas, geo, side, box, fill * mask[box])  # nothing drawn outside the mask
    return Lesion(Finding.CONSOLIDATION, mask, location, side)
