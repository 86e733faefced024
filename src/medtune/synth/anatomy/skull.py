"""Skull renderer: PA (Caldwell-type, 15 degrees caudal) and lateral radiographs of the head.

The cranial vault is a layered shell projected exactly from 3-D: scalp, outer table, diploe,
inner table, brain (:func:`_vault`). Projected through, the tables show as two bright lines
along the rim with the darker diploe between them, and the vault's far and near walls add up
over the middle. Everything else is drawn with the lumbar spine's :class:`PartPen`: fills for
plates of bone (petrous pyramids, mandible, clivus), negative fills for air (sinuses, nasal
cavity, mastoid cells), lines for cortical margins seen edge-on (orbital rims, sella turcica,
hard palate, petrous ridges) and lucent lines for sutures and vascular grooves.

Fracture candidates are registered along the vault and the jaw without drawing them (the shell
already shows the bone): arcs of the calvarium one vault-thickness wide ("right parietal bone",
"frontal bone", "occipital bone"...), the mandibular body and rami, the nasal bones. Both views
register the same names, so a study breaks the same bone in each of its views.

Sex and age: men have larger skulls, heavier brow ridges, bigger mastoids, a prominent external
occipital protuberance and larger frontal sinuses; women a rounder, more upright forehead. Age
brings tooth loss, a calcified pineal gland and, in women, hyperostosis frontalis interna; low
bone density thins and fades the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.pen import PartPen, mirror_x, oval, place_part, vec
from medtune.synth.canvas import CORTEX, SOFT_TISSUE, Canvas

# -- sizes of an adult male skull, mm (scaled by body_scale and the sex factor) -------------------

SEX_SIZE = {"M": 1.03, "F": 0.97}  # skulls differ by sex a little beyond stature
VAULT_HALF_BREADTH = 72.0  # outer table, side to side
VAULT_HALF_LENGTH = 94.0  # outer table, glabella to opisthocranion
VAULT_UP = 82.0  # centre of the vault to the vertex
VAULT_DOWN_PA = 150.0  # seen PA the sides fall nearly straight to the mastoids: a far lower pole
VAULT_DOWN_LAT = 95.0  # the occiput runs down to the foramen magnum; the base line cuts it
VAULT_THICKNESS = 6.5  # outer table + diploe + inner table
OUTER_TABLE, INNER_TABLE = 1.8, 1.2
SCALP = 6.0
DIPLOE = 1.55  # density of diploic bone relative to water
NASION_TO_VAULT_CENTRE_PA = -30.0  # the vault's centre lies above the nasion
NASION_TO_MENTON = 120.0
ANTERIOR = -1.0  # LAT: the face looks to the image left

# Outlines in mm from the nasion, image-left halves for PA.
ORBIT_PA = (33.0, 17.0, 20.0, 17.5)  # centre x, y and half-width, half-height
MAXILLARY_SINUS_PA = ((-15, 36), (-47, 34), (-45, 66), (-20, 68))
PETROUS_PA = ((-72, 42), (-45, 32), (-18, 27), (-14, 38), (-40, 50), (-66, 58))
NASAL_CAVITY_PA = ((0, 24), (-6, 30), (-12, 42), (-14, 52), (-9, 60), (0, 60))
MANDIBLE_PA = ((-50, 30), (-53, 60), (-50, 90), (-38, 110), (-18, 119), (0, 121))
FACE_PA = ((0, 15), (-66, 20), (-68, 60), (-60, 100), (-50, 118), (-55, 135), (-58, 250), (0, 250))


# -- the subject ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    """What of the subject shapes the skull, as ready-to-use factors."""

    male: bool
    density: float  # bone density factor
    robust: float  # 0 gracile .. 1 robust: brow ridge, mastoid, occipital protuberance
    teeth_lost: float  # probability that a given tooth is missing
    hfi: bool  # hyperostosis frontalis interna
    pineal: bool  # calcified pineal gland
    thickness: float  # vault thickness, mm


def _head(subject: Subject, rng: np.random.Generator) -> _Head:
    """Draw the subject's skull traits (all randomness from ``rng``)."""
    male = subject.sex == "M"
    robust = float(np.clip(rng.normal(0.75 if male else 0.2, 0.15), 0.0, 1.0))
    age = subject.age
    teeth_lost = float(np.clip((age - 35.0) / 60.0, 0.0, 0.85) * rng.uniform(0.3, 1.3))
    hfi = (not male) and rng.random() < np.clip((age - 45.0) / 80.0, 0.0, 0.4)
    pineal = rng.random() < np.clip((age - 20.0) / 50.0, 0.0, 0.6)
    thickness = VAULT_THICKNESS * (1.0 if male else 0.92) * rng.uniform(0.9, 1.1)
    return _Head(male, float(subject.bone_density), robust, teeth_lost, hfi, pineal, thickness)


