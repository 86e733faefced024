"""Knee radiographs, AP and lateral: distal femur, proximal tibia and fibula, patella, soft tissue.

Every shape is laid out in a knee frame: millimetres for an average adult, origin at the middle
of the joint line, y down, x toward the lateral side (AP) or toward the front (LAT). A `Pose`
maps that frame onto the canvas with the subject's size, a little jitter and tilt, and the mirror
that the other knee needs. The frame is drawn for the LEFT knee: in the AP its lateral side (the
fibula) is on the image right; in the lateral view, seen from the lateral side of the knee that
lies on the detector (as lateral films are hung), its front is on the image left.

Bones are hollow (a dense cortex around marrow) so they show the bright rims of a radiograph.
An irregular bone is built from overlapping pieces merged as a union by `BoneUnion`, so its
condyles do not double in density where they meet the shaft. The tubular parts (femoral and
tibial shafts, fibula) go through `Canvas.bone`, which records them for the fracture step.
The building blocks (`Pose`, `BoneUnion`, `soft_tissue`...) are in :mod:`.bones` and :mod:`.soft`,
shared with the shoulder and pelvis renderers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.bones import BoneKit, BoneUnion, Pose, centred_pose
from medtune.synth.anatomy.soft import SoftLayer, field_box, soft_tissue
from medtune.synth.canvas import FAT, SOFT_TISSUE, Canvas, ellipse_outline, round_corners

# -- sizes of an average adult knee (mm) ------------------------------------------------------
FIELD_MM = (240.0, 300.0)  # detector field (width, height) an average knee needs
FEMUR_SHAFT_R = 14.0  # distal femoral diaphysis, outer radius
TIBIA_SHAFT_R = 13.0  # proximal tibial diaphysis
FIBULA_SHAFT_R = 6.0
JOINT_SPACE = 5.5  # radiographic joint space (two cartilage layers) in a healthy knee
KNEE_DEPTH = 112.0  # soft-tissue thickness of the knee along the beam, habitus 1
FEMUR_LENGTH = 420.0  # how far a shaft may run before it would end inside a large canvas
TIBIA_LENGTH = 360.0
JITTER = 0.03  # placement jitter, fraction of the canvas
TILT_DEG = 3.0  # standard deviation of the in-plane rotation
FAT_EXCESS = (FAT - SOFT_TISSUE) * 1.5  # fat pads a little darker than muscle, as on film

# Outlines in the knee frame (left knee; AP: +x lateral; LAT: +x anterior), mm.
FEMUR_AP = [
    (-12, -100), (-16, -80), (-18, -68), (-22, -56), (-28, -46), (-35, -38), (-40, -30),
    (-42, -22), (-42, -14), (-41, -8), (-39, -4), (-35, -1.2), (-29, 0), (-21, 0),
    (-15, -0.8), (-12, -3), (-10.5, -8), (-9.5, -14), (-7, -18), (0, -20), (7, -18),
    (9.5, -14), (10.5, -8), (12, -3), (15, -0.8), (21, 0), (29, 0), (35, -1.2), (39, -4),
    (41, -8), (42, -14), (42, -22), (40, -30), (35, -38), (28, -46), (22, -56), (18, -68),
    (16, -80), (12, -100),
]  # fmt: skip
# Lateral femur, frame origin at the centre of the condyles (a circle of CONDYLE_R): shaft,
# metaphysis flaring back into the condyles, condyles round below, trochlea in front.
CONDYLE_R = 24.0  # radius of a femoral condyle in the lateral view
FEMUR_LAT = np.concatenate(
    [
        [(-1, -100), (-6.5, -80), (-8, -68), (-11.5, -50), (-16, -34)],
        ellipse_outline(0, 0, CONDYLE_R, CONDYLE_R, 215, 10, n=24),
        [(26, -4), (28.5, -14), (28.5, -28), (27, -45), (25.5, -80), (20, -100)],
    ]
)
# Lateral tibia, frame origin where the femur meets the plateau; the plateau slopes back ~7 deg.
TIBIA_LAT = [
    (-28, 6), (-22, 2.5), (-10, 1.5), (-4, -3.5), (2, -3), (8, 0.5), (20, 1.5), (26, 3),
    (28, 9), (26, 18), (25, 25), (29, 33), (32, 42), (28, 53), (20, 68), (15, 100),
    (-9, 100), (-13, 65), (-17, 48), (-24, 32), (-29, 20), (-30, 12),
]  # fmt: skip


# -- the knee ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KneeShape:
    """What varies between knees: size of the condyles, joint spaces, arthritis, flexion."""

    width: float  # condylar width factor (1 = 80 mm bicondylar width)
    js_medial: float  # joint space, mm
    js_lateral: float
    arthritis: float  # 0 none .. 1 severe (narrowing, osteophytes, sclerosis)
    flexion_deg: float  # knee flexion in the lateral view

    @classmethod
    def draw(cls, subject: Subject, rng: np.random.Generator) -> KneeShape:
        """A knee for ``subject``: older knees are more often arthritic."""
        # Osteoarthritis grows common after 45 and is mostly medial (the load-bearing side).
        chance = float(np.clip((subject.age - 45.0) / 35.0, 0.0, 0.85))
        arthritis = float(rng.uniform(0.35, 1.0)) if rng.random() < chance else 0.0
        js = JOINT_SPACE * float(rng.uniform(0.9, 1.1))
        return cls(
            width=float(rng.normal(1.0, 0.03)),
            js_medial=max(js * (1.0 - 0.75 * arthritis), 0.8),
            js_lateral=(js + 0.6) * (1.0 - 0.2 * arthritis),
            arthritis=arthritis,
            flexion_deg=float(rng.uniform(20.0, 30.0)),
        )


@dataclass(frozen=True)
class _Scene:
    """What every drawing step of one render needs."""

    canvas: Canvas
    subject: Subject
    shape: KneeShape
    rng: np.random.Generator
    kit: BoneKit


def _widen(outline: list[tuple[float, float]], factor: float) -> np.ndarray:
    """Outline with x scaled by ``factor`` (a broader or narrower knee)."""
    return np.asarray(outline, np.float32) * np.array([factor, 1.0], np.float32)


def _reach(canvas: Canvas, pose: Pose) -> tuple[float, float]:
    """Frame distances (mm) up and down to well past the canvas edges: where the limb ends.

    Past by more than the soft tissue's rounded edge, so that neither the skin's end nor a
    shaft's end cap shows on the canvas.
    """
    up = min(pose.cy / pose.scale + 60.0, FEMUR_LENGTH)
    down = min((canvas.height_mm - pose.cy) / pose.scale + 60.0, TIBIA_LENGTH)
    return up, down


def _limb(polygon: np.ndarray, subject: Subject, edge_mm: float) -> SoftLayer:
    """The limb's soft tissue: a rounded slab, thicker with habitus."""
    depth = KNEE_DEPTH * subject.habitus**0.8 * subject.body_scale
    return SoftLayer(round_corners(polygon), depth, SOFT_TISSUE, edge_mm * subject.body_scale)


