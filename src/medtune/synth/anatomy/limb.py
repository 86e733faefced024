"""The limb frame of the hand and foot renderers: pose, shells, layout, soft tissue, placement.

A limb (hand, foot) is laid out in its own anatomical frame (mm): ``u`` across the limb, ``v``
along it (distal), ``w`` toward the X-ray source, origin at a joint the renderer chooses.
:class:`LimbPose` projects that frame onto the detector: a roll about the long axis for an oblique
view, a mirror for laterality, body scale, and the small tilt and shift of real positioning.
:class:`Shell` is an ellipsoidal bone (or one lobe of an irregular bone) in that frame, and
:func:`project_ellipsoid` its exact projection. The rest lays a ray of bones out end to end
(:func:`chain_bones`, :func:`digit_outline`), draws the tapering soft tissue, places the part on
the canvas and cuts it where it runs out of the field. Drawing the bones themselves is
:mod:`medtune.synth.anatomy.limb_bones`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from medtune.synth.canvas import SOFT_TISSUE, Canvas

SOFT_TISSUE_MM = 1.3  # soft tissue is computed on pixels up to this size, then interpolated
PLACEMENT_MARGIN_MM = 4.0  # keep the part this far inside the canvas edges


@dataclass(frozen=True)
class LimbPose:
    """Maps a limb's anatomical frame (u, v, w in mm) onto the detector (x right, y down, mm).

    ``roll`` turns the limb about its long axis (0 for PA/AP, 30-45 deg for obliques): the
    projection keeps ``u cos(roll) + w sin(roll)``. ``flip`` is +1 when local +u shows on the image
    right. Distal (+v) is up on the image.
    """

    roll: float  # rad
    flip: float  # +1 or -1
    scale: float  # body_scale: every length in the frame is multiplied by it
    spin: float  # rad, in-plane tilt of the limb on the detector
    origin: tuple[float, float] = (0.0, 0.0)  # detector mm where the frame's origin lands

    def linear(self) -> np.ndarray:
        """2x2 map from (rolled u, v) to detector (x, y) offsets, mm."""
        c, s = np.cos(self.spin), np.sin(self.spin)
        return np.array([[c, -s], [s, c]]) @ np.diag([self.flip * self.scale, -self.scale])

    def project(self, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Detector mm (n, 2) of frame points given as (n, 3), or (n, 2) with w = 0."""
        p = np.asarray(points, np.float64).reshape(len(points), -1)
        w = p[:, 2] if p.shape[1] > 2 else 0.0
        u = p[:, 0] * np.cos(self.roll) + w * np.sin(self.roll)
        return np.stack([u, p[:, 1]], 1) @ self.linear().T + np.asarray(self.origin)

    def point(self, u: float, v: float, w: float) -> tuple[float, float]:
        """Detector mm of one frame point, in plain floats (fast for per-shape calls)."""
        ur = (u * math.cos(self.roll) + w * math.sin(self.roll)) * self.flip * self.scale
        vr = -v * self.scale
        c, s = math.cos(self.spin), math.sin(self.spin)
        return c * ur - s * vr + self.origin[0], s * ur + c * vr + self.origin[1]

    def frame_v(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The frame's v (mm, distal) at detector points: for cuts and tapers along a limb."""
        dx, dy = x - self.origin[0], y - self.origin[1]
        return (math.sin(self.spin) * dx - math.cos(self.spin) * dy) / self.scale

    def shifted(self, dx: float, dy: float) -> LimbPose:
        """The same pose moved on the detector by (dx, dy) mm (or onto a patch's origin)."""
        return replace(self, origin=(self.origin[0] + dx, self.origin[1] + dy))


@dataclass(frozen=True)
class Shell:
    """An ellipsoidal bone, or one lobe of an irregular bone, in the limb frame."""

    centre: tuple[float, float, float]  # u, v, w mm
    axes: tuple[float, float, float]  # semi-axes mm: along ``angle``, across it in-plane, along w
    angle: float = 0.0  # deg, in-plane, from +u toward +v

    def moved(self, du: float, dv: float, grow: float = 1.0) -> Shell:
        """This shell shifted in-plane by (du, dv) mm and scaled in-plane by ``grow``."""
        c, a = self.centre, self.axes
        return Shell((c[0] + du, c[1] + dv, c[2]), (a[0] * grow, a[1] * grow, a[2]), self.angle)


def project_ellipsoid(pose: LimbPose, shell: Shell, inset: float = 0.0) -> tuple[float, ...]:
    """(cx, cy, rx, ry, angle_deg, depth) of a shell's projection, its axes shrunk by ``inset``.

    The projection of an ellipsoid x'Mx <= 1 along the ray w is the ellipse of M's Schur
    complement, and its longest chord (at the centre) is 2/sqrt(M_ww): exact, so a roll overlaps
    bones the way a real oblique view does. Plain floats: this runs for every carpal and tarsal.
    """
    phi, r = math.radians(shell.angle), pose.roll
    cf, sf, cr, sr = math.cos(phi), math.sin(phi), math.cos(r), math.sin(r)
    # M = sum_k e_k e_k' / a_k^2 over the body axes e_k in the rolled frame (u', v, w'):
    # e0 = (cr cf, sf, -sr cf), e1 = (-cr sf, cf, sr sf), e2 = (sr, 0, cr); written out for speed.
    k0, k1, k2 = (1.0 / max(a - inset, 0.3) ** 2 for a in shell.axes)
    m00 = k0 * (cr * cf) ** 2 + k1 * (cr * sf) ** 2 + k2 * sr * sr
    m01 = cr * cf * sf * (k0 - k1)
    m02 = cr * sr * (k2 - k0 * cf * cf - k1 * sf * sf)
    m11 = k0 * sf * sf + k1 * cf * cf
    m12 = sr * sf * cf * (k1 - k0)
    m22 = sr * sr * (k0 * cf * cf + k1 * sf * sf) + k2 * cr * cr
    # In-plane quadratic form, then into detector units: x' = flip*s*u, y' = -s*v, then the spin.
    s2 = pose.scale**2
    a = (m00 - m02 * m02 / m22) / s2
    b = -pose.flip * (m01 - m02 * m12 / m22) / s2
    c = (m11 - m12 * m12 / m22) / s2
    half = math.hypot((a - c) / 2, b)
    lam_small, lam_big = (a + c) / 2 - half, (a + c) / 2 + half
    major = 0.5 * math.atan2(-2 * b, c - a)  # direction of the small eigenvalue (long axis)
    cx, cy = pose.point(*shell.centre)
    angle = math.degrees(major + pose.spin)
    depth = 2.0 * pose.scale / math.sqrt(m22)
    return cx, cy, lam_small**-0.5, lam_big**-0.5, angle, depth


@dataclass
class Patch:
    """A blank canvas over a box of a parent canvas, for drawing a layer and merging it back."""

    canvas: Canvas
    box: tuple[slice, slice]
    offset: tuple[float, float]  # mm of the patch's top-left corner in the parent

    @classmethod
    def over(cls, parent: Canvas, lo: np.ndarray, hi: np.ndarray) -> Patch | None:
        """A blank patch covering the mm box (lo, hi) of ``parent``, pixel-aligned; None if off."""
        s = 1.0 / parent.mm_per_px
        c0, c1 = max(int(lo[0] * s) - 2, 0), min(int(np.ceil(hi[0] * s)) + 3, parent.cols)
        r0, r1 = max(int(lo[1] * s) - 2, 0), min(int(np.ceil(hi[1] * s)) + 3, parent.rows)
        if c0 >= c1 or r0 >= r1:
            return None
        blank = Canvas.blank(r1 - r0, c1 - c0, parent.mm_per_px)
        off = (c0 * parent.mm_per_px, r0 * parent.mm_per_px)
        return cls(blank, (slice(r0, r1), slice(c0, c1)), off)

    def layer(self) -> np.ndarray:
        """A zero array the size of the patch, to draw one shape into."""
        return np.zeros_like(self.canvas.att)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre detector coordinates (mm, parent frame) as row and column vectors."""
        mm = self.canvas.mm_per_px
        x = (np.arange(self.canvas.cols, dtype=np.float32) + 0.5) * mm + self.offset[0]
        y = (np.arange(self.canvas.rows, dtype=np.float32) + 0.5) * mm + self.offset[1]
        return x[None, :], y[:, None]


def grid_box(
    canvas: Canvas, lo: Sequence[float], hi: Sequence[float]
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Pixel slices covering a mm box (clipped) and their pixel-centre x, y (mm) vectors."""
    mm = canvas.mm_per_px
    c0, c1 = max(int(lo[0] / mm) - 1, 0), min(math.ceil(hi[0] / mm) + 2, canvas.cols)
    r0, r1 = max(int(lo[1] / mm) - 1, 0), min(math.ceil(hi[1] / mm) + 2, canvas.rows)
    if c0 >= c1 or r0 >= r1:
        return None
    x = (np.arange(c0, c1, dtype=np.float32) + 0.5) * mm
    y = (np.arange(r0, r1, dtype=np.float32) + 0.5) * mm
    return (slice(r0, r1), slice(c0, c1)), x[None, :], y[:, None]


def place_pose(
    canvas: Canvas,
    pose: LimbPose,
    extent: np.ndarray,
    pad: np.ndarray,
    rng: np.random.Generator,
    jitter: float,
) -> tuple[LimbPose, tuple[float, float, float, float]]:
    """Centre the part on the canvas with a random shift of up to ``jitter`` x the canvas size.

    ``extent`` are frame points (n, 3) that bound the part and ``pad`` their radii (mm). The shift
    is clamped so the whole part stays on the canvas. Returns the pose and the part's bounding box.
    """
    xy = pose.project(extent)
    r = np.asarray(pad)[:, None] * pose.scale
    lo, hi = (xy - r).min(0), (xy + r).max(0)
    size = np.array([canvas.width_mm, canvas.height_mm])
    want = size / 2 + rng.uniform(-jitter, jitter, 2) * size - (lo + hi) / 2
    low_ok = PLACEMENT_MARGIN_MM - lo
    high_ok = size - PLACEMENT_MARGIN_MM - hi
    shift = np.where(low_ok <= high_ok, np.clip(want, low_ok, high_ok), (low_ok + high_ok) / 2)
    # Two pixels more: rasterised and interpolated edges spill a little past the outline.
    spill = 2.0 * canvas.mm_per_px
    lo, hi = np.maximum(lo + shift - spill, 0.0), np.minimum(hi + shift + spill, size)
    return pose.shifted(*shift), (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def place_cut_limb(
    canvas: Canvas,
    pose: LimbPose,
    outline: np.ndarray,
    v_cut: float,
    cut_ends: tuple[tuple[float, float], tuple[float, float]],
    rng: np.random.Generator,
    jitter: float,
) -> tuple[LimbPose, tuple[float, float, float, float]]:
    """:func:`place_pose` for a limb cut straight across at ``v = -v_cut`` (forearm, heel).

    The part's extent is the skin ``outline`` (n, 3) beyond the cut, plus the two points
    ``cut_ends`` ((u, w) each) where the cut meets the limb's sides.
    """
    inside = outline[outline[:, 1] >= -v_cut]
    cut = [[u, -v_cut, w] for u, w in cut_ends]
    extent = np.concatenate([inside, cut])
    return place_pose(canvas, pose, extent, np.zeros(len(extent)), rng, jitter)


def cut_below(canvas: Canvas, pose: LimbPose, v_cut: float, box: Sequence[float]) -> None:
    """Clear everything proximal to ``v = v_cut`` inside the part's ``box`` (x0, y0, x1, y1 mm):
    the limb runs on out of the field there, as past a collimator edge."""
    found = grid_box(canvas, np.array(box[:2]) - 20.0, np.array(box[2:]) + 20.0)
    if found is None:
        return
    (rows, cols), x, y = found
    # Only rows the cut line can reach need looking at (the tilt is a few degrees).
    lowest = pose.point(0.0, v_cut, 0.0)[1] - (box[2] - box[0]) * abs(math.tan(pose.spin)) - 2.0
    start = int(np.clip(lowest / canvas.mm_per_px - rows.start, 0, y.shape[0]))
    v = pose.frame_v(x, y[start:])
    region = canvas.att[rows.start + start : rows.stop, cols]
    region[v < v_cut] = 0.0


def draw_soft_tissue(
    canvas: Canvas,
    pose: LimbPose,
    outline: np.ndarray,
    taper: tuple[float, float, float, float],
    edge_mm: float,
) -> None:
    """Add a limb's soft tissue: one rounded slab whose thickness tapers along the limb.

    ``outline`` is the skin (n, 2|3) in frame mm, digits included: within ``edge_mm`` of the skin
    the thickness rounds off, so a finger about 2 x edge_mm wide gets an elliptical section.
    ``taper`` = (v0, depth0, v1, depth1): thickness (mm) in the middle changes linearly from v0
    to v1 and stays constant beyond. An oblique roll lengthens the ray through the body (1/cos)
    and widens its rounded edge. Soft tissue is smooth, so it is computed at half resolution
    where pixels are finer than SOFT_TISSUE_MM and then interpolated up (4x fewer pixels).
    """
    body = pose.project(outline)
    patch = Patch.over(canvas, body.min(0), body.max(0))
    if patch is None:
        return
    rows, cols = patch.canvas.rows, patch.canvas.cols
    k = 2 if canvas.mm_per_px * 2 <= SOFT_TISSUE_MM else 1
    coarse = Patch(
        Canvas.blank(-(-rows // k), -(-cols // k), canvas.mm_per_px * k), patch.box, patch.offset
    )
    slab = coarse.layer()
    edge = edge_mm * (1.0 + abs(math.sin(pose.roll))) * pose.scale
    coarse.canvas.slab(body - np.asarray(patch.offset), 1.0, SOFT_TISSUE, edge, target=slab)
    v0, d0, v1, d1 = taper
    v = pose.frame_v(*coarse.grid())
    depth = np.clip(d0 + (v - v0) * ((d1 - d0) / (v1 - v0)), min(d0, d1), max(d0, d1))
    slab *= depth * (SOFT_TISSUE / max(math.cos(pose.roll), 0.7))
    if k > 1:
        slab = cv2.resize(slab, (slab.shape[1] * k, slab.shape[0] * k))[:rows, :cols]
    canvas.att[patch.box] += slab


BoneSpec = tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]  # name, base, head, radii


def chain_bones(
    names: Sequence[str],
    radii: Sequence[tuple[float, ...]],
    lengths: Sequence[float],
    start: tuple[float, float, float],
    angles: Sequence[float],
    heights: Sequence[float],
    gaps: Sequence[float],
) -> list[BoneSpec]:
    """Lay a ray's bones (metacarpal or metatarsal, then phalanges) end to end in the frame.

    Each bone runs ``lengths[i]`` mm at ``angles[i]`` deg from the long axis (+ toward +u), its
    head at depth ``heights[i]`` (w, mm); joint spaces ``gaps`` (mm) separate them.
    """
    pos = np.array(start, np.float64)
    bones: list[BoneSpec] = []
    for i, name in enumerate(names):
        d = direction(angles[i])
        head = np.array([*(pos[:2] + lengths[i] * d), heights[i]])
        bones.append((name, pos, head, tuple(radii[i])))
        if i < len(gaps):
            pos = np.array([*(head[:2] + gaps[i] * d), heights[i]])
    return bones


def along(bone: BoneSpec, t: float, out: float) -> tuple[float, float, float]:
    """Frame (u, v, w) at fraction ``t`` along a bone, ``out`` mm to its +u side."""
    (bu, bv, bw), (hu, hv, hw) = bone[1].tolist(), bone[2].tolist()
    du, dv = hu - bu, hv - bv
    k = out / math.hypot(du, dv)
    return bu + t * du + k * dv, bv + t * dv - k * du, bw + t * (hw - bw)


def digit_outline(
    bones: Sequence[BoneSpec], half: Sequence[float], pad: float, web: float
) -> list[tuple[float, float, float]]:
    """Skin of a finger or toe (frame u, v, w mm): up its -u side, round the pulp, down its +u
    side, from web to web. ``bones`` is the ray (metacarpal/metatarsal first); ``half`` the skin
    half-width at the web, at each interphalangeal joint and at the pulp; ``pad`` the pulp beyond
    the tuft; ``web`` how far along the proximal phalanx the web lies (fraction)."""
    (bu, bv, _), (tu, tv, tw) = bones[-1][1].tolist(), bones[-1][2].tolist()
    length = math.hypot(tu - bu, tv - bv)
    du, dv = (tu - bu) / length, (tv - bv) / length
    cu, cv = tu + du * (pad - half[-1]), tv + dv * (pad - half[-1])
    pulp = [
        (cu + half[-1] * (-dv * math.cos(a) + du * math.sin(a)),
         cv + half[-1] * (du * math.cos(a) + dv * math.sin(a)), tw)
        for a in np.radians(np.linspace(0.0, 180.0, 7)).tolist()
    ]  # fmt: skip
    joints = list(zip(bones[1:-1], half[1:-1], strict=True))
    minus = [along(bones[1], web, -half[0]), *[along(b, 1.0, -h) for b, h in joints]]
    plus = [along(b, 1.0, h) for b, h in joints[::-1]]
    return [*minus, *pulp, *plus, along(bones[1], web, half[0])]


def direction(angle_deg: float) -> np.ndarray:
    """Unit vector (u, v) of an axis ``angle_deg`` from the limb's long axis, + toward +u."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])
