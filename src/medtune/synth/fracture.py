"""Fractures: a lucent, slightly jagged line cut through one registered bone.

Works for every anatomy whose renderer registers its tubular bones (``Canvas.bone``). The
study-level seed picks the bone by name, so each view of a study breaks the same bone when it
shows it: u0 which bone, u1 where along it, u2 the angle, u3 the gap width.
"""

from __future__ import annotations

import numpy as np

from medtune.config import Finding
from medtune.synth.anatomy.base import Lesion, LesionSeed
from medtune.synth.canvas import CORTEX, MARROW, Canvas


def apply_fracture(canvas: Canvas, seed: LesionSeed, rng: np.random.Generator) -> Lesion | None:
    """Cut a fracture through a bone drawn on ``canvas``; None if the view shows no bone."""
    if not canvas.bones:
        return None
    names = sorted({bone.name for bone in canvas.bones})
    name = names[min(int(seed.at(0) * len(names)), len(names) - 1)]
    bone = next(b for b in canvas.bones if b.name == name)
    centre, axis, radius = _point_along(bone.points, bone.radii, 0.25 + 0.5 * seed.at(1))
    # Transverse to oblique: 90 +/- 35 degrees to the shaft.
    angle = np.arctan2(axis[1], axis[0]) + np.deg2rad(90 + (seed.at(2) - 0.5) * 70)
    gap_mm = 0.6 + 1.0 * seed.at(3)
    band = _band(canvas, centre, angle, half_length=radius * 1.4, half_width=gap_mm / 2, rng=rng)
    own = np.zeros_like(canvas.att)
    canvas.tube(bone.points, bone.radii, density=1.0 + (CORTEX - 1.0) * bone.density,
                cortex=bone.cortex, inner_density=1.0 + (MARROW - 1.0) * bone.density,
                target=own)  # fmt: skip
    canvas.att -= (own * band).astype(np.float32)  # the bone is absent in the gap
    mask = (band > 0.5) & (own > 0.5)
    words = bone.name.split()
    side = "left" if "left" in words else "right" if "right" in words else None
    return Lesion(Finding.FRACTURE, mask, bone.name, side, round(gap_mm, 1))


def _point_along(
    points: np.ndarray, radii: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """The point at ``fraction`` of the polyline's length, the unit axis there, and the radius."""
    seg = np.diff(points, axis=0)
    lengths = np.linalg.norm(seg, axis=1)
    target = fraction * lengths.sum()
    i = int(np.searchsorted(np.cumsum(lengths), target))
    i = min(i, len(seg) - 1)
    before = float(lengths[:i].sum())
    t = (target - before) / max(float(lengths[i]), 1e-6)
    point = points[i] + t * seg[i]
    axis = seg[i] / max(float(lengths[i]), 1e-6)
    return point, axis, float(radii[i] + t * (radii[i + 1] - radii[i]))


def _band(
    canvas: Canvas,
    centre: np.ndarray,
    angle: float,
    half_length: float,
    half_width: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """0..1 map of a thin band through ``centre`` at ``angle``, its edges slightly jagged."""
    x = (np.arange(canvas.cols, dtype=np.float32) + 0.5) * canvas.mm_per_px - centre[0]
    y = (np.arange(canvas.rows, dtype=np.float32) + 0.5) * canvas.mm_per_px - centre[1]
    u = x[None, :] * np.cos(angle) + y[:, None] * np.sin(angle)  # along the fracture line
    v = -x[None, :] * np.sin(angle) + y[:, None] * np.cos(angle)  # across it
    wobble = 0.35 * np.sin(u * rng.uniform(0.8, 1.6) + rng.uniform(0, 6.3))
    across = np.clip(1.0 - (np.abs(v - wobble) - half_width) / canvas.mm_per_px, 0.0, 1.0)
    return across * (np.abs(u) < half_length)
