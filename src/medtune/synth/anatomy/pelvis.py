"""AP pelvis radiographs: hip bones, sacrum and lower lumbar spine, both proximal femurs.

Shapes are laid out in a pelvis frame: millimetres for an average adult, origin on the midline at
the height of the femoral head centres, x toward the image right (the patient's left), y down.
Each half (hip bone and femur) is drawn once, for the image right, and mirrored for the other
side, so the patient's right femur lands on the image left as the display convention wants.

Sex shapes the pelvis as anatomy books describe it, with overlap between individuals so that it
is learnable but not trivial: the female pelvis is wider (hip joints further apart, flared iliac
wings) and shallower (lower crests, shorter sacrum and symphysis), with a round inlet, a
subpubic angle over 80 degrees and triangular obturator foramina; the male pelvis is narrower and
taller, with a heart-shaped inlet (the sacral promontory juts into it), a subpubic angle about
60 degrees and oval obturator foramina.

Femoral necks and shafts and the pubic rami go through `Canvas.bone` (named "right femoral
neck", "left superior pubic ramus"...), so the fracture step can cut through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.bones import BoneKit, Pose, centred_pose
from medtune.synth.anatomy.soft import SoftLayer, field_box, soft_tissue
from medtune.synth.canvas import AIR, SOFT_TISSUE, Canvas, ellipse_outline, round_corners

FIELD_MM = (430.0, 350.0)  # detector field (width, height) an average pelvis needs
HEADS_BELOW_CENTRE = 25.0  # femoral head centres sit this far below the field centre, mm
JITTER = 0.025  # placement jitter, fraction of the canvas
TILT_DEG = 2.0  # standard deviation of the in-plane rotation
BODY_DEPTH = 200.0  # antero-posterior soft tissue at the hips, habitus 1 (180-260 with habitus)
SHAFT_TILT = 0.14  # femoral shafts converge toward the knees: ~8 degrees from vertical
NECK_LENGTH = 55.0  # head centre to the shaft axis, along the neck
VERTEBRA_GAP = 10.0  # lumbar disc height
SYMPHYSIS_HALF_GAP = 2.5  # half the width of the symphysis pubis joint space


@dataclass(frozen=True)
class _PelvisShape:
    """Sex-dependent proportions (mm, average adult of that sex at body_scale 1) and jitter."""

    head_x: float  # midline to femoral head centre
    head_r: float  # femoral head radius
    crest_x: float  # midline to the most lateral point of the iliac crest
    crest_y: float  # height of the crest top above the head centres (negative: up)
    inlet_x: float  # half the transverse diameter of the pelvic inlet
    heart: float  # 1 heart-shaped inlet (male) .. 0 round (female)
    subpubic_deg: float  # angle between the inferior pubic rami
    oval: float  # 1 oval obturator foramen (male) .. 0 triangular (female)
    symphysis_y: float  # centre of the symphysis below the head centres
    symphysis_h: float  # height of the symphysis
    sacrum_w: float  # half-width of the sacral base
    sacrum_h: float  # height of the sacrum in projection
    neck_shaft_deg: float

    @classmethod
    def draw(cls, subject: Subject, rng: np.random.Generator) -> _PelvisShape:
        """A pelvis for ``subject``: proportions of its sex, each varied on its own."""
        female = subject.sex == "F"

        def vary(male: float, fem: float, sd: float = 0.03) -> float:
            """A size, varied by ``sd`` (relative): individuals overlap, as real pelves do."""
            return (fem if female else male) * float(rng.normal(1.0, sd))

        def shade(male: float, fem: float) -> float:
            """A 0..1 shape trait, blurred between the sexes."""
            return float(np.clip((fem if female else male) + rng.normal(0.0, 0.15), 0.0, 1.0))

        return cls(
            head_x=vary(86.0, 92.0),
            head_r=vary(25.0, 22.5, 0.03),
            crest_x=vary(128.0, 140.0),
            crest_y=-vary(155.0, 135.0),
            inlet_x=vary(57.0, 68.0),
            heart=shade(0.9, 0.1),
            subpubic_deg=vary(60.0, 92.0, 0.05),
            oval=shade(0.9, 0.1),
            symphysis_y=vary(38.0, 31.0, 0.05),
            symphysis_h=vary(40.0, 34.0, 0.05),
            sacrum_w=vary(50.0, 55.0),
            sacrum_h=vary(100.0, 88.0),
            neck_shaft_deg=float(rng.normal(130.0, 4.0)),
        )


def _place(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> Pose:
    """The pelvis frame: field centred on the canvas, head centres a little below the middle."""
    below = HEADS_BELOW_CENTRE * subject.body_scale
    return centred_pose(canvas, subject.body_scale, rng, JITTER, TILT_DEG, below_mm=below)


def _body_outline(subject: Subject, shape: _PelvisShape, reach: float) -> np.ndarray:
    """Skin of the abdomen, hips and upper thighs, wider with habitus; closed off-field."""
    fat = 45.0 * (subject.habitus - 1.0)  # mm added to each flank per unit of habitus
    hips = shape.crest_x + 45.0 + fat  # widest at the trochanters and buttocks
    half = [
        (hips - 12, -reach), (hips - 8, -150), (hips - 2, -90), (hips + 8, -20), (hips + 12, 30),
        (hips + 6, 90), (hips - 6, 150), (hips - 14, reach),
    ]  # fmt: skip
    right = np.asarray(half, np.float32)
    left = right[::-1] * np.array([-1.0, 1.0], np.float32)
    return round_corners(np.concatenate([right, left]))


def _soft_tissue(canvas: Canvas, pose: Pose, subject: Subject, shape: _PelvisShape) -> np.ndarray:
    """Abdomen and hips: a thick rounded slab; returns the skin outline (canvas mm)."""
    reach = canvas.height_mm / pose.scale + 80.0  # past the canvas, top and bottom
    skin = pose.xy(_body_outline(subject, shape, reach))
    depth = BODY_DEPTH * subject.habitus**0.9 * pose.scale
    soft_tissue(canvas, [SoftLayer(skin, depth, SOFT_TISSUE, 90.0 * pose.scale)])
    return skin


def _bowel_gas(canvas: Canvas, kit: BoneKit, pose: Pose, rng: np.random.Generator) -> None:
    """Gas in the colon over the iliac wings and sacrum: a few pockets and mottled stool."""
    air = AIR - SOFT_TISSUE
    s = pose.scale
    for _ in range(int(rng.integers(3, 8))):  # gas-filled colon segments
        x, y = rng.uniform(-120, 120), rng.uniform(-175, -40)
        rx, ry = rng.uniform(10, 24), rng.uniform(6, 14)
        c = pose.xy([(x, y)])[0]
        depth, angle = rng.uniform(15, 35) * s, pose.angle(rng.uniform(-40, 40))
        canvas.ellipsoid(c[0], c[1], rx * s, ry * s, depth, air, angle)
    for _ in range(int(rng.integers(1, 4))):  # stool: clusters of small bubbles
        centre = (rng.uniform(-110, 110), rng.uniform(-165, -50))
        kit.spots(pose, centre + rng.normal(0.0, 12.0, (12, 2)), rng.uniform(1.5, 4.0, 12), air)


# Sacrum outline in units of (half-width of the base, height), origin mid-base (S1 endplate).
SACRUM = [
    (-1.04, 0.06), (-0.84, -0.01), (-0.5, -0.03), (0, -0.04), (0.5, -0.03), (0.84, -0.01),
    (1.04, 0.06), (1.0, 0.23), (0.88, 0.44), (0.68, 0.65), (0.44, 0.83), (0.24, 0.96),
    (0, 1.0), (-0.24, 0.96), (-0.44, 0.83), (-0.68, 0.65), (-0.88, 0.44), (-1.0, 0.23),
]  # fmt: skip


def _vertebra(kit: BoneKit, pose: Pose, y: float, half_w: float, half_h: float) -> None:
    """A lumbar vertebra seen AP: the body, and behind it the pedicles seen end-on (the 'eyes'),
    transverse processes and the spinous process, whose dense outlines add to the body."""
    w, h = half_w, half_h
    body = [
        (-w, -h),
        (0, -h + 1.5),
        (w, -h),
        (w - 2, 0),
        (w, h),
        (0, h - 1.5),
        (-w, h),
        (-w + 2, 0),
    ]
    bone = kit.union(pose)
    bone.plate(np.asarray(body, np.float32) + np.float32([0, y]), 35, 8, 1.6)
    bone.add()
    for side in (-1.0, 1.0):
        kit.line(pose, ellipse_outline(side * (w - 9), y - 0.3 * h, 5, 7.5, n=12), 1.3, 4.0)
        tip = (side * (w + 24), y - 0.45 * h - 3)
        kit.line(pose, [(side * (w - 4), y - 0.3 * h), tip], 5.0, 1.2)  # transverse process
    kit.line(pose, ellipse_outline(0, y + 0.45 * h, 4, 9, n=12), 1.3, 3.0)  # spinous process


def _sacrum(kit: BoneKit, pose: Pose, shape: _PelvisShape, top: float) -> None:
    """Sacrum below the L5/S1 disc, with the dark hints of its foramina, and the coccyx."""
    w, h = shape.sacrum_w, shape.sacrum_h
    bone = kit.union(pose)
    bone.plate(np.asarray(SACRUM, np.float32) * np.float32([w, h]) + np.float32([0, top]), 26, 12)
    bone.add()
    levels = np.arange(4)
    coccyx = np.stack([0 * levels, top + h + 5 + 8 * levels], 1)  # segments get smaller
    kit.spots(pose, coccyx, 6.0 - 0.8 * levels, 0.8 * kit.density)
    # Sacral foramina: four pairs of holes through the bone, smaller downward.
    x, y = (0.46 - 0.06 * levels) * w, top + (0.2 + 0.19 * levels) * h
    holes = np.concatenate([np.stack([x, y], 1), np.stack([-x, y], 1)])
    kit.spots(pose, holes, np.tile(6.0 - 0.7 * levels, 2), -0.9 * kit.density)
    kit.line(pose, [(0, top + 0.12 * h), (0, top + 0.85 * h)], 1.5, 1.0)  # median crest
    for side in (-1.0, 1.0):  # sacroiliac joints: the two bones' edges, seen obliquely
        joint = np.asarray(SACRUM[6:10], np.float32) * np.float32([side * w, h])
        kit.line(pose, joint + np.float32([0, top]), 1.2, 1.5)


def _spine(kit: BoneKit, pose: Pose, shape: _PelvisShape) -> float:
    """L4, L5 and the sacrum; returns the height of the sacral base (S1 endplate)."""
    top = shape.crest_y + 45.0  # the crests reach about the L4/L5 disc
    y = top - VERTEBRA_GAP - 14.0
    _vertebra(kit, pose, y, 27.0, 14.0)  # L5: wide, with stout transverse processes
    _vertebra(kit, pose, y - 28.0 - VERTEBRA_GAP, 25.0, 14.0)  # L4
    _sacrum(kit, pose, shape, top)
    return top


def _wing(shape: _PelvisShape, top: float) -> np.ndarray:
    """Iliac wing (image-right half), a fan: the sacroiliac joint, the crest, the anterior
    spines above the hip, the acetabular roof, the greater sciatic notch."""
    cx, cy, hx, r = shape.crest_x, shape.crest_y, shape.head_x, shape.head_r
    return np.asarray(
        [
            (38, top - 18), (55, cy + 22), (80, cy + 3), (105, cy), (cx - 8, cy + 16),
            (cx, cy + 40), (cx - 6, cy + 62), (cx - 20, cy + 80), (cx - 22, cy + 94),
            (hx + r + 4, -r - 8), (hx + 10, -8), (hx - 14, -6), (hx - 30, -r - 12),
            (58, top + 74), (38, top + 72), (33, top + 40), (35, top + 10),
        ],
        np.float32,
    )  # fmt: skip


def _acetabulum(shape: _PelvisShape) -> np.ndarray:
    """The thick bone around the hip socket: the roof above the head, the columns in front and
    behind running down to the pubis and ischium, the quadrilateral plate medially."""
    hx, r = shape.head_x, shape.head_r
    rim = ellipse_outline(hx - 4, -4, r + 14, r + 16, 180, 360, n=9)  # roof, wider than the head
    below = [
        (hx + 0.6 * r, 0.4 * r),
        (hx + 0.1 * r, r + 8),
        (hx - 0.6 * r, r + 10),
        (hx - r - 12, 8),
    ]
    return np.concatenate([rim, np.asarray(below, np.float32)])


def _bowed(p0: np.ndarray, p1: np.ndarray, away: np.ndarray, bow: float) -> np.ndarray:
    """Three points from p0 to p1, the middle pushed ``bow`` mm away from point ``away``."""
    mid = 0.5 * (p0 + p1)
    n = np.array([p1[1] - p0[1], p0[0] - p1[0]], np.float32)
    n /= np.linalg.norm(n) + 1e-6
    if n @ (mid - away) < 0:
        n = -n
    return np.stack([p0, mid + bow * n, p1])


def _obturator_ring(shape: _PelvisShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre lines of the superior ramus, inferior ramus and ischium around the obturator
    foramen. Straight rami make the female triangle; bowed ones the male oval."""
    hx, r, sy, sh = shape.head_x, shape.head_r, shape.symphysis_y, shape.symphysis_h
    half_angle = np.deg2rad(shape.subpubic_deg / 2)
    start = np.array([12.0, sy + sh / 2 - 8], np.float32)  # below the symphysis
    end = start + 42.0 * np.array([np.sin(half_angle), np.cos(half_angle)], np.float32)
    top_in, top_out = np.array([22.0, sy - sh / 2 + 8]), np.array([hx - r + 2, 0.0])
    acetabulum = np.array([hx - 8, r + 6], np.float32)
    centre = (start + end + top_in + top_out + acetabulum) / 5  # inside the foramen
    bow = 8.0 * shape.oval
    return (
        _bowed(top_in, top_out, centre, 0.5 * bow),
        _bowed(start, end, centre, 0.6 * bow),
        _bowed(end, acetabulum, centre, bow),
    )


