"""Lumbar spine renderer: AP and lateral radiographs of T12 to the sacrum, with abdomen and pelvis.

The part is drawn in a local frame (mm, x to the image right, y down, origin at the centre of the
bony column) and placed on the canvas by a :class:`PartPen` that scales it by ``body_scale``,
rotates it a few degrees and jitters its position. The vertebrae are laid out by walking down the
spine, body then disc, each tilted by the scoliosis (AP) or lordosis (LAT) angle at its level, so
the disc spaces and the curve come from one description.

Drawing is split by cost and character:

* vertebral bodies are flat-ended drums with a cortical shell (:func:`drum`), which a capsule
  cannot be; each is registered for fractures (``Canvas.bone`` without drawing) as a short tube
  across its middle, as wide as the body, and so is the sacrum, drawn as a plate of bone;
* transverse and spinous processes are drawn and registered as hollow tubes (``Canvas.bone``);
* thin structures (end plates seen as rings through the diverging beam, pedicle "eyes", facets,
  crests, spurs, calcified plaques) are rasterised together as lines, plates of bone (sacrum,
  ilium) as softly edged fills, and smooth soft tissue (trunk, psoas, kidneys, lung bases) on
  a coarse grid: the three cost a few cv2 calls each instead of one exact tube per structure.

AP is seen as if facing the patient (the patient's left on the image right); the lateral has
the patient facing the image left. Both views register the same bone names, so a study's
fracture falls on the same bone in each view.

Age narrows discs (L4-S1 most), grows osteophytes and, on the lateral, calcifies the aorta.
Low bone density thins the cortex, fades the bodies, deepens the end-plate concavity and
brings out vertical trabeculae. Habitus sets the soft-tissue thickness the beam crosses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.anatomy.pen import COARSE, PartPen, mirror_x, oval, place_part, vec
from medtune.synth.canvas import LUNG, SOFT_TISSUE, Canvas, smooth_noise

# -- anatomical sizes, adult average, mm (scaled by body_scale) -----------------------------------

LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
REGISTERED_FROM = 1  # T11 sits at the edge of the field, half cut off: not a fracture candidate
BODY_HEIGHT_MM = (22.0, 24.0, 26.0, 27.0, 28.0, 28.0, 27.0)
BODY_WIDTH_MM = (38.0, 40.0, 42.0, 44.0, 46.0, 48.0, 50.0)  # transverse, seen in AP
BODY_DEPTH_MM = (27.0, 28.0, 30.0, 31.0, 33.0, 34.0, 34.0)  # sagittal, seen in LAT
DISC_HEIGHT_MM = (5.0, 6.0, 8.0, 9.5, 10.5, 11.5, 10.0)  # below each level: T11-T12 .. L5-S1
DISC_WEAR_WEIGHT = (0.5, 0.55, 0.6, 0.7, 0.8, 1.0, 1.0)  # lower discs degenerate more
TP_LENGTH_MM = (0.0, 0.0, 14.0, 22.0, 30.0, 24.0, 16.0)  # beyond the body's edge (T11/12: ribs)
TP_RADIUS_MM = (0.0, 0.0, 3.5, 4.0, 4.5, 5.0, 7.0)
LORDOSIS_TILT_DEG = (12.0, 10.0, 7.0, 3.0, -2.0, -9.0, -18.0)  # + = going down moves anterior
SACRAL_SLOPE_DEG = 40.0  # S1 end plate against the horizontal
SACRUM_LENGTH_MM = 105.0  # S1 end plate to the tip
SPINOUS_REACH_MM = 55.0  # posterior wall of the body to the spinous tip (LAT)
PEDICLE_LENGTH_MM = 16.0  # posterior wall of the body to the articular pillar (LAT)
SID_MM = 1000.0  # source-to-image distance: how obliquely the diverging beam meets end plates

# Soft tissue (absolute mm): the thickness the beam crosses, front to back (AP) and side to side.
AP_SOFT_TISSUE_MM = (180.0, 260.0)
LAT_SOFT_TISSUE_MM = (280.0, 360.0)
ABDOMEN_HALF_WIDTH_MM = 165.0  # flank to midline, average build
BACK_TO_BODY_MM = 85.0  # skin of the back to the centre of the vertebral body, thin build

# Densities relative to water.
PLATE_BONE = 0.4  # excess over soft tissue of the sacrum and ilium (cancellous, some cortex)
MUSCLE_OVER_FAT = 0.12  # psoas and kidneys against the retroperitoneal fat that outlines them

ANTERIOR = -1.0  # LAT: the patient faces the image left, as a lateral is read


# -- the subject ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Traits:
    """What of the subject the drawing needs, as ready-to-use factors."""

    wear: float  # 0 up to age 55, rising to 1 by 85: osteophytes, disc narrowing
    density: float  # bone density factor (1 = young adult)
    habitus: float
    osteopenia: float  # 0 for normal bone, up to 0.7: trabecular streaks, end-plate sag


def _traits(subject: Subject) -> _Traits:
    """The drawing factors of ``subject``."""
    wear = float(np.clip((subject.age - 55.0) / 30.0, 0.0, 1.0))
    osteopenia = float(np.clip(1.0 - subject.bone_density, 0.0, 0.7))
    return _Traits(wear, float(subject.bone_density), float(subject.habitus), osteopenia)


# -- layout: walking down the spine ---------------------------------------------------------------


@dataclass
class _Vertebra:
    """One vertebral body in local mm: end-plate centres, sizes, and the disc below it."""

    index: int
    top: np.ndarray  # centre of the upper end plate
    bottom: np.ndarray  # centre of the lower end plate
    width: float  # transverse, mm
    depth: float  # sagittal, mm
    disc_below: float  # mm

    def __post_init__(self) -> None:
        self.move(np.zeros(2))

    def move(self, by: np.ndarray) -> None:
        """Translate by ``by`` (mm) and refresh the derived axis."""
        self.top, self.bottom = self.top + by, self.bottom + by
        d = self.bottom - self.top
        self.height = float(np.hypot(*d))
        self.axis = d / self.height  # unit, top to bottom
        self.perp = np.array([self.axis[1], -self.axis[0]])  # unit, to the axis's image right

    @property
    def name(self) -> str:
        return LEVELS[self.index]

    @property
    def registered(self) -> bool:
        return self.index >= REGISTERED_FROM

    def pt(self, along: float, across: float) -> np.ndarray:
        """Point ``along`` mm down the axis from the top, ``across`` mm to the axis's right."""
        return self.top + self.axis * along + self.perp * across

    def pts(self, along, across) -> np.ndarray:
        """Many points at once: ``along`` and ``across`` are arrays of the same length."""
        return self.top + np.outer(along, self.axis) + np.outer(across, self.perp)


