"""Hand radiograph renderer: PA and PA-oblique views of a left or right hand at true scale.

The hand is laid out in its own anatomical frame (mm): ``u`` toward the thumb (radial), ``v``
toward the fingertips (distal), ``w`` toward the X-ray source (dorsal in a PA view), origin at the
middle of the radiocarpal joint. :class:`~medtune.synth.anatomy.limb.LimbPose` projects that
frame onto the detector: a roll about the long axis for the oblique view, a mirror for laterality
(facing the patient, a right hand shows its thumb on the image left), body scale, and the small
tilt and shift of real positioning.

Tubular bones go through ``Canvas.bone`` (one tapered segment each) so a fracture can later be
cut through them; their flared bases, round heads and styloids are ellipsoidal lobes merged onto
that tube as a union of solids. Carpals are ellipsoidal shells (dense cortex around cancellous
bone, mottled by a trabecular texture) projected exactly from 3-D, so the oblique view overlaps
them as a real one does. The limb helpers (pose, shells, unions, soft tissue, osteoarthritis,
placement) are in :mod:`.limb` and :mod:`.limb_bones`, shared with the foot renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.limb import (
    PLACEMENT_MARGIN_MM,
    BoneSpec,
    LimbPose,
    Shell,
    along,
    chain_bones,
    cut_below,
    digit_outline,
    draw_soft_tissue,
    place_cut_limb,
)
from medtune.synth.anatomy.limb_bones import (
    draw_lobed_bone,
    draw_long_bone,
    draw_osteophytes,
    draw_shell,
    draw_spongy_bones,
    osteoarthritis_grades,
)
from medtune.synth.canvas import Canvas, round_corners

HAND_FIELD_MM = (200.0, 260.0)  # detector field (width, height) an average adult hand needs
HAND_VIEWS = ("PA", "OBL")
OBLIQUE_ROLL_DEG = -45.0  # PA oblique: radial side lifted 45 deg (dorsal structures move ulnar)
ROLL_JITTER_DEG = (1.5, 4.0)  # sd of the roll: PA, oblique
SPIN_JITTER_DEG = 4.0  # in-plane tilt, uniform +-
SHIFT_JITTER = 0.03  # fraction of the canvas
FOREARM_MM = (20.0, 45.0)  # forearm shown proximal to the radiocarpal joint, min and max
SCALE_JITTER = 0.04  # per-bone length variation between people of one size
ORDINAL = ("first", "second", "third", "fourth", "fifth")

# Bone radii (base, shaft, head) mm of the index ray; other digits scale by Digit.size.
METACARPAL_RADII = (6.2, 4.1, 6.6)
PHALANX_RADII = {
    "proximal": (6.0, 3.9, 4.8),
    "middle": (5.0, 3.3, 4.1),
    "distal": (4.2, 2.5, 3.4),  # the head is the ungual tuft
}
JOINT_SPACE_MM = {"mcp": 2.0, "pip": 1.6, "dip": 1.3}  # cartilage seen as a lucent gap
FINGER_HALF_WIDTH_MM = (10.0, 9.4, 8.6, 7.6)  # skin half-width at web, PIP, DIP and pulp
TIP_PAD_MM = 4.5  # pulp beyond the distal phalanx
FINGER_WEB = 0.6  # the skin folds (webs, side outline) start this far along the proximal phalanx
RADIUS_SHAFT_MM = 7.5  # distal radial shaft radius (a round tube: the real shaft is flatter)
ULNA_SHAFT_MM = 5.5
FOREARM_CORTEX = 0.2  # cortex / radius of the forearm bones near the wrist (thin metaphysis)
# Soft-tissue thickness (mm) mid-slab, (v, mm) at the wrist and the fingertips, linear between:
# about 40 at the wrist, 30 mid-palm, 22 at the webs, 15 over the middle phalanges.
HAND_TAPER = (-5.0, 40.0, 195.0, 12.0)
PALM_EDGE_MM = 10.0  # soft tissue reaches full thickness this far inside the outline
HABITUS_THICKENS = 0.6  # soft-tissue thickness grows as habitus**this (less than a trunk's)
HABITUS_WIDENS = 0.3  # and its width as habitus**this: fat thickens more than it widens


@dataclass(frozen=True)
class Digit:
    """One ray of the hand: a metacarpal and its phalanges, in the right-hand frame."""

    name: str  # "index finger"
    base: tuple[float, float]  # (u, v) mm, metacarpal base on the carpus
    angle: float  # deg, metacarpal axis from the long axis, + toward the thumb
    spread: float  # deg, extra fan of the finger beyond its metacarpal's axis
    arch: tuple[float, float]  # w mm at metacarpal base and head: the transverse palmar arch
    lengths: tuple[float, ...]  # mm: metacarpal, then phalanges proximal to distal
    size: float  # bone and finger width relative to the index finger


DIGITS = (
    Digit("thumb", (27.0, 36.5), 38.0, -14.0, (-10.0, -16.0), (44.0, 31.0, 23.0), 1.12),
    Digit("index finger", (12.5, 37.5), 9.0, 4.0, (8.0, 3.0), (66.0, 40.0, 23.0, 17.0), 1.0),
    Digit("middle finger", (0.5, 37.5), 0.0, 0.0, (9.0, 4.0), (63.0, 44.0, 27.0, 18.0), 1.04),
    Digit("ring finger", (-10.0, 36.5), -8.0, -4.0, (5.0, 2.0), (56.0, 41.0, 26.0, 18.0), 0.95),
    Digit("little finger", (-18.5, 34.5), -19.0, -8.0, (1.0, 0.0), (51.0, 32.0, 19.0, 16.0), 0.85),
)

# Carpals in the right-hand frame (centre u, v, w; semi-axes along angle, across, depth; angle).
# Proximal row on the radius and the ulnar TFCC, distal row under the metacarpal bases, about
# 1.5 mm apart; the pisiform lies palmar on the triquetrum, the hamate's hook palmar too.
CARPALS = {
    "scaphoid": Shell((16.3, 13.3, 2.0), (12.5, 7.0, 6.5), 55.0),
    "lunate": Shell((-1.5, 8.0, 3.0), (8.6, 7.0, 8.5), 0.0),
    "triquetrum": Shell((-16.5, 11.5, 1.0), (7.5, 5.8, 6.5), -30.0),
    "pisiform": Shell((-18.0, 13.5, -10.0), (5.0, 5.0, 3.5), 0.0),
    "trapezium": Shell((22.5, 29.0, -4.0), (8.2, 7.2, 7.0), 40.0),
    "trapezoid": Shell((12.5, 30.0, 3.0), (5.5, 6.0, 6.5), 5.0),
    "capitate": Shell((0.0, 25.8, 3.0), (7.5, 10.3, 8.5), 0.0),
    "hamate": Shell((-14.5, 25.0, 1.0), (7.5, 9.5, 8.0), -12.0),
    "hook of hamate": Shell((-16.0, 25.0, -9.0), (2.6, 3.2, 2.5), 0.0),
}
THUMB_SESAMOID_MM = (4.0, 3.5)  # sesamoids: proximal to the thumb's MC head end, off its axis
THUMB_BASE_OA = 0.45  # chance of first carpometacarpal osteoarthritis at ~90 years
FINGER_OA = {"dip": 0.55, "pip": 0.3, "thumb_ip": 0.25}  # the same for finger joints


@dataclass
class DigitBones:
    """A digit as laid out: each bone's (name, base, head, radii), and its size factor."""

    bones: list[BoneSpec]
    size: float


