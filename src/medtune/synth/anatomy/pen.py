"""A pen for drawing one body part in its own frame, and the fast raster helpers it uses.

A :class:`PartPen` places a part on the canvas (scaled by ``body_scale``, rotated a few degrees,
jittered), takes shapes in the part's local frame (mm, x to the image right, y down), and draws
thin lines, bony plates and smooth soft tissue in a few cv2 passes instead of one exact tube per
structure. Shared by the spine and skull renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from medtune.synth.anatomy.base import Subject
from medtune.synth.canvas import CORTEX, Canvas

CANCELLOUS = 1.55  # trabecular bone of a young adult's vertebral body
JITTER_FRACTION = 0.03  # of the canvas size
MAX_ROTATION_DEG = 3.0
COARSE = 4  # canvas pixels per cell of the grid smooth soft tissue and gas are computed on
SOFT_BLUR_MM = 7.0  # edge softness of soft-tissue organs outlined by fat
FILL_BLUR_PX = 2.0  # edge softness of bony plates (sacrum, ilium)


# -- placing the part on the canvas ---------------------------------------------------------------


@dataclass
class PartPen:
    """Draws in the part's local frame (mm) onto the canvas: scale, rotate, translate.

    Bony primitives widen ``lo``/``hi``, the part's bounding box on the canvas (mm). Lines and
    fills are queued and rasterised together by :meth:`flush`; soft tissue is queued for
    :meth:`soft_tissue`, which draws it on a coarse grid.
    """

    canvas: Canvas
    origin: tuple[float, float]  # canvas mm of the local origin
    scale: float
    angle_deg: float
    lo: np.ndarray = field(default_factory=lambda: np.full(2, np.inf))
    hi: np.ndarray = field(default_factory=lambda: np.full(2, -np.inf))
    lines: list = field(default_factory=list)  # (canvas points, radii, water mm)
    fills: list = field(default_factory=list)  # (canvas polygon, water mm)
    softs: list = field(default_factory=list)  # (canvas polygon, water mm)

    def __post_init__(self) -> None:
        a = np.deg2rad(self.angle_deg)
        c, s = np.cos(a), np.sin(a)
        self._m = np.array([[c, s], [-s, c]]) * self.scale  # row vectors: p @ m
        self._o = np.asarray(self.origin, np.float64)

    def place(self, points) -> np.ndarray:
        """Local mm points (n, 2) to canvas mm."""
        return np.asarray(points, np.float64).reshape(-1, 2) @ self._m + self._o

    def shift_local(self, offset) -> None:
        """Move the local origin by ``offset`` (local mm), to draw around another landmark."""
        self._o = self._o + np.asarray(offset, np.float64) @ self._m
        self.origin = (float(self._o[0]), float(self._o[1]))

    def track(self, pts: np.ndarray, pad: float = 0.0) -> None:
        """Widen the part's bounding box to hold canvas points ``pts`` (mm) plus ``pad``."""
        self.lo = np.minimum(self.lo, pts.min(0) - pad)
        self.hi = np.maximum(self.hi, pts.max(0) + pad)

    def tube(self, points, radii, density=CORTEX, track=True, **kw) -> None:
        """Tube along a local polyline (see ``Canvas.tube``)."""
        pts = self.place(points)
        rad = np.asarray(radii, np.float64) * self.scale
        self.canvas.tube(pts, rad, density=density, **kw)
        if track:
            self.track(pts, float(np.max(rad)))

    def bone(self, name, points, radii, bone_density, cortex=0.3, visible=True) -> None:
        """Register a fracture candidate through ``Canvas.bone``.

        With ``visible=False`` nothing is drawn: the bone's look comes from other primitives
        (a vertebral body is a flat-ended drum, which a capsule cannot be; a skull vault is a
        layered shell) and the tube only tells the fracture step where and how wide to cut.
        """
        pts = self.place(points)
        rad = np.full(len(pts), 1.0) * np.asarray(radii, np.float64) * self.scale
        self.canvas.bone(name, pts, rad, bone_density, cortex, draw=visible)
        self.track(pts, float(np.max(rad)))

    def drum(self, top, bottom, half, depth_ratio, bone_density, track=True) -> None:
        """A vertebral body between two end-plate centres (local mm); see :func:`drum`."""
        ends = self.place([top, bottom])
        drum(self.canvas, ends[0], ends[1], half * self.scale, depth_ratio, bone_density)
        if track:
            self.track(ends, half * self.scale)

    def line(self, points, radius: float, water_mm: float, track=False) -> None:
        """Queue a thin line adding ``water_mm`` of water-equivalent thickness across its width.

        For plates seen edge-on (end plates, cortical rims), facets, spurs, calcification: a
        plate ``d`` mm deep along the beam with density excess ``e`` adds ``d * e``. Negative
        values draw lucent clefts. Where lines cross, the stronger one wins.
        """
        self.lines.append((np.asarray(points, np.float64), float(radius), float(water_mm), track))

    def fill(self, polygon, water_mm: float, track=False) -> None:
        """Queue a plate of bone with this outline, ``water_mm`` thick, edges slightly soft."""
        self.fills.append((np.asarray(polygon, np.float64), float(water_mm), track))

    def soft(self, polygon, water_mm: float) -> None:
        """Queue soft tissue that differs from its surroundings by ``water_mm`` (fat-outlined)."""
        self.softs.append((self.place(polygon), float(water_mm)))

    def flush(self) -> None:
        """Rasterise the queued lines and fills onto the canvas: one layer and one blur each.

        All queued points are placed on the canvas in one matrix product; lines that share a
        width and value go to cv2 in one call.
        """
        queued = [(q[0], q[-1]) for q in self.lines] + [(q[0], q[-1]) for q in self.fills]
        if not queued:
            return
        ends = np.cumsum([len(p) for p, _ in queued]).tolist()
        spans = list(zip([0, *ends[:-1]], ends, strict=True))
        placed = self.place(np.concatenate([p for p, _ in queued]))
        for (_, track), (a, b) in zip(queued, spans, strict=True):
            if track:
                self.track(placed[a:b])
        cv = self.canvas
        s = 1.0 / cv.mm_per_px
        c0, r0 = np.maximum(np.floor(placed.min(0) * s).astype(int) - 12, 0)
        c1, r1 = np.minimum(np.ceil(placed.max(0) * s).astype(int) + 12, (cv.cols, cv.rows))
        if c1 > c0 and r1 > r0:
            box = (slice(r0, r1), slice(c0, c1))
            # 2 bits of subpixel precision for cv2's shift argument.
            allpix = np.round((placed * s - np.array([c0, r0])) * 4).astype(np.int32)
            pix = [allpix[a:b] for a, b in spans]
            n = len(self.lines)
            lines = [
                (p, q[1] * self.scale * s, q[2]) for p, q in zip(pix[:n], self.lines, strict=True)
            ]
            fills = [(p, q[1]) for p, q in zip(pix[n:], self.fills, strict=True)]
            cv.att[box] += _raster_fills(fills, box) + _raster_lines(lines, box)
        self.lines.clear()
        self.fills.clear()

    def local_grid(self, step: int = 1, box=None) -> tuple[np.ndarray, np.ndarray]:
        """Local coordinates (mm) of every ``step``-th pixel centre, (rows, cols) arrays each.

        ``box`` (a pair of row and column slices) limits it to part of the canvas.
        """
        cv = self.canvas
        rows, cols = box if box is not None else (slice(0, cv.rows), slice(0, cv.cols))
        x = (np.arange(cols.start, cols.stop, step, dtype=np.float32) + 0.5 * step) * cv.mm_per_px
        y = (np.arange(rows.start, rows.stop, step, dtype=np.float32) + 0.5 * step) * cv.mm_per_px
        x, y = x - np.float32(self.origin[0]), y - np.float32(self.origin[1])
        a = np.deg2rad(self.angle_deg)
        c, s = np.float32(np.cos(a) / self.scale), np.float32(np.sin(a) / self.scale)
        return x[None, :] * c + y[:, None] * s, -x[None, :] * s + y[:, None] * c

    def soft_tissue(self, trunk=None, blur_mm: float = SOFT_BLUR_MM) -> None:
        """Draw the trunk and the queued soft tissue on a coarse grid, then upsample it.

        ``trunk(xl, yl)``, if given, is the trunk's thickness (mm) at local coordinates; the
        queued outlines are blurred by ``blur_mm``. Soft tissue has no detail finer than a few
        mm, so this costs a sixteenth of a full-resolution pass.
        """
        cv = self.canvas
        xl, yl = self.local_grid(COARSE)
        coarse = np.zeros(xl.shape, np.float32) if trunk is None else trunk(xl, yl)
        coarse = coarse.astype(np.float32)
        organs = np.zeros_like(coarse)
        k = 1.0 / (cv.mm_per_px * COARSE)
        for poly, value in self.softs:
            layer = np.zeros_like(coarse)
            cv2.fillPoly(layer, [np.round(poly * k * 16).astype(np.int32)], value, cv2.LINE_AA, 4)
            organs += layer
        coarse += cv2.GaussianBlur(organs, (0, 0), blur_mm * k)
        np.maximum(coarse, 0.0, out=coarse)  # lung drawn past the skin must not go negative
        cv.att += cv2.resize(coarse, (cv.cols, cv.rows), interpolation=cv2.INTER_LINEAR)
        self.softs.clear()

    def field(self) -> tuple[float, float, float, float]:
        """The part's bounding box on the canvas (mm), clipped to it."""
        w, h = self.canvas.width_mm, self.canvas.height_mm
        x0, y0 = float(np.clip(self.lo[0], 0, w)), float(np.clip(self.lo[1], 0, h))
        x1, y1 = float(np.clip(self.hi[0], 0, w)), float(np.clip(self.hi[1], 0, h))
        return x0, y0, x1, y1