def _direction(tilt_deg: float) -> np.ndarray:
    """Unit vector down the spine; positive tilt leans toward the image left."""
    t = np.deg2rad(tilt_deg)
    return np.array([-np.sin(t), np.cos(t)])


def _walk(tilts, sacral_tilt, traits, rng) -> tuple[list[_Vertebra], np.ndarray, np.ndarray]:
    """Stack bodies and discs from T11 down; return vertebrae, S1 centre and sacral axis."""
    verts, p = [], np.zeros(2)
    dirs = [_direction(t) for t in tilts] + [_direction(sacral_tilt)]
    for i in range(len(LEVELS)):
        h = BODY_HEIGHT_MM[i] * rng.uniform(0.96, 1.04)
        # Degenerate discs lose height first at L4-S1; the randomness keeps levels unequal.
        wear = traits.wear * rng.uniform(0.35, 0.75) * DISC_WEAR_WEIGHT[i]
        disc = DISC_HEIGHT_MM[i] * rng.uniform(0.9, 1.1) * (1.0 - wear)
        bottom = p + dirs[i] * h
        verts.append(_Vertebra(i, p, bottom, BODY_WIDTH_MM[i], BODY_DEPTH_MM[i], disc))
        mid = dirs[i] + dirs[i + 1]
        p = bottom + mid / np.linalg.norm(mid) * disc
    return verts, p, dirs[-1]


def _centre(verts, s1, sac, lo, hi):
    """Shift the layout so the bounding box ``lo``..``hi`` (local mm) is centred on 0."""
    shift = -0.5 * (np.asarray(lo, np.float64) + np.asarray(hi, np.float64))
    for v in verts:
        v.move(shift)
    return verts, s1 + shift, sac


def _layout_ap(traits: _Traits, rng: np.random.Generator):
    """AP: a near-straight column with a slight scoliotic C-curve (more with age)."""
    amp = rng.normal(0.0, 1.5) + rng.normal(0.0, 4.0) * traits.wear  # degrees
    n = len(LEVELS)
    tilts = [amp * np.cos(np.pi * i / (n - 1)) for i in range(n)]
    verts, s1, sac = _walk(tilts, 0.0, traits, rng)
    top = verts[REGISTERED_FROM].top[1]
    return _centre(verts, s1, sac, (s1[0], top), (s1[0], s1[1] + SACRUM_LENGTH_MM))


def _layout_lat(traits: _Traits, rng: np.random.Generator):
    """LAT: lordosis (flatter with age), sacrum sloping back; centred on bodies + spinous tips."""
    lord = rng.uniform(0.75, 1.25) * (1.0 - 0.25 * traits.wear)
    tilts = [t * lord for t in LORDOSIS_TILT_DEG]
    verts, s1, sac = _walk(tilts, -SACRAL_SLOPE_DEG * lord, traits, rng)
    back = -ANTERIOR
    xs = [v.pt(v.height / 2, ANTERIOR * v.depth / 2)[0] for v in verts[REGISTERED_FROM:]]
    xs += [v.pt(v.height / 2, back * (v.depth / 2 + SPINOUS_REACH_MM))[0] for v in verts]
    top = verts[REGISTERED_FROM].top[1]
    bottom = s1[1] + SACRUM_LENGTH_MM * 0.8
    return _centre(verts, s1, sac, (min(xs), top), (max(xs), bottom))


# -- vertebrae, either view -----------------------------------------------------------------------


