"""Hand radiograph renderer: PA and PA-oblique views of a left or right hand at true scale.

The hand is laid out in its own anatomical frame (mm): ``u`` toward the thumb (radial), ``v``
toward the fingertips (distal), ``w`` toward the X-ray source (dorsal in a PA view), origin at the
middle of the radiocarpal joint. :class:`LimbPose` projects that frame onto the detector: a roll
about the long axis for the oblique view, a mirror for laterality (facing the patient, a right hand
shows its thumb on the image left), body scale, and the small tilt and shift of real positioning.

Tubular bones go through ``Canvas.bone`` (one tapered segment each) so a fracture can later be
cut through them; their flared bases, round heads and styloids are ellipsoidal lobes merged onto
that tube as a union of solids. Carpals are ellipsoidal shells (dense cortex around cancellous
bone, mottled by a trabecular texture) projected exactly from 3-D, so the oblique view overlaps
them as a real one does. The limb helpers in the first half (pose, shells, unions, soft tissue,
osteoarthritis, placement) are shared with the foot renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.canvas import CORTEX, MARROW, SOFT_TISSUE, Bone, Canvas, smooth_noise

# -- shared limb geometry ---------------------------------------------------------------------

LONG_BONE_CORTEX = 0.3  # cortical thickness / radius of small tubular bones (~1.1 mm of 3.8 mm)
SHELL_CORTEX_MM = 0.8  # cortical shell of carpal and tarsal bones at bone density 1.0
TRABECULAR = 1.25  # density of the cancellous interior of carpal and tarsal bones (water = 1)
# Hands and feet are taken at 50-60 kVp (about 40 keV effective), where bone attenuates about
# 4.8x water, not the 2.9x of the canvas's ~60 keV densities: bone's excess over water is
# multiplied by this for extremities. Without it the wrist's soft tissue outshines the fingers.
LOW_KVP_BONE_GAIN = 2.0
BASE_TAPER = 0.88  # radius where a short bone's tube starts / its base radius (then tapers)
BASE_LENS = 0.45  # along-axis semi-axis of the lens that squares off a base / base radius
HEAD_LOBE = 1.2  # along-axis semi-axis of a round head lobe / head radius: ovoid to the neck
HEAD_LOBE_ABOVE = 1.15  # heads wider than this x the shaft get a lobe; others: the tube's end
TRABECULA_MM = 1.6  # size of the mottling of cancellous bone (trabecular pattern)
TRABECULAR_TEXTURE = 0.1  # relative variation of a spongy bone's projected density
SOFT_TISSUE_MM = 1.3  # soft tissue is computed on pixels up to this size, then interpolated
PLACEMENT_MARGIN_MM = 4.0  # keep the part this far inside the canvas edges
OSTEOPHYTE_MM = (0.9, 2.0)  # radius of a marginal osteophyte, mild to severe osteoarthritis


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


def bone_densities(bone_density: float) -> tuple[float, float, float]:
    """(cortex density, cancellous density, cortical shell mm) for a patient's bone density,
    with the extremity beam's higher bone contrast (LOW_KVP_BONE_GAIN)."""
    gained = bone_density * LOW_KVP_BONE_GAIN
    cortex = 1.0 + (CORTEX - 1.0) * gained
    cancellous = 1.0 + (TRABECULAR - 1.0) * gained
    return cortex, cancellous, max(SHELL_CORTEX_MM * bone_density, 0.4)


def draw_shell(
    canvas: Canvas,
    pose: LimbPose,
    shell: Shell,
    bone_density: float,
    target: np.ndarray | None = None,
) -> None:
    """Add a hollow ellipsoidal bone: a cortical shell (replacing soft tissue) around marrow."""
    cortex, cancellous, thick = bone_densities(bone_density)
    cx, cy, rx, ry, ang, depth = project_ellipsoid(pose, shell)
    canvas.ellipsoid(cx, cy, rx, ry, depth, cortex - SOFT_TISSUE, ang, target)
    cx, cy, rx, ry, ang, depth = project_ellipsoid(pose, shell, inset=thick / pose.scale)
    canvas.ellipsoid(cx, cy, rx, ry, depth, cancellous - cortex, ang, target)


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