def _raster_lines(lines, box) -> np.ndarray:
    """Lines ((pixel points * 4, radius px, value)) in a box-sized layer, stronger over weaker."""
    layer = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)
    groups: dict[tuple[float, int], list] = {}
    for pix, radius_px, value in lines:
        groups.setdefault((value, max(round(2.0 * radius_px), 1)), []).append(pix)
    for (value, width), polys in sorted(groups.items()):
        cv2.polylines(layer, polys, False, value, width, cv2.LINE_8, 2)
    return cv2.GaussianBlur(layer, (0, 0), 0.7)


def _raster_fills(fills, box) -> np.ndarray:
    """Filled outlines ((pixel points * 4, value)) added into a box-sized layer, edges blurred.

    Drawn at half resolution and upsampled: their edges are soft (a couple of pixels) anyway,
    and this quarters the cost of clearing, filling and blurring.
    """
    rows, cols = box[0].stop - box[0].start, box[1].stop - box[1].start
    if not fills:
        return np.zeros((rows, cols), np.float32)
    layer = np.zeros(((rows + 1) // 2, (cols + 1) // 2), np.float32)
    for pix, value in fills:
        half = pix // 2  # half-resolution coordinates, still with 2 bits of subpixel
        lo = np.maximum(half.min(0) // 4 - 1, 0)
        hi = np.minimum(half.max(0) // 4 + 2, layer.shape[::-1])
        if np.any(hi <= lo):
            continue
        sub = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.float32)
        cv2.fillPoly(sub, [half - lo * 4], value, cv2.LINE_AA, 2)
        layer[lo[1] : hi[1], lo[0] : hi[0]] += sub
    layer = cv2.GaussianBlur(layer, (0, 0), 0.5 * FILL_BLUR_PX)
    return cv2.resize(layer, (cols, rows), interpolation=cv2.INTER_LINEAR)


def drum(canvas: Canvas, top, bottom, half: float, depth_ratio: float, density: float) -> None:
    """A flat-ended, slightly waisted cylinder of bone between two end-plate centres (canvas mm).

    ``half`` is its half-size across the axis in the image, ``depth_ratio`` its size along the
    beam over its size in the image (an elliptic cross-section). A cortical shell, thinner in
    weak bone, surrounds cancellous bone; seen from the side the shell gives bright walls.
    """
    axis = bottom - top
    length = float(np.hypot(*axis))
    a = axis / length
    centre = 0.5 * (top + bottom)
    reach = 0.5 * length + half
    mm = canvas.mm_per_px
    c0, r0 = np.maximum(((centre - reach) / mm).astype(int) - 1, 0)
    c1, r1 = np.minimum(((centre + reach) / mm).astype(int) + 2, (canvas.cols, canvas.rows))
    if c0 >= c1 or r0 >= r1:
        return
    dx = (np.arange(c0, c1, dtype=np.float32) + 0.5) * mm - np.float32(centre[0])
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5) * mm - np.float32(centre[1])
    along = dx[None, :] * np.float32(a[0]) + dy[:, None] * np.float32(a[1])
    across2 = np.square(dx[None, :] * np.float32(a[1]) - dy[:, None] * np.float32(a[0]))
    s2 = np.minimum(np.square(along * np.float32(2.0 / length)), 1.0)
    r = half * (0.93 + 0.07 * s2)  # waisted: narrowest at mid-height
    ri = r - (0.6 + 1.0 * density) * (half / 20.0)  # cortex ~1.6 mm in a young L3
    outer = np.sqrt(np.maximum(r * r - across2, 0.0))
    inner = np.sqrt(np.maximum(ri * ri - across2, 0.0))
    cortex = (CORTEX - 1.0) * density
    marrow = (CANCELLOUS - 1.0) * density
    ends = np.clip((0.5 * length - np.abs(along)) / mm + 0.5, 0.0, 1.0)  # antialiased plates
    canvas.att[r0:r1, c0:c1] += (
        (2.0 * depth_ratio) * (cortex * outer - (cortex - marrow) * inner) * ends
    )


def place_part(
    canvas: Canvas, subject: Subject, rng: np.random.Generator, half_extent, extra_scale=1.0
) -> PartPen:
    """A pen that centres the part (``half_extent``: local mm either side of its centre) with a
    few % jitter and a few degrees of rotation, keeping it inside the canvas; lengths are
    scaled by ``body_scale`` times ``extra_scale``."""
    scale = float(subject.body_scale) * extra_scale
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    origin = []
    for size, half in zip((canvas.width_mm, canvas.height_mm), half_extent, strict=True):
        room = max(0.5 * size - half * scale, 0.0)  # how far the part may move and stay inside
        reach = min(JITTER_FRACTION * size, room)
        origin.append(0.5 * size + float(rng.uniform(-reach, reach)))
    return PartPen(canvas, (origin[0], origin[1]), scale, angle)


def vec(x: float, y: float) -> np.ndarray:
    """A 2-vector (mm), for offsetting points."""
    return np.array([x, y], np.float64)


def mirror_x(points, side: float) -> np.ndarray:
    """An outline given for the image left moved to ``side`` (-1 image left, +1 image right)."""
    p = np.array(points, np.float64)
    p[:, 0] *= -side
    return p


def oval(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, n: int = 20):
    """Polygon (local mm) of an ellipse, for fills and soft tissue."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle_deg)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return np.stack([cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)], 1)
