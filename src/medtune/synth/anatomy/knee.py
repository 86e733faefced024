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

The first part of this module holds the building blocks (`Pose`, `BoneUnion`, `soft_tissue`...)
that the shoulder and pelvis renderers use too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.canvas import CORTEX, FAT, MARROW, SOFT_TISSUE, Canvas, ellipse_outline

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


# -- building blocks for bony anatomy -------------------------------------------------------
# Shared with shoulder.py and pelvis.py. They belong next to the primitives in canvas.py (or a
# module of their own); they live here because this task was told to touch only its own files.

TEXTURE = 0.25  # relative variation of marrow density: the trabecular pattern
TRABECULAR_MM = 1.5  # spacing of that pattern


@dataclass(frozen=True)
class Pose:
    """Places a drawing frame (mm, average adult) on the canvas: mirror, scale, rotate, shift."""

    cx: float  # canvas mm of the frame origin
    cy: float
    scale: float  # subject.body_scale
    angle_deg: float  # in-plane rotation, y down (positive turns clockwise on the image)
    flip: float = 1.0  # -1 mirrors x: a frame drawn for one side gives the other

    def xy(self, points: object) -> np.ndarray:
        """Canvas mm of frame points, shape (n, 2)."""
        p = np.asarray(points, np.float32).reshape(-1, 2)
        return p @ self._matrix + self._origin

    @cached_property
    def _matrix(self) -> np.ndarray:
        """Mirror, scale and rotation as one matrix acting on row vectors."""
        a = np.deg2rad(self.angle_deg)
        c, s = np.cos(a) * self.scale, np.sin(a) * self.scale
        return np.array([[c * self.flip, s * self.flip], [-s, c]], np.float32)

    @cached_property
    def _origin(self) -> np.ndarray:
        """Canvas mm of the frame origin, as a row vector."""
        return np.array([self.cx, self.cy], np.float32)

    def angle(self, deg: float) -> float:
        """Canvas angle of a direction at ``deg`` in the frame (mirroring reverses angles)."""
        return self.angle_deg + self.flip * deg

    def moved(self, origin: tuple[float, float], angle_deg: float) -> Pose:
        """Pose of a sub-frame at ``origin`` of this frame, turned by ``angle_deg`` (a limb)."""
        c = self.xy([origin])[0]
        return Pose(float(c[0]), float(c[1]), self.scale, self.angle(angle_deg), self.flip)