def _pubic_body(shape: _PelvisShape) -> np.ndarray:
    """Body of the pubis beside the symphysis (image-right half)."""
    sy, h, g = shape.symphysis_y, shape.symphysis_h / 2, SYMPHYSIS_HALF_GAP
    pts = [
        (g, sy - h), (20, sy - h - 2), (34, sy - h + 6), (36, sy), (28, sy + h - 4),
        (14, sy + h + 2), (g, sy + h),
    ]  # fmt: skip
    return np.asarray(pts, np.float32)


def _inlet_brim(shape: _PelvisShape, top: float) -> np.ndarray:
    """The pelvic brim from the sacral ala to the pubic crest (arcuate, iliopectineal lines).

    A heart-shaped inlet is widest at the back and narrows to a point in front; a round one
    keeps its width forward.
    """
    w, heart = shape.inlet_x, shape.heart
    mid = 0.5 * (top + shape.symphysis_y)
    pubic = shape.symphysis_y - shape.symphysis_h / 2
    return np.asarray(
        [
            (0.72 * shape.sacrum_w, top + 6), (0.9 * w, top + 24 - 8 * heart),
            (w, mid - 12 * heart), (0.96 * w, mid + 20), ((0.8 - 0.2 * heart) * w, pubic - 14),
            (24, pubic + 1),
        ],
        np.float32,
    )  # fmt: skip