def _body(pen: PartPen, v: _Vertebra, half: float, depth_ratio: float, t: _Traits) -> None:
    """The vertebral body as a drum; registered as a short tube across its middle, as wide as
    the body, so a fracture line crosses it end plate to end plate's direction."""
    pen.drum(v.top, v.bottom, half, depth_ratio, t.density, track=v.registered)
    if v.registered:
        mid = v.pt(v.height / 2, 0)
        ends = [mid - v.axis * 1.0, mid + v.axis * 1.0]
        pen.bone(f"{v.name} vertebral body", ends, half, t.density, 0.12, visible=False)


def _end_plates(pen: PartPen, v: _Vertebra, half: float, out_of_plane: float, tilt_deg: float,
                t: _Traits, lower: bool = True) -> None:  # fmt: skip
    """End plates as the diverging beam sees them: each plate's two rims, a flattened ring.

    ``out_of_plane`` is the body's size along the beam (mm); ``tilt_deg`` how far the plates
    are turned from the central ray by the spine's curve. An osteoporotic plate bows into the
    body (concave to the disc); old plates are sclerotic (brighter).
    """
    sag = 0.4 + 5.0 * t.osteopenia  # mm
    value = 10.0 * t.density * (1.0 + 0.8 * t.wear)  # water mm
    theta = np.linspace(0.0, 2.0 * np.pi, 13)
    c, s = np.cos(theta), np.sin(theta)
    for along, into in ((0.5, 1.0), (v.height - 0.5, -1.0))[: 2 if lower else 1]:
        y = float(v.pt(along, 0)[1])  # local y: the offset from the central ray
        oblique = np.deg2rad(tilt_deg) - np.arctan2(y, SID_MM)
        spread = max(0.5 * out_of_plane * abs(np.sin(oblique)), 0.35)
        ring = v.pts(along + spread * s + into * sag * (1.0 - c * c), half * 0.97 * c)
        pen.line(ring, 0.45, value)


def _osteophytes(pen: PartPen, v: _Vertebra, half: float, sides, t: _Traits, rng) -> None:
    """Marginal spurs at the body corners, pointing out and toward the disc (age > 55)."""
    if t.wear <= 0:
        return
    for along, toward in ((0.0, -1.0), (v.height, 1.0)):
        for side in sides:
            length = t.wear * rng.uniform(0.5, 9.0) * DISC_WEAR_WEIGHT[v.index]  # mm
            if length < 1.5:
                continue
            base = v.pt(along + toward * 0.5, side * (half - 2.0))
            tip = v.pt(along - toward * length * 0.5, side * (half + length))
            mid = 0.5 * (base + tip)
            pen.line([base, mid], 1.8, 16.0 * t.density)  # a spur tapers: broad base, thin tip
            pen.line([mid, tip], 0.9, 16.0 * t.density)


def _trabeculae(pen: PartPen, verts: list[_Vertebra], size: str, t: _Traits, rng) -> None:
    """Trabecular texture inside the bodies, streaked along the spine.

    Osteoporosis thins the horizontal trabeculae first, so the vertical ones stand out as
    coarse stripes; normal bone shows a fine, faint mottle. ``size`` is the attribute
    ("width" or "depth") that spans the body in the image.
    """
    cv = pen.canvas
    polys = []
    for v in verts:
        half = getattr(v, size) / 2 - 2.0
        corners = v.pts([2, 2, v.height - 2, v.height - 2], [-half, half, half, -half])
        polys.append(np.round(pen.place(corners) / cv.mm_per_px * 4).astype(np.int32))
    allp = np.concatenate(polys) // 4
    c0, r0 = np.maximum(allp.min(0), 0)
    c1, r1 = np.minimum(allp.max(0) + 1, (cv.cols, cv.rows))
    if c1 <= c0 or r1 <= r0:
        return
    mask = np.zeros((r1 - r0, c1 - c0), np.float32)
    offset = np.array([c0, r0], np.int32) * 4
    cv2.fillPoly(mask, [p - offset for p in polys], 1.0, cv2.LINE_AA, shift=2)
    size_px = (c1 - c0, r1 - r0)
    streak = 1.6 + 3.0 * t.osteopenia  # mm: the longer, the more vertical the pattern looks
    coarse = rng.standard_normal((max(int(size_px[1] * cv.mm_per_px / streak), 2),
                                  max(int(size_px[0] * cv.mm_per_px / 1.3), 2)))  # fmt: skip
    texture = cv2.resize(coarse.astype(np.float32), size_px, interpolation=cv2.INTER_LINEAR)
    amp = (1.2 + 7.0 * t.osteopenia) * t.density * pen.scale  # water-equivalent mm
    cv.att[r0:r1, c0:c1] += amp * texture * mask


# -- AP -------------------------------------------------------------------------------------------

# Outlines of image-left halves, (x, y) mm from the S1 end-plate centre.
SACRUM_AP_HALF = ((-22, 0), (-36, -1), (-50, 4), (-56, 14), (-51, 38), (-41, 62), (-28, 82),
                  (-14, 98), (0, 106))  # fmt: skip
CREST_AP = ((-40, -8), (-52, -30), (-75, -50), (-100, -58), (-122, -52), (-136, -34),
            (-140, -10), (-136, 12))  # fmt: skip
ILIUM_AP = (*CREST_AP, (-128, 40), (-118, 80), (-108, 120), (-100, 175), (-72, 175), (-55, 122),
            (-32, 72), (-36, 30))  # fmt: skip