def _ap_outline(subject: Subject, up: float, down: float) -> np.ndarray:
    """Skin outline of the AP knee: thigh above, leg below, vastus medialis bulge medially."""
    ys = [-up, -120, -60, -25, 0, 30, 80, down]
    medial = [78, 70, 65, 62, 59, 57, 58, 50]
    lateral = [74, 66, 60, 58, 57, 56, 57, 50]
    k = 0.6 + 0.4 * subject.habitus  # fatter limbs are wider, the bones are not
    right = [(w * k, y) for w, y in zip(lateral, ys, strict=True)]
    left = [(-w * k, y) for w, y in zip(medial, ys, strict=True)]
    return np.asarray(right + left[::-1], np.float32)


def _tibia_ap_outline(shape: KneeShape) -> np.ndarray:
    """Tibial plateau and metaphysis; the plateau lies one joint space below the condyles."""
    jm, jl = shape.js_medial, shape.js_lateral
    top = min(jm, jl)
    pts = [
        (-42, jm + 8), (-41.5, jm + 4), (-39.5, jm + 1.6), (-36, jm + 0.8), (-26, jm + 1.6),
        (-12, jm + 0.6), (-7, jm - 2.5),
        (-4, top - 6.5), (-0.5, top - 3.5), (3, top - 6), (7, jl - 2), (12, jl),
        (26, jl - 0.4), (36, jl + 0.6), (39.5, jl + 1.6), (41.5, jl + 4),
        (42, jl + 8), (40, 14), (36, 24), (29, 36), (21, 52),
        (16, 72), (12, 100), (-12, 100), (-16, 72), (-23, 52), (-32, 34), (-38, 20),
    ]  # fmt: skip
    return _widen(pts, shape.width)


def _osteophytes(bone: BoneUnion, shape: KneeShape, rng: np.random.Generator, femur: bool) -> None:
    """Marginal spurs of osteoarthritis, larger on the medial side, growing out of the margin."""
    w = 40.0 * shape.width  # x of the joint margins
    for side, size in ((-1.0, 1.0), (1.0, 0.6)):
        length = (2.5 + 5.0 * shape.arthritis) * size * float(rng.uniform(0.7, 1.2))
        if femur:  # a lip off the condyle margin, pointing down and out
            bone.shell(side * (w + 0.2 * length), -5, length, 3.0, 14, side * 60, 1.2)
        else:  # a beak off the plateau margin, pointing up and out
            y = (shape.js_medial if side < 0 else shape.js_lateral) + 3
            bone.shell(side * (w + 0.2 * length), y, length, 3.0, 14, -side * 40, 1.2)


