"""Foot radiograph renderer: dorsoplantar (AP) and medial oblique views of a left or right foot.

The foot is laid out in its own anatomical frame (mm): ``u`` toward the great toe (medial), ``v``
toward the toes (distal), ``w`` up from the sole toward the X-ray source (dorsal), origin at the
talonavicular joint. The limb helpers (:mod:`.limb`) project it onto the detector: a roll
about the long axis for the oblique (the lateral border lifted 30 deg, so the high second ray
swings onto the first and the lateral metatarsal bases open up), a mirror for laterality (facing
the patient, a left foot shows its great toe on the image left, toward the midline), body scale,
and the small tilt and shift of real positioning.

Metatarsals and phalanges go through ``Canvas.bone`` (for the fracture step); the tarsals are
ellipsoidal shells, calcaneus and talus each a union of two lobes. The bones carry their height
above the sole (the longitudinal and transverse arches), which is what makes the oblique view
overlap them differently.
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
    draw_bone_union,
    draw_long_bone,
    draw_osteophytes,
    draw_shell,
    draw_spongy_bones,
    osteoarthritis_grades,
)
from medtune.synth.canvas import Canvas, round_corners

FOOT_FIELD_MM = (190.0, 290.0)  # detector field (width, height) an average adult foot needs
FOOT_VIEWS = ("AP", "OBL")
OBLIQUE_ROLL_DEG = 30.0  # medial oblique: lateral border lifted (dorsal structures move medial)
ROLL_JITTER_DEG = (1.5, 4.0)  # sd of the roll: AP, oblique
SPIN_JITTER_DEG = 4.0  # in-plane tilt, uniform +-
SHIFT_JITTER = 0.03  # fraction of the canvas
SCALE_JITTER = 0.04  # per-bone length variation between people of one size
HEEL_MM = 88.0  # heel skin behind the talonavicular joint; cut short when the field is small
HEEL_SHOWN = 0.4  # chance the whole heel is in the field
HEEL_CUT_MM = (55.0, 80.0)  # otherwise this much of it is shown
ORDINAL = ("first", "second", "third", "fourth", "fifth")
TOE_NAMES = ("great toe", "second toe", "third toe", "fourth toe", "fifth toe")

JOINT_SPACE_MM = {"mtp": 2.2, "ip": 1.5}  # metatarsophalangeal and interphalangeal cartilage
TOE_HALF_WIDTH_MM = (9.0, 8.0, 7.2, 6.5)  # skin half-width of a lesser toe: web, PIP, DIP, pulp
HALLUX_HALF_WIDTH_MM = (12.5, 11.5, 10.5)  # great toe: web, IP joint, pulp
TOE_PAD_MM = 5.0  # pulp beyond the distal phalanx
TOE_WEB = 0.5  # the webs lie halfway along the proximal phalanges
# Soft-tissue thickness (mm) mid-slab: 68 over the hindfoot and instep, about 34 at the
# metatarsal heads, 20-28 over the toes (v, mm at two points, linear between, constant beyond).
FOOT_TAPER = (-20.0, 68.0, 170.0, 16.0)
FOOT_EDGE_MM = 16.0  # the foot's rounded sides: full thickness this far inside the skin
HABITUS_THICKENS = 0.4  # soft-tissue thickness grows as habitus**this: feet carry little fat
HABITUS_WIDENS = 0.3  # and its width as habitus**this: fat thickens more than it widens
HALLUX_VALGUS_DEG = (10.0, 4.0)  # normal hallux valgus angle, mean and sd
ELDERLY_VALGUS_DEG = 12.0  # extra hallux valgus by 90 years, women (men a third of it)
HALLUX_VALGUS_MAX_DEG = 22.0  # beyond this the great toe would cross the second in the outline
LESSER_TOE_DRIFT = 0.3  # lesser toes follow a valgus great toe by this fraction of its angle


@dataclass(frozen=True)
class Ray:
    """One ray of the foot: a metatarsal and its phalanges, in the right-foot frame."""

    base: tuple[float, float, float]  # (u, v, w) mm, metatarsal base on the tarsus
    angle: float  # deg, metatarsal axis from the long axis, + medial
    toe_angle: float  # deg, the toe's axis relative to its metatarsal (+ medial)
    arch: tuple[float, float]  # w mm at metatarsal base and head: height above the sole
    lengths: tuple[float, ...]  # mm: metatarsal, then phalanges proximal to distal
    radii: tuple[tuple[float, float, float], ...]  # (base, shaft, head) mm per bone


RAYS = (
    Ray((21.5, 42.0, 32.0), 7.0, 0.0, (32.0, 10.0), (62.0, 31.0, 24.0),
        ((8.2, 5.8, 9.0), (8.0, 5.4, 6.8), (7.0, 4.6, 6.0))),
    Ray((9.0, 35.0, 40.0), 1.0, -2.0, (40.0, 12.0), (76.0, 26.0, 11.0, 9.0),
        ((5.8, 3.9, 5.8), (5.2, 3.0, 4.2), (4.4, 3.2, 3.8), (3.8, 2.3, 3.3))),
    Ray((-2.5, 38.0, 34.0), -4.0, -3.0, (34.0, 11.0), (70.0, 24.0, 9.0, 8.0),
        ((5.6, 3.7, 5.5), (5.0, 2.9, 4.0), (4.2, 3.0, 3.6), (3.6, 2.2, 3.1))),
    Ray((-12.5, 30.0, 26.0), -9.0, -3.0, (26.0, 10.0), (69.0, 22.0, 8.0, 7.5),
        ((5.6, 3.7, 5.4), (4.8, 2.8, 3.9), (4.0, 2.9, 3.4), (3.5, 2.1, 3.0))),
    Ray((-22.0, 27.5, 17.0), -15.0, -2.0, (17.0, 9.0), (67.0, 19.0, 6.0, 6.5),
        ((6.0, 4.0, 5.4), (4.6, 2.7, 3.7), (3.8, 2.8, 3.2), (3.3, 2.0, 2.9))),
)  # fmt: skip

# Tarsals in the right-foot frame (centre u, v, w; semi-axes along angle, across, depth; angle
# deg from +u toward +v). Calcaneus and talus are unions of two lobes each; the talus sits on the
# calcaneus, its head reaching medially into the navicular. On a dorsoplantar view the two are
# largely superimposed and, seen through the thick hindfoot with mostly sparse cancellous bone,
# far less dominant than their size suggests (HINDFOOT_DENSITY).
CALCANEUS = (
    Shell((-10.0, -46.0, 20.0), (16.0, 28.0, 10.0), 12.0),  # body and tuberosity
    Shell((-15.0, -14.0, 18.0), (12.0, 9.0, 10.0), 75.0),  # anterior process to the cuboid
)
TALUS = (
    Shell((2.0, -30.0, 42.0), (13.0, 14.0, 8.0), 5.0),  # body under the ankle
    Shell((6.5, -9.0, 40.0), (12.5, 9.0, 9.5), 65.0),  # neck and head
)
HINDFOOT_DENSITY = 0.55  # calcaneus and talus: sparse trabeculae, a thin cortex
# The midfoot tarsals are blocks packed with narrow joint lines between them (u, v centre; half
# sizes across u and along v; w centre and half depth; angle deg): each is drawn as a union of a
# central lobe and four corner lobes, which squares off its outline (:func:`_block`).
TARSAL_BLOCKS = {
    "navicular": (11.5, 7.5, 13.5, 6.8, 39.0, 10.5, -6.0),
    "cuboid": (-17.8, 12.0, 8.6, 15.0, 19.0, 11.0, 10.0),
    "medial cuneiform": (22.0, 28.0, 7.2, 11.0, 33.0, 13.0, 0.0),
    "intermediate cuneiform": (8.8, 25.0, 4.8, 8.0, 40.0, 11.0, 0.0),
    "lateral cuneiform": (-2.8, 26.5, 5.3, 9.5, 35.0, 12.0, 0.0),
}
CORNER_LOBE = 0.5  # corner lobes' in-plane semi-axes / the block's half size (and their offset)


def _block(u, v, half_u, half_v, w, depth, angle) -> tuple[Shell, ...]:
    """A tarsal block: a central ellipsoid and four smaller ones toward its corners."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    a, b = CORNER_LOBE * half_u, CORNER_LOBE * half_v
    lobes = [Shell((u, v, w), (half_u, half_v, depth), angle)]
    for su, sv in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        du, dv = su * a, sv * b
        centre = (u + du * c - dv * s, v + du * s + dv * c, w)
        lobes.append(Shell(centre, (a * 1.05, b * 1.05, 0.8 * depth), angle))
    return tuple(lobes)


