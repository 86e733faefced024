"""Drawing primitives for radiograph-like phantoms: projected thickness of simple 3-D shapes.

A radiograph shows, per pixel, the attenuation integrated along the ray. We build it as a map of
water-equivalent thickness (mm): a body part is a sum of shapes, each adding the length of the ray
inside it times its density relative to water (soft tissue 1.0, lung 0.3, cortical bone about 2.9,
marrow about 1.3). Projections of ellipsoids and cylinders give the rounded edges and bright
cortical rims real radiographs have, which flat filled shapes do not.

Coordinates are millimetres on the detector: x to the right, y down, origin at the top-left
corner. Every primitive works on its bounding box only, so cost scales with the shape's area.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

# Densities relative to water at diagnostic energies (~60 keV effective).
SOFT_TISSUE = 1.0
FAT = 0.9
LUNG = 0.3
MARROW = 1.3
CORTEX = 2.9
AIR = 0.0


@dataclass
class Bone:
    """A bone drawn as a tube, kept so a fracture can later be cut through it."""

    name: str  # words a report would use: "distal radius", "fifth metatarsal"
    points: np.ndarray  # (n, 2) mm, along the shaft
    radii: np.ndarray  # (n,) mm, outer radius at each point
    cortex: float  # cortical thickness as a fraction of the radius
    density: float  # patient bone-density factor (1.0 = young adult)


@dataclass
class Canvas:
    """A float32 map of water-equivalent thickness (mm), with its pixel geometry."""

    rows: int
    cols: int
    mm_per_px: float
    att: np.ndarray = field(repr=False)
    bones: list[Bone] = field(default_factory=list, repr=False)
    _xs: np.ndarray | None = field(default=None, repr=False)
    _ys: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def blank(cls, rows: int, cols: int, mm_per_px: float) -> Canvas:
        return cls(rows, cols, mm_per_px, np.zeros((rows, cols), np.float32))

    @property
    def width_mm(self) -> float:
        return self.cols * self.mm_per_px

    @property
    def height_mm(self) -> float:
        return self.rows * self.mm_per_px

    # -- geometry helpers ---------------------------------------------------------------------

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the mm rectangle, clipped to the canvas; None if outside.

        Padded by a pixel or two past the rectangle, so a shape's rounded edge is never cut.
        """
        s = 1.0 / self.mm_per_px
        c0, c1 = max(int(np.floor(x0 * s)) - 1, 0), min(int(np.ceil(x1 * s)) + 2, self.cols)
        r0, r1 = max(int(np.floor(y0 * s)) - 1, 0), min(int(np.ceil(y1 * s)) + 2, self.rows)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def grid(self, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (mm) of a box, as broadcastable row and column vectors."""
        if self._xs is None or self._ys is None:
            # Built once per canvas: shapes are drawn by the hundred, each wants its slice.
            self._xs = (np.arange(self.cols, dtype=np.float32) + 0.5) * self.mm_per_px
            self._ys = (np.arange(self.rows, dtype=np.float32) + 0.5) * self.mm_per_px
        rows, cols = box
        return self._xs[None, cols], self._ys[rows, None]

    # -- primitives ---------------------------------------------------------------------------

    def ellipsoid(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        depth: float,
        density: float = SOFT_TISSUE,
        angle_deg: float = 0.0,
        target: np.ndarray | None = None,
    ) -> None:
        """Add an ellipsoid: semi-axes rx, ry in the image plane, ``depth`` mm thick at centre."""
        reach = max(rx, ry)
        box = self.box(cx - reach, cy - reach, cx + reach, cy + reach)
        if box is None:
            return
        x, y = self.grid(box)
        a = np.deg2rad(angle_deg)
        ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
        dx, dy = x - cx, y - cy
        u = (dx * ca + dy * sa) / rx
        v = (-dx * sa + dy * ca) / ry
        inside = np.maximum(1.0 - (u * u + v * v), 0.0)
        (self.att if target is None else target)[box] += (depth * density) * np.sqrt(inside)

    def tube(
        self,
        points: Sequence[Sequence[float]] | np.ndarray,
        radii: Sequence[float] | np.ndarray | float,
        density: float = CORTEX,
        cortex: float | None = None,
        inner_density: float = MARROW,
        displaces: float = SOFT_TISSUE,
        target: np.ndarray | None = None,
    ) -> None:
        """Add a tube along a polyline (a bone shaft, a rib, a vessel), radius varying linearly.

        With ``cortex`` (fraction of the radius) the tube is hollow: a dense cortical shell around
        marrow, which projects to the two bright edge lines of a long bone. ``displaces`` is the
        density of the tissue the tube replaces (soft tissue for bones, lung for vessels).
        """
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        rad = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),)).astype(np.float32)
        r_max = float(rad.max())
        lo, hi = pts.min(0) - r_max, pts.max(0) + r_max
        box = self.box(lo[0], lo[1], hi[0], hi[1])
        if box is None:
            return
        # Each segment is a capsule evaluated on its own small box; joints take the maximum path
        # length, outer and marrow separately (combining them per segment would leave a bright
        # cortical ring at every joint), so the cost follows the tube's area, not its box's.
        shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        outer = np.zeros(shape, np.float32)
        inner = np.zeros(shape, np.float32) if cortex is not None else None
        for i in range(len(pts) - 1):
            self._capsule(outer, inner, box, pts[i], pts[i + 1], rad[i], rad[i + 1], cortex)
        add = outer * np.float32(density - displaces)
        if inner is not None:
            add -= inner * np.float32(density - inner_density)
        (self.att if target is None else target)[box] += add

    def _capsule(
        self,
        outer: np.ndarray,
        inner: np.ndarray | None,
        box: tuple[slice, slice],
        p0: np.ndarray,
        p1: np.ndarray,
        r0: float,
        r1: float,
        cortex: float | None,
    ) -> None:
        """Max the path lengths through one segment's capsule (and its marrow) into the layers."""
        r_max = float(max(r0, r1))
        lo, hi = np.minimum(p0, p1) - r_max, np.maximum(p0, p1) + r_max
        sub = self.box(lo[0], lo[1], hi[0], hi[1])
        if sub is None:
            return
        x, y = self.grid(sub)
        seg = p1 - p0
        length2 = float(seg @ seg) or 1e-6
        dx, dy = x - p0[0], y - p0[1]
        t = np.clip((dx * seg[0] + dy * seg[1]) * np.float32(1.0 / length2), 0.0, 1.0)
        d2 = (dx - t * seg[0]) ** 2 + (dy - t * seg[1]) ** 2
        r2 = (r0 + (r1 - r0) * t) ** 2 if r0 != r1 else np.float32(r0 * r0)
        local = (slice(sub[0].start - box[0].start, sub[0].stop - box[0].start),
                 slice(sub[1].start - box[1].start, sub[1].stop - box[1].start))  # fmt: skip
        path = 2.0 * np.sqrt(np.maximum(r2 - d2, 0.0))
        np.maximum(outer[local], path, out=outer[local])
        if inner is not None and cortex is not None:
            k = np.float32((1.0 - cortex) ** 2)
            path = 2.0 * np.sqrt(np.maximum(r2 * k - d2, 0.0))
            np.maximum(inner[local], path, out=inner[local])

    def lines(
        self,
        polylines: Sequence[np.ndarray],
        radii: Sequence[np.ndarray],
        density: float,
        displaces: float,
        target: np.ndarray | None = None,
    ) -> None:
        """Add many thin tubes (vessels, wires) fast: rasterised segments, then a slight blur.

        For tubes a few pixels wide the exact projected profile of :meth:`tube` is invisible,
        and drawing hundreds of them with cv2 costs microseconds each instead of ~0.1 ms.
        """
        layer = np.zeros((self.rows, self.cols), np.float32)
        s = 1.0 / self.mm_per_px
        for pts, rad in zip(polylines, radii, strict=True):
            pix = np.round(np.asarray(pts, np.float32) * s * 4).astype(np.int32)
            for i in range(len(pix) - 1):
                r = float(rad[i] + rad[i + 1]) / 2
                # Mean chord of a circle of radius r is (pi / 2) r: the value of a filled line.
                value = float(np.pi / 2 * r * (density - displaces))
                width = max(round(2 * r * s), 1)
                cv2.line(layer, tuple(pix[i]), tuple(pix[i + 1]), value, width, cv2.LINE_8, 2)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.7)
        (self.att if target is None else target)[...] += layer

    def bone(
        self,
        name: str,
        points: Sequence[Sequence[float]] | np.ndarray,
        radii: Sequence[float] | np.ndarray | float,
        bone_density: float,
        cortex: float = 0.3,
        draw: bool = True,
        target: np.ndarray | None = None,
    ) -> Bone:
        """Add a long bone (hollow tube with cortex) and remember it for fractures.

        With ``draw=False`` the bone is only recorded, for a fracture to be cut through it: for
        bones whose look comes from other shapes (a union of pieces, a flat-ended vertebral
        body, a layered skull vault), where the tube only tells the fracture step where to cut.
        ``target``, as for :meth:`tube`, draws into that array instead of ``att``.
        """
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        rad = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),)).astype(np.float32)
        # Low bone density thins the cortex and lowers its mineral content.
        cortex_fraction = float(np.clip(cortex * bone_density, 0.08, 0.9))
        if draw:
            self.tube(
                pts,
                rad,
                density=1.0 + (CORTEX - 1.0) * bone_density,
                cortex=cortex_fraction,
                inner_density=1.0 + (MARROW - 1.0) * bone_density,
                target=target,
            )
        record = Bone(name, pts, rad, cortex_fraction, bone_density)
        self.bones.append(record)
        return record

    def slab(
        self,
        polygon: Sequence[Sequence[float]] | np.ndarray,
        depth: float,
        density: float = SOFT_TISSUE,
        edge_mm: float | None = None,
        target: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Add a rounded slab with a polygon outline (lungs, body, scapula, iliac wing).

        Thickness rises from 0 at the outline to ``depth`` at ``edge_mm`` inside it, along a
        quarter-ellipse, as a convex body's projection does. Returns the filled mask of its box.
        """
        poly = np.asarray(polygon, np.float32).reshape(-1, 2)
        lo, hi = poly.min(0), poly.max(0)
        box = self.box(lo[0], lo[1], hi[0], hi[1])
        if box is None:
            return None
        origin = np.array([box[1].start, box[0].start], np.float32)
        pix = np.round((poly / self.mm_per_px - origin) * 4).astype(np.int32)  # 2 bits subpixel
        mask = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.uint8)
        cv2.fillPoly(mask, [pix], 1, lineType=cv2.LINE_8, shift=2)
        # A border of zeros, so the distance is to the outline even where it touches the box.
        dist = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        dist *= self.mm_per_px
        if edge_mm is None:
            edge_mm = 0.5 * min(hi[0] - lo[0], hi[1] - lo[1])
        f = np.minimum(dist / max(edge_mm, 1e-3), 1.0)
        profile = np.sqrt(np.maximum(1.0 - (1.0 - f) ** 2, 0.0))
        (self.att if target is None else target)[box] += (depth * density) * profile
        full = np.zeros((self.rows, self.cols), bool)
        full[box] = mask > 0
        return full

    def mask_of_polygon(self, polygon: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Boolean mask (whole canvas) of a polygon given in mm."""
        poly = np.asarray(polygon, np.float32).reshape(-1, 2)
        pix = np.round(poly / self.mm_per_px * 4).astype(np.int32)
        mask = np.zeros((self.rows, self.cols), np.uint8)
        cv2.fillPoly(mask, [pix], 1, lineType=cv2.LINE_8, shift=2)
        return mask > 0

    def mask_of_ellipse(
        self, cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0
    ) -> np.ndarray:
        """Boolean mask (whole canvas) of an ellipse given in mm."""
        mask = np.zeros((self.rows, self.cols), np.uint8)
        s = 1.0 / self.mm_per_px
        cv2.ellipse(mask, ((cx * s, cy * s), (2 * rx * s, 2 * ry * s), angle_deg), 1, -1)
        return mask > 0


def ellipse_outline(
    cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0, n: int = 48
) -> np.ndarray:
    """Points (mm) along an elliptical arc from angle a0 to a1 (degrees, y down)."""
    t = np.deg2rad(np.linspace(a0, a1, n, dtype=np.float32))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def round_corners(
    points: Sequence[Sequence[float]] | np.ndarray,
    rounds: int = 3,
    closed: bool = True,
    dtype: type[np.floating] = np.float32,
) -> np.ndarray:
    """Round the corners of an outline (Chaikin's corner cutting): skin and bone have none.

    ``points`` are (n, 2) mm, or (n, 3) with a depth that is cut alike (a limb frame's w). An
    open polyline (``closed=False``) keeps its two end points. The arithmetic runs in ``dtype``.
    """
    p = np.asarray(points, dtype)
    p = p.reshape(-1, p.shape[-1] if p.ndim > 1 else 2)
    for _ in range(rounds):
        nxt = np.roll(p, -1, axis=0)
        cut = np.stack([0.75 * p + 0.25 * nxt, 0.25 * p + 0.75 * nxt], axis=1)
        cut = cut.reshape(-1, p.shape[1])
        p = cut if closed else np.concatenate([p[:1], cut[1:-2], p[-1:]])
    return p


def smooth_noise(rng: np.random.Generator, rows: int, cols: int, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with features about ``scale_px`` wide."""
    small_r = max(int(rows / max(scale_px, 1.0)) + 2, 2)
    small_c = max(int(cols / max(scale_px, 1.0)) + 2, 2)
    coarse = rng.standard_normal((small_r, small_c), dtype=np.float32)
    field_ = cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_CUBIC)
    field_ -= field_.mean()
    std = float(field_.std())
    return field_ / std if std > 0 else field_
