"""Bones of the hand and foot renderers, drawn in the limb frame of :mod:`.limb`.

Tubular bones (metacarpals, metatarsals, phalanges, the distal radius and ulna) go through
``Canvas.bone`` (one tapered segment each) so a fracture can later be cut through them; their
flared bases, round heads and styloids are ellipsoidal lobes merged onto that tube as a union of
solids (:func:`draw_bone_union`). Carpals and tarsals are ellipsoidal shells (dense cortex around
cancellous bone) mottled by a trabecular texture (:func:`draw_spongy_bones`). Extremities are
taken at low kVp, where bone stands out more from soft tissue than the canvas's densities say:
:data:`LOW_KVP_BONE_GAIN`. Osteoarthritis narrows joints and grows osteophytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medtune.synth.anatomy.limb import LimbPose, Patch, Shell, grid_box, project_ellipsoid
from medtune.synth.canvas import CORTEX, MARROW, SOFT_TISSUE, Bone, Canvas, smooth_noise

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
OSTEOPHYTE_MM = (0.9, 2.0)  # radius of a marginal osteophyte, mild to severe osteoarthritis


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
    found = grid_box(canvas, (centres.T - reach).min(1), (centres.T + reach).max(1))
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