TARSALS = {name: _block(*spec) for name, spec in TARSAL_BLOCKS.items()}
FIFTH_TUBEROSITY = Shell((-4.5, -3.0, 0.0), (8.0, 5.0, 6.0), 60.0)  # offset from MT5 base (u, v)
SESAMOID_MM = (9.0, 5.0)  # under the first metatarsal head: back from its end, off its axis
# Chance of osteoarthritis by about 90 years: first MTP (hallux rigidus), lesser toes' joints.
HALLUX_OA = 0.5
TOE_OA = 0.12


@dataclass
class FootLayout:
    """Everything random about one foot, in the right-foot frame (mm)."""

    rays: list[list[BoneSpec]]
    oa: dict[tuple[int, int], float]  # osteoarthritis grade per (ray, joint index)
    heel: float  # mm of foot shown behind the talonavicular joint
    outline: np.ndarray
    tarsal_jitter: np.ndarray  # (n tarsals + 2, 3): du, dv mm and a size factor


def _toe_names(ray: int) -> list[str]:
    """Report names of a toe's phalanges, proximal to distal (the great toe has no middle one)."""
    levels = ("proximal", "distal") if ray == 0 else ("proximal", "middle", "distal")
    return [f"{level} phalanx of the {TOE_NAMES[ray]}" for level in levels]