def _both(points) -> np.ndarray:
    """A closed outline from an image-left half that ends on the midline."""
    half = np.asarray(points, np.float64)
    return np.concatenate([half, mirror_x(half[-2::-1], 1.0)])


def _scalloped(cx: float, cy: float, rx: float, ry: float, rng, n: int = 16) -> np.ndarray:
    """An air cell's outline: an oval with a scalloped (randomly lobulated) margin, mm."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    wobble = 1.0 + 0.18 * np.sin(3 * t + rng.uniform(0, 6.3)) + rng.normal(0, 0.06, n)
    return np.stack([cx + rx * wobble * np.cos(t), cy + ry * wobble * np.sin(t)], axis=1)


def _dot(pen: PartPen, x: float, y: float, radius: float, value: float) -> None:
    """A small round blob (an air cell, a calcification) as a very short queued line."""
    pen.line([(x - 0.2, y), (x + 0.2, y)], radius, value)


def _arc(cx, cy, rx, ry, a0, a1, n=8) -> np.ndarray:
    """Points along an elliptical arc, angles in degrees (0 = image right, 90 = down)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _jagged(points, rng, amp: float, n: int = 24) -> np.ndarray:
    """A suture: the polyline resampled to ``n`` points with small random zigzags (mm)."""
    p = np.asarray(points, np.float64)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    out = np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], axis=1)
    return out + rng.normal(0.0, amp, out.shape)


# -- the vault ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shell:
    """The vault as an ellipsoidal shell (local mm): centre, semi-axes, where it fades below."""

    cx: float
    cy: float
    rx: float
    ry_up: float
    ry_down: float
    half_depth: float  # semi-axis along the beam
    base_y: tuple[float, float, float, float]  # bone fades below y = clip(a + b x, lo, hi)
    soft_drop: float  # the scalp and brain reach this far (mm) below the bone's fade line
    fade_mm: float = 12.0  # how softly the bone gives way to the skull base

    def moved(self, dx: float, dy: float) -> _Shell:
        """The same shell shifted (mm): the far side of the head, magnified a little more."""
        return replace(self, cx=self.cx + dx, cy=self.cy + dy)


LUT_SIZE = 4096  # samples of the shell's radial profile over q = 0..1.2