def _phalanx_names(digit: Digit) -> list[str]:
    """Report names of a digit's phalanges, proximal to distal (the thumb has no middle one)."""
    levels = ("proximal", "distal") if digit.name == "thumb" else ("proximal", "middle", "distal")
    return [f"{level} phalanx of the {digit.name}" for level in levels]


def _layout_digit(
    digit: Digit, ordinal: str, rng: np.random.Generator, gaps: np.ndarray
) -> DigitBones:
    """Place one ray's bones end to end with joint spaces ``gaps`` (mm) between.

    The phalanges fan out beyond the metacarpal's axis (fingers slightly spread on the detector).
    """
    lengths = np.asarray(digit.lengths) * (1.0 + SCALE_JITTER * rng.standard_normal(len(gaps) + 1))
    fan = digit.spread * (1.0 + 0.3 * rng.standard_normal()) + rng.normal(0.0, 2.0)
    names = [f"{ordinal} metacarpal", *_phalanx_names(digit)]
    radii = [METACARPAL_RADII, *(PHALANX_RADII[n.split()[0]] for n in names[1:])]
    angles = [digit.angle, *(digit.angle + fan * (1.0 + 0.15 * i) for i in range(len(gaps)))]
    start = (*digit.base, digit.arch[0])
    heights = [digit.arch[1]] * len(names)
    sized = [tuple(r * digit.size for r in rad) for rad in radii]
    return DigitBones(chain_bones(names, sized, lengths, start, angles, heights, gaps), digit.size)