def _joint_gaps(
    rng: np.random.Generator, subject: Subject
) -> tuple[list[np.ndarray], dict[tuple[int, int], float]]:
    """Joint spaces (mm) per ray (MTP, then interphalangeal), narrowed by age and arthritis."""
    prevalence = np.array([HALLUX_OA, *[TOE_OA] * 4])  # MTP of each ray
    grades = osteoarthritis_grades(rng, subject.age, prevalence)
    oa = {(r, 0): float(g) for r, g in enumerate(grades)}
    ageing = float(np.clip((subject.age - 40.0) / 50.0, 0.0, 1.0))
    gaps = []
    for r, ray in enumerate(RAYS):
        kinds = ["mtp", *["ip"] * (len(ray.lengths) - 2)]
        g = np.array([JOINT_SPACE_MM[k] for k in kinds]) * (1.0 - 0.15 * ageing)
        g[0] *= 1.0 - 0.75 * oa[(r, 0)]
        gaps.append(g * rng.uniform(0.9, 1.1, len(kinds)))
    return gaps, oa


def hallux_valgus(rng: np.random.Generator, subject: Subject) -> float:
    """The great toe's lateral deviation (deg): worse with age, mostly in women."""
    ageing = float(np.clip((subject.age - 40.0) / 50.0, 0.0, 1.0))
    extra = ELDERLY_VALGUS_DEG * ageing * (1.0 if subject.sex == "F" else 0.35)
    angle = rng.normal(*HALLUX_VALGUS_DEG) + extra * rng.uniform(0.3, 1.3)
    return float(np.clip(angle, 0.0, HALLUX_VALGUS_MAX_DEG))


def _layout_ray(
    r: int, rng: np.random.Generator, gaps: np.ndarray, valgus: float
) -> list[BoneSpec]:
    """One ray's bones end to end; the toes slightly flexed (short w drop) and, for the great
    toe, deviated laterally by ``valgus`` deg."""
    ray = RAYS[r]
    lengths = np.asarray(ray.lengths) * (1.0 + SCALE_JITTER * rng.standard_normal(len(gaps) + 1))
    drift = valgus if r == 0 else LESSER_TOE_DRIFT * valgus  # toes drift laterally (-u)
    toe = ray.angle + ray.toe_angle + rng.normal(0.0, 2.0) - drift
    names = [f"{ORDINAL[r]} metatarsal", *_toe_names(r)]
    angles = [ray.angle, *[toe] * len(gaps)]
    heights = [ray.arch[1], *[ray.arch[1] - 2.0 * (i + 1) for i in range(len(gaps))]]
    return chain_bones(names, ray.radii, lengths, ray.base, angles, heights, gaps)


