"""Hollow bones built from overlapping pieces, in a 2-D frame: the knee, shoulder and pelvis.

A :class:`Pose` places a drawing frame (mm for an average adult) on the canvas: mirror, scale,
rotation, shift. A :class:`BoneKit` holds what the bones of one render share (work maps, the
trabecular texture, a layer of thin lines and spots); a :class:`BoneUnion` is one bone built from
pieces (shafts, rods, ellipsoidal shells, rounded plates) merged as a union, so overlapping
pieces do not double in density, then added as cortex around mottled marrow. Shafts are recorded
with ``Canvas.bone`` (without drawing them again) for the fracture step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from medtune.synth.canvas import CORTEX, MARROW, SOFT_TISSUE, Canvas, round_corners

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


def centred_pose(
    canvas: Canvas,
    scale: float,
    rng: np.random.Generator,
    jitter: float,
    tilt_deg: float,
    flip: float = 1.0,
    below_mm: float = 0.0,
) -> Pose:
    """A frame at the canvas centre, ``below_mm`` lower, moved by Gaussian jitter (``jitter`` x
    the canvas size, each axis) and turned by a Gaussian tilt (``tilt_deg`` standard deviation).
    """
    dx, dy = rng.normal(0.0, jitter, 2) * (canvas.width_mm, canvas.height_mm)
    return Pose(
        canvas.width_mm / 2 + float(dx),
        canvas.height_mm / 2 + float(dy) + below_mm,
        scale,
        float(rng.normal(0.0, tilt_deg)),
        flip,
    )


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
            box = self.canvas.box(lo[0], lo[1], hi[0], hi[1])
            if box is None:
                continue
            x, y = self.canvas.grid(box)
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
        # The union has drawn the tube already (its chords merged with the other pieces):
        # Canvas.bone only records it.
        self.canvas.bone(name, on_pts, on_rad, self.density, cortex, draw=False)

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
        box = self.canvas.box(c[0] - reach, c[1] - reach, c[0] + reach, c[1] + reach)
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
        box = self.canvas.box(lo[0], lo[1], hi[0], hi[1])
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
        x, y = self.canvas.grid(box)
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