def _finger_outline(digit: DigitBones, width: float) -> list[tuple[float, float, float]]:
    """Skin of one finger: from web to web round the pulp (see :func:`digit_outline`)."""
    half = [h * digit.size * width for h in FINGER_HALF_WIDTH_MM]
    if len(digit.bones) == 3:  # thumb: MCP, IP, pulp
        half = [half[0], half[1], half[3]]
    return digit_outline(digit.bones, half, TIP_PAD_MM, FINGER_WEB)


def _joint_gaps(
    rng: np.random.Generator, subject: Subject
) -> tuple[list[np.ndarray], dict[tuple[int, int], float]]:
    """Joint spaces (mm) per digit (MCP, PIP, DIP; thumb MCP, IP) narrowed by age and arthritis.

    Returns the gaps and the osteoarthritis grade per (digit, joint index); joint -1 is the first
    carpometacarpal joint, the thumb base, which osteoarthritis favours.
    """
    finger = [FINGER_OA["pip"], FINGER_OA["dip"]]
    prevalence = np.array([THUMB_BASE_OA, FINGER_OA["thumb_ip"], *finger * 4])
    grades = osteoarthritis_grades(rng, subject.age, prevalence)
    oa = {(0, -1): grades[0], (0, 1): grades[1]}
    for f in range(1, 5):
        oa[(f, 1)], oa[(f, 2)] = grades[2 * f], grades[2 * f + 1]
    ageing = float(np.clip((subject.age - 40.0) / 50.0, 0.0, 1.0))
    gaps = []
    for d in range(5):
        kinds = ["mcp", "dip"] if d == 0 else ["mcp", "pip", "dip"]
        g = np.array([JOINT_SPACE_MM[k] for k in kinds]) * (1.0 - 0.15 * ageing)
        g *= [1.0 - 0.75 * oa.get((d, j), 0.0) for j in range(len(kinds))]
        gaps.append(g * rng.uniform(0.9, 1.1, len(kinds)))
    return gaps, oa


def _hand_outline(digits: list[DigitBones], forearm: float, width: float) -> np.ndarray:
    """Skin outline of forearm, palm, thenar and fingers (frame u, v, w mm), corners smoothed.

    Built around the bones so it follows the fan of the digits: hypothenar along the fifth
    metacarpal, the finger webs about 40 % along the proximal phalanges, the first web space
    between index and thumb, the thenar eminence around the first metacarpal. Points carry the
    depth (w) of the bones they follow, so an oblique view moves the thumb's skin with its bones.
    The forearm runs 15 mm past the cut so the cut, not a rounded end, bounds it.
    """
    thumb, index, little = digits[0].bones, digits[1].bones, digits[4].bones
    far = -forearm - 15.0
    pts = [(-31.0 * width, far, 0.0), (-30.5 * width, -15.0, 0.0), (-31.5 * width, 4.0, 0.0)]
    pts += [along(little[0], 0.3, -13 * width), along(little[0], 0.95, -10.5 * width)]
    for ulnar, radial in zip(digits[4:1:-1], digits[3:0:-1], strict=True):
        pts += _finger_outline(ulnar, width)
        a, b = along(ulnar.bones[1], 0.4, 0.0), along(radial.bones[1], 0.4, 0.0)
        pts.append(tuple(0.5 * (p + q) for p, q in zip(a, b, strict=True)))  # the web
    pts += _finger_outline(digits[1], width)
    pts += [along(index[0], 0.75, 10.5 * width)]  # the first web space
    pts += _finger_outline(digits[0], width)[1:]
    pts += [along(thumb[0], 0.9, 11.0 * width), along(thumb[0], 0.45, 13.0 * width)]
    pts += [along(thumb[0], 0.0, 12.0 * width)]
    pts += [(29.0 * width, 8.0, 0.0), (27.5 * width, -15.0, 0.0), (28.0 * width, far, 0.0)]
    return round_corners(pts, rounds=2, dtype=np.float64)


