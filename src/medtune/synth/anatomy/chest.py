"""Chest radiographs: PA, AP (portable) and lateral, with the five chest findings.

The thorax is built from projected-thickness shapes: a soft-tissue torso, two air-filled lungs
(darkest where they are deepest), the heart and mediastinum filling the middle, ribs as hollow
tubes (posterior arcs bright, anterior arcs fainter), clavicles, scapulae, spine, vessels fanning
out of the hila, and breast shadows in women. PA and AP differ as they do in practice: on an AP
film the heart is magnified, the scapulae overlie the lungs, the clavicles ride higher, lung
volumes are lower and monitoring leads are often on the chest. On the lateral the spine is at the
back (image right), the sternum and heart in front (image left).

Sizes are adult-male millimetres, scaled by ``subject.body_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medtune.config import CHEST_FINDINGS, Anatomy, Finding
from medtune.synth.anatomy import chest_findings
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.canvas import CORTEX, LUNG, SOFT_TISSUE, Canvas, ellipse_outline

THORAX_HALF_WIDTH = 150.0  # mm, inner rib cage at its widest
LUNG_HEIGHT = 250.0  # mm, apex to costophrenic angle at full inspiration
LUNG_DEPTH = 160.0  # mm of air along the ray through the thickest part of one lung (PA)
TORSO_DEPTH = 230.0  # mm, antero-posterior soft-tissue thickness
HEART_WIDTH = 135.0  # mm, normal: cardiothoracic ratio about 0.45
AIR_IN_LUNG = LUNG - SOFT_TISSUE  # a lung replaces soft tissue with 0.3-density parenchyma

SIDES = ("right", "left")  # patient sides


@dataclass
class ChestGeometry:
    """Where the main structures are, so findings can be placed inside them."""

    view: str
    cx: float  # mm, midline (frontal) or mid-depth (lateral)
    s: float  # body scale
    y_apex: float
    y_cp: dict[str, float]  # costophrenic angle height per patient side
    x_lung_wall: dict[str, float] = field(default_factory=dict)  # frontal: lateral lung edge
    lungs: dict[str, np.ndarray] = field(default_factory=dict)  # polygons (mm)
    lung_masks: dict[str, np.ndarray] = field(default_factory=dict)
    hila: dict[str, tuple[float, float]] = field(default_factory=dict)
    heart: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cx, cy, rx, ry (mm)
    anterior_x: float = 0.0  # lateral view: front and back of the lungs
    posterior_x: float = 0.0
    air: np.ndarray | None = None  # lung air (negative thickness), before organs displace it

    def image_sign(self, side: str) -> float:
        """-1 if the patient side is on the image left (the right side in frontal views)."""
        return -1.0 if side == "right" else 1.0


@register_anatomy(
    Anatomy.CHEST, views=("PA", "AP", "LAT"), field_mm=(380.0, 420.0), findings=CHEST_FINDINGS
)
def render_chest(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a chest radiograph in ``view`` (PA, AP or LAT) with the requested findings."""
    if view == "LAT":
        geometry = _lateral(canvas, subject, findings, rng)
    else:
        geometry = _frontal(canvas, subject, view, findings, rng)
    lesions = chest_findings.draw(canvas, geometry, findings, rng)
    x0 = geometry.cx - (THORAX_HALF_WIDTH + 60) * geometry.s
    x1 = geometry.cx + (THORAX_HALF_WIDTH + 60) * geometry.s
    y0 = geometry.y_apex - 60 * geometry.s
    y1 = max(geometry.y_cp.values()) + 50 * geometry.s
    return AnatomyResult(canvas, lesions, (x0, y0, x1, y1))


# ---------------------------------------------------------------------------------------------
# Frontal views (PA and AP).