def _hip_bone(kit: BoneKit, half: Pose, shape: _PelvisShape, top: float, side: str) -> None:
    """One hip bone (image-right frame): ilium, acetabulum, pubis and ischium, their lines."""
    hx, r = shape.head_x, shape.head_r
    superior, inferior, ischium = _obturator_ring(shape)
    bone = kit.union(half)
    bone.plate(_wing(shape, top), depth=24, edge_mm=9, cortex_mm=1.5)  # thin, seen obliquely
    bone.plate(_acetabulum(shape), depth=34, edge_mm=14, cortex_mm=1.6)
    bone.plate(_pubic_body(shape), depth=32, edge_mm=9, cortex_mm=1.6)
    bone.shaft(f"{side} superior pubic ramus", superior, [9.0, 10.0, 12.5])
    bone.shaft(f"{side} inferior pubic ramus", inferior, [7.5, 8.0, 9.5])
    bone.rod(ischium, [12.0, 13.0, 15.0])
    tuber = ischium[0] + np.float32([4, 2])
    bone.shell(float(tuber[0]), float(tuber[1]), 13, 11, 30, cortex_mm=2.0)  # ischial tuberosity
    bone.add()
    # Bone seen edge-on along a line projects as a dense line: crest, brim, roof, teardrop.
    kit.line(half, round_corners(_wing(shape, top)[:7], 2, closed=False), 2.5, 1.5)
    kit.line(half, round_corners(_inlet_brim(shape, top), 2, closed=False), 2.0, 2.5)
    kit.line(half, ellipse_outline(hx, 0, r + 3.5, r + 3.5, 200, 335, n=10), 1.6, 5.0)  # roof
    kit.line(half, ellipse_outline(hx - r - 5, 12, 4.5, 11, 0, 360, n=14), 1.2, 3.0)  # teardrop
    wall = [(hx + 0.85 * r, -0.45 * r), (hx + 0.6 * r, 0.55 * r), (hx - 0.1 * r, r)]
    kit.line(half, wall, 1.2, 2.0)  # posterior acetabular wall over the head


