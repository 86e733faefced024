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
    cols = np.flatnonzero(geo.lung_masks[side][row])
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


def _effusion(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    """Fluid at the lung base with a meniscus that climbs the chest wall (or the back, LAT)."""
    side = _side(seed)
    height = (18.0 + 60.0 * seed.at(1)) * geo.s
    lung = geo.lung_masks[side]
    x = (np.arange(canvas.cols, dtype=np.float32) + 0.5) * canvas.mm_per_px
    y = (np.arange(canvas.rows, dtype=np.float32) + 0.5) * canvas.mm_per_px
    if geo.view == "LAT":  # fluid gathers in the posterior sulcus (image right)
        wall, span = geo.posterior_x, geo.posterior_x - geo.anterior_x
        closeness = np.clip(1.0 - (wall - x) / span, 0.0, 1.0)
    else:
        wall = geo.x_lung_wall[side]
        closeness = np.clip(1.0 - np.abs(wall - x) / 120.0, 0.0, 1.0)
    base = geo.y_cp[side] + (10.0 * geo.s if geo.view == "LAT" else 0.0)
    meniscus = base - height - 25.0 * geo.s * closeness**3  # fluid top, per column
    below = y[:, None] - meniscus[None, :]
    weight = np.clip(below / (12.0 * geo.s), 0.0, 1.0) * lung
    canvas.att += (weight * AIR_TO_TISSUE * 110.0 * geo.s).astype(np.float32)
    mask = weight > 0.5
    return Lesion(
        Finding.PLEURAL_EFFUSION, mask, f"{side} costophrenic angle", side, round(height, 1)
    )


def _cardiomegaly(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    # The heart was drawn enlarged by chest.py; the lesion is its silhouette.
    cx, cy, rx, ry = geo.heart
    mask = canvas.mask_of_ellipse(cx, cy, rx, ry)
    return Lesion(Finding.CARDIOMEGALY, mask, "heart", None, round(2 * rx, 1))


def pneumothorax_region(canvas: Canvas, geo: ChestGeometry, seed: LesionSeed) -> np.ndarray:
    """The air crescent between the chest wall and the collapsed lung's edge (apex and side)."""
    side = _side(seed)
    rim = (8.0 + 28.0 * seed.at(1)) * geo.s
    lung = geo.lung_masks[side].astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(lung, 1), cv2.DIST_L2, 5)[1:-1, 1:-1] * canvas.mm_per_px
    y = (np.arange(canvas.rows, dtype=np.float32)[:, None] + 0.5) * canvas.mm_per_px
    upper = y < geo.y_apex + 0.62 * (geo.y_cp[side] - geo.y_apex)
    if geo.view == "LAT":
        upper = y < geo.y_apex + 0.3 * (geo.y_cp[side] - geo.y_apex)
        return (lung > 0) & (dist < rim) & upper
    x = (np.arange(canvas.cols, dtype=np.float32)[None, :] + 0.5) * canvas.mm_per_px
    lateral_half = (x - geo.cx) * geo.image_sign(side) > 0.45 * abs(geo.x_lung_wall[side] - geo.cx)
    apical = y < geo.y_apex + 0.18 * (geo.y_cp[side] - geo.y_apex)
    return (lung > 0) & (dist < rim) & upper & (lateral_half | apical)


def _pneumothorax(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    side = _side(seed)
    region = pneumothorax_region(canvas, geo, seed)
    # No lung tissue in the crescent: it is darker, and the vessels stop at a thin pleural line.
    canvas.att -= (region * LUNG * 95.0 * geo.s).astype(np.float32)
    edge = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > region
    edge &= geo.lung_masks[side]
    canvas.att += (edge * 9.0).astype(np.float32)
    rim = (8.0 + 28.0 * seed.at(1)) * geo.s
    return Lesion(Finding.PNEUMOTHORAX, region | edge, f"{side} apex", side, round(rim, 1))


def _consolidation(
    canvas: Canvas, geo: ChestGeometry, seed: LesionSeed, rng: np.random.Generator
) -> Lesion:
    """Patchy airspace opacity in one zone, with air bronchograms."""
    side = _side(seed)
    height = 0.3 + 0.6 * seed.at(1)
    x, y = _point_in_lung(canvas, geo, side, height, seed.at(2), seed.at(3))
    rx = (25.0 + 30.0 * seed.at(4)) * geo.s
    ry = rx * 0.8
    s = 1.0 / canvas.mm_per_px
    r0, r1 = max(int((y - ry) * s), 0), min(int((y + ry) * s) + 1, canvas.rows)
    c0, c1 = max(int((x - rx) * s), 0), min(int((x + rx) * s) + 1, canvas.cols)
    mask = np.zeros((canvas.rows, canvas.cols), bool)
    if r1 - r0 < 2 or c1 - c0 < 2:
        return Lesion(Finding.CONSOLIDATION, mask, f"{side} {_zone(height)} zone", side)
    yy = ((np.arange(r0, r1) + 0.5) / s - y)[:, None] / ry
    xx = ((np.arange(c0, c1) + 0.5) / s - x)[None, :] / rx
    falloff = np.clip(1.0 - (xx * xx + yy * yy), 0.0, 1.0)
    patchy = smooth_noise(rng, r1 - r0, c1 - c0, scale_px=max(6.0 * s, 2.0))
    density = np.clip(falloff * 1.6 + 0.45 * patchy - 0.25, 0.0, 1.0)
    density *= geo.lung_masks[side][r0:r1, c0:c1]
    canvas.att[r0:r1, c0:c1] += (density * AIR_TO_TISSUE * 90.0 * geo.s).astype(np.float32)
    mask[r0:r1, c0:c1] = density > 0.3
    # Air bronchograms: air-filled bronchi made visible by the fluid-filled alveoli around them.
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * rx * 0.6, np.sin(angle) * ry * 0.6
        canvas.tube(
            [(x - dx, y - dy), (x + dx, y + dy)],
            [1.6 * geo.s, 0.8 * geo.s],
            density=0.0,
            displaces=SOFT_TISSUE * 0.6,
            target=None,
        )
    return Lesion(Finding.CONSOLIDATION, mask, f"{side} {_zone(height)} zone", side)
