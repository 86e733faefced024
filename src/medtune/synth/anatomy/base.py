"""The contract every anatomy renderer follows, and the registry that holds them.

A renderer draws one body part in one view onto a :class:`~medtune.synth.canvas.Canvas` (water-
equivalent thickness, mm) and returns where each requested finding ended up. Adding an anatomy is
one file with one registered function::

    @register_anatomy(Anatomy.HAND, views=("PA", "OBL"))
    def render_hand(canvas, subject, view, findings, rng) -> AnatomyResult: ...

Display convention (what every renderer and the marker logic assume): the image is seen as if
facing the patient in anatomical position, so the patient's left is on the image's right for
frontal views (PA and AP alike), and a left limb shows its lateral side on the image right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.canvas import Canvas


@dataclass(frozen=True)
class Subject:
    """What of the patient shapes the pixels."""

    sex: str  # "M" or "F"
    age: float  # years
    body_scale: float  # linear size factor, about 0.85-1.15 (sex and stature)
    habitus: float  # soft-tissue thickness factor: 0.8 thin .. 1.5 obese
    bone_density: float  # 1.0 young adult; lower with age, more so in women
    laterality: str | None  # "L" or "R" for paired parts (hand, knee, foot, shoulder), else None


@dataclass(frozen=True)
class LesionSeed:
    """Study-level random draws for one finding, so that every view of a study shows it in the
    same place (a nodule high in the right lung on the PA is high in the lung on the lateral)."""

    u: tuple[float, ...]  # uniform numbers in [0, 1); each renderer says what each one means

    def at(self, i: int) -> float:
        return self.u[i % len(self.u)]


@dataclass
class Lesion:
    """One finding as drawn: its pixel mask on the canvas and the words a report would use."""

    finding: Finding
    mask: np.ndarray  # bool, canvas-shaped
    location: str  # "right lower zone", "distal radius": agrees with the mask
    side: str | None = None  # patient side, "left" or "right", where it has one
    size_mm: float | None = None


@dataclass
class AnatomyResult:
    """The drawn body part: thickness map on the canvas, findings, and the region to collimate."""

    canvas: Canvas
    lesions: list[Lesion] = field(default_factory=list)
    field_mm: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 of the anatomy


# (canvas, subject, view, findings to draw with their study-level seeds, rng) -> result.
# Renderers of bones may ignore ``findings``: fractures are cut through registered bones later.
Renderer = Callable[
    [Canvas, Subject, str, Mapping[Finding, LesionSeed], np.random.Generator], AnatomyResult
]


Field = tuple[float, float]  # (width, height) of the detector field a part needs, mm


@dataclass(frozen=True)
class RendererSpec:
    anatomy: Anatomy
    views: tuple[str, ...]
    field_mm: Field  # the first view's field
    findings: frozenset[Finding]  # findings this renderer can draw
    render: Renderer
    view_fields: Mapping[str, Field] = field(default_factory=dict)  # where a view differs

    def field_for(self, view: str) -> Field:
        """The field ``view`` needs: a lateral skull is landscape where the PA is portrait."""
        return self.view_fields.get(view, self.field_mm)


ANATOMY_RENDERERS: dict[Anatomy, RendererSpec] = {}


def register_anatomy(
    anatomy: Anatomy,
    views: tuple[str, ...],
    field_mm: Field | Mapping[str, Field],
    findings: tuple[Finding, ...] = (Finding.FRACTURE,),
) -> Callable[[Renderer], Renderer]:
    """Register a renderer for ``anatomy``.

    ``views`` are its view names (PA, AP, LAT, OBL); ``field_mm`` is the (width, height) of the
    detector field an average adult's part needs, one for all views or one per view: the caller
    gives a canvas at least this large and of this orientation (detectors differ per site), and
    the renderer draws at true physical scale, centred.
    """
    per_view = dict(field_mm) if isinstance(field_mm, Mapping) else {}
    default = per_view[views[0]] if per_view else field_mm

    def wrap(fn: Renderer) -> Renderer:
        ANATOMY_RENDERERS[anatomy] = RendererSpec(
            anatomy,
            views,
            default,
            frozenset(findings),
            fn,
            per_view,  # type: ignore[arg-type]
        )
        return fn

    return wrap


def preview(att: np.ndarray) -> np.ndarray:
    """A quick uint8 display of a thickness map (bright = attenuating), for looking at renders."""
    s = att.astype(np.float32)
    lo, hi = np.percentile(s, [1, 99.5])
    return (np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