def _foot_outline(rays: list[list[BoneSpec]], heel: float, width: float) -> np.ndarray:
    """Skin outline of heel, midfoot, forefoot and toes (frame u, v, w mm), corners smoothed.

    Lateral border from the heel past the fifth metatarsal's tuberosity to the little toe, the
    toes with their webs, the medial border from the great toe along the first metatarsal and
    navicular back to the heel. The heel runs 15 mm past any cut so the cut bounds it.
    """
    first, fifth = rays[0], rays[4]
    pts = [(-34.0 * width, -60.0, 20.0), (-36.0 * width, -15.0, 18.0)]
    pts += [along(fifth[0], 0.0, -16.0 * width), along(fifth[0], 0.6, -13.0 * width)]
    pts += [along(fifth[0], 1.0, -11.0 * width)]
    for r in range(4, 0, -1):
        half = [h * width * (1.0 - 0.04 * (r - 1)) for h in TOE_HALF_WIDTH_MM]
        pts += digit_outline(rays[r], half, TOE_PAD_MM, TOE_WEB)
        a, b = along(rays[r][1], 0.45, 0.0), along(rays[r - 1][1], 0.45, 0.0)
        pts.append(tuple(0.5 * (p + q) for p, q in zip(a, b, strict=True)))  # the web
    half = [h * width for h in HALLUX_HALF_WIDTH_MM]
    pts += digit_outline(first, half, TOE_PAD_MM, TOE_WEB)[1:]
    pts += [along(first[0], 0.85, 15.0 * width), along(first[0], 0.3, 14.0 * width)]
    pts += [(32.0 * width, 10.0, 25.0), (30.0 * width, -25.0, 25.0), (27.0 * width, -62.0, 20.0)]
    if heel < HEEL_MM:  # cut: run 15 mm past the cut so the cut, not a rounded end, bounds it
        pts += [(27.0 * width, -heel - 15.0, 20.0), (-34.0 * width, -heel - 15.0, 20.0)]
    else:  # the whole heel: a round back
        arc = np.radians(np.linspace(15.0, 165.0, 7)).tolist()
        pts += [(-3.5 * width + 29.0 * width * math.cos(a), -heel + 26.0 - 26.0 * math.sin(a), 20.0)
                for a in arc]  # fmt: skip
    return round_corners(pts, rounds=2, dtype=np.float64)