class BoneKit:
    """What the bones of one render share: canvas, bone density, texture, work maps.

    Call ``finish()`` once everything is drawn: it adds the thin lines and spots.
    """

    def __init__(self, canvas: Canvas, bone_density: float, rng: np.random.Generator) -> None:
        self.canvas, self.density = canvas, bone_density
        self.noise = trabecular_noise(canvas, rng)  # canvas-shaped, about unit spread
        shape = canvas.att.shape
        self.outer = np.zeros(shape, np.float32)  # solid chord of the bone being built, mm
        self.inner = np.zeros(shape, np.float32)  # its marrow chord, mm
        self.scratch = np.zeros(shape, np.float32)  # one piece at a time, kept zero
        self.lines = np.zeros(shape, np.float32)  # thin lines, rasterised, blurred at the end
        self.lines_box = [shape[0], shape[1], 0, 0]  # rows and columns the lines touch

    def union(self, pose: Pose) -> BoneUnion:
        """Start a bone drawn in ``pose``'s frame; call ``add()`` when its pieces are in."""
        return BoneUnion(self, pose)

    def line(self, pose: Pose, points: object, radius: float, excess: float) -> None:
        """A thin dense line: bone seen edge-on (a physeal scar, the pelvic brim, a joint roof).

        ``excess`` is its density over soft tissue (scaled by bone density). Lines are a few
        pixels wide, where the exact round profile of ``Canvas.tube`` does not show: they are
        rasterised (microseconds each) with the mean chord of their cross-section as value.
        """
        r_px = radius * pose.scale / self.canvas.mm_per_px
        value = float(np.pi / 2 * radius * pose.scale * excess * self.density)
        pix = np.round((pose.xy(points) / self.canvas.mm_per_px - 0.5) * 16).astype(np.int32)
        width = max(round(2 * r_px), 1)
        cv2.polylines(self.lines, [pix], False, value, width, cv2.LINE_8, 4)
        self._touch(pix.reshape(-1, 2) / 16, r_px)

    def spots(self, pose: Pose, centres: object, radii: object, excess: float) -> None:
        """Small round bodies (gas bubbles, foramina) of ``excess`` density, rasterised.

        A spot's value is the mean chord of a sphere (4/3 of its radius): a few pixels across,
        the exact profile does not show. Negative ``excess`` takes tissue away (gas, holes).
        """
        px = pose.xy(centres) / self.canvas.mm_per_px - 0.5
        r_mm = np.broadcast_to(np.asarray(radii, np.float32), (len(px),)) * pose.scale
        r_px = r_mm / self.canvas.mm_per_px
        for (x, y), r, rp in zip(np.rint(px * 16).astype(int).tolist(), r_mm, r_px, strict=True):
            value = float(4.0 / 3.0 * r * excess)
            cv2.circle(self.lines, (x, y), max(int(rp * 16), 16), value, -1, cv2.LINE_8, 4)
        self._touch(px, float(r_px.max()))

    def _touch(self, px: np.ndarray, reach: float) -> None:
        """Grow the box of the lines layer to hold points ``px`` (x, y) give or take ``reach``."""
        box, margin = self.lines_box, reach + 4  # room for the blur
        box[0] = max(min(box[0], int(px[:, 1].min() - margin)), 0)
        box[1] = max(min(box[1], int(px[:, 0].min() - margin)), 0)
        box[2] = max(box[2], int(px[:, 1].max() + margin) + 1)
        box[3] = max(box[3], int(px[:, 0].max() + margin) + 1)

    def finish(self) -> None:
        """Add the lines and spots, softened a little as a round profile would be."""
        r0, c0, r1, c1 = self.lines_box
        if r1 > r0 and c1 > c0:
            region = self.lines[r0:r1, c0:c1]
            self.canvas.att[r0:r1, c0:c1] += cv2.GaussianBlur(region, (0, 0), 0.8)
            region[...] = 0.0
        self.lines_box = [self.lines.shape[0], self.lines.shape[1], 0, 0]