def _frontal(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> ChestGeometry:
    s = subject.body_scale
    portable = view == "AP"
    # Portable AP films are taken in bed: shallower inspiration, more rotation and off-centring.
    inspiration = rng.uniform(0.82, 0.95) if portable else rng.uniform(0.92, 1.04)
    cx = canvas.width_mm / 2 + rng.normal(0, 0.02 if not portable else 0.04) * canvas.width_mm
    y_apex = canvas.height_mm / 2 - 0.52 * LUNG_HEIGHT * s + rng.normal(0, 0.02) * canvas.height_mm
    lung_h = LUNG_HEIGHT * s * inspiration
    y_cp = {"right": y_apex + lung_h, "left": y_apex + lung_h + rng.uniform(5, 18) * s}
    geo = ChestGeometry(view, cx, s, y_apex, y_cp)
    half_w = THORAX_HALF_WIDTH * s * rng.uniform(0.95, 1.05)

    _torso(canvas, geo, half_w, subject, rng)
    geo.air = np.zeros_like(canvas.att)
    for side in SIDES:
        _lung(canvas, geo, side, half_w, rng)
    _mediastinum(canvas, geo, subject, findings, portable, rng)
    canvas.att += geo.air
    markings = np.zeros_like(canvas.att)
    for side in SIDES:
        _vessels(canvas, geo, side, markings, rng)
    geo_markings_clip(canvas, geo, markings, findings)
    _ribs(canvas, geo, half_w, subject, rng)
    _shoulder_girdle(canvas, geo, subject, portable, rng)
    if subject.sex == "F":
        _breasts(canvas, geo, subject, rng)
    if portable and rng.random() < 0.6:
        _monitoring_leads(canvas, geo, rng)
    return geo


def _torso(
    canvas: Canvas, geo: ChestGeometry, half_w: float, subject: Subject, rng: np.random.Generator
) -> None:
    s, cx, top = geo.s, geo.cx, geo.y_apex
    bottom = canvas.height_mm + 40
    wall = half_w + 28 * s * subject.habitus
    right = [
        (cx + 55 * s, top - 120 * s),  # neck
        (cx + 70 * s, top - 60 * s),
        (cx + 175 * s, top - 45 * s),  # shoulder
        (cx + 215 * s, top - 10 * s),
        (cx + 205 * s, top + 60 * s),  # upper arm against the chest
        (cx + wall, top + 0.55 * LUNG_HEIGHT * s),
        (cx + wall * 1.02, geo.y_cp["left"]),
        (cx + wall * 1.05, bottom),
    ]
    left = [(2 * cx - x, y) for x, y in reversed(right)]
    outline = np.array([*right, *left], np.float32)
    depth = TORSO_DEPTH * s * subject.habitus
    canvas.slab(outline, depth, SOFT_TISSUE, edge_mm=70 * s)


def _lung_outline(geo: ChestGeometry, side: str, half_w: float) -> np.ndarray:
    sign, s, cx = geo.image_sign(side), geo.s, geo.cx
    top, cp = geo.y_apex, geo.y_cp[side]
    apex_x = 52 * s
    wall_x = half_w * 0.97
    t = np.linspace(0.0, 1.0, 14, dtype=np.float32)
    # Lateral wall: round at the apex, nearly straight lower down.
    lateral = np.stack(
        [
            cx + sign * (apex_x + (wall_x - apex_x) * np.sin(t * np.pi / 2) ** 0.6),
            top + (cp - top) * t,
        ],
        axis=1,
    )
    # Hemidiaphragm: a dome from the costophrenic angle to the cardiophrenic angle.
    v = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    dome = 32 * s
    medial_x = 28 * s
    dia_x = cx + sign * (wall_x + (medial_x - wall_x) * v)
    dia_y = cp - dome * np.maximum(np.sin(np.pi * np.clip(v * 1.15, 0, 1)), 0) ** 0.8 - 12 * s * v
    diaphragm = np.stack([dia_x, dia_y], axis=1)
    medial = np.array(
        [[cx + sign * 24 * s, top + 0.55 * (cp - top)], [cx + sign * 20 * s, top + 30 * s]],
        np.float32,
    )
    geo.x_lung_wall[side] = float(cx + sign * wall_x)
    return np.concatenate([lateral, diaphragm[1:], medial], axis=0)


def _lung(
    canvas: Canvas, geo: ChestGeometry, side: str, half_w: float, rng: np.random.Generator
) -> None:
    outline = _lung_outline(geo, side, half_w)
    geo.lungs[side] = outline
    depth = LUNG_DEPTH * geo.s * rng.uniform(0.92, 1.08)
    mask = canvas.slab(outline, depth, AIR_IN_LUNG, edge_mm=45 * geo.s, target=geo.air)
    geo.lung_masks[side] = mask if mask is not None else np.zeros_like(canvas.att, bool)
    sign = geo.image_sign(side)
    # Hila: the right sits a little lower than the left.
    hilum_y = geo.y_apex + (0.47 if side == "right" else 0.42) * (geo.y_cp[side] - geo.y_apex)
    geo.hila[side] = (geo.cx + sign * 48 * geo.s, hilum_y)


def _mediastinum(
    canvas: Canvas,
    geo: ChestGeometry,
    subject: Subject,
    findings: Mapping[Finding, LesionSeed],
    portable: bool,
    rng: np.random.Generator,
) -> None:
    s, cx, top = geo.s, geo.cx, geo.y_apex
    # Trachea and main bronchi: air columns in the upper mediastinum.
    carina = (cx + 2 * s, top + 75 * s)
    canvas.tube([(cx, top - 90 * s), carina], 8 * s, density=0.0, displaces=SOFT_TISSUE)
    occupied = np.zeros_like(canvas.att)  # 0..1: how much of the lung air an organ displaces
    for side in SIDES:
        hx, hy = geo.hila[side]
        canvas.tube(
            [carina, (hx * 0.6 + cx * 0.4, hy)], 5.5 * s, density=0.0, displaces=SOFT_TISSUE
        )
        canvas.ellipsoid(hx, hy, 13 * s, 24 * s, 0.35, 1.0, target=occupied)  # hilar vessels
    # Aortic knob at the upper left border; it unfolds and grows with age.
    age_factor = 1.0 + max(subject.age - 40, 0) / 120
    canvas.ellipsoid(
        cx + 26 * s * age_factor,
        top + 55 * s,
        13 * s * age_factor,
        13 * s,
        0.8,
        1.0,
        target=occupied,
    )
    # Heart: right atrium and left ventricle; enlarged with cardiomegaly, magnified on AP.
    width = HEART_WIDTH * s * rng.uniform(0.9, 1.08)
    if Finding.CARDIOMEGALY in findings:
        width *= 1.32 + 0.18 * findings[Finding.CARDIOMEGALY].at(0)
    if portable:
        width *= 1.12
    base_y = geo.y_cp["right"] - 30 * s
    lv = (cx + 0.17 * width, base_y - 0.28 * width, 0.50 * width, 0.36 * width)
    ra = (cx - 0.16 * width, base_y - 0.30 * width, 0.26 * width, 0.34 * width)
    great_vessels = (cx + 0.02 * width, base_y - 0.75 * width, 0.2 * width, 0.4 * width)
    canvas.ellipsoid(*lv, depth=1.5, density=1.0, angle_deg=-20, target=occupied)
    canvas.ellipsoid(*ra, depth=1.3, density=1.0, target=occupied)
    canvas.ellipsoid(*great_vessels, depth=1.0, density=1.0, target=occupied)
    geo.heart = (cx + 0.15 * width, base_y - 0.32 * width, 0.5 * width, 0.4 * width)
    # Descending aorta behind the heart.
    canvas.tube(
        [(cx + 30 * s, top + 60 * s), (cx + 22 * s, geo.y_cp["left"])],
        11 * s,
        density=0.04,
        displaces=0.0,
        target=occupied,
    )
    # Some lung stays in front of and behind the heart, so it never displaces all the air.
    assert geo.air is not None
    geo.air *= 1.0 - np.minimum(occupied, 0.85)
    _thoracic_spine(canvas, geo, subject)


def _thoracic_spine(canvas: Canvas, geo: ChestGeometry, subject: Subject) -> None:
    s, cx = geo.s, geo.cx
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density * 0.25
    y = geo.y_apex - 40 * s
    step = (geo.y_cp["right"] - y + 20 * s) / 12
    for _ in range(12):
        canvas.ellipsoid(cx, y + step * 0.45, 19 * s, step * 0.42, 22 * s, bone - 1.0)
        for sign in (-1, 1):  # pedicles
            canvas.ellipsoid(cx + sign * 14 * s, y + step * 0.35, 3.5 * s, 5 * s, 8 * s, bone - 1.0)
        y += step


def _vessels(
    canvas: Canvas, geo: ChestGeometry, side: str, target: np.ndarray, rng: np.random.Generator
) -> None:
    """Pulmonary vessels: tapering branches fanning from the hilum toward the lung edges."""
    hx, hy = geo.hila[side]
    sign = geo.image_sign(side)
    polylines, radii = [], []
    for _ in range(26):
        # Angles from up (-80 deg) through lateral (0) to down (+85 deg), on this side.
        angle = np.deg2rad(rng.uniform(-80, 85))
        length = rng.uniform(60, 135) * geo.s
        points = [(hx, hy)]
        direction = np.array([sign * np.cos(angle), np.sin(angle)])
        for _ in range(3):
            direction = direction + rng.normal(0, 0.18, 2)
            direction /= np.linalg.norm(direction)
            x, y = points[-1]
            points.append((x + direction[0] * length / 3, y + direction[1] * length / 3))
        polylines.append(np.array(points))
        radii.append(np.array([3.0, 2.0, 1.2, 0.6]) * geo.s * rng.uniform(0.8, 1.2))
    canvas.lines(polylines, radii, density=SOFT_TISSUE, displaces=LUNG, target=target)


def geo_markings_clip(
    canvas: Canvas,
    geo: ChestGeometry,
    markings: np.ndarray,
    findings: Mapping[Finding, LesionSeed],
) -> None:
    """Add the vessel layer only inside the lungs (and not in a pneumothorax)."""
    inside = geo.lung_masks["right"] | geo.lung_masks["left"]
    if Finding.PNEUMOTHORAX in findings:
        inside &= ~chest_findings.pneumothorax_region(canvas, geo, findings[Finding.PNEUMOTHORAX])
    canvas.att += np.where(inside, markings, 0.0).astype(np.float32)


def _rib_points(geo: ChestGeometry, sign: float, k: int, half_w: float, y0: float) -> np.ndarray:
    s, cx = geo.s, geo.cx
    w = half_w
    drop = k * 2.0 * s  # lower ribs slope more steeply
    return np.array(
        [
            (cx + sign * 16 * s, y0),
            (cx + sign * 48 * s, y0 - 7 * s),
            (cx + sign * 0.62 * w, y0 - 2 * s + drop * 0.3),
            (cx + sign * 0.93 * w, y0 + 20 * s + drop),
            (cx + sign * 1.02 * w, y0 + 48 * s + drop * 1.5),  # lateral turn
            (cx + sign * 0.88 * w, y0 + 78 * s + drop * 2),
            (cx + sign * 0.55 * w, y0 + 100 * s + drop * 2.5),
            (cx + sign * 0.30 * w, y0 + 110 * s + drop * 2.8),  # anterior end (cartilage beyond)
        ],
        np.float32,
    )


def _ribs(
    canvas: Canvas, geo: ChestGeometry, half_w: float, subject: Subject, rng: np.random.Generator
) -> None:
    s = geo.s
    density = 1.0 + (CORTEX - 1.0) * subject.bone_density
    spacing = (geo.y_cp["right"] - geo.y_apex) / 9.6
    # Posterior arcs are thicker and denser than the anterior ones, which end in cartilage.
    radii = np.array([5.4, 5.4, 5.2, 5.0, 4.4, 3.4, 2.8, 2.4], np.float32) * s
    for sign in (-1.0, 1.0):
        for k in range(10):
            y0 = geo.y_apex - 10 * s + k * spacing + rng.normal(0, 1.2) * s
            points = _rib_points(geo, sign, k, half_w * (0.55 + 0.045 * min(k, 10)), y0)
            canvas.tube(
                points,
                radii,
                density=density,
                cortex=0.35 * subject.bone_density,
                displaces=SOFT_TISSUE,
            )


def _shoulder_girdle(
    canvas: Canvas, geo: ChestGeometry, subject: Subject, portable: bool, rng: np.random.Generator
) -> None:
    s, cx, top = geo.s, geo.cx, geo.y_apex
    lift = -14 * s if portable else 0.0  # clavicles project higher on AP films
    for sign in (-1.0, 1.0):
        clavicle = [
            (cx + sign * 20 * s, top - 22 * s + lift),
            (cx + sign * 70 * s, top - 30 * s + lift),
            (cx + sign * 140 * s, top - 50 * s + lift),
            (cx + sign * 180 * s, top - 44 * s + lift),
        ]
        canvas.tube(clavicle, 6.5 * s, density=1.0 + 1.9 * subject.bone_density, cortex=0.3)
        # Scapula: rotated off the lungs on PA (arms forward), over them on AP.
        shift = -40 * s if portable else 0.0
        scapula = [
            (cx + sign * (118 * s + shift), top - 25 * s),
            (cx + sign * (190 * s + shift * 0.3), top - 30 * s),
            (cx + sign * (165 * s + shift * 0.5), top + 130 * s),
        ]
        canvas.slab(scapula, 12 * s, 1.0 + 0.6 * subject.bone_density, edge_mm=12 * s)
        # Humeral head and upper shaft at the edge of the field.
        canvas.ellipsoid(
            cx + sign * 205 * s, top - 28 * s, 24 * s, 26 * s, 40 * s, 0.9 * subject.bone_density
        )
        canvas.tube(
            [(cx + sign * 207 * s, top - 10 * s), (cx + sign * 215 * s, top + 160 * s)],
            13 * s,
            density=1.0 + 1.9 * subject.bone_density,
            cortex=0.3,
        )


def _breasts(
    canvas: Canvas, geo: ChestGeometry, subject: Subject, rng: np.random.Generator
) -> None:
    s = geo.s
    size = rng.uniform(0.8, 1.25) * subject.habitus
    for sign in (-1.0, 1.0):
        x = geo.cx + sign * 95 * s
        y = geo.y_apex + 0.8 * LUNG_HEIGHT * s
        canvas.ellipsoid(x, y, 78 * s * size, 62 * s * size, 32 * s * size, SOFT_TISSUE)


def _monitoring_leads(canvas: Canvas, geo: ChestGeometry, rng: np.random.Generator) -> None:
    """ECG electrodes and their wires, common on portable films (a real-world shortcut)."""
    s = geo.s
    for _ in range(int(rng.integers(2, 5))):
        x = geo.cx + rng.uniform(-1, 1) * THORAX_HALF_WIDTH * s
        y = geo.y_apex + rng.uniform(0.0, 1.0) * LUNG_HEIGHT * s
        canvas.ellipsoid(x, y, 9 * s, 9 * s, 3, 8.0)  # snap button (metal)
        wire = [(x, y)]
        for _ in range(4):
            px, py = wire[-1]
            wire.append((px + rng.normal(0, 40) * s, py + rng.uniform(-60, -10) * s))
        canvas.tube(wire, 1.0 * s, density=6.0, displaces=0.0)


# ---------------------------------------------------------------------------------------------
# Lateral view: anterior to the image left, spine to the image right.


def _lateral(
    canvas: Canvas,
    subject: Subject,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> ChestGeometry:
    s = subject.body_scale
    cx = canvas.width_mm / 2 + rng.normal(0, 0.02) * canvas.width_mm
    y_apex = canvas.height_mm / 2 - 0.52 * LUNG_HEIGHT * s + rng.normal(0, 0.02) * canvas.height_mm
    lung_h = LUNG_HEIGHT * s * rng.uniform(0.92, 1.04)
    y_cp = {"right": y_apex + lung_h, "left": y_apex + lung_h + rng.uniform(5, 15) * s}
    geo = ChestGeometry("LAT", cx, s, y_apex, y_cp)
    depth_ap = 230 * s * (0.85 + 0.15 * subject.habitus)
    front, back = cx - depth_ap / 2, cx + depth_ap / 2
    geo.anterior_x, geo.posterior_x = front + 18 * s, back - 30 * s

    body = np.array(
        [
            (front + 30 * s, y_apex - 120 * s),
            (back - 10 * s, y_apex - 120 * s),
            (back + 5 * s, y_apex + 40 * s),
            (back + 10 * s, canvas.height_mm + 40),
            (front - 10 * s * subject.habitus, canvas.height_mm + 40),
            (front - 5 * s, y_apex + 0.6 * lung_h),
            (front + 5 * s, y_apex - 20 * s),
        ],
        np.float32,
    )
    canvas.slab(body, 330 * s * subject.habitus, SOFT_TISSUE, edge_mm=60 * s)
    # Arms raised in front of the face: soft tissue over the upper anterior chest.
    canvas.ellipsoid(
        front + 40 * s, y_apex - 40 * s, 50 * s, 85 * s, 55 * s, SOFT_TISSUE, angle_deg=-20
    )
    geo.air = np.zeros_like(canvas.att)
    _lateral_lungs(canvas, geo, rng)
    _lateral_mediastinum(canvas, geo, subject, findings, rng)
    return geo


def _lateral_lungs(canvas: Canvas, geo: ChestGeometry, rng: np.random.Generator) -> None:
    s, top = geo.s, geo.y_apex
    a, p = geo.anterior_x, geo.posterior_x
    for side, offset in (("right", 0.0), ("left", 6.0 * s)):
        cp = geo.y_cp[side]
        outline = np.concatenate(
            [
                ellipse_outline((a + p) / 2, top + 60 * s, (p - a) / 2, 70 * s, 180, 360, 16),
                [(p + offset, cp + 15 * s)],  # deep posterior costophrenic sulcus
                # Hemidiaphragm dome, from the back to the front.
                ellipse_outline((a + p) / 2 + offset, cp, (p - a) / 2, 45 * s, 0, -180, 16),
                [(a, cp - 35 * s)],
            ]
        )
        geo.lungs[side] = outline.astype(np.float32)
        mask = canvas.slab(outline, 125 * s, AIR_IN_LUNG, edge_mm=50 * s, target=geo.air)
        geo.lung_masks[side] = mask if mask is not None else np.zeros_like(canvas.att, bool)
        geo.hila[side] = ((a + p) / 2 + 5 * s, top + 0.45 * (cp - top))


def _lateral_mediastinum(
    canvas: Canvas,
    geo: ChestGeometry,
    subject: Subject,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> None:
    s, top = geo.s, geo.y_apex
    a, p = geo.anterior_x, geo.posterior_x
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density
    # Trachea running down and back.
    canvas.tube(
        [(a + 0.45 * (p - a), top - 80 * s), (a + 0.55 * (p - a), top + 80 * s)],
        9 * s,
        density=0.0,
        displaces=SOFT_TISSUE,
    )
    # Heart: anterior and inferior, touching the sternum's lower half.
    size = 1.0
    if Finding.CARDIOMEGALY in findings:
        size = 1.3 + 0.18 * findings[Finding.CARDIOMEGALY].at(0)
    hx = a + 0.33 * (p - a) * size**0.5
    hy = geo.y_cp["right"] - 62 * s * size
    occupied = np.zeros_like(canvas.att)
    canvas.ellipsoid(hx, hy, 58 * s * size, 64 * s * size, 1.6, 1.0, angle_deg=30, target=occupied)
    assert geo.air is not None
    geo.air *= 1.0 - np.minimum(occupied, 0.8)
    canvas.att += geo.air
    geo.heart = (hx, hy, 58 * s * size, 64 * s * size)
    # Sternum and spine.
    canvas.tube(
        [(a - 6 * s, top - 5 * s), (a - 2 * s, top + 150 * s)], 7 * s, density=bone, cortex=0.3
    )
    y = top - 40 * s
    step = (geo.y_cp["right"] - y + 30 * s) / 12
    spine_x = p + 12 * s
    for _ in range(12):
        body = [
            (spine_x - 17 * s, y + 1.5),
            (spine_x + 17 * s, y + 1.5),
            (spine_x + 17 * s, y + step - 3),
            (spine_x - 17 * s, y + step - 3),
        ]
        canvas.slab(body, 35 * s, bone - 1.0, edge_mm=12 * s)
        for edge_y in (y + 2.0, y + step - 4):  # dense end plates
            canvas.tube(
                [(spine_x - 16 * s, edge_y), (spine_x + 16 * s, edge_y)],
                1.6 * s,
                density=bone,
                displaces=SOFT_TISSUE,
            )
        canvas.tube(
            [(spine_x + 20 * s, y + step * 0.4), (spine_x + 45 * s, y + step * 0.9)],
            4 * s,
            density=bone,
            cortex=0.4,
        )  # posterior elements
        y += step
    # Posterior ribs of both sides, slightly offset (different magnification).
    for k in range(10):
        y0 = top + k * step * 0.95
        for offset in (0.0, 7.0 * s):
            canvas.tube(
                [
                    (spine_x, y0 + offset),
                    (p - 30 * s, y0 + 25 * s + offset),
                    (a + 0.5 * (p - a), y0 + 70 * s + offset),
                ],
                [4.5 * s, 4.0 * s, 3.0 * s],
                density=bone,
                cortex=0.35,
                displaces=SOFT_TISSUE,
            )
    markings = np.zeros_like(canvas.att)
    polylines, radii = [], []
    for side in SIDES:
        hx0, hy0 = geo.hila[side]
        for _ in range(16):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(50, 110) * s
            end = (hx0 + np.cos(angle) * length, hy0 + np.sin(angle) * length * 1.2)
            polylines.append(np.array([(hx0, hy0), end]))
            radii.append(np.array([2.4, 0.6]) * s)
    canvas.lines(polylines, radii, density=SOFT_TISSUE, displaces=LUNG, target=markings)
    geo_markings_clip(canvas, geo, markings, findings)