def _femur_ap(scene: _Scene, pose: Pose, up: float) -> None:
    """Distal femur: shaft (valgus, so it runs laterally going up), condyles, notch."""
    shape = scene.shape
    bone = scene.kit.union(pose)
    top_x = 0.1 * (up - 60.0)  # ~6 degrees of anatomical valgus
    bone.shaft("distal femur", [(top_x, -up), (1.5, -90), (0, -45)], [FEMUR_SHAFT_R, 15.5, 19])
    bone.plate(_widen(FEMUR_AP, shape.width), 62, 16, 2.2, fade=[(0, -98), (0, -55)])
    if shape.arthritis:
        _osteophytes(bone, shape, scene.rng, femur=True)
    bone.add()
    # Physeal scar: a faint sclerotic line where the growth plate closed.
    scene.kit.line(pose, _widen([(-33, -38), (0, -33), (33, -38)], shape.width), 0.8, 0.8)


def _tibia_ap(scene: _Scene, pose: Pose, down: float) -> None:
    """Proximal tibia: plateau with the tibial spines, metaphysis, shaft."""
    shape = scene.shape
    bone = scene.kit.union(pose)
    bone.shaft("proximal tibia", [(0, 30), (0, 95), (-1, down)], [20, 15, TIBIA_SHAFT_R])
    bone.plate(_tibia_ap_outline(shape), 52, 14, 2.0, fade=[(0, 98), (0, 55)])
    if shape.arthritis:
        _osteophytes(bone, shape, scene.rng, femur=False)
    bone.add()
    scene.kit.line(pose, _widen([(-30, 27), (0, 23), (30, 27)], shape.width), 0.8, 0.8)
    if shape.arthritis:  # subchondral sclerosis under the narrowed medial compartment
        y = shape.js_medial + 2.0
        scene.kit.line(pose, [(-36 * shape.width, y + 0.5), (-9, y)], 2.0, 1.2 * shape.arthritis)


def _fibula(scene: _Scene, pose: Pose, down: float, at: tuple[float, float]) -> None:
    """Fibular head (with its styloid apex) and shaft; ``at`` is the head centre in the frame."""
    hx, hy = at
    bone = scene.kit.union(pose)
    bone.shell(hx, hy, 11, 12.5, 22, cortex_mm=1.5)
    bone.shell(hx + 3, hy - 10, 4, 6, 8, angle=20, cortex_mm=1.0)
    bone.shaft("fibular head", [(hx, hy - 6), (hx - 2, hy + 16)], [9.5, 7.5])
    shaft = [(hx - 2, hy + 16), (hx - 5, hy + 85), (hx - 6.5, down)]
    bone.shaft("proximal fibula", shaft, [7.5, 6.5, FIBULA_SHAFT_R])
    bone.add()


def _render_ap(scene: _Scene, pose: Pose) -> np.ndarray:
    """AP knee; returns the skin outline (canvas mm)."""
    up, down = _reach(scene.canvas, pose)
    outline = pose.xy(_ap_outline(scene.subject, up, down))
    soft_tissue(scene.canvas, [_limb(outline, scene.subject, edge_mm=45.0)])
    _femur_ap(scene, pose, up)
    _tibia_ap(scene, pose, down)
    _fibula(scene, pose, down, at=(37.0 * scene.shape.width, 28.0))
    patella = scene.kit.union(pose)  # seen through the femur
    patella.shell(4, -30, 23, 27, 22, cortex_mm=1.6)
    patella.add()
    return outline


def _lat_outline(fem: Pose, tib: Pose, up: float, down: float) -> np.ndarray:
    """Skin of the flexed knee seen from the side: thigh, patella, tendon, calf, popliteal fossa."""
    front_f = [(50, -up), (47, -66), (50, -31), (55, -11), (57, 9), (53, 28)]
    front_t = [(40, 12), (35, 38), (29, 80), (27, down)]
    back_t = [(-62, down), (-68, 140), (-70, 95), (-60, 45), (-48, 18)]
    back_f = [(-44, 20), (-52, -20), (-66, -80), (-72, -up)]
    return np.concatenate([fem.xy(front_f), tib.xy(front_t), tib.xy(back_t), fem.xy(back_f)])


def _fat_pads(fem: Pose, tib: Pose) -> list[SoftLayer]:
    """Hoffa's and the suprapatellar fat pads, darker than the tendons that border them."""
    hoffa = tib.xy([(12, -12), (30, -14), (35, 5), (33, 24), (27, 20), (26, 6), (14, 0)])
    supra = fem.xy([(30, -71), (38, -71), (40, -31), (34, -24), (29, -36)])
    return [SoftLayer(pad, 40.0 * fem.scale, FAT_EXCESS, 6.0 * fem.scale) for pad in (hoffa, supra)]