BRIM_AP = ((-32, 72), (-42, 100), (-57, 125), (-75, 160), (-85, 180))
SI_JOINT_AP = ((-40, -6), (-37, 30), (-31, 70))
POSTERIOR_ILIUM_AP = ((-40, -8), (-52, -30), (-62, -8), (-55, 40), (-40, 75), (-31, 70))
SACRAL_FORAMINA = ((25, 28, 5.0), (23, 45, 4.5), (20, 61, 4.0), (16, 76, 3.2))  # x, y, radius
# The colon seen AP (local mm from the S1 level - 60): ascending, transverse, descending, sigmoid.
COLON_AP = ((-105, 80), (-112, 10), (-100, -60), (-55, -40), (0, -15), (55, -40), (100, -95),
            (115, -30), (112, 40), (95, 85), (50, 105), (5, 110))  # fmt: skip
SMALL_BOWEL_AP = ((-40, -20), (30, 0), (-20, 30), (40, 50), (0, 70))
RIBS_AP = (  # image-left halves from the rib's vertebra, mm: the 11th leaves the field
    ((14, 0), (60, -4), (115, 28), (155, 80)),
    ((14, 0), (60, 2), (100, 38), (118, 70)),
)


def _vertebra_ap(pen: PartPen, v: _Vertebra, tilt: float, t: _Traits, rng) -> None:
    """One lumbar vertebra seen AP: body, end plates, pedicles, laminae, processes."""
    h, w = v.height, v.width
    _body(pen, v, w / 2, v.depth / w, t)
    _end_plates(pen, v, w / 2, v.depth, tilt, t)
    _osteophytes(pen, v, w / 2, (-1.0, 1.0), t, rng)
    theta = np.linspace(0.0, 2.0 * np.pi, 11)
    for side in (-1.0, 1.0):  # image left = patient's right
        # The pedicle seen end-on: a cortical ring, the vertebra's "eye".
        eye = v.pts(0.32 * h + 0.24 * h * np.sin(theta), side * 0.35 * w + 0.11 * w * np.cos(theta))
        pen.line(eye, 0.8, 9.0 * t.density)
        # Superior articular process rising beside the pedicle, then lamina and inferior
        # articular process sloping to the midline below it: ~10 mm of bone along the beam.
        sap = v.pts([-4.0, 0.25 * h], [side * 0.31 * w, side * 0.29 * w])
        pen.line(sap, 2.2, 8.0 * t.density)
        lamina = v.pts([0.6 * h, h - 1.0, h + 0.8 * v.disc_below],
                       [side * 0.24 * w, side * 0.17 * w, side * 0.16 * w])  # fmt: skip
        pen.line(lamina, 2.5, 8.0 * t.density)
        _transverse_process(pen, v, side, t)
    if v.registered:  # the process runs back and down along the beam: a midline teardrop
        sp = [v.pt(0.55 * h, 0), v.pt(h + 0.4 * v.disc_below, 0)]
        pen.bone(f"{v.name} spinous process", sp, [4.5, 3.0], t.density, cortex=0.35)


def _transverse_process(pen: PartPen, v: _Vertebra, side: float, t: _Traits) -> None:
    """Transverse process from the pedicle outward; T11/T12 carry ribs instead."""
    i, h = v.index, v.height
    if TP_LENGTH_MM[i] <= 0:
        return
    reach = v.width / 2 + TP_LENGTH_MM[i]
    lift = -4.0 if i == len(LEVELS) - 1 else 2.0  # L5's stout processes angle up to the ala
    pts = [v.pt(0.38 * h, side * 0.3 * v.width), v.pt(0.38 * h + lift, side * reach)]
    radii = [TP_RADIUS_MM[i], TP_RADIUS_MM[i] * 0.65]
    which = "right" if side < 0 else "left"
    pen.bone(f"{which} {v.name} transverse process", pts, radii, t.density, cortex=0.35)


def _sacrum_ap(pen: PartPen, s1: np.ndarray, t: _Traits) -> None:
    """Sacrum: an inverted triangle of bone, S1 end plate seen obliquely, four pairs of foramina."""
    half = np.asarray(SACRUM_AP_HALF, np.float64)
    outline = np.concatenate([half, mirror_x(half[-2::-1], 1.0)]) + s1
    bone = PLATE_BONE * t.density
    pen.fill(outline, 35 * bone, track=True)  # alae and segments, ~35 mm of bone
    pen.fill(oval(s1[0], s1[1] + 35, 28, 45), 10 * bone)  # thicker down the middle
    pen.fill(oval(s1[0], s1[1] + 12, 22, 13), 12 * bone)  # S1 body beneath the alae
    pen.bone("sacrum", [s1 + vec(0, 14), s1 + vec(0, 90)], [22, 8], t.density, 0.12, visible=False)
    # The S1 plate slopes ~40 degrees from the beam: a wide oval, the "sacral promontory".
    s1_body = _Vertebra(len(LEVELS) - 1, s1, s1 + vec(0, 24), 48, 34, 0)
    _end_plates(pen, s1_body, 24, 34, -SACRAL_SLOPE_DEG, t, lower=False)
    for x, y, r in SACRAL_FORAMINA:  # lucent holes, each with a thin bright upper rim
        for side in (-1.0, 1.0):
            c = s1 + vec(side * x, y)
            pen.line([c - vec(r * 0.2, 0), c + vec(r * 0.2, 0)], r * 0.8, -25 * bone)
            rim = [c + vec(r * np.cos(a), 0.8 * r * np.sin(a)) for a in np.linspace(3.6, 5.8, 5)]
            pen.line(rim, 0.6, 3.5 * t.density)
    pen.line([s1 + vec(0, 30), s1 + vec(0, 92)], 1.2, 5.0 * t.density)  # median crest
    for k in range(3):  # coccygeal segments
        c = s1 + vec(0, 114 + 10 * k)
        pen.line([c - vec(4 - k, 0), c + vec(4 - k, 0)], 3.5, 10.0 * t.density)