def _on_canvas(canvas: Canvas, pts: np.ndarray, rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stretch of a polyline (and its radii) that lies on the canvas, a radius in from its
    edges; its ends are cut where it leaves, its inner vertices kept."""
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    s = np.linspace(0.0, cum[-1], max(int(cum[-1] / 2.0), 2))  # every 2 mm or so
    x, y, r = (np.interp(s, cum, v) for v in (pts[:, 0], pts[:, 1], rad))
    on = (x >= r) & (x <= canvas.width_mm - r) & (y >= r) & (y <= canvas.height_mm - r)
    if not on.any():
        return pts[:0], rad[:0]
    first, last = s[np.argmax(on)], s[len(on) - 1 - np.argmax(on[::-1])]
    at = np.concatenate([[first], cum[(cum > first) & (cum < last)], [last]])
    kept = np.stack([np.interp(at, cum, pts[:, 0]), np.interp(at, cum, pts[:, 1])], axis=1)
    return kept.astype(np.float32), np.interp(at, cum, rad).astype(np.float32)


class BoneUnion:
    """One bone built from overlapping pieces, added to the canvas as their union.

    Overlapping pieces must not add up (a condyle meeting the shaft would double in density), so
    each piece's solid chord and marrow chord (mm along the ray) are merged by maximum; the bone
    then adds cortex over the solid chord and marrow over the marrow chord. Shafts are recorded
    with ``Canvas.bone`` for the fracture step.
    """

    def __init__(self, kit: BoneKit, pose: Pose) -> None:
        self.canvas, self.pose, self.density, self.noise = kit.canvas, pose, kit.density, kit.noise
        self.cortex_excess = (CORTEX - SOFT_TISSUE) * kit.density  # over the tissue it replaces
        self.marrow_excess = (MARROW - SOFT_TISSUE) * kit.density
        self.outer, self.inner, self.scratch = kit.outer, kit.inner, kit.scratch
        self.rows: list[int] = []
        self.cols: list[int] = []

    def _merge(self, into: np.ndarray, box: tuple[slice, slice], piece: np.ndarray) -> None:
        """Union ``piece`` (a map of ``box``) into the solid or the marrow chord."""
        np.maximum(into[box], piece, out=into[box])
        self.rows += [box[0].start, box[0].stop]
        self.cols += [box[1].start, box[1].stop]

    def _take(self, box: tuple[slice, slice]) -> np.ndarray:
        """What was drawn into the scratch map's ``box``; the scratch is left zero."""
        piece = self.scratch[box].copy()
        self.scratch[box] = 0.0
        return piece

    def _tube(self, pts: np.ndarray, rad: np.ndarray, frac: float) -> None:
        """Merge the solid and marrow chords (mm) of a tube given in canvas mm.

        Each segment is a capsule evaluated on its own box, as ``Canvas.tube`` does, but both
        chords come out of one pass over the pixels.
        """
        for i in range(len(pts) - 1):
            p0, p1, r0, r1 = pts[i], pts[i + 1], float(rad[i]), float(rad[i + 1])
            reach = max(r0, r1)
            lo, hi = np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach
            box = self.canvas._box(lo[0], lo[1], hi[0], hi[1])
            if box is None:
                continue
            x, y = self.canvas._grid(box)
            seg = p1 - p0
            t = np.clip(((x - p0[0]) * seg[0] + (y - p0[1]) * seg[1]) / float(seg @ seg), 0, 1)
            d2 = (x - p0[0] - t * seg[0]) ** 2 + (y - p0[1] - t * seg[1]) ** 2
            r2 = (r0 + (r1 - r0) * t) ** 2
            self._merge(self.outer, box, 2.0 * np.sqrt(np.maximum(r2 - d2, 0.0)))
            inner2 = r2 * np.float32((1.0 - frac) ** 2)
            self._merge(self.inner, box, 2.0 * np.sqrt(np.maximum(inner2 - d2, 0.0)))

    def _radii(self, pts: np.ndarray, radii: object) -> np.ndarray:
        """Radii (mm, one per point) at the subject's scale."""
        rad = np.asarray(radii, np.float32) * np.float32(self.pose.scale)
        return np.broadcast_to(rad, (len(pts),)).astype(np.float32)

    def shaft(self, name: str, points: object, radii: object, cortex: float = 0.3) -> None:
        """A tubular part, recorded for fractures under ``name`` (words of a report).

        Only the stretch on the canvas is recorded: a shaft drawn on past the canvas edge (so no
        end shows) must not have its fracture fall off the image.
        """
        pts = self.pose.xy(points)
        rad = self._radii(pts, radii)
        self._tube(pts, rad, float(np.clip(cortex * self.density, 0.08, 0.9)))
        on_pts, on_rad = _on_canvas(self.canvas, pts, rad)
        if len(on_pts) < 2:
            return
        # Canvas.bone draws the tube and records it. The union has drawn the tube already (its
        # chords merged with the other pieces), so Canvas.bone runs on an empty canvas, where
        # it draws nothing, and its record moves over to this canvas.
        empty = Canvas(0, 0, self.canvas.mm_per_px, np.zeros((0, 0), np.float32))
        self.canvas.bones.append(empty.bone(name, on_pts, on_rad, self.density, cortex))

    def rod(self, points: object, radii: object, cortex: float = 0.3) -> None:
        """A tubular part not recorded for fractures (a ridge, a process)."""
        pts = self.pose.xy(points)
        frac = float(np.clip(cortex * self.density, 0.08, 0.9))  # as Canvas.bone thins it
        self._tube(pts, self._radii(pts, radii), frac)

    def shell(
        self, cx: float, cy: float, rx: float, ry: float, depth: float, angle: float = 0.0,
        cortex_mm: float = 2.0,
    ) -> None:  # fmt: skip
        """An ellipsoid with a cortical shell (a condyle, a head, a tuberosity)."""
        s, (c,) = self.pose.scale, self.pose.xy([(cx, cy)])
        t = max(cortex_mm * self.density, 0.6)
        reach = max(rx, ry) * s
        box = self.canvas._box(c[0] - reach, c[1] - reach, c[0] + reach, c[1] + reach)
        if box is None:
            return
        a = self.pose.angle(angle)
        for into, grow in ((self.outer, 0.0), (self.inner, -t)):
            rxi, ryi, di = rx + grow, ry + grow, depth + 2 * grow
            if min(rxi, ryi, di) > 0:
                self.canvas.ellipsoid(c[0], c[1], rxi * s, ryi * s, di * s, 1.0, a, self.scratch)
            self._merge(into, box, self._take(box))

    def _distance(self, outline: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Box of the outline (canvas mm) and the distance (mm) inside it to the outline."""
        lo, hi = outline.min(0), outline.max(0)
        box = self.canvas._box(lo[0], lo[1], hi[0], hi[1])
        if box is None:
            return None
        mm = self.canvas.mm_per_px
        origin = np.array([box[1].start, box[0].start], np.float32) + 0.5  # pixel centres
        contour = np.round((outline / mm - origin) * 4).astype(np.int32)  # 1/4 px
        # One pixel of border all round, so the distance is to the outline, not the box.
        mask = np.zeros((box[0].stop - box[0].start + 2, box[1].stop - box[1].start + 2), np.uint8)
        cv2.fillPoly(mask, [contour + 4], 1, lineType=cv2.LINE_8, shift=2)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)[1:-1, 1:-1]
        dist *= mm
        return box, dist

    def _fade(self, box: tuple[slice, slice], fade: object) -> np.ndarray:
        """0..1 ramp from the first to the second frame point of ``fade``."""
        a, b = self.pose.xy(fade)
        x, y = self.canvas._grid(box)
        ab = b - a
        t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no crease where the fade starts or ends

    def plate(
        self, outline: object, depth: float, edge_mm: float, cortex_mm: float = 2.0,
        fade: object = None,
    ) -> None:  # fmt: skip
        """A rounded body with a polygon outline and a cortical rim (an epiphysis, a wing).

        Corners of the outline are rounded off: bones have no sharp corners. Thickness rises
        from the outline along a quarter-ellipse over ``edge_mm`` to ``depth``, as for a convex
        body. ``fade`` (two frame points) ramps the body in from nothing at the first point to
        full at the second, so a broad epiphysis merges into its narrower shaft without a seam.
        """
        found = self._distance(self.pose.xy(round_corners(outline, rounds=2)))
        if found is None:
            return
        box, dist = found
        ramp = None if fade is None else self._fade(box, fade)
        s = self.pose.scale
        t, e, d = max(cortex_mm * self.density, 0.6) * s, edge_mm * s, depth * s
        for into, offset, dd in ((self.outer, 0.0, d), (self.inner, t, max(d - 2 * t, 0.0))):
            f = np.clip((dist - offset) * np.float32(1.0 / max(e - offset, 1e-3)), 0.0, 1.0)
            chord = np.sqrt(f * (2.0 - f))  # = sqrt(1 - (1 - f)^2), 0 outside the body
            chord *= np.float32(dd)
            if ramp is not None:
                chord *= ramp
            self._merge(into, box, chord)

    def add(self) -> None:
        """Add the union to the canvas (marrow mottled like trabecular bone); reset the maps."""
        if not self.rows:
            return
        box = slice(min(self.rows), max(self.rows)), slice(min(self.cols), max(self.cols))
        marrow = self.marrow_excess * (1.0 + TEXTURE * self.noise[box])
        outer, inner = self.outer[box], self.inner[box]
        self.canvas.att[box] += outer * self.cortex_excess - inner * (self.cortex_excess - marrow)
        outer[...] = 0.0
        inner[...] = 0.0
        self.rows, self.cols = [], []


def inside_distance(mask: np.ndarray, mm: float, blur_px: float) -> np.ndarray:
    """Distance (mm) from each pixel inside ``mask`` to its outline, 0 outside; smooth.

    The distance to a pixelated outline ripples along slanted edges (each stair step of the
    mask shows as a band). The signed distance runs straight through the outline, so blurring
    it removes the ripple without rounding the profile, even right at the edge.
    """
    padded = np.pad(mask, 1)  # a border of outside, so the distance is to the outline
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - padded, cv2.DIST_L2, 5)
    signed = np.where(padded > 0, inside - 0.5, 0.5 - outside)  # the outline lies between pixels
    signed = cv2.GaussianBlur(signed, (0, 0), blur_px)[1:-1, 1:-1]
    return np.maximum(signed, 0.0) * mm


_TEXTURE_TILES: dict[tuple[int, int, float], np.ndarray] = {}  # a few canvas geometries
_TEXTURE_TILES_KEPT = 8


def trabecular_noise(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Unit-ish noise streaked along y, like the trabeculae along a long bone's axis.

    A canvas-sized window, at a random place, of a tile four times the canvas's area made once
    per canvas geometry (from a fixed seed, so renders stay deterministic): making fresh noise
    for every render would cost more than drawing a bone.
    """
    key = (canvas.rows, canvas.cols, round(canvas.mm_per_px, 6))
    tile = _TEXTURE_TILES.get(key)
    if tile is None:
        step = max(TRABECULAR_MM / canvas.mm_per_px, 1.0)  # px between independent values
        rows, cols = 2 * canvas.rows, 2 * canvas.cols
        # Twice as coarse along y as along x: stretched, the values make vertical streaks.
        shape = (int(rows / (2 * step)) + 2, int(cols / step) + 2)
        coarse = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        tile = cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_LINEAR)
        if len(_TEXTURE_TILES) >= _TEXTURE_TILES_KEPT:
            _TEXTURE_TILES.pop(next(iter(_TEXTURE_TILES)))  # the oldest
        _TEXTURE_TILES[key] = tile
    y, x = rng.integers(0, canvas.rows + 1), rng.integers(0, canvas.cols + 1)
    return tile[y : y + canvas.rows, x : x + canvas.cols]


@dataclass(frozen=True)
class SoftLayer:
    """A rounded body of soft tissue, or of fat or air inside it (``density`` below water's)."""

    polygon: np.ndarray  # outline, canvas mm
    depth: float  # mm along the beam where it is thickest
    density: float  # what it adds per mm: SOFT_TISSUE for the body; inside it, the difference
    # from the tissue it replaces (lung: LUNG - SOFT_TISSUE, negative)
    edge_mm: float  # how far in from the outline the full depth is reached


def soft_tissue(canvas: Canvas, layers: list[SoftLayer]) -> None:
    """Add soft tissue: like ``Canvas.slab``, but cheaper and right at the canvas edges.

    ``Canvas.slab`` measures the distance to the outline inside its box, which it clips to the
    canvas, so a limb crossing the canvas edge would thin out toward that edge. Here distances
    are measured on a coarse grid (the profiles are smooth) reaching past the canvas, summed
    over the layers, resized, and cut by the first layer's outline filled at full resolution:
    that one is the skin, whose line is crisp; the others lie inside it.
    """
    # Canvas pixels per coarse cell: about 1/12 of the skin's rounded edge, 2 to 6 px (what
    # lies inside is blurred by the tissue around it anyway).
    step = int(np.clip(layers[0].edge_mm / (12.0 * canvas.mm_per_px), 2, 6))
    mm = canvas.mm_per_px * step
    margin = int(np.ceil(max(layer.edge_mm for layer in layers) / mm)) + 1  # cells past the edge
    size = np.array([canvas.cols, canvas.rows]) // step + 1
    shape = (size[1] + 2 * margin, size[0] + 2 * margin)
    maps = []
    for layer in layers:
        mask = np.zeros(shape, np.uint8)
        pix = np.round((layer.polygon / mm - 0.5 + margin) * 4).astype(np.int32)  # 1/4 cell
        cv2.fillPoly(mask, [pix], 1, cv2.LINE_8, 2)
        f = np.minimum(inside_distance(mask, mm, blur_px=1.5) / layer.edge_mm, 1.0)
        maps.append((layer.depth * layer.density) * np.sqrt(f * (2.0 - f)))
    # What lies inside the body (a lung) never takes away more than 70% of it: walls remain.
    total = np.maximum(sum(maps), 0.3 * maps[0])
    total = total[margin : margin + size[1], margin : margin + size[0]]
    full = cv2.resize(total, (step * size[0], step * size[1]), interpolation=cv2.INTER_LINEAR)
    full = full[: canvas.rows, : canvas.cols]
    canvas.att += full * canvas.mask_of_polygon(layers[0].polygon)


def round_corners(points: object, rounds: int = 3, closed: bool = True) -> np.ndarray:
    """Round the corners of an outline (Chaikin's corner cutting): skin and bone have none.

    An open polyline (``closed=False``) keeps its two end points.
    """
    points = np.asarray(points, np.float32).reshape(-1, 2)
    for _ in range(rounds):
        nxt = np.roll(points, -1, axis=0)
        cut = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1)
        cut = cut.reshape(-1, 2)
        points = cut if closed else np.concatenate([points[:1], cut[1:-2], points[-1:]])
    return points