def _femur(kit: BoneKit, half: Pose, shape: _PelvisShape, side: str, down: float) -> None:
    """Proximal femur (image-right frame): head, neck, trochanters, shaft."""
    hx, r = shape.head_x, shape.head_r
    shaft_dir = np.array([-SHAFT_TILT, 1.0], np.float32) / np.hypot(SHAFT_TILT, 1.0)
    # The neck leaves the shaft at the neck-shaft angle, up and in toward the head.
    a = np.arctan2(shaft_dir[1], shaft_dir[0]) + np.deg2rad(shape.neck_shaft_deg)
    u = -np.array([np.cos(a), np.sin(a)], np.float32)  # from the head down the neck
    head = np.array([hx, 0.0], np.float32)
    base = head + NECK_LENGTH * u  # where the neck axis meets the shaft axis
    bone = kit.union(half)
    bone.shell(hx, 0, r, r, 2 * r, cortex_mm=1.8)
    neck = [head + 6 * u, head + 30 * u, base]
    bone.shaft(f"{side} femoral neck", neck, [0.7 * r, 0.62 * r, 0.85 * r])
    # Intertrochanteric block with the greater trochanter on its lateral top (frame: neck base).
    trochanters = [
        (-10, -16), (8, -26), (20, -36), (32, -30), (36, -12), (30, 18), (20, 40), (-12, 40),
        (-22, 30), (-18, 8),
    ]  # fmt: skip
    fade = [base + 36 * shaft_dir, base + 12 * shaft_dir]  # merge into the narrower shaft
    bone.plate(np.asarray(trochanters, np.float32) + base, 38, 13, 1.8, fade=fade)
    lesser = base + np.float32([-18, 32])
    bone.shell(float(lesser[0]), float(lesser[1]), 8, 11, 16, cortex_mm=1.4)  # lesser trochanter
    length = (down - base[1]) / shaft_dir[1]
    shaft = [base + 20 * shaft_dir, base + 90 * shaft_dir, base + length * shaft_dir]
    bone.shaft(f"{side} femoral shaft", shaft, [17.0, 15.0, 14.0])
    bone.add()