def _pelvis_ap(pen: PartPen, s1: np.ndarray, t: _Traits) -> None:
    """Iliac wings either side of the sacrum: thin fans with a dense crest, brim and SI joint."""
    bone = PLATE_BONE * t.density
    for side in (-1.0, 1.0):
        # A thin wing seen obliquely: ~30 mm of bone along the ray, more behind the SI joint.
        pen.fill(mirror_x(ILIUM_AP, side) + s1, 30 * bone)
        pen.fill(mirror_x(POSTERIOR_ILIUM_AP, side) + s1, 12 * bone, track=True)
        pen.line(mirror_x(CREST_AP, side) + s1, 3.0, 16.0 * t.density)
        pen.line(mirror_x(BRIM_AP, side) + s1, 1.6, 14.0 * t.density)
        # SI joint: a lucent cleft between sclerotic margins.
        joint = mirror_x(SI_JOINT_AP, side) + s1
        pen.line(joint, 1.0, -6.0)
        pen.line(joint + vec(side * 2.2, 0), 0.7, 8.0 * t.density, track=True)
        pen.line(joint - vec(side * 2.2, 0), 0.7, 8.0 * t.density)


def _ribs_ap(pen: PartPen, verts: list[_Vertebra], t: _Traits) -> None:
    """The 11th and 12th ribs, sloping down and out from their vertebrae."""
    for v, path in zip(verts[:2], RIBS_AP, strict=True):
        origin = v.pt(0.4 * v.height, 0)
        for side in (-1.0, 1.0):
            pts = mirror_x([(-x, y) for x, y in path], side) + origin
            # A rib is a flattened tube: ~7 mm of bone along the ray over its 10 mm width.
            pen.line(pts, 4.5, 9.0 * t.density)
            pen.line(pts[1:], 0.6, 12.0 * t.density)  # its lower cortical margin, seen edge-on


def _abdomen_ap(pen: PartPen, verts, s1, t: _Traits, rng) -> None:
    """Abdomen seen AP: trunk, lung bases at the top corners, psoas, kidneys, bowel gas."""
    depth = rng.uniform(*AP_SOFT_TISSUE_MM) * t.habitus
    half = ABDOMEN_HALF_WIDTH_MM * t.habitus**0.6
    centre = rng.normal(0.0, 5.0)
    top, l1 = verts[0].top, verts[2]
    for side in (-1.0, 1.0):
        # Posterior costophrenic recesses: lung above the arch of each dome.
        base = [(40, -90), (42, -25), (75, -8), (115, 14), (150, 46), (190, 46), (190, -90)]
        pen.soft(mirror_x([(-x, y) for x, y in base], side) + top, -45.0 * (SOFT_TISSUE - LUNG))
        # Psoas: a wedge from L1 to the pelvis, its outer margin drawn by fat.
        edge = l1.pt(0, side * l1.width / 2)
        psoas = [edge, edge + vec(side * 8, 0), s1 + vec(side * 88, 10), s1 + vec(side * 62, 45),
                 s1 + vec(side * 30, 0)]  # fmt: skip
        pen.soft(psoas, 60 * MUSCLE_OVER_FAT)
        # Kidneys: the right sits lower, under the liver; upper poles tilt medially.
        c = l1.pt(l1.height * (0.3 if side > 0 else 0.9), side * 78)
        pen.soft(oval(c[0], c[1], 30, 56, side * 14), 50 * MUSCLE_OVER_FAT)

    def trunk(xl: np.ndarray, yl: np.ndarray) -> np.ndarray:
        u = (xl - centre) / half  # an elliptic cylinder: flanks thin out toward the edges
        return depth * SOFT_TISSUE * np.sqrt(np.maximum(1.0 - u * u, 0.0))

    pen.soft_tissue(trunk)
    colon = np.array(COLON_AP, np.float64) + rng.normal(0, 8, (len(COLON_AP), 2))
    small = np.array(SMALL_BOWEL_AP, np.float64) + rng.normal(0, 10, (len(SMALL_BOWEL_AP), 2))
    level = vec(0, s1[1] - 60)
    _bowel_gas(pen, [(colon + level, 38), (small + level, 30)], rng, rng.uniform(15, 35), 12)


