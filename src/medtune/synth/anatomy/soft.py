"""Soft tissue as rounded slabs reaching past the canvas edges: the knee, shoulder and pelvis.

:func:`soft_tissue` draws a body outline (the skin) and the layers inside it (a lung, fat pads)
with the rounded profile of a convex body, right up to the canvas edges, where ``Canvas.slab``
would thin out; :func:`field_box` is the part's box on the canvas, from the skin outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from medtune.synth.canvas import Canvas


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


def field_box(canvas: Canvas, outline: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (mm) of the drawn part, clipped to the canvas."""
    lo = np.maximum(outline.min(0), 0.0)
    hi = np.minimum(outline.max(0), (canvas.width_mm, canvas.height_mm))
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])