def _shell_profiles(shell: _Shell, head: _Head, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Projected thickness (mm) of the bone shell and of scalp + brain, as tables over ``q``.

    Nested ellipsoids scaled by ``k`` share one normalised radius ``q`` (1 on the outer table);
    a layer's projected thickness is ``2 c k sqrt(1 - q / k^2)``. Both sums depend on ``q``
    alone, so they are tabulated once and looked up per pixel.
    """
    q = np.linspace(0.0, 1.2, LUT_SIZE, dtype=np.float64)
    depth = 2.0 * shell.half_depth * scale

    def layer(k: float) -> np.ndarray:
        return depth * k * np.sqrt(np.maximum(1.0 - q / (k * k), 0.0))

    radius = 0.5 * (shell.rx + shell.ry_up)
    weak = 0.55 + 0.45 * head.density  # weak bone: thinner, fainter tables
    k1 = 1.0 - OUTER_TABLE * weak / radius
    k2 = 1.0 - (head.thickness - INNER_TABLE * weak) / radius
    k3 = 1.0 - head.thickness / radius
    cortex = (CORTEX - 1.0) * head.density
    diploe = (DIPLOE - 1.0) * head.density
    bone = cortex * layer(1.0) + (diploe - cortex) * layer(k1)
    bone += (cortex - diploe) * layer(k2) - cortex * layer(k3)
    # The head's cross-section is squarer than an ellipse (flat parietal sides), so scalp and
    # brain project flatter across the middle and fall off steeply near the rim.
    k = 1.0 + SCALP / radius
    soft = SOFT_TISSUE * depth * k * np.power(np.maximum(1.0 - np.square(q / (k * k)), 0.0), 0.25)
    return bone.astype(np.float32), soft.astype(np.float32)


def _vault(pen: PartPen, shell: _Shell, head: _Head) -> None:
    """Project the layered vault onto the canvas: scalp and brain, then the bone shell.

    Soft tissue already drawn (face, neck) is merged with the scalp and brain by maximum, so
    where they meet nothing is counted twice. Below the skull base the bone fades out (the face
    and base are drawn on their own) and the soft tissue fades more gently into the neck.
    """
    cv, s = pen.canvas, pen.scale
    # Bounding box of the head, a little generous for the rotation.
    corners = pen.place([(shell.cx - shell.rx, shell.cy - shell.ry_up),
                         (shell.cx + shell.rx, shell.cy + shell.ry_down)])  # fmt: skip
    pad = (SCALP + 2.0) * s + 0.1 * shell.rx * s
    c0, r0 = np.maximum(((corners.min(0) - pad) / cv.mm_per_px).astype(int), 0)
    c1, r1 = np.minimum(((corners.max(0) + pad) / cv.mm_per_px).astype(int) + 1, (cv.cols, cv.rows))
    if c0 >= c1 or r0 >= r1:
        return
    box = (slice(r0, r1), slice(c0, c1))
    xl, yl = pen.local_grid(box=box)
    dx, dy = xl - np.float32(shell.cx), yl - np.float32(shell.cy)
    # Upper and lower halves have their own vertical semi-axis (np.where is slow here).
    v = np.minimum(dy, 0.0) * np.float32(1.0 / shell.ry_up)
    v += np.maximum(dy, 0.0) * np.float32(1.0 / shell.ry_down)
    q = np.square(dx * np.float32(1.0 / shell.rx)) + np.square(v)
    index = (q * np.float32((LUT_SIZE - 1) / 1.2)).astype(np.int32)
    bone_lut, soft_lut = _shell_profiles(shell, head, s)
    soft = np.take(soft_lut, index, mode="clip")
    bone = np.take(bone_lut, index, mode="clip")
    _fade_below_base(shell, xl, yl, soft, bone)
    region = cv.att[box]
    np.maximum(region, soft, out=region)
    region += bone
    for x in (shell.cx - shell.rx, shell.cx + shell.rx):
        pen.track(pen.place([(x, shell.cy - shell.ry_up)]), SCALP * s)


def _fade_below_base(shell: _Shell, xl, yl, soft: np.ndarray, bone: np.ndarray) -> None:
    """Fade the vault's bone out below the skull-base line, its soft tissue a little lower.

    Only rows that reach the line are touched: the vault above it (most of it) is left as is.
    """
    a, b, lo, hi = shell.base_y
    row_max = np.maximum(yl[:, 0], yl[:, -1])  # y is linear along a row: extremes at its ends
    ramp = shell.fade_mm
    first = int(np.searchsorted(row_max, lo - 0.5 * ramp))  # rows grow downward
    if first >= len(row_max):
        return
    xs, ys = xl[first:], yl[first:]
    base = np.clip(a + b * xs, lo, hi) if b else np.float32(a)
    bone[first:] *= np.clip((base - ys) * np.float32(1.0 / ramp) + 0.5, 0.0, 1.0)
    soft[first:] *= np.clip((base + shell.soft_drop - ys) * np.float32(0.5 / ramp) + 0.5, 0, 1)


def _register_arc(pen: PartPen, name: str, shell: _Shell, head: _Head, a0, a1, scale=1.0):
    """Register a stretch of the calvarium (angles in degrees) as a tube one vault thick."""
    mid = 1.0 - 0.5 * head.thickness / (0.5 * (shell.rx + shell.ry_up))
    ry = shell.ry_up if 0.5 * (a0 + a1) % 360 > 180 else shell.ry_down
    pts = _arc(shell.cx, shell.cy, shell.rx * mid * scale, ry * mid * scale, a0, a1, n=6)
    pen.bone(name, pts, 0.5 * head.thickness, head.density, cortex=0.3, visible=False)


# -- PA -------------------------------------------------------------------------------------------


def _orbits_pa(pen: PartPen, head: _Head) -> None:
    """Orbits: lucent ovals with bright rims, the supraorbital margin heavy in men."""
    ox, oy, rx, ry = ORBIT_PA
    brow = 10.0 + 10.0 * head.robust
    for side in (-1.0, 1.0):
        pen.fill(oval(side * ox, oy, rx, ry, side * 8.0), -10.0)
        rim = _arc(side * ox, oy, rx, ry, 0, 360, n=20)
        pen.line(rim, 1.3, 14.0 * head.density)
        roof = _arc(side * ox, oy - 1.0, rx + 1.0, ry + 1.0, 200, 340, n=8)
        pen.line(roof, 2.0 + head.robust, brow)  # supraorbital margin
        # Innominate line: the greater wing of the sphenoid seen edge-on, across each orbit.
        pen.line([(side * (ox + 12), oy - 12), (side * (ox - 4), oy + 14)], 0.8, 9.0)
    pen.bone("frontal bone", _arc(0, oy - 2, ox + rx, ry + 4, 200, 340, n=7), 4.0 + head.robust,
             head.density, visible=False)  # fmt: skip


def _sinuses_pa(pen: PartPen, head: _Head, rng) -> None:
    """Air: frontal sinus, ethmoid cells, nasal cavity with septum and turbinates, maxillary."""
    size = 0.7 + 0.5 * head.robust  # men have larger frontal sinuses
    for side in (-1.0, 1.0):
        w, h = rng.uniform(10, 20) * size, rng.uniform(10, 22) * size
        lobe = _scalloped(side * (w * 0.5 + 1.5), 2.0 - h * 0.5, w * 0.55, h * 0.5, rng)
        pen.fill(lobe, -7.0)
        pen.line(np.concatenate([lobe, lobe[:1]]), 0.6, 5.0)  # sclerotic margin
        pen.fill(mirror_x(MAXILLARY_SINUS_PA, side), -22.0)
        pen.fill(oval(side * 10, 48, 4.0, 9.0), 6.0)  # inferior turbinate
        for row in range(3):  # ethmoid air cells
            for col in range(2):
                _dot(pen, side * (5 + 6 * col), 6 + 8 * row, 2.8, -5.0)
    pen.fill(_both(NASAL_CAVITY_PA), -26.0)
    septum = [(0, 20), (rng.normal(0, 1.5), 40), (0, 60)]
    pen.line(septum, 0.9, 8.0)
    pen.line([(0, -2), (0, 12)], 1.2, 8.0)  # crista galli


def _skull_base_pa(pen: PartPen, head: _Head) -> None:
    """Petrous pyramids across the lower orbits, mastoid processes, zygomas, upper spine."""
    mastoid = 0.7 + 0.6 * head.robust
    for side in (-1.0, 1.0):
        petrous = mirror_x(PETROUS_PA, side)
        pen.fill(petrous, 22.0 * head.density)
        pen.line(petrous[:3], 1.0, 20.0 * head.density)  # the ridge, dense and sharp
        tip = vec(side * 52, 50 + 14 * mastoid)
        pen.fill([(side * 62, 35), tip, (side * 44, 38)], 10.0 * head.density)
        for k in range(4):  # mastoid air cells
            _dot(pen, side * (54 - 3 * k), 38 + 4 * k, 2.2 * mastoid, -4.0)
        pen.line([(side * 53, 12), (side * 58, 40), (side * 50, 52)], 2.5, 10.0)  # zygoma
        pen.line([(side * 14, 26), (side * 14, 58)], 1.2, 6.0)  # lateral nasal wall
    pen.fill([(-10, 55), (10, 55), (12, 125), (-12, 125)], 6.0)  # dens and C2 behind the face


def _jaw_pa(pen: PartPen, head: _Head, rng) -> None:
    """Mandible (U-shaped, seen from behind) and the dental arches at the occlusal plane."""
    half = np.asarray(MANDIBLE_PA, np.float64)
    outer = np.concatenate([half, mirror_x(half[-2::-1], 1.0)])
    inner = outer * vec(0.8, 1.0) + vec(0, -14)
    pen.fill(np.concatenate([outer, inner[::-1]]), 12.0 * head.density)
    pen.line(outer[2:-2], 1.8, 20.0 * head.density)  # lower border cortex
    for side, which in ((-1.0, "right"), (1.0, "left")):
        ramus = mirror_x([(-50, 92), (-51, 60), (-50, 30)], side)
        pen.line(ramus, 4.0, 16.0 * head.density)
        pen.bone(f"{which} mandibular ramus", ramus, 5.0, head.density, visible=False)
    body = _both([(-46, 96), (-36, 110), (-18, 117), (0, 119)])
    pen.bone("mandibular body", body, 7.0, head.density, visible=False)
    _teeth_pa(pen, head, rng)


def _teeth_pa(pen: PartPen, head: _Head, rng) -> None:
    """Upper and lower teeth along the arches: dense crowns, fainter roots, some fillings."""
    for jaw, crown_y, root_dy in ((-1.0, 67.0, -14.0), (1.0, 77.0, 14.0)):
        for i in range(16):
            if rng.random() < head.teeth_lost:
                continue
            u = (i + 0.5) / 16.0 * 2.0 - 1.0  # -1 right molar .. +1 left molar
            x = 34.0 * np.sin(u * np.pi / 2.0)
            y = crown_y + jaw * 2.5 * abs(u)
            pen.line([(x, y - 3), (x, y + 3)], 2.6, 22.0)  # crown: enamel
            pen.line([(x, y), (x, y + root_dy)], 1.4, 10.0)  # root
            if abs(u) > 0.5 and rng.random() < 0.2:
                pen.line([(x, y - 1), (x, y + 1)], 2.0, 60.0)  # amalgam filling


def _sutures_pa(pen: PartPen, shell: _Shell, rng) -> None:
    """Sagittal suture on the midline and the lambdoid sutures as an inverted V (lucent)."""
    top = shell.cy - shell.ry_up
    pen.line(_jagged([(0, top + 4), (0, top + 50)], rng, 0.8, 14), 0.5, -3.0)
    for side in (-1.0, 1.0):
        lam = [(0, top + 40), (side * 40, top + 80), (side * 66, shell.cy + 40)]
        pen.line(_jagged(lam, rng, 1.0, 28), 0.5, -3.0)


def _soft_pa(pen: PartPen) -> None:
    """Face with the back of the head behind it, neck, nose and ears (the vault adds its own)."""
    pen.soft(_both(FACE_PA), 165.0)
    pen.soft(oval(0, 42, 12, 20), 20.0)  # nose
    for side in (-1.0, 1.0):
        pen.soft(oval(side * 80, 30, 8, 24), 10.0)  # ears


def _render_pa(pen: PartPen, head: _Head, rng) -> None:
    """The PA view: symmetric about the midline, the face over the lower vault."""
    shell = _Shell(0.0, NASION_TO_VAULT_CENTRE_PA, VAULT_HALF_BREADTH, VAULT_UP, VAULT_DOWN_PA,
                   VAULT_HALF_LENGTH, (62.0, 0.0, 62.0, 62.0), 25.0, 24.0)  # fmt: skip
    _soft_pa(pen)
    pen.soft_tissue(None, blur_mm=4.0)
    _vault(pen, shell, head)
    # Parietal: vertex to the widest point; temporal: the squama down toward the mastoid.
    # Angles in degrees, 0 = image right, 90 = down: the patient's right is on the image left.
    for which, parietal, temporal in (
        ("right", (185, 265), (140, 175)),
        ("left", (275, 355), (5, 40)),
    ):
        _register_arc(pen, f"{which} parietal bone", shell, head, *parietal)
        _register_arc(pen, f"{which} temporal bone", shell, head, *temporal)
    # The occipital squama lies across the beam: a fracture shows en face, high in the vault.
    _register_arc(pen, "occipital bone", shell, head, 215, 325, scale=0.55)
    _orbits_pa(pen, head)
    _sinuses_pa(pen, head, rng)
    _skull_base_pa(pen, head)
    _jaw_pa(pen, head, rng)
    _sutures_pa(pen, shell, rng)
    if head.hfi:  # nodular thickening of the inner table behind the forehead
        for side in (-1.0, 1.0):
            for _ in range(6):
                dx, dy = rng.normal(0.0, 9.0, 2)
                pen.fill(oval(side * (24 + dx), -42 + dy, 7.0, 6.0), 3.0)
    pen.line([(-2, -2), (2, 6)], 1.5, 8.0)
    pen.bone("nasal bone", [(0, 2), (0, 24)], 3.0, head.density, visible=False)
    pen.flush()


# -- LAT ------------------------------------------------------------------------------------------

# Landmarks of the lateral view, mm from the nasion; anterior (the face) toward -x.
SELLA = (70.0, 22.0)
PORION = (100.0, 42.0)  # external auditory meatus
VAULT_CENTRE_LAT = (92.0, -30.0)
MANDIBLE_LAT = ((86, 44), (90, 60), (88, 100), (70, 110), (40, 116), (10, 123), (2, 116),
                (2, 92), (6, 86), (40, 84), (60, 82), (58, 50), (66, 58), (78, 56))  # fmt: skip
CLIVUS = ((76, 26), (84, 26), (104, 60), (96, 64))
MAXILLARY_SINUS_LAT = ((12, 30), (48, 28), (54, 42), (48, 56), (14, 56))
SPHENOID_SINUS = ((46, 24), (66, 28), (72, 40), (62, 50), (46, 46))
FACE_LAT = np.array(
    ((-7, -2), (-12, 30), (-16, 48), (-18, 62), (-12, 72), (-17, 82), (-8, 94), (-13, 114),
     (4, 134), (40, 142), (60, 240), (180, 240), (175, 60), (150, 40), (100, 10), (40, -10)),
    np.float64,
)  # fmt: skip
NOSE_LAT = ((-7, -2), (-14, 16), (-30, 38), (-28, 44), (-16, 48), (-12, 30))


def _sella_and_base_lat(pen: PartPen, head: _Head) -> None:
    """Skull base from the side: orbital roofs, planum, sella turcica, clivus, petrous bone."""
    bright = 18.0 * head.density
    sx, sy = SELLA
    roofs = [(8, 0), (30, 8), (50, 14), (sx - 8, sy - 5)]
    pen.line(roofs, 0.9, bright)
    pen.line(np.asarray(roofs) + vec(3, 4), 0.7, 0.6 * bright)  # the other orbital roof
    cup = [(sx - 9, sy - 4), (sx - 6, sy + 5), (sx, sy + 7), (sx + 6, sy + 4), (sx + 8, sy - 6),
           (sx + 6, sy - 10)]  # fmt: skip
    pen.line(cup, 0.9, bright)  # tuberculum, floor and dorsum sellae
    pen.line([(sx - 9, sy - 6), (sx - 1, sy - 8)], 1.0, bright)  # anterior clinoid
    pen.fill(CLIVUS, 20.0 * head.density)
    pen.fill(SPHENOID_SINUS, -12.0)
    pen.line([(sx - 12, sy - 4), (sx - 22, sy + 22)], 0.8, 8.0)  # greater wing of the sphenoid
    px, py = PORION
    pen.fill(oval(px + 2, py - 8, 24, 12, -20), 30.0 * head.density)  # petrous pyramid
    pen.line([(sx + 8, sy + 4), (px + 18, py - 14)], 1.0, bright)  # petrous ridge
    pen.fill(oval(px, py, 5.0, 5.5), -12.0)  # external auditory meatus


def _mastoid_lat(pen: PartPen, head: _Head, rng) -> None:
    """Mastoid process behind and below the ear, honeycombed with air cells."""
    px, py = PORION
    size = 0.7 + 0.6 * head.robust
    pen.fill([(px + 8, py - 6), (px + 30, py + 2), (px + 14, py + 12 + 16 * size)], 10.0)
    for _ in range(int(10 * size)):
        c = vec(px + 12, py) + rng.normal(0.0, 7.0 * size, 2)
        _dot(pen, c[0], c[1], 2.2, -5.0)


def _face_lat(pen: PartPen, head: _Head, rng) -> None:
    """Facial bones from the side: frontal sinus, orbit rim, nasal bone, maxilla, palate."""
    size = 0.7 + 0.5 * head.robust
    fs = oval(9, -12, 6 * size, 13 * size, -10)
    pen.fill(fs, -10.0)
    pen.line(np.concatenate([fs, fs[:1]]), 0.6, 5.0)
    pen.fill(oval(-3, -6, 5, 11), 4.0 + 8.0 * head.robust)  # glabella / brow ridge
    pen.line([(8, 2), (6, 14), (12, 30), (22, 36)], 1.2, 10.0)  # lateral orbital rim
    pen.line([(14, 32), (46, 30)], 0.8, 8.0)  # orbital floor
    nasal = [(0, 0), (-14, 26)]
    pen.line(nasal, 1.6, 12.0)
    pen.bone("nasal bone", nasal, 2.5, head.density, visible=False)
    # Maxillae and zygomas, both sides superimposed: the facial skeleton around the sinus.
    pen.fill([(4, 4), (30, 12), (56, 24), (62, 60), (50, 68), (-4, 68), (-8, 50), (4, 30)], 14.0)
    pen.fill(oval(30, 40, 16, 11, -10), 12.0)  # zygoma bodies over the sinus
    pen.fill(MAXILLARY_SINUS_LAT, -20.0)
    pen.line([(-6, 58), (50, 60)], 1.6, 16.0)  # hard palate
    pen.line([(30, 40), (82, 42)], 1.6, 10.0)  # zygomatic arch
    pen.line([(56, 30), (60, 66)], 1.2, 10.0)  # pterygoid plates


def _jaw_lat(pen: PartPen, head: _Head, rng) -> None:
    """Both halves of the mandible (a few mm apart by magnification) and the teeth."""
    for shift, which in ((vec(0, 0), "right"), (vec(4, 2), "left")):
        outline = np.asarray(MANDIBLE_LAT, np.float64) + shift
        pen.fill(outline, 8.0 * head.density)
        pen.line(outline[1:7], 1.2, 10.0 * head.density)  # posterior border and lower cortex
        ramus = np.asarray([(84, 48), (84, 98)], np.float64) + shift
        pen.bone(f"{which} mandibular ramus", ramus, 7.0, head.density, visible=False)
    pen.fill(oval(86, 44, 5, 4), 10.0)  # condyle in the glenoid fossa
    pen.bone("mandibular body", [(80, 104), (40, 110), (8, 112)], 8.0, head.density, visible=False)
    _teeth_lat(pen, head, rng)


TOOTH_WIDTH_LAT = (5.5, 5.5, 6.0, 7.0, 7.0, 10.0, 10.0, 9.5)  # incisor .. third molar, mm


def _teeth_lat(pen: PartPen, head: _Head, rng) -> None:
    """Teeth from the side: left and right superimpose, so crowns form a dense band along the
    occlusal plane, broken where teeth are missing; roots fan above and below it."""
    for jaw in (-1.0, 1.0):  # upper, lower
        x = 2.0
        for i, width in enumerate(TOOTH_WIDTH_LAT):
            present = rng.random() >= head.teeth_lost
            centre = x + 0.5 * width
            x += width
            if not present:
                continue
            lean = (3.5 - 0.5 * i) * -jaw if i < 3 else 0.0  # incisors are proclined
            crown = vec(centre, 70.0 + jaw * 4.5)
            pen.line([crown - vec(0.3 * width, 0), crown + vec(0.3 * width, 0)], 3.8, 18.0)
            roots = (0.0,) if i < 5 else (-0.25 * width, 0.25 * width)  # molars have two
            for dx in roots:
                root = crown + vec(dx - lean, jaw * (15.0 if i < 5 else 12.0))
                pen.line([crown + vec(dx, 0), root], 1.4, 12.0)
            if i > 3 and rng.random() < 0.2:
                pen.line([crown - vec(2, 0), crown + vec(2, 0)], 2.0, 40.0)  # amalgam filling


def _cervical_lat(pen: PartPen, head: _Head) -> None:
    """Top of the cervical spine: atlas, dens and C2 with its broad spinous process, C3."""
    d = head.density
    pen.fill(oval(95, 76, 4.5, 6.0), 14.0 * d)  # anterior arch of C1
    c2 = [(102, 64), (110, 64), (112, 82), (119, 84), (120, 110), (98, 112), (100, 82)]
    pen.fill(c2, 14.0 * d)  # dens rising from the body of C2
    pen.line([*c2[1:], c2[0]], 0.7, 8.0 * d)  # its cortex
    pen.fill([(124, 68), (150, 66), (152, 76), (126, 78)], 10.0 * d)  # posterior arch of C1
    pen.fill([(118, 88), (150, 92), (156, 104), (122, 104)], 10.0 * d)  # spinous process of C2
    pen.fill([(96, 118), (117, 117), (118, 134), (96, 136)], 14.0 * d)  # C3 body
    pen.line([(96, 118), (117, 117)], 0.7, 8.0 * d)
    pen.fill([(120, 118), (146, 124), (148, 132), (120, 130)], 9.0 * d)  # C3 posterior arch
    for y in (70, 92, 120):  # articular pillars behind the bodies
        pen.fill(oval(118, y + 6, 6, 8), 8.0 * d)


def _vault_marks_lat(pen: PartPen, shell: _Shell, head: _Head, rng) -> None:
    """Coronal and lambdoid sutures, middle meningeal grooves, EOP, pineal, HFI."""
    top = shell.cy - shell.ry_up
    pen.line(_jagged([(62, top + 4), (40, -10), (44, 8)], rng, 0.8), 0.5, -3.0)  # coronal
    pen.line(_jagged([(150, top + 18), (168, -20), (160, 34)], rng, 0.9), 0.5, -3.0)  # lambdoid
    for end in ((90, -70), (120, -50)):  # grooves of the middle meningeal artery
        pen.line(_jagged([(52, 12), (70, -20), end], rng, 1.5, 10), 0.5, -2.5)
    eop = 2.0 + 10.0 * head.robust  # external occipital protuberance, big in men
    pen.fill([(178, 4), (186 + eop * 0.4, 12), (176, 22)], eop)
    if head.pineal:
        pen.line([(108, -14), (110, -13)], 1.6, 25.0)
    if head.hfi:
        inner = _arc(*VAULT_CENTRE_LAT, 86, 76, 190, 230, n=8)
        pen.line(inner, 3.0, 12.0)


def _render_lat(pen: PartPen, head: _Head, rng) -> None:
    """The lateral view: face to the image left, skull base and upper spine below the vault."""
    cx, cy = VAULT_CENTRE_LAT
    # Below this line (mm from the nasion) the vault's lower pole gives way to face and base.
    shell = _Shell(cx, cy, VAULT_HALF_LENGTH, VAULT_UP, VAULT_DOWN_LAT, VAULT_HALF_BREADTH,
                   (12.0, 0.3, 6.0, 55.0), 10.0)  # fmt: skip
    if not head.male:  # a rounder, more upright forehead
        shell = replace(shell, cx=cx - 2, rx=shell.rx * 0.99, ry_up=shell.ry_up * 1.02)
    pen.soft(FACE_LAT, 115.0)  # the face and neck are ~13 cm wide, rounded at the sides
    pen.soft(FACE_LAT * vec(0.85, 0.9) + vec(15, 15), 30.0)
    pen.soft(NOSE_LAT, 30.0)  # the nose only ~3 cm
    pen.soft_tissue(None, blur_mm=4.0)
    _vault(pen, shell, head)
    for which, offset in (("right", 0.0), ("left", 3.0)):  # near and far, superimposed
        moved = shell.moved(offset, offset * 0.5)
        _register_arc(pen, f"{which} parietal bone", moved, head, 235, 300)
        _register_arc(pen, f"{which} temporal bone", moved, head, 200, 225, scale=0.72)
    _register_arc(pen, "frontal bone", shell, head, 185, 230)
    _register_arc(pen, "occipital bone", shell, head, 320, 375)
    _sella_and_base_lat(pen, head)
    _mastoid_lat(pen, head, rng)
    _face_lat(pen, head, rng)
    _jaw_lat(pen, head, rng)
    _cervical_lat(pen, head)
    _vault_marks_lat(pen, shell, head, rng)
    pen.flush()


# -- the renderer ---------------------------------------------------------------------------------

# Half-extents of the head (local mm, nasion-centred frames shifted to the head's middle).
PA_CENTRE, PA_HALF = vec(0.0, 6.0), (80.0, 125.0)
LAT_CENTRE, LAT_HALF = vec(85.0, 14.0), (110.0, 125.0)


# The lateral is wider than the PA: nose tip to occiput is ~230 mm in an average adult, ~265 mm
# in a large one, and the field reaches down to C3.
@register_anatomy(
    Anatomy.SKULL, views=("PA", "LAT"), field_mm={"PA": (240.0, 300.0), "LAT": (320.0, 320.0)}
)
def render_skull(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a skull radiograph (PA or LAT) onto ``canvas``.

    Fractures in ``findings`` are left to the generic fracture step, which cuts through one of
    the bones registered here; this renderer draws no lesions itself.
    """
    if view not in ("PA", "LAT"):
        raise ValueError(f"skull has views PA and LAT, not {view!r}")
    head = _head(subject, rng)
    centre, half = (PA_CENTRE, PA_HALF) if view == "PA" else (LAT_CENTRE, LAT_HALF)
    size = SEX_SIZE.get(subject.sex, 1.0)
    pen = place_part(canvas, subject, rng, half, extra_scale=size)
    pen.shift_local(-centre)
    (_render_pa if view == "PA" else _render_lat)(pen, head, rng)
    np.maximum(canvas.att, 0.0, out=canvas.att)  # air drawn past the skin must not go negative
    return AnatomyResult(canvas, lesions=[], field_mm=pen.field())