def _bowel_gas(pen: PartPen, loops, rng, amount: float, blob_mm: float) -> None:
    """Gas in bowel along paths: irregular lucent pockets where smooth noise beats a threshold.

    ``loops`` is a list of (path in local mm, band width mm). The bands are drawn soft on a
    coarse grid (gas has no detail finer than a few mm), the noise decides where gas collects,
    and the threshold is applied after upsampling so the pockets keep crisp edges.
    """
    cv = pen.canvas
    rows, cols = -(-cv.rows // COARSE), -(-cv.cols // COARSE)
    k = 1.0 / (cv.mm_per_px * COARSE)
    band = np.zeros((rows, cols), np.float32)
    for path, width in loops:
        pts = np.round(pen.place(path) * k * 16).astype(np.int32)
        thick = max(int(width * pen.scale * k), 1)
        cv2.polylines(band, [pts], False, 1.0, thick, cv2.LINE_AA, shift=4)
    band = cv2.GaussianBlur(band, (0, 0), 2.0)
    # Large pockets where coarse noise is high, and the mottle of gas bubbles in stool.
    noise = smooth_noise(rng, rows, cols, blob_mm * k)
    mottle = smooth_noise(rng, rows, cols, 0.35 * blob_mm * k)
    potential = band * (np.maximum(noise, 0.0) + 0.35 * np.maximum(mottle, 0.0))
    potential = cv2.resize(potential, (cv.cols, cv.rows), interpolation=cv2.INTER_LINEAR)
    gas = np.clip((potential - 0.55) * 2.0, 0.0, 1.0)
    cv.att -= np.float32(amount * SOFT_TISSUE) * gas


# -- LAT ------------------------------------------------------------------------------------------

# The right and left iliac crests seen laterally, around the S1 end-plate centre (anterior < 0).
CREST_LAT = ((-80, 30), (-62, -10), (-32, -36), (5, -46), (35, -40), (55, -18), (60, 22))
WING_LAT = (*CREST_LAT, (40, 60), (10, 95), (-40, 100), (-72, 70))


def _posterior_elements_lat(pen: PartPen, v: _Vertebra, t: _Traits) -> None:
    """Pedicles, articular pillar with its facets, and spinous process, seen from the side.

    Left and right superimpose, a little apart by magnification; between the pedicles of
    neighbouring levels the neural foramen stays dark.
    """
    h, back, wall = v.height, -ANTERIOR, v.depth / 2
    p = wall + PEDICLE_LENGTH_MM  # across-position of the articular pillar
    for shift in (0.0, 2.0):
        ped = v.pts([0.3 * h + shift] * 2, [back * (wall - 2), back * (p + 2)])
        pen.line(ped, 0.21 * h, 15.0 * t.density)
    # Articular pillar, ~20 mm of bone along the beam (both sides superimposed): the superior
    # process rises in front, the inferior one hangs behind and below, the pars joins them;
    # where one level's inferior process meets the next one's superior, a facet cleft.
    sap = v.pts([0.35 * h, -0.6 * v.disc_below - 3.0], back * np.array([p, p + 1.0]))
    pars = v.pts([0.35 * h, 0.75 * h], back * np.array([p + 1.0, p + 6.0]))
    iap = v.pts([0.75 * h, h + 0.8 * v.disc_below], back * np.array([p + 6.0, p + 9.0]))
    for seg, radius in ((sap, 3.5), (pars, 4.0), (iap, 3.5)):
        pen.line(seg, radius, 20.0 * t.density)
    # Lamina and spinous process: a thin quadrilateral plate with a denser rim.
    tip = wall + SPINOUS_REACH_MM
    plate = v.pts([0.2 * h, 0.45 * h, 0.55 * h, 0.95 * h, 0.9 * h],
                  back * np.array([p + 6, tip - 3, tip, tip - 2, p + 8]))  # fmt: skip
    pen.fill(plate, 14.0 * t.density, track=v.registered)
    if v.registered:
        sp = [v.pt(0.55 * h, back * (p + 10)), v.pt(0.7 * h, back * (tip - 4))]
        pen.bone(f"{v.name} spinous process", sp, [4.0, 3.5], t.density, cortex=0.3)
    if v.registered and TP_LENGTH_MM[v.index] > 0:
        # The transverse processes point along the beam and hide in the pedicle's shadow; they
        # are registered here too, so both views of a study offer the same bones to break.
        for shift, which in ((0.0, "right"), (2.0, "left")):
            c = v.pt(0.38 * h + shift, back * (p - 2.0))
            ends = [c - v.axis, c + v.axis]
            radius = TP_RADIUS_MM[v.index]
            pen.bone(f"{which} {v.name} transverse process", ends, radius, t.density, 0.35, False)


def _vertebra_lat(pen: PartPen, v: _Vertebra, roll_deg: float, t: _Traits, rng) -> None:
    """One vertebra seen laterally: a rounded-rectangle body and its posterior elements.

    ``roll_deg`` is how far the patient is rolled off a true lateral: with the beam's
    divergence it splits each end plate into a double contour.
    """
    _body(pen, v, v.depth / 2, v.width / v.depth, t)
    _end_plates(pen, v, v.depth / 2, v.width, roll_deg, t)
    _osteophytes(pen, v, v.depth / 2, (ANTERIOR,), t, rng)
    _posterior_elements_lat(pen, v, t)


def _sacral_axis(s1: np.ndarray, sac_dir: np.ndarray, n: int = 6):
    """Points down the sacrum's curved axis (mm) and the unit direction at each."""
    tilt0 = np.rad2deg(np.arctan2(-sac_dir[0], sac_dir[1]))
    pts, dirs, p = [], [], s1.copy()
    for k in range(n):
        d = _direction(tilt0 + 45.0 * k / (n - 1))  # the sacrum curls forward toward the tip
        pts.append(p.copy())
        dirs.append(d)
        p = p + d * SACRUM_LENGTH_MM / (n - 1)
    return np.array(pts), np.array(dirs)


def _sacrum_lat(pen: PartPen, s1: np.ndarray, sac_dir: np.ndarray, t: _Traits) -> None:
    """Sacrum from the side: curved wedge, S1 end plate, anterior cortex, median crest, coccyx."""
    pts, dirs = _sacral_axis(s1, sac_dir)
    half = np.linspace(17.0, 4.0, len(pts))
    back = np.stack([dirs[:, 1], -dirs[:, 0]], axis=1) * -ANTERIOR  # unit, toward the back
    front = pts - back * half[:, None]
    rear = pts + back * (half + np.linspace(18.0, 5.0, len(pts)))[:, None]
    bone = PLATE_BONE * t.density
    pen.fill(np.concatenate([front, rear[::-1]]), 60 * bone, track=True)  # alae: wide along the ray
    body = np.concatenate([front[:2], (pts + back * half[:, None])[1::-1]])
    pen.fill(body, 25 * bone)  # S1 body, denser
    pen.bone("sacrum", [pts[1], pts[4]], [14, 6], t.density, 0.12, visible=False)
    pen.line([front[0], pts[0] + back[0] * 17], 0.6, 18.0 * t.density)  # S1 end plate
    pen.line(front, 1.0, 12.0 * t.density)  # anterior cortex, concave
    pen.line(rear, 1.2, 12.0 * t.density)  # median sacral crest
    tip, d, b = pts[-1], dirs[-1], back[-1]
    for k in range(3):  # coccyx, curling further forward
        c = tip + d * (9 + 9 * k) - b * 3.0 * k
        pen.line([c - d * 3, c + d * 3], 3.5 - 0.5 * k, 12.0 * t.density)


def _pelvis_lat(pen: PartPen, s1: np.ndarray, t: _Traits) -> None:
    """Both iliac wings, superimposed a few mm apart (the far one magnified)."""
    flip = np.array([-ANTERIOR, 1.0])
    for shift, mag in ((vec(0.0, 0.0), 1.0), (vec(5.0, 4.0), 1.05)):
        wing = np.asarray(WING_LAT, np.float64) * flip * mag + s1 + shift
        pen.fill(wing, 10 * PLATE_BONE * t.density)
        crest = np.asarray(CREST_LAT, np.float64) * flip * mag + s1 + shift
        pen.line(crest, 2.5, 12.0 * t.density)


def _ribs_lat(pen: PartPen, verts: list[_Vertebra], t: _Traits) -> None:
    """Lower ribs from the side: arcs behind the spine curving down and forward."""
    back = -ANTERIOR
    for v, reach in zip(verts[:2], (70.0, 40.0), strict=True):  # the 11th reaches further
        w, h = v.depth / 2, 0.5 * v.height
        for shift in (0.0, 6.0):  # right and left
            path = v.pts([0.8 * h, h + 12 + shift, h + 45 + shift, h + 55 + reach * 0.6],
                         [back * (w + 12), back * (w + 42 + shift), back * (w + 28),
                          back * (w + 10 - reach)])  # fmt: skip
            pen.line(path, 3.8, 6.0 * t.density)


def _aortic_calcification(pen: PartPen, verts: list[_Vertebra], t: _Traits, rng) -> None:
    """Calcified plaques in the aortic wall in front of L1-L4: a sign of age on the lateral."""
    for _ in range(int(rng.poisson(12.0 * t.wear))):
        v = verts[int(rng.integers(2, 6))]
        wall = v.depth / 2 + (6.0 if rng.random() < 0.5 else 28.0)  # posterior or anterior wall
        along = rng.uniform(0, v.height + v.disc_below)
        length = rng.uniform(3.0, 10.0)
        pts = [v.pt(along, ANTERIOR * wall), v.pt(along + length, ANTERIOR * (wall + 0.6))]
        pen.line(pts, 0.6, 16.0)


def _abdomen_lat(pen: PartPen, verts, s1, t: _Traits, rng) -> None:
    """Trunk seen from the side: the back follows the lordosis, the belly lies anterior."""
    depth_ap = rng.uniform(*AP_SOFT_TISSUE_MM) * t.habitus  # front to back, mm
    thickness = rng.uniform(*LAT_SOFT_TISSUE_MM) * t.habitus  # side to side: what the beam crosses
    back = BACK_TO_BODY_MM + 70.0 * max(t.habitus - 0.8, 0.0)  # subcutaneous fat of the back
    # Centre of the trunk's cross-section per row, following the spine's curve; the buttocks
    # push the back out below the sacrum.
    ys = [v.pt(v.height / 2, 0)[1] for v in verts] + [s1[1] + 60, s1[1] + 160]
    xs = [v.pt(v.height / 2, 0)[0] for v in verts] + [s1[0] + 25, s1[0] + 45]
    shift = -ANTERIOR * back + ANTERIOR * depth_ap / 2

    def trunk(xl: np.ndarray, yl: np.ndarray) -> np.ndarray:
        centre = np.interp(yl[:, xl.shape[1] // 2], ys, xs)[:, None] + shift
        u2 = np.square((xl - centre) / (depth_ap / 2))
        # The trunk is broad from flank to flank until close to the back and the belly (a
        # rounded box, not an ellipse): the beam crosses nearly its full width at the spine.
        return thickness * SOFT_TISSUE * np.power(np.maximum(1.0 - u2 * u2, 0.0), 0.25)

    top = verts[0].pt(0, -ANTERIOR * 40)
    # Lung bases above the diaphragm, deepest in the posterior costophrenic recess.
    lung = [(-160, -90), (-70, -35), (-20, 0), (40, 18), (90, 48), (130, 45), (150, -90)]
    pen.soft(np.asarray(lung, np.float64) * vec(-ANTERIOR, 1) + top, -70.0 * (SOFT_TISSUE - LUNG))
    pen.soft_tissue(trunk)
    # Bowel loops fill the belly in front of the spine, up to a few cm from the skin.
    belly = verts[4].pt(0, ANTERIOR * (20.0 + depth_ap - back) / 2)
    loops = np.array([(0, -90), (-20, -40), (15, 0), (-10, 40), (20, 80), (0, 120)], np.float64)
    loops[:, 0] *= depth_ap / 250.0
    loops += belly + rng.normal(0, 12, loops.shape)
    _bowel_gas(pen, [(loops, 70)], rng, rng.uniform(20, 50) * t.habitus, 12)


# -- the renderer ---------------------------------------------------------------------------------

AP_HALF_EXTENT_MM = (60.0, 175.0)  # spine and sacrum, local mm either side of the centre
LAT_HALF_EXTENT_MM = (70.0, 175.0)
LAT_FIELD_MARGIN_MM = (55.0, 30.0)  # LAT collimation beyond the bones: anterior, posterior


def _render_ap(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> PartPen:
    """Lay out and draw the AP view; returns the pen, which knows the part's bounding box."""
    t = _traits(subject)
    pen = place_part(canvas, subject, rng, AP_HALF_EXTENT_MM)
    verts, s1, _ = _layout_ap(t, rng)
    _abdomen_ap(pen, verts, s1, t, rng)
    _pelvis_ap(pen, s1, t)
    _sacrum_ap(pen, s1, t)
    _ribs_ap(pen, verts, t)
    for v in verts:
        _vertebra_ap(pen, v, LORDOSIS_TILT_DEG[v.index], t, rng)
    _trabeculae(pen, verts, "width", t, rng)
    pen.flush()
    np.maximum(canvas.att, 0.0, out=canvas.att)  # gas drawn past the skin must not go negative
    return pen


def _render_lat(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> PartPen:
    """Lay out and draw the lateral view (anterior to the image left)."""
    t = _traits(subject)
    pen = place_part(canvas, subject, rng, LAT_HALF_EXTENT_MM)
    verts, s1, sac_dir = _layout_lat(t, rng)
    _abdomen_lat(pen, verts, s1, t, rng)
    _pelvis_lat(pen, s1, t)
    _sacrum_lat(pen, s1, sac_dir, t)
    _ribs_lat(pen, verts, t)
    roll = rng.normal(0.0, 1.5)  # degrees off a true lateral
    for v in verts:
        _vertebra_lat(pen, v, roll, t, rng)
    _aortic_calcification(pen, verts, t, rng)
    _trabeculae(pen, verts, "depth", t, rng)
    pen.flush()
    np.maximum(canvas.att, 0.0, out=canvas.att)
    return pen


@register_anatomy(Anatomy.LUMBAR_SPINE, views=("AP", "LAT"), field_mm=(300.0, 400.0))
def render_lumbar_spine(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a lumbar spine radiograph (AP or LAT) onto ``canvas``.

    Fractures in ``findings`` are left to the generic fracture step, which cuts through one of
    the bones registered here; this renderer draws no lesions itself.
    """
    if view == "AP":
        pen = _render_ap(canvas, subject, rng)
    elif view == "LAT":
        pen = _render_lat(canvas, subject, rng)
        # A lateral is coned to the spine with a hand's breadth of soft tissue in front (the
        # psoas, the aorta's line) and the back's muscles behind, not to the bones alone.
        x0, y0, x1, y1 = pen.field()
        lead, trail = LAT_FIELD_MARGIN_MM if ANTERIOR < 0 else LAT_FIELD_MARGIN_MM[::-1]
        x0, x1 = max(x0 - lead, 0.0), min(x1 + trail, canvas.width_mm)
        return AnatomyResult(canvas, lesions=[], field_mm=(x0, y0, x1, y1))
    else:
        raise ValueError(f"lumbar spine has views AP and LAT, not {view!r}")
    return AnatomyResult(canvas, lesions=[], field_mm=pen.field())