def layout_foot(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> FootLayout:
    """Lay out the bones and skin; the heel shown is what the field leaves behind the toes."""
    width = subject.habitus**HABITUS_WIDENS
    gaps, oa = _joint_gaps(rng, subject)
    valgus = hallux_valgus(rng, subject)
    rays = [_layout_ray(r, rng, gaps[r], valgus) for r in range(len(RAYS))]
    top = max(float(ray[-1][2][1]) for ray in rays) + TOE_PAD_MM
    room = min(canvas.height_mm, FOOT_FIELD_MM[1]) - 2 * PLACEMENT_MARGIN_MM - 12.0
    # Technologists often collimate to the forefoot and midfoot: part of the heel left out.
    wanted = HEEL_MM if rng.random() < HEEL_SHOWN else rng.uniform(*HEEL_CUT_MM)
    heel = float(np.clip(room / subject.body_scale - top, 40.0, wanted))
    outline = _foot_outline(rays, heel, width)
    n = len(TARSALS) + 2  # the single shells, then talus and calcaneus
    jitter = np.c_[rng.normal(0.0, 0.6, (n, 2)), rng.normal(1.0, 0.03, n)]
    return FootLayout(rays, oa, heel, outline, jitter)


def _foot_pose(
    canvas: Canvas, subject: Subject, view: str, layout: FootLayout, rng: np.random.Generator
) -> tuple[LimbPose, tuple[float, float, float, float]]:
    """Roll for the view, mirror for the side, tilt and centre on the canvas."""
    oblique = view == "OBL"
    roll = (OBLIQUE_ROLL_DEG if oblique else 0.0) + rng.normal(0.0, ROLL_JITTER_DEG[oblique])
    spin = rng.uniform(-SPIN_JITTER_DEG, SPIN_JITTER_DEG)
    flip = -1.0 if subject.laterality == "L" else 1.0  # a left great toe shows on the image left
    pose = LimbPose(math.radians(roll), flip, subject.body_scale, math.radians(spin))
    # The part's extent: the skin in front of the cut, and where the cut crosses the heel.
    ends = ((-25.0, 20.0), (20.0, 20.0))
    return place_cut_limb(canvas, pose, layout.outline, layout.heel, ends, rng, SHIFT_JITTER)


def _draw_tarsus(
    canvas: Canvas, pose: LimbPose, layout: FootLayout, subject: Subject, rng: np.random.Generator
) -> None:
    """Tarsal bones, mottled: calcaneus and talus as unions of lobes, the rest single shells."""
    jitter = layout.tarsal_jitter
    hind = [[s.moved(*jitter[-1]) for s in CALCANEUS], [s.moved(*jitter[-2]) for s in TALUS]]
    draw_spongy_bones(canvas, pose, hind, subject.bone_density * HINDFOOT_DENSITY, rng)
    mid = [[s.moved(*j) for s in lobes] for lobes, j in zip(TARSALS.values(), jitter, strict=False)]
    draw_spongy_bones(canvas, pose, mid, subject.bone_density, rng)


def _draw_rays(canvas: Canvas, pose: LimbPose, layout: FootLayout, subject: Subject) -> None:
    """Metatarsals and phalanges through ``Canvas.bone``; the small toe phalanges just taper.

    The fifth metatarsal's base carries its tuberosity; two sesamoids lie under the first
    metatarsal head; arthritic metatarsophalangeal joints get osteophytes.
    """
    bd = subject.bone_density
    for r, ray in enumerate(layout.rays):
        for j, (name, base, head, radii) in enumerate(ray):
            flared = j < 2 or r == 0  # the lesser toes' small phalanges just taper
            record = draw_long_bone(canvas, pose, name, base, head, radii, bd, flared, j < 2)
            if r == 4 and j == 0:
                t = FIFTH_TUBEROSITY
                c = (base[0] + t.centre[0], base[1] + t.centre[1], base[2])
                draw_bone_union(canvas, pose, [Shell(c, t.axes, t.angle)], bd, tube=record)
        grade = layout.oa[(r, 0)]
        if grade > 0:
            mt_head, phalanx_base = ray[0][2], ray[1][1]
            d = (phalanx_base[:2] - mt_head[:2]) / np.linalg.norm(phalanx_base[:2] - mt_head[:2])
            joint = 0.5 * (mt_head + phalanx_base)
            draw_osteophytes(canvas, pose, joint, d, ray[0][3][2], grade, bd)
    _draw_sesamoids(canvas, pose, layout.rays[0][0], bd)


def _draw_sesamoids(canvas: Canvas, pose: LimbPose, first: BoneSpec, bone_density: float) -> None:
    """The medial and lateral sesamoids in the flexor tendons under the first metatarsal head."""
    back, off = SESAMOID_MM
    for side in (-1.0, 1.0):
        u, v, w = along(first, 1.0, side * off)
        length = float(np.linalg.norm(first[2][:2] - first[1][:2]))
        du, dv = (first[2][:2] - first[1][:2]) / length
        centre = (u - du * back, v - dv * back, max(w - 9.0, 2.0))
        draw_shell(canvas, pose, Shell(centre, (5.5, 4.3, 4.0), 90.0), bone_density)


@register_anatomy(Anatomy.FOOT, views=FOOT_VIEWS, field_mm=FOOT_FIELD_MM)
def render_foot(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a foot (dorsoplantar AP or medial oblique) at true scale, centred, into ``canvas``.

    Fractures in ``findings`` are not drawn here: a generic step cuts them through the bones this
    registers on the canvas (metatarsals and phalanges).
    """
    if view not in FOOT_VIEWS:
        raise ValueError(f"foot view must be one of {FOOT_VIEWS}, got {view!r}")
    layout = layout_foot(canvas, subject, rng)
    pose, box = _foot_pose(canvas, subject, view, layout, rng)
    v0, d0, v1, d1 = FOOT_TAPER
    thick = subject.habitus**HABITUS_THICKENS  # fat adds thickness more than width
    draw_soft_tissue(canvas, pose, layout.outline, (v0, d0 * thick, v1, d1 * thick), FOOT_EDGE_MM)
    _draw_tarsus(canvas, pose, layout, subject, rng)
    _draw_rays(canvas, pose, layout, subject)
    if layout.heel < HEEL_MM:
        cut_below(canvas, pose, -layout.heel, box)
    return AnatomyResult(canvas, lesions=[], field_mm=box)