def field_box(canvas: Canvas, outline: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (mm) of the drawn part, clipped to the canvas."""
    lo = np.maximum(outline.min(0), 0.0)
    hi = np.minimum(outline.max(0), (canvas.width_mm, canvas.height_mm))
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# -- the knee ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KneeShape:
    """What varies between knees: size of the condyles, joint spaces, arthritis, flexion."""

    width: float  # condylar width factor (1 = 80 mm bicondylar width)
    js_medial: float  # joint space, mm
    js_lateral: float
    arthritis: float  # 0 none .. 1 severe (narrowing, osteophytes, sclerosis)
    flexion_deg: float  # knee flexion in the lateral view

    @classmethod
    def draw(cls, subject: Subject, rng: np.random.Generator) -> _KneeShape:
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
    shape: _KneeShape
    rng: np.random.Generator
    kit: BoneKit


def _widen(outline: list[tuple[float, float]], factor: float) -> np.ndarray:
    """Outline with x scaled by ``factor`` (a broader or narrower knee)."""
    return np.asarray(outline, np.float32) * np.array([factor, 1.0], np.float32)


def _place(canvas: Canvas, subject: Subject, flip: float, rng: np.random.Generator) -> Pose:
    """Joint line near the canvas centre, with a little jitter and tilt."""
    dx, dy = rng.normal(0.0, JITTER, 2) * (canvas.width_mm, canvas.height_mm)
    return Pose(
        canvas.width_mm / 2 + float(dx),
        canvas.height_mm / 2 + float(dy),
        subject.body_scale,
        float(rng.normal(0.0, TILT_DEG)),
        flip,
    )


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


def _tibia_ap_outline(shape: _KneeShape) -> np.ndarray:
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


def _osteophytes(bone: BoneUnion, shape: _KneeShape, rng: np.random.Generator, femur: bool) -> None:
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
    shape = _KneeShape.draw(subject, rng)
    pose = _place(canvas, subject, flip, rng)
    scene = _Scene(canvas, subject, shape, rng, BoneKit(canvas, subject.bone_density, rng))
    outline = _render_ap(scene, pose) if view == "AP" else _render_lat(scene, pose)
    scene.kit.finish()
    return AnatomyResult(canvas, lesions=[], field_mm=field_box(canvas, outline))
