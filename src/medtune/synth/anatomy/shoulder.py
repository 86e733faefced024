"""AP shoulder radiographs: proximal humerus, scapula, lateral clavicle, upper ribs and lung apex.

Shapes are laid out in a shoulder frame: millimetres for an average adult, origin at the centre
of the glenoid, y down, x toward the lateral side, drawn for the LEFT shoulder. A `Pose` maps the
frame onto the canvas with the subject's size, a little jitter and tilt, and mirrors it for the
right shoulder, so that the humerus (lateral) is on the image right for a left shoulder and the
ribs and lung (medial) on the image left, as base.py's display convention has it.

The scapula lies oblique to the detector on an AP film, so its body is a faint thin plate while
its spine, lateral border, acromion and the coracoid (seen end-on) project dense. The humerus,
clavicle and scapula are separate bones whose shadows add where they overlap (the humeral head
over the glenoid, the clavicle over the coracoid). The surgical neck, humeral shaft and both
parts of the clavicle go through `Canvas.bone`, so the fracture step can cut through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.bones import BoneKit, Pose, centred_pose
from medtune.synth.anatomy.soft import SoftLayer, field_box, soft_tissue
from medtune.synth.canvas import CORTEX, LUNG, MARROW, SOFT_TISSUE, Canvas, round_corners

FIELD_MM = (300.0, 240.0)  # detector field (width, height) an average shoulder needs
FRAME_OFFSET = (40.0, -15.0)  # where the glenoid sits relative to the field centre, mm
JITTER = 0.03  # placement jitter, fraction of the canvas
TILT_DEG = 3.0  # standard deviation of the in-plane rotation
SHOULDER_DEPTH = 135.0  # soft tissue through the shoulder along the beam, habitus 1
LUNG_DEPTH = 100.0  # air-filled lung along the beam at the upper lateral chest
MIDLINE_X = -195.0  # the patient's midline in the shoulder frame, mm
HEAD_R = 24.0  # humeral head radius
SHAFT_R = 12.0  # humeral diaphysis radius
CLAVICLE_R = 8.0  # mid-clavicle radius
RIB_R = 5.0  # posterior rib radius; anterior ribs are a little thinner
RIB_DENSITY = 1.0 + (CORTEX - 1.0) * 0.8  # ribs are thin-walled: a little less dense cortex

# Skin outline, left shoulder frame: neck and trapezius, deltoid, arm, chest wall. The arm
# lies against the chest; points past the canvas (|x| or |y| of 250+) close it off-field.
OUTLINE = [
    (-260, -150), (-200, -128), (-150, -104), (-90, -84), (-40, -74), (0, -68), (30, -63),
    (56, -50), (76, -26), (85, 8), (86, 50), (84, 130), (82, 260), (-260, 260),
]  # fmt: skip
# The lung: medial edge at the mediastinum, apex above the clavicle, lateral edge inside the
# ribs. Air replaces soft tissue there.
LUNG_OUTLINE = [
    (-260, 260), (-260, -64), (-170, -78), (-135, -80), (-112, -74), (-96, -56), (-84, -30),
    (-74, 0), (-66, 30), (-61, 60), (-59, 100), (-58, 260),
]  # fmt: skip
# Scapula: body (foreshortened, thin), acromion, glenoid neck.
SCAPULA_BODY = [
    (-106, -40), (-60, -38), (-24, -30), (-13, -18), (-12, 20), (-20, 34), (-72, 128),
    (-84, 120), (-98, 60), (-110, 0),
]  # fmt: skip
GLENOID_NECK = [(-10, -18), (-4, -16), (-4, 20), (-12, 26), (-24, 20), (-24, -12)]
ACROMION = [(-6, -53), (20, -56), (44, -55), (54, -49), (50, -41), (22, -42), (-6, -42)]
# Upper ribs 1-7: x of each rib's lateral turn (the chest wall widens going down), mm.
RIB_APEX_X = (-120.0, -100.0, -85.0, -73.0, -65.0, -60.0, -57.0)
RIB_SPACING = 24.0  # vertical distance between successive posterior ribs at the spine, mm
RIB_TOP = -104.0  # where the first rib leaves the spine, mm


@dataclass(frozen=True)
class _ShoulderShape:
    """What varies between shoulders: arm rotation, acromion and head size."""

    rotation: float  # -1 internal .. +1 external rotation of the humerus
    head: float  # humeral head size factor
    acromion_gap: float  # acromiohumeral distance factor (smaller in rotator-cuff disease)

    @classmethod
    def draw(cls, subject: Subject, rng: np.random.Generator) -> _ShoulderShape:
        """A shoulder for ``subject``: the arm turned at random, older cuffs worn."""
        # Cuff degeneration narrows the acromiohumeral space with age.
        wear = float(np.clip((subject.age - 50.0) / 40.0, 0.0, 1.0)) * float(rng.uniform(0, 1))
        return cls(
            rotation=float(rng.uniform(-1.0, 1.0)),
            head=float(rng.normal(1.0, 0.04)),
            acromion_gap=1.0 - 0.5 * wear,
        )


def _place(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> Pose:
    """The shoulder frame: field centred on the canvas, glenoid a little lateral and up."""
    flip = -1.0 if subject.laterality == "R" else 1.0
    centre = centred_pose(canvas, subject.body_scale, rng, JITTER, TILT_DEG, flip)
    return centre.moved(FRAME_OFFSET, 0.0)


def _soft_tissue(canvas: Canvas, pose: Pose, subject: Subject) -> np.ndarray:
    """Shoulder, arm and chest wall, and the lung apex; returns the skin outline (canvas mm)."""
    h = subject.habitus
    # Fat widens the silhouette outward from the bones (about +/-20 mm per unit of habitus).
    grow = np.array([1.0 + 0.25 * (h - 1.0), 1.0 + 0.15 * (h - 1.0)], np.float32)
    skin = pose.xy(round_corners(np.asarray(OUTLINE, np.float32) * grow))
    s = pose.scale
    lung = pose.xy(round_corners(LUNG_OUTLINE))
    layers = [
        SoftLayer(skin, SHOULDER_DEPTH * h**0.8 * s, SOFT_TISSUE, 45.0 * s),
        SoftLayer(lung, LUNG_DEPTH * s, LUNG - SOFT_TISSUE, 30.0 * s),  # air replaces tissue
    ]
    soft_tissue(canvas, layers)
    return skin


def _rib_points(k: int) -> np.ndarray:
    """Rib k (0 = first rib): from the spine out and down to the chest wall, then the anterior
    arc forward and down toward the costal cartilage, which does not show (cf. chest.py)."""
    y0 = RIB_TOP + k * RIB_SPACING
    w = (RIB_APEX_X[k] - MIDLINE_X) / 1.02  # half-width of the chest at this rib
    drop = 2.0 * k  # lower ribs slope more steeply
    pts = np.array(
        [
            (16, y0),
            (0.62 * w, y0 - 2 + 0.3 * drop),
            (1.02 * w, y0 + 48 + 1.5 * drop),  # lateral turn
            (0.75 * w, y0 + 88 + 2.2 * drop),
            (0.35 * w, y0 + 108 + 2.8 * drop),  # anterior end (cartilage beyond)
        ],
        np.float32,
    )
    pts[:, 0] += MIDLINE_X
    return pts


def _ribs(canvas: Canvas, pose: Pose, subject: Subject) -> None:
    """The upper ribs at the medial edge: thin-walled bones whose shadows add where they cross.

    A rib is painted as a band (its mean chord of cortex) with a narrower band inside it (the
    marrow), which gives the bright edges of a hollow tube once blurred; the posterior arc is
    thicker than the anterior one. Every third rib goes on its own layer: an anterior arc
    crosses the posterior arcs below it, and the layers add.
    """
    mm = canvas.mm_per_px
    cortex_excess = (RIB_DENSITY - 1.0) * subject.bone_density
    marrow_excess = (MARROW - 1.0) * subject.bone_density
    keep = 1.0 - float(np.clip(0.35 * subject.bone_density, 0.12, 0.5))  # marrow radius share
    arcs = [pose.xy(round_corners(_rib_points(k), 2, closed=False)) / mm for k in range(7)]
    # Work on the box the ribs cover (they run off the canvas: clip it), plus room for the blur.
    lo = np.maximum(np.floor(np.min([a.min(0) for a in arcs], 0)).astype(int) - 8, 0)
    hi = np.ceil(np.max([a.max(0) for a in arcs], 0)).astype(int) + 8
    hi = np.minimum(hi, (canvas.cols, canvas.rows))
    if np.any(hi <= lo):
        return
    layers = np.zeros((3, hi[1] - lo[1], hi[0] - lo[0]), np.float32)
    for k, arc in enumerate(arcs):
        pix = np.rint((arc - lo - 0.5) * 16).astype(np.int32)  # 1/16 px, in the layers' box
        half = len(pix) // 2  # posterior arc, then the thinner anterior arc
        for part, r_mm in ((pix[: half + 1], RIB_R), (pix[half:], 0.65 * RIB_R)):
            r = r_mm * pose.scale
            outer = np.pi / 2 * r * cortex_excess  # mean chord through a solid rod
            inner = outer - np.pi / 2 * keep * r * (cortex_excess - marrow_excess)
            for value, radius in ((outer, r), (inner, keep * r)):
                width = max(int(np.rint(2 * radius / mm)), 1)
                cv2.polylines(layers[k % 3], [part], False, value, width, cv2.LINE_8, 4)
    canvas.att[lo[1] : hi[1], lo[0] : hi[0]] += cv2.GaussianBlur(layers.sum(0), (0, 0), 1.0)


def _scapula(kit: BoneKit, pose: Pose) -> None:
    """Scapula: faint oblique body, dense lateral border and spine, acromion, glenoid, coracoid."""
    bone = kit.union(pose)
    bone.plate(SCAPULA_BODY, depth=14, edge_mm=5, cortex_mm=1.2)
    bone.rod([(-16, 24), (-45, 78), (-76, 124)], [5.5, 4.5, 4.0])  # lateral (axillary) border
    bone.rod([(-108, -22), (-60, -34), (-24, -44), (-4, -47)], [4.0, 5.5, 6.5, 7.0])  # spine
    bone.plate(ACROMION, depth=28, edge_mm=7, cortex_mm=1.8)
    bone.shell(-2, 1, 9, 20, 22, cortex_mm=2.0)  # glenoid, seen obliquely: a dense oval rim
    bone.plate(GLENOID_NECK, depth=26, edge_mm=8, cortex_mm=1.5)
    bone.rod([(-14, -16), (-22, -26)], [7.0, 8.0])  # coracoid base, rising forward
    bone.shell(-24, -28, 12, 9, 36, angle=-15, cortex_mm=2.0)  # coracoid, seen end-on
    bone.add()


def _clavicle(kit: BoneKit, pose: Pose) -> None:
    """Clavicle from the acromioclavicular joint to its sternal end, lateral part registered."""
    bone = kit.union(pose)
    bone.shaft("lateral clavicle", [(-18, -50), (-40, -56), (-64, -59)], [8.5, 8.0, CLAVICLE_R])
    mid = [(-64, -59), (-105, -58), (-145, -50), (-168, -42)]
    bone.shaft("clavicular shaft", mid, [CLAVICLE_R, 7.5, 8.0, 9.5])
    bone.shell(-170, -41, 11, 12, 22, cortex_mm=1.5)  # bulbous sternal end
    bone.add()


def _humerus(kit: BoneKit, pose: Pose, shape: _ShoulderShape, down: float) -> None:
    """Proximal humerus: head under the acromion, tuberosities by rotation, neck, shaft."""
    r = HEAD_R * shape.head
    hx, hy = r - 7.0, -42.0 + 10.0 * shape.acromion_gap + r  # head overlaps the glenoid rim
    t = 0.5 * (shape.rotation + 1.0)  # 0 internal .. 1 external rotation
    bone = kit.union(pose)
    bone.shell(hx, hy, r, r * 1.04, 2 * r, cortex_mm=1.8)
    # External rotation turns the greater tuberosity into profile laterally; internal rotation
    # brings it over the head and the lesser tuberosity into profile medially.
    bone.shell(hx + r * (0.3 + 0.65 * t), hy + 0.3 * r, 10, 16, 30, cortex_mm=1.5)
    bone.shell(hx + r * (0.25 - 0.3 * (1 - t)), hy + 0.75 * r, 7, 9, 16, cortex_mm=1.2)
    neck = [(hx + 4, hy + 10), (hx + 9, hy + 46), (hx + 11, hy + 76)]
    bone.shaft("surgical neck of the humerus", neck, [0.9 * r, 14.0, SHAFT_R + 0.5])
    shaft = [(hx + 11, hy + 76), (hx + 13, hy + 150), (hx + 14, down)]
    bone.shaft("humeral shaft", shaft, [SHAFT_R + 0.5, SHAFT_R, SHAFT_R - 0.5])
    bone.add()


@register_anatomy(Anatomy.SHOULDER, views=("AP",), field_mm=FIELD_MM)
def render_shoulder(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw an AP shoulder radiograph at true scale, centred on ``canvas``.

    ``findings`` may hold FRACTURE; it is cut in later through the recorded bones (surgical neck
    of the humerus, humeral shaft, lateral clavicle, clavicular shaft), so nothing is drawn for
    it here. A shoulder with no laterality is drawn as a left shoulder.
    """
    del findings
    if view != "AP":
        raise ValueError(f"shoulder view must be AP, not {view!r}")
    shape = _ShoulderShape.draw(subject, rng)
    pose = _place(canvas, subject, rng)
    kit = BoneKit(canvas, subject.bone_density, rng)
    skin = _soft_tissue(canvas, pose, subject)
    _ribs(canvas, pose, subject)
    _scapula(kit, pose)
    _clavicle(kit, pose)
    down = (canvas.height_mm - pose.cy) / pose.scale + 60.0  # past the canvas bottom
    _humerus(kit, pose, shape, down)
    kit.finish()
    return AnatomyResult(canvas, lesions=[], field_mm=field_box(canvas, skin))
