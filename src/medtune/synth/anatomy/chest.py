"""Chest radiographs: PA, AP (portable) and lateral, with the five chest findings.

The thorax is built from projected-thickness shapes: a soft-tissue torso, two air-filled lungs
(darkest where they are deepest), one cardiomediastinal silhouette that displaces lung air, ribs
as hollow tubes (posterior arcs bright, anterior arcs fainter), clavicles, scapulae, a faint
spine, branching pulmonary vessels that make the hila, and breast shadows in women. PA and AP
differ as they do in practice: on an AP film the heart is magnified, the scapulae overlie the
lungs, the clavicles ride higher, lung volumes are lower and monitoring leads are often on the
chest. On the lateral the patient faces the image left: sternum and heart in front, spine at the
back (image right), both lungs superimposed.

Sizes are adult-male millimetres, scaled by ``subject.body_scale``. Tubes (ribs, vessels,
clavicles) are rasterised as nested bands with cv2 (:func:`_fast_tube`, :func:`_tube_bands`):
the exact capsules of ``Canvas.tube`` cost ~0.1 ms a segment, and a chest has thousands. Wide
smooth shapes get their distance-to-outline on a coarser grid (:func:`_slab`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from medtune.config import CHEST_FINDINGS, Anatomy, Finding
from medtune.synth.anatomy import chest_findings
from medtune.synth.anatomy.base import AnatomyResult, LesionSeed, Subject, register_anatomy
from medtune.synth.canvas import CORTEX, LUNG, MARROW, SOFT_TISSUE, Canvas, ellipse_outline

# Body and lungs (frontal).
THORAX_HALF_WIDTH = 150.0  # mm, inner rib cage at its widest
LUNG_HEIGHT = 250.0  # mm, apex to costophrenic angle at full inspiration
LUNG_DEPTH = 160.0  # mm of air along the ray through the thickest part of one lung (PA)
LUNG_HIDDEN_REACH = 40.0  # mm the lung's depth keeps rising past its medial and lower borders
MEDIAL_SOFTEN = 24.0  # mm either side of the midline where the lungs' edges are softened
MIDLINE_OVERLAP = 4.0  # mm each lung reaches past the midline behind the heart
TORSO_DEPTH = 230.0  # mm, antero-posterior soft-tissue thickness
AIR_IN_LUNG = LUNG - SOFT_TISSUE  # a lung replaces soft tissue with 0.3-density parenchyma
BREAST_DEPTH = 22.0  # mm of soft tissue just above the inframammary fold, average size

# Heart and mediastinum (frontal).
HEART_WIDTH = 135.0  # mm, transverse cardiac diameter: cardiothoracic ratio about 0.45
HEART_RIGHT_SHARE = 0.34  # of the transverse diameter right of the midline (patient right)
CARDIOMEGALY_GROWTH = (1.32, 0.18)  # heart width factor: base + span * seed -> CTR 0.58-0.68
UPPER_MEDIASTINUM = 0.7  # of the heart's displacement, for the great vessels above it
HEART_EDGE = 28.0  # mm over which the rounded heart reaches its full depth inside its outline
MAX_DISPLACED = 0.8  # fraction of lung air an organ displaces: some lung lies before/behind it

# Pulmonary vessels. Each drawn vessel stands for the several superimposed along the ray (a
# real lung has thousands), so a line carries a few vessels' worth of contrast.
VESSEL_SUPERPOSITION = 4.2
VESSEL_CONTRAST = (SOFT_TISSUE - LUNG) * VESSEL_SUPERPOSITION
VESSEL_REFERENCE_RADIUS = 2.0  # mm: vessels this size carry VESSEL_SUPERPOSITION as drawn
VESSEL_SMALL_GAIN = 0.45  # exponent: contrast per chord grows as (reference / radius) ** this
VESSEL_GENERATIONS = 7  # branchings from a lobar artery to the smallest visible vessel
CALIBRE_STEP = 0.2  # log-radius step between the calibres vessels are drawn at
HILAR_LUMPS = 4  # small end-on vessels and nodes per hilum
# Lobar arteries leave the hilum at these angles (degrees; 0 = lateral, -90 = up, +90 = down),
# with their relative calibre: lower-lobe vessels are the largest in an upright patient.
FRONTAL_PRIMARIES = tuple((a, 0.75 + 0.35 * (a + 110) / 220) for a in range(-110, 111, 14))
PRIMARY_RADIUS = 2.8  # mm, lobar arteries where they leave the hilum (times the table)
LATERAL_PRIMARIES = tuple((float(a), 0.9) for a in range(-150, 210, 30))
LATERAL_PRIMARY_RADIUS = 3.0  # mm, the same on the lateral, where they radiate from one hilum

# Ribs, and the rasterised tubes that draw them.
POSTERIOR_RIB_RADIUS = 6.0  # mm, half the projected height of a posterior rib
ANTERIOR_RIB_RADIUS = 4.2  # mm: thinner, flatter bone toward the cartilage
ANTERIOR_RIB_MINERAL = 0.3  # anterior arcs carry about a third of the posterior arcs' bone
BAND_EDGES = (1.0, 0.8, 0.58, 0.32)  # nested band half-widths of a rasterised tube (of radius)

# Lateral view.
LAT_LUNG_DEPTH = 135.0  # mm, one lung's left-right width: the lateral ray crosses both
LAT_BODY_WIDTH = 310.0  # mm, left-right thickness of the chest along the lateral beam
LAT_HEART_SHARE = 0.42  # of the lungs' air the heart displaces on the lateral (lungs flank it)
CHEST_AP_DEPTH = 235.0  # mm, sternum to back

SIDES = ("right", "left")  # patient sides


@dataclass
class ChestGeometry:
    """Where the main structures are, so findings can be placed inside them."""

    view: str
    cx: float  # mm, midline (frontal) or mid-depth (lateral)
    s: float  # body scale
    y_apex: float
    y_cp: dict[str, float]  # costophrenic angle height per patient side
    x_lung_wall: dict[str, float] = field(default_factory=dict)  # frontal: lateral lung edge
    lungs: dict[str, np.ndarray] = field(default_factory=dict)  # polygons (mm)
    lung_masks: dict[str, np.ndarray] = field(default_factory=dict)
    open_lung: dict[str, np.ndarray] = field(default_factory=dict)  # lung not behind an organ
    hila: dict[str, tuple[float, float]] = field(default_factory=dict)
    heart_mask: np.ndarray | None = None  # the cardiac silhouette (bool)
    heart_width: float = 0.0  # mm, transverse (frontal) or antero-posterior (lateral)
    anterior_x: float = 0.0  # lateral view: front and back of the lungs
    posterior_x: float = 0.0
    air: np.ndarray | None = None  # lung air as drawn (negative thickness, both lungs)
    air_side: dict[str, np.ndarray] = field(default_factory=dict)  # the same per lung
    markings: np.ndarray | None = None  # the vessel markings as added to the canvas
    filled: dict[str, np.ndarray] = field(default_factory=dict)  # per lung: air replaced, 0..1
    pneumothorax: np.ndarray | None = None  # the air crescent, once computed

    def image_sign(self, side: str) -> float:
        """-1 if the patient side is on the image left (the right side in frontal views)."""
        return -1.0 if side == "right" else 1.0


@register_anatomy(
    Anatomy.CHEST, views=("PA", "AP", "LAT"), field_mm=(380.0, 420.0), findings=CHEST_FINDINGS
)
def render_chest(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> AnatomyResult:
    """Draw a chest radiograph in ``view`` (PA, AP or LAT) with the requested findings."""
    if view == "LAT":
        geometry = _lateral(canvas, subject, findings, rng)
    else:
        geometry = _frontal(canvas, subject, view, findings, rng)
    lesions = chest_findings.draw(canvas, geometry, findings, rng)
    x0 = geometry.cx - (THORAX_HALF_WIDTH + 60) * geometry.s
    x1 = geometry.cx + (THORAX_HALF_WIDTH + 60) * geometry.s
    y0 = geometry.y_apex - 60 * geometry.s
    y1 = max(geometry.y_cp.values()) + 50 * geometry.s
    return AnatomyResult(canvas, lesions, (x0, y0, x1, y1))


# ---------------------------------------------------------------------------------------------
# Shared drawing helpers.


def _smooth(
    points: Sequence[Sequence[float]] | np.ndarray, closed: bool, per_span: int = 6
) -> np.ndarray:
    """A Catmull-Rom spline through control points (mm): organic outlines that still pass
    through every point, so a bulge placed at a border stays there (corner cutting shrinks it).
    ``points`` is (n, 2), or (..., n, 2) for many curves at once.
    """
    p = np.asarray(points, np.float32)
    first, last = p[..., :1, :], p[..., -1:, :]
    if closed:
        ext = np.concatenate([last, p, p[..., :2, :]], axis=-2)
    else:
        ext = np.concatenate([first, p, last], axis=-2)
    spans = p.shape[-2] if closed else p.shape[-2] - 1
    t = np.linspace(0.0, 1.0, per_span, endpoint=False, dtype=np.float32)[:, None]
    p0, p1, p2, p3 = (ext[..., i : i + spans, None, :] for i in range(4))
    curve = 0.5 * (
        2 * p1
        + (p2 - p0) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )
    out = curve.reshape(*p.shape[:-2], spans * per_span, 2)
    return out if closed else np.concatenate([out, last], axis=-2)


def _band_values(
    r: np.ndarray, inner_r: np.ndarray | None, density: float, displaces: float, inner: float
) -> np.ndarray:
    """Projected thickness (mm) of a tube, per segment, in the middle of each nested band."""
    edges = np.array((*BAND_EDGES, 0.0), np.float32)
    d = ((edges[:-1] + edges[1:]) / 2)[None, :] * r[:, None]
    out = 2 * np.sqrt(np.maximum(r[:, None] ** 2 - d**2, 0)) * (density - displaces)
    if inner_r is not None:  # hollow: the marrow replaces cortex inside the shell
        out -= 2 * np.sqrt(np.maximum(inner_r[:, None] ** 2 - d**2, 0)) * (density - inner)
    return out


def _fast_tube(
    target: np.ndarray,
    mm_per_px: float,
    points: Sequence[Sequence[float]] | np.ndarray,
    radii: Sequence[float] | np.ndarray | float,
    density: float,
    displaces: float = SOFT_TISSUE,
    cortex: float | None = None,
    inner_density: float = MARROW,
) -> None:
    """Add a tube along a polyline like ``Canvas.tube``, rasterised as nested cv2 bands.

    Bands are drawn outer to inner for the whole polyline, so joints never show notches; a
    private scratch layer makes the tube add to what is under it (crossing ribs sum).
    """
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    rad = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),))
    s = 1.0 / mm_per_px
    reach = float(rad.max()) * s + 2
    lo = np.maximum(np.floor(pts.min(0) * s - reach), 0).astype(int)
    hi = np.minimum(np.ceil(pts.max(0) * s + reach), (target.shape[1], target.shape[0]))
    hi = hi.astype(int)
    if (hi <= lo).any():
        return
    scratch = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.float32)
    pix = np.round((pts * s - lo) * 16).astype(np.int32)  # 4 bits of subpixel position
    r = (rad[:-1] + rad[1:]) / 2
    inner_r = r * (1 - cortex) if cortex is not None else None
    values = _band_values(r, inner_r, density, displaces, inner_density)
    widths = np.round(2 * np.array(BAND_EDGES)[None, :] * r[:, None] * s).astype(int)
    for k in range(len(BAND_EDGES)):
        for i in range(len(r)):
            w = widths[i, k]
            if w < 1 or (k > 0 and w == widths[i, k - 1]):
                continue
            p0, p1 = pix[i], pix[i + 1]
            cv2.line(scratch, (p0[0], p0[1]), (p1[0], p1[1]), float(values[i, k]), w, 8, 4)
    target[lo[1] : hi[1], lo[0] : hi[0]] += cv2.GaussianBlur(scratch, (0, 0), 0.6)  # antialias


def _tube_bands(
    layer: np.ndarray,
    mm_per_px: float,
    polylines: Sequence[np.ndarray] | np.ndarray,
    radius: float,
    density: float,
    displaces: float = SOFT_TISSUE,
    cortex: float | None = None,
    inner_density: float = MARROW,
) -> None:
    """Rasterise many tubes of one radius at once: one cv2 call per nested band.

    Tubes drawn in one call overwrite rather than add where they cross, so callers put tubes
    that cross (posterior and anterior ribs) in separate calls on separate layers.
    """
    if len(polylines) == 0:
        return
    s = 1.0 / mm_per_px
    r = np.array([radius], np.float32)
    inner_r = r * (1 - cortex) if cortex is not None else None
    values = _band_values(r, inner_r, density, displaces, inner_density)[0]
    if isinstance(polylines, np.ndarray):  # (n, k, 2): convert all at once (vessels)
        pix = list(np.round(polylines * (s * 16)).astype(np.int32))
    else:
        pix = [np.round(np.asarray(p) * (s * 16)).astype(np.int32) for p in polylines]
    outer = round(2 * radius * s)
    if outer <= 2 and cortex is None:
        # One or two pixels wide: a single band carrying the mean chord, pi/2 r.
        value = np.pi / 2 * radius * (density - displaces)
        cv2.polylines(layer, pix, False, float(value), max(outer, 1), 8, 4)
        return
    # A few pixels wide: every other band is enough (the blur after hides the steps).
    bands = range(len(BAND_EDGES)) if outer > 6 or cortex is not None else (0, 2)
    previous = 0
    for k in bands:
        width = round(2 * BAND_EDGES[k] * radius * s)
        if width < 1 or width == previous:
            continue
        previous = width
        cv2.polylines(layer, pix, False, float(values[k]), width, 8, 4)


def _draw_segments(
    layer: np.ndarray, mm_per_px: float, segs: np.ndarray, radii: np.ndarray, contrast: float
) -> None:
    """Rasterise many solid tube segments (vessels) grouped by calibre, thinnest first.

    Thicker vessels are drawn last so a parent overwrites the start of its branches; grouping
    makes it one cv2 call per calibre and band instead of one per segment.
    """
    # Calibres on a log scale, about 20 % apart: finer steps would not show after the blur.
    groups = np.round(np.log(np.maximum(radii, 0.2)) / CALIBRE_STEP).astype(int)
    for g in np.unique(groups):
        members = segs[groups == g]
        r = float(np.exp(g * CALIBRE_STEP))
        # A thin line stands for more superimposed small vessels than a thick one does.
        gain = (VESSEL_REFERENCE_RADIUS / r) ** VESSEL_SMALL_GAIN
        _tube_bands(layer, mm_per_px, members, r, contrast * gain, 0.0)


def _box_of(canvas: Canvas, *shapes: np.ndarray, margin: float = 0.0) -> tuple[slice, slice]:
    """Pixel slices covering point sets (mm) plus a margin, clipped to the canvas."""
    pts = np.concatenate([np.asarray(p, np.float32).reshape(-1, 2) for p in shapes])
    lo, hi = (pts.min(0) - margin) / canvas.mm_per_px, (pts.max(0) + margin) / canvas.mm_per_px
    r0, r1 = max(int(lo[1]) - 1, 0), min(int(np.ceil(hi[1])) + 2, canvas.rows)
    c0, c1 = max(int(lo[0]) - 1, 0), min(int(np.ceil(hi[0])) + 2, canvas.cols)
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def _signed_distance(poly_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Signed distance (pixels, positive inside) to a polygon given in pixels, on a grid.

    The chamfer transform measures from pixel centres; along the outline, each pixel's
    antialiased coverage places the edge to a fraction of a pixel, so that once upsampled the
    outline is smooth rather than a staircase of coarse pixels.
    """
    cover = np.zeros(shape, np.uint8)
    cv2.fillPoly(cover, [np.round(poly_px * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    inside = (cover >= 128).astype(np.uint8)
    signed = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    signed -= cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    signed -= inside  # pixel centres: the outline lies half a pixel from either side
    signed += np.float32(0.5)
    partial = (cover > 0) & (cover < 255)
    signed[partial] = cover[partial] * np.float32(1 / 255) - np.float32(0.5)
    # The two estimates disagree by a fraction of a pixel; a slight blur evens that out (a
    # signed distance is nearly linear, so it barely moves).
    return cv2.GaussianBlur(signed, (0, 0), 0.8)


def _soft_ellipsoid(
    canvas: Canvas,
    centre: tuple[float, float],
    radii: tuple[float, float],
    depth: float,
    angle_deg: float = 0.0,
    factor: int = 4,
) -> None:
    """``Canvas.ellipsoid`` of soft tissue computed on a grid ``factor`` times coarser: for the
    big smooth bodies (shoulders, arms) whose box would be most of the canvas."""
    cx, cy = centre
    reach = max(radii)
    box = _box_of(canvas, np.array([(cx - reach, cy - reach), (cx + reach, cy + reach)]))
    rows = -(-(box[0].stop - box[0].start) // factor)
    cols = -(-(box[1].stop - box[1].start) // factor)
    coarse = Canvas.blank(rows, cols, canvas.mm_per_px * factor)
    x0, y0 = box[1].start * canvas.mm_per_px, box[0].start * canvas.mm_per_px
    coarse.ellipsoid(cx - x0, cy - y0, radii[0], radii[1], depth, SOFT_TISSUE, angle_deg)
    fine = cv2.resize(coarse.att, (cols * factor, rows * factor), interpolation=cv2.INTER_LINEAR)
    canvas.att[box] += fine[: box[0].stop - box[0].start, : box[1].stop - box[1].start]


def _slab(
    canvas: Canvas,
    polygon: np.ndarray,
    depth: float,
    density: float,
    edge_mm: float,
    target: np.ndarray | None = None,
    factor: int = 2,
    soft_edge: bool = False,
) -> np.ndarray:
    """``Canvas.slab`` with the distance to the outline computed on a coarser grid.

    A distance transform of the whole canvas costs ~2 ms. The signed distance is smooth across
    the outline, so it survives upsampling where a profile would not; the rounded profile is
    then evaluated at full resolution (or, with ``soft_edge``, upsampled: the outline then
    blurs over a coarse pixel), on the polygon's box only. Returns the filled mask.
    """
    poly = np.asarray(polygon, np.float32) / np.float32(canvas.mm_per_px * factor)
    rows, cols = -(-canvas.rows // factor), -(-canvas.cols // factor)
    r0, c0 = (max(int(v) - 2, 0) for v in poly.min(0)[::-1])
    r1, c1 = int(min(poly[:, 1].max() + 3, rows)), int(min(poly[:, 0].max() + 3, cols))
    mask = np.zeros((canvas.rows, canvas.cols), bool)
    if r1 <= r0 or c1 <= c0:
        return mask
    signed = _signed_distance(poly - np.float32([c0, r0]), (r1 - r0, c1 - c0))
    signed *= np.float32(canvas.mm_per_px * factor / edge_mm)
    size = ((c1 - c0) * factor, (r1 - r0) * factor)
    rr = slice(r0 * factor, min(r1 * factor, canvas.rows))
    cc = slice(c0 * factor, min(c1 * factor, canvas.cols))
    crop = (slice(0, rr.stop - rr.start), slice(0, cc.stop - cc.start))
    if soft_edge:
        f = np.clip(signed, 0.0, 1.0)
        profile = cv2.resize(cv2.sqrt(f * (np.float32(2.0) - f)), size)[crop]
        mask[rr, cc] = profile > 0
    else:
        f = np.clip(cv2.resize(signed, size, interpolation=cv2.INTER_LINEAR)[crop], 0.0, 1.0)
        profile = cv2.sqrt(f * (np.float32(2.0) - f))
        mask[rr, cc] = f > 0
    profile *= np.float32(depth * density)
    (canvas.att if target is None else target)[rr, cc] += profile
    return mask


def _vessel_tree(
    rng: np.random.Generator,
    roots: np.ndarray,
    angles: np.ndarray,
    radii: np.ndarray,
    reach: float,
    lung: tuple[np.ndarray, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Segments (n, 2, 2) mm and radii of vessels branching out of lobar arteries.

    ``roots`` (n, 2) mm, ``angles`` (n,) image radians and ``radii`` (n,) mm are the lobar
    arteries. Every tip walks a wavy step or two, then splits unequally, as pulmonary arteries
    do: one child nearly carries on, the other leaves at 20-45 degrees, thinner. All tips of
    both lungs advance together (vectorised); tips that leave the lung (``lung``: mask, mm per
    pixel) stop.
    """
    mask, mm = lung
    n = len(angles)
    angle = np.asarray(angles, np.float64) + rng.normal(0, 0.1, n)
    radius = np.asarray(radii, np.float64) * rng.uniform(0.85, 1.15, n)
    pos = np.asarray(roots, np.float64) + rng.normal(0, 2.0, (n, 2))
    length = np.full(n, reach * 0.18) * rng.uniform(0.8, 1.2, n)
    segs, rads = [], []
    for generation in range(VESSEL_GENERATIONS):
        steps = 2 if generation < 3 else 1  # a wavy course for the long proximal vessels
        for _ in range(steps):
            angle = angle + rng.normal(0, 0.22, angle.size)
            step = np.stack([np.cos(angle), np.sin(angle)], axis=1) * (length / steps)[:, None]
            segs.append(np.stack([pos, pos + step], axis=1))
            rads.append(radius)
            pos, radius = pos + step, radius * 0.93
        r = np.clip((pos[:, 1] / mm).astype(int), 0, mask.shape[0] - 1)
        c = np.clip((pos[:, 0] / mm).astype(int), 0, mask.shape[1] - 1)
        alive = mask[r, c] | (generation == 0)  # the hilum itself lies outside the lung
        angle, pos, radius, length = angle[alive], pos[alive], radius[alive], length[alive]
        side = rng.choice([-1.0, 1.0], angle.size)  # which way the side branch leaves
        turn = np.stack([rng.uniform(0.05, 0.25, angle.size), -rng.uniform(0.35, 0.8, angle.size)])
        angle = (angle[None, :] + turn * side[None, :]).T.ravel()
        radius = (radius[None, :] * np.array([[0.86], [0.7]])).T.ravel()
        pos = np.repeat(pos, 2, axis=0)
        length = np.repeat(length * 0.8, 2) * rng.uniform(0.75, 1.2, angle.size)
    return np.concatenate(segs).astype(np.float32), np.concatenate(rads).astype(np.float32)


def _add_markings(
    canvas: Canvas,
    geo: ChestGeometry,
    trees: Sequence[tuple[np.ndarray, np.ndarray]],
    full_air: float,
    findings: Mapping[Finding, LesionSeed],
) -> None:
    """Draw the vessel trees and add them where there is lung, in proportion to its depth.

    Vessels fade toward the pleura and behind the heart, where little lung lies along the ray,
    and stop at a pneumothorax's edge. Works on the lungs' box only.
    """
    box = _box_of(canvas, geo.lungs["right"], geo.lungs["left"])
    origin = np.array([box[1].start, box[0].start], np.float32) * canvas.mm_per_px
    layer = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)
    segs = np.concatenate([t[0] for t in trees]) - origin
    radii = np.concatenate([t[1] for t in trees])
    _draw_segments(layer, canvas.mm_per_px, segs, radii, VESSEL_CONTRAST)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.7)
    assert geo.air is not None
    weight = np.clip(geo.air[box] * np.float32(-1.6 / full_air), 0.0, 1.0)
    if Finding.PNEUMOTHORAX in findings:
        crescent = chest_findings.pneumothorax_region(canvas, geo, findings[Finding.PNEUMOTHORAX])
        weight[crescent[box]] = 0.0
    layer *= weight
    canvas.att[box] += layer
    geo.markings = np.zeros_like(canvas.att)
    geo.markings[box] = layer


# ---------------------------------------------------------------------------------------------
# Frontal views (PA and AP).


def _frontal(
    canvas: Canvas,
    subject: Subject,
    view: str,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> ChestGeometry:
    s = subject.body_scale
    portable = view == "AP"
    # Portable AP films are taken in bed: shallower inspiration, more rotation and off-centring.
    inspiration = rng.uniform(0.82, 0.95) if portable else rng.uniform(0.92, 1.04)
    cx = canvas.width_mm / 2 + rng.normal(0, 0.02 if not portable else 0.04) * canvas.width_mm
    y_apex = canvas.height_mm / 2 - 0.52 * LUNG_HEIGHT * s + rng.normal(0, 0.02) * canvas.height_mm
    lung_h = LUNG_HEIGHT * s * inspiration
    y_cp = {"right": y_apex + lung_h, "left": y_apex + lung_h + rng.uniform(8, 20) * s}
    geo = ChestGeometry(view, cx, s, y_apex, y_cp)
    half_w = THORAX_HALF_WIDTH * s * rng.uniform(0.95, 1.05)

    _torso(canvas, geo, half_w, subject)
    depth = LUNG_DEPTH * s * rng.uniform(0.92, 1.08)
    for side in SIDES:
        _lung(canvas, geo, side, half_w, depth)
    _mediastinum(canvas, geo, subject, findings, portable, rng)
    trees = [_frontal_vessels(geo, canvas.mm_per_px, rng)]
    _add_markings(canvas, geo, trees, depth * -AIR_IN_LUNG, findings)
    _hilar_lumps(canvas, geo, rng)
    _airways(canvas, geo)
    _thoracic_spine(canvas, geo, subject)
    _ribs(canvas, geo, half_w, subject, rng)
    _shoulder_girdle(canvas, geo, subject, portable)
    _gastric_bubble(canvas, geo, rng)
    if subject.sex == "F":
        _breasts(canvas, geo, subject, rng)
    if portable and rng.random() < 0.6:
        _monitoring_leads(canvas, geo, rng)
    return geo


def _torso(canvas: Canvas, geo: ChestGeometry, half_w: float, subject: Subject) -> None:
    s, cx, top = geo.s, geo.cx, geo.y_apex
    bottom = canvas.height_mm + 40
    wall = half_w + 26 * s * subject.habitus
    right = [
        (cx + 48 * s, top - 140 * s),  # neck
        (cx + 58 * s, top - 70 * s),
        (cx + 120 * s, top - 52 * s),  # trapezius slope
        (cx + 185 * s, top - 40 * s),  # shoulder
        (cx + 222 * s, top + 5 * s),
        (cx + 225 * s, top + 150 * s),  # arm beside the chest
        (cx + 215 * s, bottom),
    ]
    left = [(2 * cx - x, y) for x, y in reversed(right)]
    outline = _smooth([*right, *left], closed=False, per_span=4)
    depth = TORSO_DEPTH * s * subject.habitus
    _slab(canvas, outline, depth, SOFT_TISSUE, 70 * s, factor=4, soft_edge=True)
    # The axilla: the arm is a separate cylinder, so the skin dips between it and the chest.
    for sign in (-1.0, 1.0):
        axilla = [
            (cx + sign * (wall + 8 * s), top + 40 * s),
            (cx + sign * (wall + 2 * s), top + 0.7 * LUNG_HEIGHT * s),
            (cx + sign * (wall + 12 * s), bottom),
        ]
        _fast_tube(canvas.att, canvas.mm_per_px, axilla, 9 * s, 0.0, SOFT_TISSUE * 0.6)


def _lung_outline(
    geo: ChestGeometry, side: str, half_w: float, medial: float = 0.0, below: float = 0.0
) -> np.ndarray:
    """One lung seen from the front: rounded apex above the clavicle, convex lateral wall, a
    sharp costophrenic angle, the hemidiaphragm dome, and a medial border that runs behind the
    heart to the spine (the heart hides it by displacing air, see :func:`_mediastinum`).
    ``medial`` and ``below`` move the medial border and the diaphragm that many mm outward."""
    sign, s, cx = geo.image_sign(side), geo.s, geo.cx
    top, cp = geo.y_apex, geo.y_cp[side]
    h = cp - top
    wall = half_w * 0.97
    dome = (34 if side == "right" else 28) * s
    points = [
        (18 * s - medial, top + 35 * s),  # medial apex, beside the trachea
        (34 * s, top + 5 * s),
        (56 * s, top),  # apex, above the clavicle
        (0.78 * wall, top + 0.1 * h),
        (0.94 * wall, top + 0.33 * h),
        (wall, top + 0.68 * h),
        (0.99 * wall, cp - 0.06 * h),
        (0.975 * wall, cp + below),  # sharp costophrenic angle
        (0.9 * wall, cp - 0.3 * dome + below),
        (0.72 * wall, cp - 0.8 * dome + below),  # hemidiaphragm dome
        (0.5 * wall, cp - dome + below),
        (0.28 * wall, cp - 0.9 * dome + below),
        (-MIDLINE_OVERLAP * s - medial, cp - dome - 12 * s + below),  # meeting behind the heart
        (-MIDLINE_OVERLAP * s - medial, top + 0.55 * h),
        (17 * s - medial, top + 80 * s),  # beside the upper mediastinum
    ]
    pts = _smooth(points, closed=True)
    geo.x_lung_wall[side] = float(cx + sign * wall)
    return np.stack([cx + sign * pts[:, 0], pts[:, 1]], axis=1)


def _lung(canvas: Canvas, geo: ChestGeometry, side: str, half_w: float, depth: float) -> None:
    outline = _lung_outline(geo, side, half_w)
    geo.lungs[side] = outline
    # Thin at the chest wall and apex, but deep beside the mediastinum (the lung wraps behind
    # the heart to the spine) and above the diaphragm (it runs down behind the dome): the
    # profile is that of a lung reaching past the midline and below the dome.
    reach = LUNG_HIDDEN_REACH * geo.s
    profile = _lung_outline(geo, side, half_w, medial=reach, below=reach)
    air = np.zeros_like(canvas.att)
    _slab(canvas, profile, depth, AIR_IN_LUNG, 45 * geo.s, target=air)
    geo.lung_masks[side] = canvas.mask_of_polygon(outline)
    # Where the lungs overlap behind the heart, each fades across the midline so that together
    # they are seamless. (Only the profile's box holds air.)
    box = _box_of(canvas, profile)
    x, _ = canvas.grid(box)
    sign = geo.image_sign(side)
    seam = np.clip((sign * (x - geo.cx) / (MIDLINE_OVERLAP * geo.s) + 1) / 2, 0, 1)
    air[box] *= geo.lung_masks[side][box] * seam
    # The medial borders lie inside the mediastinum's shadow: soften them there, so that the
    # gap between the lungs above the heart does not show as a line through it.
    c0 = max(int((geo.cx - MEDIAL_SOFTEN * geo.s) / canvas.mm_per_px), 0)
    c1 = min(int((geo.cx + MEDIAL_SOFTEN * geo.s) / canvas.mm_per_px) + 1, canvas.cols)
    sigma = 0.25 * MEDIAL_SOFTEN * geo.s / canvas.mm_per_px
    air[:, c0:c1] = cv2.GaussianBlur(air[:, c0:c1], (0, 0), sigma, sigmaY=0.5 * sigma)
    geo.air_side[side] = air
    s = geo.s
    # Hila: the left sits higher (the left pulmonary artery arches over the left bronchus).
    frac = 0.44 if side == "right" else 0.38
    geo.hila[side] = (geo.cx + sign * 62 * s, geo.y_apex + frac * (geo.y_cp[side] - geo.y_apex))


def _heart_width(
    geo: ChestGeometry,
    findings: Mapping[Finding, LesionSeed],
    portable: bool,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Transverse cardiac diameter (mm) of a normal heart, and how much cardiomegaly widens
    it (the rng is drawn whether or not it is present, so the rest of the chest is the same)."""
    width = HEART_WIDTH * geo.s * rng.uniform(0.9, 1.08)
    growth = 1.0
    if Finding.CARDIOMEGALY in findings:
        base, span = CARDIOMEGALY_GROWTH
        growth = base + span * findings[Finding.CARDIOMEGALY].at(0)
    if portable:
        width *= 1.12  # AP: the heart is far from the detector, so it is magnified
    return width, growth


def _silhouette(geo: ChestGeometry, width: float, growth: float, age: float) -> np.ndarray:
    """One outline for the mediastinum and heart, as the frontal film shows it (mm).

    Right border: SVC, then the convex right atrium to the cardiophrenic angle. Left border:
    aortic knob, pulmonary trunk, a slight left-atrial-appendage concavity, then the long convex
    left ventricle to the apex on the left hemidiaphragm. An enlarged heart grows mostly left.
    """
    s, cx, top = geo.s, geo.cx, geo.y_apex
    right = HEART_RIGHT_SHARE * width * growth**0.5
    left = width * growth - right
    base_r = geo.y_cp["right"] - 30 * s  # cardiophrenic angle, on the right dome
    base_l = geo.y_cp["left"] - 24 * s  # apex, on the left dome
    knob = 1.0 + max(age - 40.0, 0.0) / 150  # the aorta unfolds and widens with age
    y_trunk = top + 84 * s
    y_lv = y_trunk + 34 * s + 0.15 * (left - 0.66 * HEART_WIDTH * s)
    hh = base_l - y_lv
    border = [
        (-17 * s, top - 60 * s),  # thoracic inlet
        (-20 * s, top + 10 * s),
        (-25 * s, top + 50 * s),  # superior vena cava
        (-28 * s, top + 92 * s),
        (-0.86 * right, base_r - 0.62 * (base_r - y_trunk)),  # right atrium
        (-right, base_r - 0.36 * (base_r - y_trunk)),
        (-0.97 * right, base_r - 0.12 * (base_r - y_trunk)),
        (-0.9 * right, base_r + 2 * s),  # right cardiophrenic angle
        (-0.6 * right, base_r + 24 * s),  # under the diaphragm (hidden by the liver)
        (0.6 * left, base_l + 24 * s),
        (0.9 * left, base_l),  # apex on the left hemidiaphragm
        (left, base_l - 0.25 * hh),  # left ventricle
        (0.96 * left, base_l - 0.52 * hh),
        (0.8 * left, base_l - 0.8 * hh),
        (44 * s, y_lv),  # left atrial appendage: a slight concavity
        (39 * s, y_trunk + 10 * s),
        (40 * s, y_trunk - 4 * s),  # pulmonary trunk
        (34 * s * knob, top + 68 * s),  # aortopulmonary window
        (40 * s * knob, top + 55 * s),  # aortic knob
        (35 * s * knob, top + 42 * s),
        (20 * s, top + 26 * s),
        (17 * s, top - 60 * s),
    ]
    pts = _smooth(border, closed=True)
    return np.stack([cx + pts[:, 0], pts[:, 1]], axis=1)


def _mediastinum(
    canvas: Canvas,
    geo: ChestGeometry,
    subject: Subject,
    findings: Mapping[Finding, LesionSeed],
    portable: bool,
    rng: np.random.Generator,
) -> None:
    """The cardiomediastinal silhouette displaces lung air; the result is the lungs as drawn."""
    s, cx, top = geo.s, geo.cx, geo.y_apex
    width, growth = _heart_width(geo, findings, portable, rng)
    outline = _silhouette(geo, width, growth, subject.age)
    occupied = np.zeros_like(canvas.att)  # 0..1: how much of the lung air an organ displaces
    _slab(canvas, outline, 1.0, 1.0, HEART_EDGE * s, target=occupied)
    # Descending aorta: its left edge shows through the heart as a faint paraspinal line.
    aorta = [
        (cx + 24 * s, top + 58 * s),
        (cx + 26 * s, top + 140 * s),
        (cx + 20 * s, geo.y_cp["left"]),
    ]
    _fast_tube(occupied, canvas.mm_per_px, aorta, 12 * s, 0.06, 0.0)
    box = _box_of(canvas, outline, np.array(aorta), margin=14 * s)
    occ = occupied[box]
    # The great vessels are slimmer front to back than the heart: more lung overlaps them, so
    # the heart reads as a denser mass below the pulmonary trunk.
    _, y = canvas.grid(box)
    occ *= UPPER_MEDIASTINUM + (1.0 - UPPER_MEDIASTINUM) * np.clip(
        (y - top - 80 * s) / (50 * s), 0, 1
    )
    geo.heart_mask = np.zeros((canvas.rows, canvas.cols), bool)
    geo.heart_mask[box] = (occ > 0.25) & (y > top + 100 * s)
    geo.heart_width = width * growth
    _displace_air(canvas, geo, box, 1.0 - np.minimum(occ, MAX_DISPLACED), occ < 0.3)


def _displace_air(
    canvas: Canvas,
    geo: ChestGeometry,
    box: tuple[slice, slice],
    keep: np.ndarray,
    open_: np.ndarray,
) -> None:
    """Keep a fraction ``keep`` of each lung's air on ``box`` (organs take the rest); then the
    lungs' air is final: store it and add it to the canvas."""
    for side in SIDES:
        geo.air_side[side][box] *= keep
        geo.open_lung[side] = geo.lung_masks[side].copy()
        geo.open_lung[side][box] &= open_
    geo.air = geo.air_side["right"] + geo.air_side["left"]
    canvas.att += geo.air


def _frontal_vessels(
    geo: ChestGeometry, mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Both lungs' arterial trees. The main pulmonary artery and its descending interlobar
    branch make the irregular hilar density; lobar arteries leave along it, upper ones from its
    top. Patient angles (0 lateral, -90 up) are mirrored onto the image for the right lung.
    """
    s, cx = geo.s, geo.cx
    roots, angles, radii, trunks, trunk_radii = [], [], [], [], []
    patient = np.deg2rad([a for a, _ in FRONTAL_PRIMARIES])
    calibre = np.array([c for _, c in FRONTAL_PRIMARIES]) * PRIMARY_RADIUS * s
    for side in SIDES:
        sign = geo.image_sign(side)
        hx, hy = geo.hila[side]
        # The left artery arches up over the left main bronchus; the right runs out, then down
        # beside the right atrium.
        arch = -14.0 if side == "left" else -4.0
        trunk = _smooth(
            [
                (cx + sign * 28 * s, hy - 6 * s),
                (hx - sign * 14 * s, hy + arch * s),
                (hx - sign * 2 * s, hy + 6 * s),
                (hx + sign * 1 * s, hy + 24 * s),
                (hx + sign * 1 * s, hy + 40 * s),
            ],
            closed=False,
            per_span=3,
        )
        trunks.append(np.stack([trunk[:-1], trunk[1:]], axis=1))
        radius = np.linspace(4.2, 2.6, len(trunk) - 1) * s * rng.uniform(0.9, 1.1)
        trunk_radii.append(radius.astype(np.float32))
        # Lobar arteries leave along the trunk: the higher the angle, the lower the origin.
        along = np.clip((np.rad2deg(patient) + 110) / 220, 0, 1) * (len(trunk) - 1)
        root = trunk[np.round(along).astype(int)]
        root[:, 0] += sign * 4 * s  # from the lateral side of the trunk
        roots.append(root)
        angles.append(patient if sign > 0 else np.pi - patient)
        radii.append(calibre)
    lungs = (geo.lung_masks["right"] | geo.lung_masks["left"], mm)
    segs, rads = _vessel_tree(
        rng, np.concatenate(roots), np.concatenate(angles), np.concatenate(radii), 150 * s, lungs
    )
    return np.concatenate([segs, *trunks]), np.concatenate([rads, *trunk_radii])


def _hilar_lumps(canvas: Canvas, geo: ChestGeometry, rng: np.random.Generator) -> None:
    """Small soft densities along each hilum (vessels seen end-on, bronchial walls, nodes)
    that make it lumpy and irregular. Kept faint and close to the trunk: nothing here may pass
    for a nodule, which the labels would not mention."""
    s = geo.s
    for side in SIDES:
        hx, hy = geo.hila[side]
        sign = geo.image_sign(side)
        for _ in range(HILAR_LUMPS):
            x = hx + sign * rng.uniform(-10, 4) * s
            y = hy + rng.uniform(-20, 35) * s
            r = rng.uniform(2.5, 4.5) * s
            canvas.ellipsoid(x, y, r, r * rng.uniform(1.0, 1.6), 1.5 * r, -AIR_IN_LUNG)


def _airways(canvas: Canvas, geo: ChestGeometry) -> None:
    """Trachea and main bronchi: air columns, the right bronchus steeper than the left.

    One continuous air tree: where the tubes' ends overlap at the carina the deepest air
    counts, not the sum (which would leave a dark spot there)."""
    s, cx, top, mm = geo.s, geo.cx, geo.y_apex, canvas.mm_per_px
    carina = (cx + 2 * s, top + 78 * s)
    trachea = [(cx, top - 110 * s), (cx + 1 * s, top + 20 * s), (cx - 2 * s, top + 55 * s), carina]
    rx, ry = geo.hila["right"]
    lx, ly = geo.hila["left"]
    right = [carina, (cx - 18 * s, top + 95 * s), (rx + 14 * s, ry + 4 * s)]
    left = [carina, (cx + 24 * s, top + 92 * s), (lx - 14 * s, ly + 14 * s)]
    box = _box_of(canvas, trachea, right, left, margin=10 * s)
    origin = np.array([box[1].start, box[0].start], np.float32) * mm
    shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
    tubes = (
        (trachea, 8 * s, SOFT_TISSUE),
        (right, np.array([6.5, 6, 4.5]) * s, 0.7),
        (left, np.array([6, 5.5, 4.5]) * s, 0.7),
    )
    air = np.zeros(shape, np.float32)
    for points, radii, displaces in tubes:
        layer = np.zeros(shape, np.float32)
        _fast_tube(layer, mm, np.array(points) - origin, radii, 0.0, displaces)
        np.minimum(air, layer, out=air)
    canvas.att[box] += air


def _thoracic_spine(canvas: Canvas, geo: ChestGeometry, subject: Subject) -> None:
    """A faint column behind the mediastinum: bodies with disc spaces, faint pedicle rings and
    spinous processes. Behind the heart a real PA shows little more than that."""
    s, cx, mm = geo.s, geo.cx, canvas.mm_per_px
    extra = (CORTEX - 1.0) * subject.bone_density * 0.15  # cancellous bone over soft tissue
    y0 = geo.y_apex - 45 * s
    y1 = geo.y_cp["right"] + 25 * s
    end = canvas.height_mm + 20  # the lumbar spine carries on out of the field
    column = [(cx - 15 * s, y0), (cx + 15 * s, y0), (cx + 24 * s, end), (cx - 24 * s, end)]
    canvas.slab(column, 26 * s, extra, edge_mm=8 * s)
    step = (y1 - y0) / 12
    discs, pedicles, spinous = [], [], []
    for k in range(12):
        y = y0 + k * step
        half = (15 + 6 * k / 11) * s
        discs.append(np.array([(cx - half, y), (cx + half, y)]))
        for sign in (-1.0, 1.0):
            px = cx + sign * (half - 3 * s)
            pedicles.append(np.array([(px, y + 0.3 * step), (px, y + 0.3 * step + 3 * s)]))
        spinous.append(np.array([(cx, y + 0.65 * step), (cx, y + 0.85 * step)]))
    layer = np.zeros_like(canvas.att)
    # Disc spaces: a thin band with no bone, so each body reads as a block.
    _tube_bands(layer, mm, discs, 1.3 * s, 1.0, 1.0 + extra * 0.6)
    _tube_bands(layer, mm, pedicles, 3.2 * s, 1.0 + extra * 1.5, cortex=0.35)
    _tube_bands(layer, mm, spinous, 2.6 * s, 1.0 + extra, cortex=0.4)
    canvas.att += cv2.GaussianBlur(layer, (0, 0), 0.8)


def _rib_points(geo: ChestGeometry, w: np.ndarray, y0: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Centrelines (n, m, 2) of ribs on the patient's left (mirror x for the right): posterior
    arc from the spine, lateral turn, anterior arc down and in. ``w`` half-widths, ``y0``
    heights at the spine and ``k`` rib numbers (0 = first), one per rib."""
    s = geo.s
    drop = k * 2.2 * s  # lower ribs slope more steeply
    xs = np.array([0.0, 0.3, 0.6, 0.86, 1.0, 0.95, 0.7, 0.38], np.float32)  # of w
    dy = np.array([0, -4, -1, 14, 42, 68, 90, 104], np.float32) * s  # below y0
    slope = np.array([0, 0, 0.3, 1.0, 1.5, 2.0, 2.5, 2.8], np.float32)  # times drop
    x = xs[None, :] * w[:, None]
    x[:, 0] = 16 * s  # the costovertebral joint, beside the spine
    y = y0[:, None] + dy[None, :] + slope[None, :] * drop[:, None]
    return _smooth(np.stack([x, y], axis=-1), closed=False, per_span=4)


def _rib_reach(geo: ChestGeometry, y: np.ndarray, half_w: float) -> np.ndarray:
    """Half-width (mm) of the rib cage at heights ``y``: the lung's lateral edge plus the
    pleura, since the ribs' lateral turns make the chest wall."""
    outline = geo.lungs["left"]
    lateral = outline[outline[:, 0] > geo.cx + 0.5 * half_w]
    near = np.abs(lateral[None, :, 1] - y[:, None]) < 8 * geo.s
    width = np.where(near, lateral[None, :, 0] - geo.cx, 0.0).max(axis=1)
    # Below the costophrenic angle the cage goes on as wide; above the apex the first ribs
    # curve tightly round it.
    low = y > lateral[:, 1].max()
    width = np.where(low, lateral[:, 0].max() - geo.cx, width)
    return np.maximum(width + 6 * geo.s, 0.45 * half_w).astype(np.float32)


def _ribs(
    canvas: Canvas, geo: ChestGeometry, half_w: float, subject: Subject, rng: np.random.Generator
) -> None:
    """Ten ribs a side as hollow tubes; the anterior arcs are thinner, fainter flat bone.

    Posterior and anterior arcs go on separate layers so that where they cross they add, as
    two bones along one ray do.
    """
    s, mm = geo.s, canvas.mm_per_px
    density = 1.0 + (CORTEX - 1.0) * subject.bone_density
    spacing = (geo.y_cp["right"] - geo.y_apex) / 9.6
    k = np.tile(np.arange(10, dtype=np.float32), 2)
    # Intercostal spaces widen a little down the chest.
    level = k * (0.9 + 0.022 * k) * spacing
    y0 = geo.y_apex - 14 * s + level + rng.normal(0, 1.2, k.size).astype(np.float32) * s
    pts = _rib_points(geo, _rib_reach(geo, y0 + 46 * s + 3.3 * k * s, half_w), y0, k)
    pts[:10, :, 0] *= -1.0  # the first ten on the image left (the patient's right)
    pts[:, :, 0] += geo.cx
    turn = pts.shape[1] // 2 + 2  # the lateral turn
    posterior = list(pts[:, :turn])
    # The arcs do not share the turn's point, so their round ends do not double up there; the
    # lower ribs' anterior arcs end at the costal margin, over the abdomen.
    anterior = [p[turn : len(p) - 4 * max(int(n) - 5, 0)] for p, n in zip(pts, k, strict=True)]
    back = np.zeros_like(canvas.att)
    front = np.zeros_like(canvas.att)
    _tube_bands(back, mm, posterior, POSTERIOR_RIB_RADIUS * s, density, cortex=0.3)
    anterior_density = 1.0 + (density - 1.0) * ANTERIOR_RIB_MINERAL
    _tube_bands(front, mm, anterior, ANTERIOR_RIB_RADIUS * s, anterior_density, cortex=0.4)
    back = cv2.GaussianBlur(back, (0, 0), 0.7)
    # Rib necks are slender and run obliquely back to the spine: faint behind the mediastinum.
    x = (np.arange(canvas.cols, dtype=np.float32) + 0.5) * mm - geo.cx
    back *= np.clip((np.abs(x) - 14 * s) / (45 * s), 0.15, 1.0)[None, :]
    # Anterior ribs are far from the detector: magnified and blurred by the focal spot. Under
    # the domes their cartilage-tipped ends fade into the upper abdomen.
    _, y = canvas.grid((slice(0, canvas.rows), slice(0, 1)))
    fade = np.clip((geo.y_cp["right"] + 10 * s - y) / (40 * s), 0.25, 1.0)
    back += cv2.GaussianBlur(front, (0, 0), 1.4) * fade
    canvas.att += back


def _scapula_corners(geo: ChestGeometry, portable: bool) -> list[np.ndarray]:
    """Glenoid, superior and inferior angles (2, 2) mm of both scapulae. Rotated off the lungs
    on a PA (arms forward, shoulders rolled), over the upper lateral lungs on an AP."""
    s, cx, top = geo.s, geo.cx, geo.y_apex
    shift = -45 * s if portable else 0.0
    sides = np.array([-1.0, 1.0])
    corners = ((185 * s + 0.3 * shift, -18 * s), (120 * s + shift, -32 * s))
    corners += ((155 * s + 0.6 * shift, 135 * s),)
    return [np.stack([cx + sides * x, np.full(2, top + y)], axis=1) for x, y in corners]


def _shoulder_girdle(canvas: Canvas, geo: ChestGeometry, subject: Subject, portable: bool) -> None:
    """Clavicles, scapulae and the humeral heads and shafts at the edges of the field.

    Bones of one kind are drawn both sides at once; clavicles and humeri share a layer (they
    never cross), the scapulae have their own, so a clavicle over a scapula adds up."""
    s, cx, top, mm = geo.s, geo.cx, geo.y_apex, canvas.mm_per_px
    lift = -14 * s if portable else 0.0  # clavicles project higher on AP films
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density
    sides = np.array([-1.0, 1.0])[:, None]
    clavicles = _smooth(
        np.stack(
            [
                cx + sides * np.array([16, 60, 120, 165, 182]) * s,
                np.broadcast_to(top + lift + np.array([22, 10, -8, -30, -28]) * s, (2, 5)),
            ],
            axis=-1,
        ),
        closed=False,
        per_span=4,
    )
    glenoid, superior, inferior = _scapula_corners(geo, portable)
    shafts = np.stack([cx + sides * np.array([208, 216]) * s, top + np.zeros((2, 2))], axis=-1)
    shafts[:, 1, 1] += 170 * s  # humeral shafts, down the sides of the field
    box = _box_of(canvas, clavicles, superior, inferior, shafts, margin=16 * s)
    origin = np.array([box[1].start, box[0].start], np.float32) * mm
    shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
    long_bones, scapulae = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    _tube_bands(long_bones, mm, list(clavicles - origin), 6.5 * s, bone, cortex=0.32)
    _tube_bands(long_bones, mm, list(shafts - origin), 13 * s, bone, cortex=0.3)
    # A thin blade with a thick lateral border and a slender medial one.
    blades = [
        np.round((np.stack(corners) - origin) / mm * 16).astype(np.int32)
        for corners in zip(superior, glenoid, inferior, strict=True)
    ]
    cv2.fillPoly(scapulae, blades, float(5 * s * (bone - 1.0)), cv2.LINE_8, 4)
    lateral = np.stack([glenoid, inferior], axis=1) - origin
    medial = np.stack([superior, inferior], axis=1) - origin
    _tube_bands(scapulae, mm, lateral, 4.5 * s, bone, cortex=0.4)
    _tube_bands(scapulae, mm, medial, 2.2 * s, bone, cortex=0.5)
    canvas.att[box] += cv2.GaussianBlur(long_bones + scapulae, (0, 0), 0.7)
    for sign in (-1.0, 1.0):  # humeral heads
        head_x = cx + sign * 205 * s
        canvas.ellipsoid(head_x, top - 20 * s, 25 * s, 27 * s, 40 * s, 0.7 * subject.bone_density)


def _gastric_bubble(canvas: Canvas, geo: ChestGeometry, rng: np.random.Generator) -> None:
    """Gas in the stomach fundus under the left hemidiaphragm, with a flat air-fluid level."""
    if rng.random() < 0.25:
        return
    s = geo.s
    x = geo.cx + rng.uniform(50, 85) * s
    rx, ry = rng.uniform(20, 34) * s, rng.uniform(10, 18) * s
    y = geo.y_cp["left"] + ry - rng.uniform(4, 10) * s  # top ~8 mm below the dome (diaphragm)
    bubble = ellipse_outline(x, y, rx, ry, 180, 360, 20)  # dome above, level below
    _slab(canvas, bubble, rng.uniform(25, 45) * s, -SOFT_TISSUE, 6 * s)


def _breasts(
    canvas: Canvas, geo: ChestGeometry, subject: Subject, rng: np.random.Generator
) -> None:
    """Breast shadows over the lower zones: densest just above a soft inframammary fold that
    curves up at both ends, thinning upward to nothing."""
    s = geo.s
    size = rng.uniform(0.8, 1.25) * subject.habitus
    depth = BREAST_DEPTH * s * size
    for sign in (-1.0, 1.0):
        fx = geo.cx + sign * 100 * s  # lowest point of the fold
        fy = geo.y_cp["right"] - 5 * s + 12 * s * size
        rx, ry = 85 * s * size, 130 * s * size
        box = canvas.box(fx - rx, fy - ry - 10 * s, fx + rx, fy + 10 * s)
        if box is None:
            continue
        x, y = canvas.grid(box)
        u = (x - fx) / rx
        fold_y = fy - 35 * s * u * u  # the fold rises medially and laterally
        v = (fold_y - y) / ry  # 0 at the fold, 1 at the top
        across = np.sqrt(np.maximum(1.0 - u * u, 0.0))
        edge = np.clip(v * ry / (9 * s) + 0.5, 0.0, 1.0)  # soft lower edge, ~9 mm
        fade = np.clip(1.0 - v, 0.0, 1.0) ** 2.2
        canvas.att[box] += (depth * across * edge * edge * (3 - 2 * edge) * fade).astype(np.float32)


def _monitoring_leads(canvas: Canvas, geo: ChestGeometry, rng: np.random.Generator) -> None:
    """ECG electrodes and their wires, common on portable films (a real-world shortcut): a
    metal snap in a metal ring on a faint foam pad, the wire trailing off toward the neck."""
    s, mm = geo.s, canvas.mm_per_px
    pads, rings, wires = [], [], []
    for _ in range(int(rng.integers(2, 5))):
        x = geo.cx + rng.uniform(-1, 1) * THORAX_HALF_WIDTH * s
        y = geo.y_apex + rng.uniform(0.0, 1.0) * LUNG_HEIGHT * s
        canvas.ellipsoid(x, y, 4.5 * s, 4.5 * s, 4, 8.0)  # snap button (metal)
        pads.append(ellipse_outline(x, y, 17 * s, 17 * s, n=24))
        rings.append(ellipse_outline(x, y, 7 * s, 7 * s, n=16))
        wire = [(x, y)]
        for _ in range(4):
            px, py = wire[-1]
            wire.append((px + rng.normal(0, 40) * s, py + rng.uniform(-60, -10) * s))
        wires.append(_smooth(wire, False, 4))
    box = _box_of(canvas, *pads, *wires, margin=3 * s)
    origin = np.array([box[1].start, box[0].start], np.float32) * mm
    layer = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)
    _tube_bands(layer, mm, [p - origin for p in pads], 0.8 * s, 2.0, 0.0)
    _tube_bands(layer, mm, [r - origin for r in rings], 0.7 * s, 8.0, 0.0)
    _tube_bands(layer, mm, [w - origin for w in wires], 1.0 * s, 6.0, 0.0)
    canvas.att[box] += cv2.GaussianBlur(layer, (0, 0), 0.6)


# ---------------------------------------------------------------------------------------------
# Lateral view: the patient faces the image left, spine at the image right.


def _lateral(
    canvas: Canvas,
    subject: Subject,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> ChestGeometry:
    s = subject.body_scale
    cx = canvas.width_mm / 2 + rng.normal(0, 0.02) * canvas.width_mm
    y_apex = canvas.height_mm / 2 - 0.52 * LUNG_HEIGHT * s + rng.normal(0, 0.02) * canvas.height_mm
    lung_h = LUNG_HEIGHT * s * rng.uniform(0.92, 1.04)
    # The right hemidiaphragm is higher (the liver under it).
    y_cp = {"right": y_apex + lung_h, "left": y_apex + lung_h + rng.uniform(6, 16) * s}
    geo = ChestGeometry("LAT", cx, s, y_apex, y_cp)
    depth_ap = CHEST_AP_DEPTH * s * (0.85 + 0.15 * subject.habitus)
    front, back = cx - depth_ap / 2, cx + depth_ap / 2
    geo.anterior_x, geo.posterior_x = front + 18 * s, back - 24 * s

    _lateral_body(canvas, geo, front, back, subject)
    for side in SIDES:
        _lateral_lung(canvas, geo, side)
    _lateral_heart(canvas, geo, findings, rng)
    hx, hy = geo.hila["right"]
    lungs = (geo.lung_masks["right"] | geo.lung_masks["left"], canvas.mm_per_px)
    angles = np.deg2rad([a for a, _ in LATERAL_PRIMARIES])
    radii = np.array([c for _, c in LATERAL_PRIMARIES]) * LATERAL_PRIMARY_RADIUS * s
    roots = np.tile([hx, hy], (len(angles), 1))
    tree = _vessel_tree(rng, roots, angles, radii, 150 * s, lungs)
    _add_markings(canvas, geo, [tree], 2 * LAT_LUNG_DEPTH * s * -AIR_IN_LUNG, findings)
    _lateral_airway(canvas, geo)
    _lateral_spine(canvas, geo, back, subject)
    _lateral_ribs(canvas, geo, subject)
    _lateral_sternum(canvas, geo, front, subject)
    _lateral_arms(canvas, geo, front, subject)
    if subject.sex == "F":
        _lateral_breasts(canvas, geo, front, subject, rng)
    return geo


def _lateral_body(
    canvas: Canvas, geo: ChestGeometry, front: float, back: float, subject: Subject
) -> None:
    """Torso seen from the side; shoulders and scapulae thicken it above (the spine sign)."""
    s, top, h = geo.s, geo.y_apex, subject.habitus
    bottom = canvas.height_mm + 40
    outline = _smooth(
        [
            (front + 75 * s, top - 170 * s),  # front of the neck
            (front + 60 * s, top - 50 * s),
            (front + 8 * s, top + 8 * s),  # suprasternal notch
            (front - 2 * s * h, top + 150 * s),
            (front - 14 * s * h, geo.y_cp["left"] + 40 * s),  # upper abdomen
            (front - 18 * s * h, bottom),
            (back + 12 * s, bottom),
            (back + 6 * s, geo.y_cp["left"]),
            (back, top + 60 * s),
            (back - 20 * s, top - 60 * s),  # upper back, toward the neck
            (back - 45 * s, top - 170 * s),
        ],
        closed=False,
        per_span=4,
    )
    _slab(canvas, outline, LAT_BODY_WIDTH * s * h, SOFT_TISSUE, 60 * s, factor=4, soft_edge=True)
    # Shoulder girdle (scapulae, muscles) over the upper thorax, thinning downward.
    middle = (front + back) / 2
    _soft_ellipsoid(canvas, (middle + 30 * s, top - 40 * s), (150 * s, 190 * s), 50 * s * h)


def _lateral_lung_outline(geo: ChestGeometry, side: str, below: float = 0.0) -> np.ndarray:
    """Both lungs look alike from the side: rounded apex, a straight anterior border behind the
    sternum, a posterior border down along the spine, and the hemidiaphragm dome sweeping back
    and down into the posterior costophrenic sulcus, the lowest point of the lung."""
    s, top, cp = geo.s, geo.y_apex, geo.y_cp[side]
    a, p = geo.anterior_x, geo.posterior_x
    span = p - a
    h = cp - top
    points = [
        (a + 0.5 * span, top),  # rounded apex
        (a + 0.76 * span, top + 16 * s),
        (p - 4 * s, top + 70 * s),
        (p + 2 * s, top + 0.55 * h),  # posterior border, over the back of the spine
        (p + 3 * s, cp - 5 * s),
        (p - 4 * s, cp + 22 * s + below),  # posterior costophrenic sulcus: the lowest point
        (p - 22 * s, cp + 8 * s + below),
        (a + 0.66 * span, cp - 36 * s + below),
        (a + 0.4 * span, cp - 56 * s + below),  # hemidiaphragm dome
        (a + 0.14 * span, cp - 50 * s + below),
        (a + 2 * s, cp - 36 * s + below),  # anterior costophrenic angle
        (a - 2 * s, cp - 90 * s),
        (a, top + 0.3 * h),  # straight anterior border, behind the sternum
        (a + 0.12 * span, top + 36 * s),
        (a + 0.27 * span, top + 8 * s),
    ]
    return _smooth(points, closed=True)


def _lateral_lung(canvas: Canvas, geo: ChestGeometry, side: str) -> None:
    outline = _lateral_lung_outline(geo, side)
    geo.lungs[side] = outline
    air = np.zeros_like(canvas.att)
    depth = LAT_LUNG_DEPTH * geo.s
    # Deep right down to the domes, which the beam meets tangentially (cf. _lung).
    profile = _lateral_lung_outline(geo, side, below=LUNG_HIDDEN_REACH * geo.s)
    _slab(canvas, profile, depth, AIR_IN_LUNG, 30 * geo.s, target=air)
    geo.lung_masks[side] = canvas.mask_of_polygon(outline)
    air *= geo.lung_masks[side]
    geo.air_side[side] = air
    a, p = geo.anterior_x, geo.posterior_x
    geo.hila[side] = (a + 0.52 * (p - a), geo.y_apex + 0.44 * (geo.y_cp[side] - geo.y_apex))


def _lateral_heart_outline(geo: ChestGeometry, growth: float) -> np.ndarray:
    """Heart against the lower sternum with a convex posterior border; the IVC below it."""
    s, cp = geo.s, geo.y_cp["right"]
    a, p = geo.anterior_x, geo.posterior_x
    span = p - a
    yh = geo.hila["right"][1]
    back = a + 0.58 * span * growth**0.8  # posterior border: left ventricle and atrium
    points = [
        (a + 0.2 * span, yh - 8 * s),  # right ventricular outflow tract, pulmonary trunk
        (a + 0.44 * span, yh + 4 * s),  # left atrium
        (back - 0.02 * span, yh + 40 * s),
        (back, cp - 95 * s),
        (back - 0.04 * span, cp - 60 * s),
        (a + 0.56 * span, cp - 40 * s),  # inferior vena cava
        (a + 0.52 * span, cp + 20 * s),  # below the diaphragm: hidden in the liver
        (a - 30 * s, cp - 10 * s),
        (a - 28 * s, cp - 70 * s),
        (a - 20 * s, yh + 45 * s),  # against the lower third of the sternum: no lung in front
        (a + 0.05 * span, yh + 6 * s),
    ]
    return _smooth(points, closed=True)


def _lateral_heart(
    canvas: Canvas,
    geo: ChestGeometry,
    findings: Mapping[Finding, LesionSeed],
    rng: np.random.Generator,
) -> None:
    """Heart and aorta displace part of the lungs' air (the lungs lie either side of them along
    the beam); what is left is the lungs as drawn."""
    s, top = geo.s, geo.y_apex
    a, p = geo.anterior_x, geo.posterior_x
    span = p - a
    growth = rng.uniform(0.95, 1.05)
    if Finding.CARDIOMEGALY in findings:
        base, span_g = CARDIOMEGALY_GROWTH
        growth *= base + span_g * findings[Finding.CARDIOMEGALY].at(0)
    occupied = np.zeros_like(canvas.att)
    outline = _lateral_heart_outline(geo, growth)
    _slab(canvas, outline, 1.0, 1.0, 40 * s, occupied)
    geo.heart_mask = occupied > 0.25
    geo.heart_width = 0.58 * span * growth**0.8
    # Ascending aorta, arch and descending aorta, as a fraction of the lungs' width.
    aorta = _smooth(
        [
            (a + 0.28 * span, geo.hila["right"][1]),
            (a + 0.3 * span, top + 50 * s),
            (a + 0.5 * span, top + 28 * s),
            (a + 0.68 * span, top + 50 * s),
            (a + 0.74 * span, top + 110 * s),
            (a + 0.76 * span, geo.y_cp["left"]),
        ],
        closed=False,
        per_span=4,
    )
    per_mm = 2.0 / (2 * LAT_LUNG_DEPTH * s)  # a tube's chord over the air path, made visible
    _fast_tube(occupied, canvas.mm_per_px, aorta, 13 * s, per_mm, 0.0)
    occ = occupied[_box_of(canvas, outline, aorta, margin=15 * s)]
    keep = 1.0 - np.minimum(occ, 1.0) * LAT_HEART_SHARE
    _displace_air(canvas, geo, _box_of(canvas, outline, aorta, margin=15 * s), keep, occ < 0.3)


def _lateral_airway(canvas: Canvas, geo: ChestGeometry) -> None:
    """Trachea: a thin air band descending slightly backward; a bronchus seen end-on below."""
    s, top = geo.s, geo.y_apex
    hx, hy = geo.hila["right"]
    trachea = [(hx - 24 * s, top - 120 * s), (hx - 12 * s, top + 20 * s), (hx + 4 * s, hy - 14 * s)]
    _fast_tube(canvas.att, canvas.mm_per_px, trachea, 8 * s, 0.0, SOFT_TISSUE)
    canvas.ellipsoid(hx + 8 * s, hy - 2 * s, 6 * s, 7 * s, 14 * s, -0.7)  # upper lobe bronchus


def _lateral_spine(canvas: Canvas, geo: ChestGeometry, back: float, subject: Subject) -> None:
    """Vertebral bodies as blocks with dense end plates and disc spaces; posterior elements
    (pedicle, lamina, spinous process) slanting back and down behind each."""
    s, mm = geo.s, canvas.mm_per_px
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density
    extra = (CORTEX - 1.0) * subject.bone_density * 0.5  # cancellous bone over soft tissue
    x1 = geo.posterior_x - 4 * s  # back of the bodies
    y, bottom = geo.y_apex - 50 * s, geo.y_cp["left"] + 45 * s
    bodies, plates, arches, k = [], [], [], 0
    while y < bottom:
        height = (15 + 0.9 * k) * s  # bodies grow taller down the thoracic spine
        x0 = x1 - (28 + 1.2 * k) * s
        bodies.append(np.array([(x0, y), (x1, y), (x1, y + height), (x0, y + height)]))
        plates += [np.array([(x0 + s, e), (x1 - s, e)]) for e in (y + s, y + height - s)]
        arches.append(np.array([(x1, y + 0.4 * height), (back - 16 * s, y + 1.6 * height)]))
        y += height + (4 + 0.15 * k) * s  # disc space
        k += 1
    # Bodies: flat blocks of cancellous bone (a cylinder seen side-on), edges softened by the
    # blur that antialiases the plates; far cheaper than a distance transform per body.
    layer = np.zeros_like(canvas.att)
    quads = [np.round(b / mm * 16).astype(np.int32) for b in bodies]
    cv2.fillPoly(layer, quads, float(36 * s * extra), cv2.LINE_8, 4)
    layer = cv2.GaussianBlur(layer, (0, 0), 1.5 * s / mm)
    _tube_bands(layer, mm, plates, 1.1 * s, 1.0 + (bone - 1.0) * 0.6)
    _tube_bands(layer, mm, arches, 4.0 * s, 1.0 + (bone - 1.0) * 0.6, cortex=0.4)
    canvas.att += cv2.GaussianBlur(layer, (0, 0), 0.6)


def _lateral_ribs(canvas: Canvas, geo: ChestGeometry, subject: Subject) -> None:
    """Posterior ribs of both sides, from the spine down and forward; the far side magnified."""
    s, mm = geo.s, canvas.mm_per_px
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density * 0.7
    a, p = geo.anterior_x, geo.posterior_x
    span = p - a
    step = (geo.y_cp["right"] - geo.y_apex) / 10
    k = np.arange(11, dtype=np.float32)[:, None]
    for mag, dy in ((1.0, 0.0), (1.08, 7.0 * s)):
        x = p - np.array([6 * s, 0.14 * span * mag, 0.32 * span * mag, 0.5 * span * mag])
        y = geo.y_apex - 20 * s + k * step + dy + np.array([0, 20, 50, 80], np.float32) * s
        arcs = _smooth(np.stack([np.broadcast_to(x, y.shape), y], axis=-1), False, 4)
        # Drawn on the box the arcs cover only: a whole-canvas layer and blur cost more.
        box = _box_of(canvas, arcs, margin=8 * s)
        origin = np.array([box[1].start, box[0].start], np.float32) * mm
        layer = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)
        _tube_bands(layer, mm, list(arcs - origin), 4.2 * s * mag, bone, cortex=0.35)
        canvas.att[box] += cv2.GaussianBlur(layer, (0, 0), 0.8 * mag)


def _lateral_sternum(canvas: Canvas, geo: ChestGeometry, front: float, subject: Subject) -> None:
    """Manubrium and sternal body, edge-on: a dense strip along the front of the chest."""
    s, top, mm = geo.s, geo.y_apex, canvas.mm_per_px
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density
    manubrium = [(front + 12 * s, top + 8 * s), (front + 9 * s, top + 52 * s)]
    body = [(front + 9 * s, top + 58 * s), (front + 4 * s, top + 170 * s)]
    _fast_tube(canvas.att, mm, manubrium, 8 * s, bone * 0.8, cortex=0.3)
    _fast_tube(canvas.att, mm, body, 6 * s, bone * 0.8, cortex=0.3)


def _lateral_arms(canvas: Canvas, geo: ChestGeometry, front: float, subject: Subject) -> None:
    """Arms raised forward: soft tissue and humeri over the upper anterior chest and neck.

    Each upper arm is an elongated ellipsoid from the shoulder (above the lung apex) up and
    forward toward the elbow, so it thins out smoothly at both ends rather than ending in a cap.
    """
    s, top, mm = geo.s, geo.y_apex, canvas.mm_per_px
    bone = 1.0 + (CORTEX - 1.0) * subject.bone_density * 0.7
    shoulder = np.array([geo.anterior_x + 0.45 * (geo.posterior_x - geo.anterior_x), top - 10 * s])
    elbow = np.array([front - 50 * s, top - 250 * s])
    axis = elbow - shoulder
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    half = float(np.hypot(*axis)) / 2
    for offset in ((0.0, 0.0), (14 * s, -8 * s)):  # the two arms, not quite superimposed
        mid = (shoulder + elbow) / 2 + offset
        _soft_ellipsoid(canvas, (mid[0], mid[1]), (half, 42 * s), 85 * s * subject.habitus, angle)
        head = shoulder + offset + axis * 0.12
        _fast_tube(canvas.att, mm, [head, elbow + offset], 9 * s, bone, cortex=0.3)


def _lateral_breasts(
    canvas: Canvas, geo: ChestGeometry, front: float, subject: Subject, rng: np.random.Generator
) -> None:
    """Both breasts superimposed, in front of the lower anterior chest and over it."""
    s = geo.s
    size = rng.uniform(0.8, 1.25) * subject.habitus
    y = geo.y_cp["right"] - 70 * s
    rx, ry = 36 * s * size, 62 * s * size
    # Along the beam lie both breasts: about twice the depth a frontal ray crosses.
    depth = 2 * BREAST_DEPTH * s * size
    canvas.ellipsoid(front + 16 * s, y, rx, ry, depth, 1.0, -20)