def _forearm_bones(
    forearm: float,
) -> list[tuple[str, np.ndarray, tuple[float, float], list[Shell]]]:
    """Distal radius and ulna: shaft ends (2, 3), radii there (mm), and their end lobes.

    The radius flares (metaphysis) into a broad epiphysis whose articular surface tilts about
    20 deg (radial inclination), its styloid reaching distally on the thumb side; the ulnar head
    is round with a small styloid. The shafts start 4 mm past the cut so their ends never show.
    """
    cut = -forearm - 4.0
    radius = np.array([[3.5, cut, 0.0], [5.0, -14.0, 0.0]])
    radius_lobes = [
        Shell((5.5, -9.0, 0.0), (14.5, 9.0, 8.5), 0.0),  # metaphyseal flare
        Shell((5.5, -4.0, 0.0), (16.5, 5.5, 9.0), 20.0),  # epiphysis, radial inclination
        Shell((18.0, 1.5, 0.0), (5.5, 4.0, 5.5), 75.0),  # radial styloid
    ]
    ulna = np.array([[-18.5, cut, 4.0], [-19.0, -10.0, 4.0]])
    ulna_lobes = [
        Shell((-19.5, -8.0, 4.0), (8.0, 8.0, 7.0), 90.0),  # ulnar head
        Shell((-25.0, -4.0, 6.0), (5.5, 2.2, 3.0), 80.0),  # ulnar styloid
    ]
    return [
        ("distal radius", radius, (RADIUS_SHAFT_MM, RADIUS_SHAFT_MM * 1.12), radius_lobes),
        ("distal ulna", ulna, (ULNA_SHAFT_MM, ULNA_SHAFT_MM * 1.15), ulna_lobes),
    ]


@dataclass
class HandLayout:
    """Everything random about one hand, in the right-hand frame (mm)."""

    digits: list[DigitBones]
    oa: dict[tuple[int, int], float]  # osteoarthritis grade per (digit, joint)
    forearm: float  # mm of forearm shown proximal to the radiocarpal joint
    outline: np.ndarray
    carpal_jitter: np.ndarray  # (n carpals, 3): du, dv mm and a size factor