def _grid_box(
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


def _capsule_chords(x: np.ndarray, y: np.ndarray, record: Bone) -> tuple[np.ndarray, np.ndarray]:
    """Ray lengths (mm) through a one-segment bone's outer surface and its marrow cavity.

    The same geometry as ``Canvas.tube`` for one segment, written with in-place operations:
    it runs for every lobe of every bone.
    """
    (x0, y0), (x1, y1) = record.points[0].tolist(), record.points[-1].tolist()
    r0, r1 = float(record.radii[0]), float(record.radii[-1])
    sx, sy = x1 - x0, y1 - y0
    dx, dy = x - x0, y - y0
    t = dx * (sx / max(sx * sx + sy * sy, 1e-6)) + dy * (sy / max(sx * sx + sy * sy, 1e-6))
    np.clip(t, 0.0, 1.0, out=t)
    ex, ey = dx - t * sx, dy - t * sy
    ex *= ex
    ey *= ey
    ex += ey  # squared distance to the axis
    t *= r1 - r0
    t += r0  # radius there
    t *= t
    outer = t - ex
    t *= (1.0 - record.cortex) ** 2
    t -= ex
    np.maximum(outer, 0.0, out=outer)
    np.maximum(t, 0.0, out=t)
    return 2.0 * np.sqrt(outer), 2.0 * np.sqrt(t)


def _ellipsoid_chords(
    x: np.ndarray, y: np.ndarray, outer: tuple[float, ...], inner: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Ray lengths (mm) through a projected ellipsoid and through its inset (cancellous) core.

    The core is taken as centred and turned like the outer ellipse: exact without a roll, and
    within a fraction of a pixel for the small cortical inset with one.
    """
    cx, cy, rx, ry, ang, depth = outer
    _, _, rxi, ryi, _, depth_i = inner
    ca, sa = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    dx, dy = x - cx, y - cy
    uu, vv = dx * ca + dy * sa, dy * ca - dx * sa
    uu *= uu
    vv *= vv
    o = 1.0 - uu * (1.0 / rx**2) - vv * (1.0 / ry**2)
    i = 1.0 - uu * (1.0 / rxi**2) - vv * (1.0 / ryi**2)
    np.maximum(o, 0.0, out=o)
    np.maximum(i, 0.0, out=i)
    return depth * np.sqrt(o), depth_i * np.sqrt(i)


def _tube_layers(
    x: np.ndarray, y: np.ndarray, tube: Bone | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A drawn tube's outer (cortex) and cavity layers on a grid, and what it added (outer minus
    cavity), with the densities ``Canvas.bone`` used for it; zeros without a tube."""
    if tube is None:
        outer = np.zeros((y.shape[0], x.shape[1]), np.float32)
        return outer, np.zeros_like(outer), np.zeros_like(outer)
    o, i = _capsule_chords(x, y, tube)
    cortex = 1.0 + (CORTEX - 1.0) * tube.density
    marrow = 1.0 + (MARROW - 1.0) * tube.density
    outer, inner = o * (cortex - SOFT_TISSUE), i * (cortex - marrow)
    return outer, inner, outer - inner


def draw_bone_union(
    canvas: Canvas,
    pose: LimbPose,
    lobes: Sequence[Shell],
    bone_density: float,
    tube: Bone | None = None,
) -> None:
    """Draw the ellipsoidal lobes of one bone as a union of solids: one cortex, one cavity.

    Summing overlapping hollow shapes would double the cortex; the maximum of hollow shapes
    would show each one's cortical ring through the other. The union takes the longest ray
    through any outer surface minus the longest ray through any cavity. ``tube`` is a one-segment
    bone already drawn by ``Canvas.bone`` that the lobes grow out of (heads, bases, styloids):
    its own contribution is replaced by the union's.
    """
    cortex, cancellous, thick = bone_densities(bone_density)
    inset = thick / pose.scale
    shapes = [(project_ellipsoid(pose, s), project_ellipsoid(pose, s, inset)) for s in lobes]
    # Outside the lobes the union is the tube itself: only their box needs computing.
    reach = [max(o[2], o[3]) for o, _ in shapes]
    centres = np.array([o[:2] for o, _ in shapes])
    found = _grid_box(canvas, (centres.T - reach).min(1), (centres.T + reach).max(1))
    if found is None:
        return
    box, x, y = found
    outer, inner, own = _tube_layers(x, y, tube)
    mm, x0, y0 = canvas.mm_per_px, float(x[0, 0]), float(y[0, 0])
    for (o_params, i_params), r in zip(shapes, reach, strict=True):
        # Each lobe only on its own window of the box: cost follows the lobe's area.
        c0, c1 = max(int((o_params[0] - r - x0) / mm), 0), int((o_params[0] + r - x0) / mm) + 2
        r0, r1 = max(int((o_params[1] - r - y0) / mm), 0), int((o_params[1] + r - y0) / mm) + 2
        win = (slice(r0, r1), slice(c0, c1))
        o, i = _ellipsoid_chords(x[:, win[1]], y[win[0]], o_params, i_params)
        np.maximum(outer[win], o * (cortex - SOFT_TISSUE), out=outer[win])
        np.maximum(inner[win], i * (cortex - cancellous), out=inner[win])
    outer -= inner
    outer -= own
    canvas.att[box] += outer


def draw_spongy_bones(
    canvas: Canvas,
    pose: LimbPose,
    bones: Sequence[Sequence[Shell]],
    bone_density: float,
    rng: np.random.Generator,
) -> None:
    """Draw irregular cancellous bones (carpals, tarsals), each one or more lobes, mottled.

    They are drawn on one layer over their common box, which is then multiplied by a smooth
    random field about TRABECULA_MM across: the trabecular pattern that makes a carpal look like
    bone rather than a glass bead. The tubular bones stay plain, so the fracture step's redraw of
    them matches the pixels exactly.
    """
    reach = [_shell_box(pose, lobe) for lobes in bones for lobe in lobes]
    lo = np.min([r[0] for r in reach], 0)
    hi = np.max([r[1] for r in reach], 0)
    patch = Patch.over(canvas, lo, hi)
    if patch is None:
        return
    local = pose.shifted(-patch.offset[0], -patch.offset[1])
    for lobes in bones:
        if len(lobes) == 1:
            draw_shell(patch.canvas, local, lobes[0], bone_density)
        else:
            draw_bone_union(patch.canvas, local, lobes, bone_density)
    layer = patch.canvas.att
    noise = smooth_noise(rng, layer.shape[0], layer.shape[1], TRABECULA_MM / canvas.mm_per_px)
    layer *= 1.0 + TRABECULAR_TEXTURE * noise
    canvas.att[patch.box] += layer


def _shell_box(pose: LimbPose, shell: Shell) -> tuple[np.ndarray, np.ndarray]:
    """Detector box (lo, hi mm) that holds a shell's projection."""
    cx, cy = pose.point(*shell.centre)
    r = max(shell.axes) * pose.scale
    return np.array([cx - r, cy - r]), np.array([cx + r, cy + r])


def draw_lobed_bone(
    canvas: Canvas,
    pose: LimbPose,
    name: str,
    ends: np.ndarray,
    radii: Sequence[float],
    bone_density: float,
    lobes: Sequence[Shell] = (),
    cortex: float = LONG_BONE_CORTEX,
) -> Bone:
    """Draw and register a tubular bone: one tapered segment (frame ends (2, 3), radii (2,) mm)
    through ``Canvas.bone``, with ellipsoidal ``lobes`` (epiphyses, styloids) grown onto it.

    One segment per bone keeps the fracture step's redraw of the tube exact and avoids seams
    where segments of a hollow tube meet.
    """
    xy, r = pose.project(ends), np.asarray(radii, np.float64) * pose.scale
    # Canvas.bone scales density and cortical thickness by its density factor: the beam's gain
    # goes into the density, and the cortex fraction is divided by it to stay the patient's.
    gain = LOW_KVP_BONE_GAIN
    record = canvas.bone(name, xy, r, bone_density * gain, cortex / gain)
    if lobes:
        draw_bone_union(canvas, pose, lobes, bone_density, tube=record)
    return record


def draw_long_bone(
    canvas: Canvas,
    pose: LimbPose,
    name: str,
    base: np.ndarray,
    head: np.ndarray,
    radii: Sequence[float],
    bone_density: float,
    flared: bool = True,
    head_lobe: bool = True,
) -> Bone:
    """Draw a short tubular bone (metacarpal, phalanx) between its extremities (frame mm, 3-D).

    ``radii`` = (base, shaft, head) mm. The registered tube tapers from the broad base to the
    shaft: the metaphysis narrowing. With ``flared`` a short lens squares off the base (a flat
    articular plate, its corners a little wider than the tube); with ``head_lobe`` a head wider
    than the shaft is a round lobe on the narrow neck, otherwise the tube's rounded end.
    """
    r_base, r_shaft, r_head = radii
    axis = head - base
    length = float(np.linalg.norm(axis))
    unit = axis / max(length, 1e-6)
    angle = math.degrees(math.atan2(unit[1], unit[0]))
    lobed_head = flared and head_lobe and r_head > HEAD_LOBE_ABOVE * r_shaft
    r0 = min(BASE_TAPER * r_base, 0.3 * length)
    r1 = 1.05 * r_shaft if lobed_head else min(max(r_shaft, 0.85 * r_head), 0.4 * length)
    s1 = max(length - (HEAD_LOBE * r_head if lobed_head else r1), r0 + 0.2)
    ends = np.array([base + unit * r0, base + unit * s1])
    record = draw_lobed_bone(canvas, pose, name, ends, (r0, r1), bone_density)
    if not flared:
        return record
    # Base and head lobes lie apart: each is merged on its own small box.
    along = BASE_LENS * r_base
    lens = Shell(tuple(base + unit * along), (along, 1.03 * r_base, 0.9 * r_base), angle)
    draw_bone_union(canvas, pose, [lens], bone_density, tube=record)
    if lobed_head:
        along = HEAD_LOBE * r_head
        lobe = Shell(tuple(head - unit * along), (along, r_head, 0.95 * r_head), angle)
        draw_bone_union(canvas, pose, [lobe], bone_density, tube=record)
    return record


def smooth_outline(points: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon: skin has no corners."""
    p = np.asarray(points, np.float64)
    for _ in range(rounds):
        q = np.roll(p, -1, axis=0)
        p = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], 1).reshape(-1, p.shape[1])
    return p


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


def cut_below(canvas: Canvas, pose: LimbPose, v_cut: float, box: Sequence[float]) -> None:
    """Clear everything proximal to ``v = v_cut`` inside the part's ``box`` (x0, y0, x1, y1 mm):
    the limb runs on out of the field there, as past a collimator edge."""
    found = _grid_box(canvas, np.array(box[:2]) - 20.0, np.array(box[2:]) + 20.0)
    if found is None:
        return
    (rows, cols), x, y = found
    # Only rows the cut line can reach need looking at (the tilt is a few degrees).
    lowest = pose.point(0.0, v_cut, 0.0)[1] - (box[2] - box[0]) * abs(math.tan(pose.spin)) - 2.0
    start = int(np.clip(lowest / canvas.mm_per_px - rows.start, 0, y.shape[0]))
    v = pose.frame_v(x, y[start:])
    region = canvas.att[rows.start + start : rows.stop, cols]
    region[v < v_cut] = 0.0


def osteoarthritis_grades(
    rng: np.random.Generator, age: float, prevalence: np.ndarray
) -> np.ndarray:
    """Per-joint osteoarthritis grade in [0, 1] (0 = healthy): only over 60, more with age.

    ``prevalence`` is each joint's chance at about 90 years. Random numbers are drawn for every
    subject, so age alone changes nothing else in the picture.
    """
    draws, severity = rng.random(len(prevalence)), rng.random(len(prevalence))
    if age <= 60.0:
        return np.zeros(len(prevalence))
    ageing = min((age - 60.0) / 30.0, 1.0)
    hit = draws < prevalence * (0.3 + 0.7 * ageing)
    return np.where(hit, 0.35 + 0.65 * severity * (0.5 + 0.5 * ageing), 0.0)


def draw_osteophytes(
    canvas: Canvas,
    pose: LimbPose,
    joint: np.ndarray,
    direction: np.ndarray,
    half_width: float,
    grade: float,
    bone_density: float,
) -> None:
    """Spurs at both margins of a degenerate joint, and sclerosis under its surfaces.

    ``joint`` is the joint's centre (frame u, v, w mm), ``direction`` the distal unit vector
    (u, v), ``half_width`` the articular half-width (mm).
    """
    if grade <= 0.3:
        return
    cortex, _, _ = bone_densities(max(bone_density, 0.8))
    normal = np.array([direction[1], -direction[0]])
    size = OSTEOPHYTE_MM[0] + (OSTEOPHYTE_MM[1] - OSTEOPHYTE_MM[0]) * grade
    axis_deg = float(np.degrees(np.arctan2(direction[1], direction[0])))
    for side in (-1.0, 1.0):  # lips spanning the joint line on both margins
        c = joint[:2] + normal * side * (half_width + 0.1 * size)
        spur = Shell((c[0], c[1], joint[2]), (1.8 * size, 0.6 * size, 1.3 * size), axis_deg)
        cx, cy, rx, ry, ang, depth = project_ellipsoid(pose, spur)
        canvas.ellipsoid(cx, cy, rx, ry, depth, cortex - SOFT_TISSUE, ang)
    plate = Shell((joint[0], joint[1], joint[2]), (2.2, 0.95 * half_width, half_width), axis_deg)
    cx, cy, rx, ry, ang, depth = project_ellipsoid(pose, plate)
    canvas.ellipsoid(cx, cy, rx, ry, depth, 0.25 * (cortex - SOFT_TISSUE) * grade, ang)


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


# -- the hand ---------------------------------------------------------------------------------

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
    return smooth_outline(np.array(pts, np.float64))


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


def _layout_hand(canvas: Canvas, subject: Subject, rng: np.random.Generator) -> HandLayout:
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
    inside = layout.outline[layout.outline[:, 1] >= -layout.forearm]
    cut = [[-31.0, -layout.forearm, 0.0], [29.0, -layout.forearm, 0.0]]
    extent = np.concatenate([inside, cut])
    return place_pose(canvas, pose, extent, np.zeros(len(extent)), rng, SHIFT_JITTER)


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
    layout = _layout_hand(canvas, subject, rng)
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