def _femur_lat(scene: _Scene, fem: Pose, up: float) -> None:
    """Distal femur from the side: shaft, metaphysis, trochlea, both condyles superimposed."""
    bone = scene.kit.union(fem)
    bone.shaft("distal femur", [(9.5, -up), (9.5, -75), (9, -45)], [15.5, 15.5, 19])
    bone.plate(FEMUR_LAT, 70, 18, 2.2, fade=[(9.5, -98), (9.5, -50)])
    bone.add()
    # The medial condyle is a little larger and lower: its back and bottom, seen tangentially,
    # show as a second contour just outside the first.
    arc = ellipse_outline(-2.5, 2.0, CONDYLE_R * 1.05, CONDYLE_R * 1.05, 60, 215, n=16)
    scene.kit.line(fem, arc, 1.0, 5.0)
    # Blumensaat's line: the roof of the intercondylar notch, seen edge-on.
    scene.kit.line(fem, [(18, 10), (-12, -22)], 1.2, 6.0)


def _tibia_lat(scene: _Scene, tib: Pose, down: float) -> None:
    """Proximal tibia from the side: sloping plateau, tibial tuberosity, shaft."""
    bone = scene.kit.union(tib)
    bone.shaft("proximal tibia", [(1, 28), (3, 95), (4, down)], [21, 15, TIBIA_SHAFT_R + 1])
    bone.plate(TIBIA_LAT, 62, 14, 2.0, fade=[(3, 98), (2, 55)])
    if scene.shape.arthritis:  # spurs off the front and back of the plateau
        size = 2.0 + 4.0 * scene.shape.arthritis
        bone.shell(-29 - 0.4 * size, 4, size, 2.5, 10, 30, 1.0)
        bone.shell(27 + 0.4 * size, 1, size, 2.5, 10, -30, 1.0)
    bone.add()
    scene.kit.line(tib, [(-24, 26), (0, 22), (24, 24)], 0.8, 0.8)


def _render_lat(scene: _Scene, pose: Pose) -> np.ndarray:
    """Lateral knee flexed 20-30 degrees; returns the skin outline (canvas mm)."""
    shape = scene.shape
    up, down = _reach(scene.canvas, pose)
    js = 0.5 * (shape.js_medial + shape.js_lateral)
    # Flexion turns the thigh and the leg back from the knee, about the condyles and plateau.
    fem = pose.moved((-3.0, -(CONDYLE_R + js)), -0.6 * shape.flexion_deg)
    tib = pose.moved((0.0, 0.0), 0.4 * shape.flexion_deg)
    up_f, down_t = (up - CONDYLE_R) * 1.05 + 10.0, down * 1.05 + 10.0
    outline = _lat_outline(fem, tib, up_f, down_t)
    limb = _limb(outline, scene.subject, edge_mm=40.0)
    soft_tissue(scene.canvas, [limb, *_fat_pads(fem, tib)])
    _tibia_lat(scene, tib, down_t)
    _fibula(scene, tib, down_t, at=(-19.0, 27.0))  # behind the tibia, over its back
    _femur_lat(scene, fem, up_f)
    patella = scene.kit.union(fem)
    patella.shell(42, -12 + 0.3 * shape.flexion_deg, 12.5, 24, 42, angle=10, cortex_mm=1.8)
    patella.add()
    return outline


@register_anatomy(Anatomy.KNEE, views=("AP", "LAT"), field_mm=FIELD_MM)
def render_knee(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a knee radiograph (AP or lateral) at true scale, centred on ``canvas``.

    ``findings`` may hold FRACTURE; it is cut in later through the recorded bones (distal femur,
    proximal tibia, fibular head, proximal fibula), so nothing is drawn for it here. A knee with
    no laterality is drawn as a left knee.
    """
    del findings
    if view not in ("AP", "LAT"):
        raise ValueError(f"knee view must be AP or LAT, not {view!r}")
    # The frame has the lateral side (AP) or the front (LAT) toward +x; a left knee's lateral
    # view is mirrored so that its front is on the image left (seen from the detector side).
    flip = (-1.0 if subject.laterality == "R" else 1.0) * (1.0 if view == "AP" else -1.0)
    shape = KneeShape.draw(subject, rng)
    # The joint line near the canvas centre, with a little jitter and tilt.
    pose = centred_pose(canvas, subject.body_scale, rng, JITTER, TILT_DEG, flip)
    scene = _Scene(canvas, subject, shape, rng, BoneKit(canvas, subject.bone_density, rng))
    outline = _render_ap(scene, pose) if view == "AP" else _render_lat(scene, pose)
    scene.kit.finish()
    return AnatomyResult(canvas, lesions=[], field_mm=field_box(canvas, outline))