def layout_hand(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> HandLayout:
    """Lay out the bones and soft tissue; the forearm shown fills what the field leaves."""
    width = subject.habitus**HABITUS_WIDENS
    gaps, oa = _joint_gaps(rng, subject)
    digits = [_layout_digit(d, ORDINAL[i], rng, gaps[i]) for i, d in enumerate(DIGITS)]
    top = max(float(d.bones[-1][2][1]) for d in digits) + TIP_PAD_MM
    room = min(canvas.height_mm, HAND_FIELD_MM[1]) - 2 * PLACEMENT_MARGIN_MM - 12.0
    forearm = float(np.clip(room / subject.body_scale - top, *FOREARM_MM))
    outline = _hand_outline(digits, forearm, width)
    jitter = np.c_[rng.normal(0.0, 0.5, (len(CARPALS), 2)), rng.normal(1.0, 0.03, len(CARPALS))]
    return HandLayout(digits, oa, forearm, outline, jitter)


def _hand_pose(
    canvas: Canvas, subject: Subject, view: str, layout: HandLayout, rng: np.random.Generator
) -> tuple[LimbPose, tuple[float, float, float, float]]:
    """Roll for the view, mirror for the side, tilt and centre on the canvas."""
    oblique = view == "OBL"
    roll = (OBLIQUE_ROLL_DEG if oblique else 0.0) + rng.normal(0.0, ROLL_JITTER_DEG[oblique])
    spin = rng.uniform(-SPIN_JITTER_DEG, SPIN_JITTER_DEG)
    flip = 1.0 if subject.laterality == "L" else -1.0  # a left thumb shows on the image right
    pose = LimbPose(math.radians(roll), flip, subject.body_scale, math.radians(spin))
    # The part's extent: the skin down to the cut, and where the cut meets the forearm's sides.
    ends = ((-31.0, 0.0), (29.0, 0.0))
    return place_cut_limb(canvas, pose, layout.outline, layout.forearm, ends, rng, SHIFT_JITTER)


def _draw_carpus(
    canvas: Canvas, pose: LimbPose, layout: HandLayout, subject: Subject, rng: np.random.Generator
) -> None:
    """Carpal bones as mottled shells; an arthritic thumb base gets osteophytes at the trapezium,
    and the thumb's two sesamoids lie palmar to its metacarpal head."""
    jitter = layout.carpal_jitter
    carpals = [
        [s.moved(du, dv, g)] for s, (du, dv, g) in zip(CARPALS.values(), jitter, strict=True)
    ]
    draw_spongy_bones(canvas, pose, carpals, subject.bone_density, rng)
    _, base, head, radii = layout.digits[0].bones[0]
    d = (head[:2] - base[:2]) / np.linalg.norm(head[:2] - base[:2])
    joint = base - np.array([*d, 0.0]) * 0.8
    grade = layout.oa[(0, -1)]
    draw_osteophytes(canvas, pose, joint, d, radii[0], grade, subject.bone_density)
    n = np.array([d[1], -d[0]])
    for side in (-1.0, 1.0):
        c = head[:2] - d * THUMB_SESAMOID_MM[0] + n * side * THUMB_SESAMOID_MM[1]
        sesamoid = Shell((c[0], c[1], head[2] - 5.0), (2.3, 2.0, 2.0), 0.0)
        draw_shell(canvas, pose, sesamoid, subject.bone_density)


def _draw_digits(canvas: Canvas, pose: LimbPose, layout: HandLayout, subject: Subject) -> None:
    """Metacarpals and phalanges through ``Canvas.bone``, with osteophytes at arthritic joints."""
    for d, digit in enumerate(layout.digits):
        for j, (name, base, head, radii) in enumerate(digit.bones):
            # Heads on metacarpals and proximal phalanges; the distal phalanges just taper to
            # their tuft (small, and it keeps the render fast).
            flared, lobe = j < len(digit.bones) - 1, j < 2
            draw_long_bone(
                canvas, pose, name, base, head, radii, subject.bone_density, flared, lobe
            )
            grade = layout.oa.get((d, j - 1), 0.0)  # the joint proximal to this bone
            if grade > 0 and j > 0:
                prev = digit.bones[j - 1][2]
                dirn = (base[:2] - prev[:2]) / np.linalg.norm(base[:2] - prev[:2])
                joint = 0.5 * (prev + base)
                draw_osteophytes(canvas, pose, joint, dirn, radii[0], grade, subject.bone_density)


@register_anatomy(Anatomy.HAND, views=HAND_VIEWS, field_mm=HAND_FIELD_MM)
def render_hand(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a hand (PA or PA oblique) at true scale, centred, into ``canvas``.

    Fractures in ``findings`` are not drawn here: a generic step cuts them through the bones this
    registers on the canvas (metacarpals, phalanges, distal radius and ulna).
    """
    if view not in HAND_VIEWS:
        raise ValueError(f"hand view must be one of {HAND_VIEWS}, got {view!r}")
    layout = layout_hand(canvas, subject, rng)
    pose, box = _hand_pose(canvas, subject, view, layout, rng)
    v0, d0, v1, d1 = HAND_TAPER
    thick = subject.habitus**HABITUS_THICKENS  # fat adds thickness more than width
    taper = (v0, d0 * thick, v1, d1 * thick)
    draw_soft_tissue(canvas, pose, layout.outline, taper, PALM_EDGE_MM)
    for name, ends, radii, lobes in _forearm_bones(layout.forearm):
        bd = subject.bone_density
        draw_lobed_bone(canvas, pose, name, ends, radii, bd, lobes, FOREARM_CORTEX)
    _draw_carpus(canvas, pose, layout, subject, rng)
    _draw_digits(canvas, pose, layout, subject)
    cut_below(canvas, pose, -layout.forearm, box)
    return AnatomyResult(canvas, lesions=[], field_mm=box)