@register_anatomy(Anatomy.PELVIS, views=("AP",), field_mm=FIELD_MM)
def render_pelvis(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw an AP pelvis radiograph at true scale, centred on ``canvas``.

    ``findings`` may hold FRACTURE; it is cut in later through the recorded bones (femoral
    necks and shafts, superior and inferior pubic rami, each "left" or "right"), so nothing is
    drawn for it here. The pelvis has no laterality: both sides are drawn.
    """
    del findings
    if view != "AP":
        raise ValueError(f"pelvis view must be AP, not {view!r}")
    shape = _PelvisShape.draw(subject, rng)
    pose = _place(canvas, subject, rng)
    kit = BoneKit(canvas, subject.bone_density, rng)
    skin = _soft_tissue(canvas, pose, subject, shape)
    _bowel_gas(canvas, kit, pose, rng)
    top = _spine(kit, pose, shape)
    down = (canvas.height_mm - pose.cy) / pose.scale + 60.0  # past the canvas bottom
    mirrored = Pose(pose.cx, pose.cy, pose.scale, pose.angle_deg, -1.0)
    # The frame's +x is the image right: the patient's left side.
    for half, side in ((pose, "left"), (mirrored, "right")):
        _hip_bone(kit, half, shape, top, side)
        _femur(kit, half, shape, side, down)
    kit.finish()
    return AnatomyResult(canvas, lesions=[], field_mm=field_box(canvas, skin))
