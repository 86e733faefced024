"""Lumbar spine renderer: geometry, registered bones, view differences, age and determinism."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy import ANATOMY_RENDERERS
from medtune.synth.anatomy.base import LesionSeed, Subject
from medtune.synth.anatomy.spine import render_lumbar_spine
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture

MM_PER_PX = 1.0
FIELD = ANATOMY_RENDERERS[Anatomy.LUMBAR_SPINE].field_mm  # (width, height) mm

YOUNG_MAN = Subject("M", 30, 1.0, 1.0, 1.0, None)
OLD_WOMAN = Subject("F", 82, 0.92, 1.1, 0.6, None)
BIG_MAN = Subject("M", 45, 1.15, 1.4, 1.0, None)


@functools.lru_cache(maxsize=64)
def render(subject: Subject, view: str, seed: int = 0) -> tuple[Canvas, tuple]:
    """Render onto a canvas exactly the size of the renderer's field (the tightest allowed).

    Cached: tests only read the result (the fracture test copies it first).
    """
    canvas = Canvas.blank(int(FIELD[1] / MM_PER_PX), int(FIELD[0] / MM_PER_PX), MM_PER_PX)
    result = render_lumbar_spine(canvas, subject, view, {}, np.random.default_rng(seed))
    return canvas, result.field_mm


def bone(canvas: Canvas, name: str) -> np.ndarray:
    """The registered points (mm) of the bone called ``name``."""
    matches = [b for b in canvas.bones if b.name == name]
    assert len(matches) == 1, f"{name!r} registered {len(matches)} times"
    return matches[0].points


def levels_x(canvas: Canvas, part: str) -> np.ndarray:
    """Mean x (mm) of the registered ``part`` at T12..L5."""
    return np.array([bone(canvas, f"{lv} {part}")[:, 0].mean() for lv in LEVELS])


LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5")


@pytest.mark.parametrize("view", ["AP", "LAT"])
@pytest.mark.parametrize("subject", [YOUNG_MAN, OLD_WOMAN, BIG_MAN])
def test_renders_finite_thickness_with_the_part_inside_the_canvas(subject, view):
    canvas, (x0, y0, x1, y1) = render(subject, view)
    att = canvas.att
    assert att.dtype == np.float32 and np.isfinite(att).all()
    assert att.min() >= 0.0
    assert att.max() > 150.0  # a trunk's worth of soft tissue plus bone
    assert 0.0 <= x0 < x1 <= canvas.width_mm and 0.0 <= y0 < y1 <= canvas.height_mm
    assert y1 - y0 > 250.0  # T12 to the sacrum
    for b in canvas.bones:  # every fracture candidate lies on the canvas, with its full width
        assert (b.points - b.radii[:, None] >= 0).all(), b.name
        assert (b.points[:, 0] + b.radii <= canvas.width_mm).all(), b.name
        assert (b.points[:, 1] + b.radii <= canvas.height_mm).all(), b.name


def test_both_views_register_the_same_report_named_bones():
    ap, _ = render(YOUNG_MAN, "AP")
    lat, _ = render(YOUNG_MAN, "LAT")
    names = {b.name for b in ap.bones}
    expected = {f"{lv} vertebral body" for lv in LEVELS} | {
        f"{lv} spinous process" for lv in LEVELS
    }
    expected |= {f"{side} L3 transverse process" for side in ("left", "right")}
    expected |= {"sacrum"}
    assert expected <= names
    assert "T11 vertebral body" not in names  # half out of the field: not offered for fractures
    assert names == {b.name for b in lat.bones}  # so a study breaks the same bone in each view


def test_ap_shows_the_patients_left_on_the_image_right():
    canvas, _ = render(YOUNG_MAN, "AP")
    body = bone(canvas, "L3 vertebral body")[:, 0].mean()
    left = bone(canvas, "left L3 transverse process")
    right = bone(canvas, "right L3 transverse process")
    assert left[:, 0].max() > body + 40.0  # its tip reaches out to the image right
    assert right[:, 0].min() < body - 40.0


@pytest.mark.parametrize("seed", range(3))
def test_lateral_puts_the_bodies_in_front_and_the_processes_behind(seed):
    ap, _ = render(YOUNG_MAN, "AP", seed)
    lat, _ = render(YOUNG_MAN, "LAT", seed)
    # AP: spinous processes on the midline of their bodies.
    assert np.abs(levels_x(ap, "spinous process") - levels_x(ap, "vertebral body")).max() < 4.0
    # LAT: anterior is the image left; spinous processes sit far behind (right of) the bodies.
    behind = levels_x(lat, "spinous process") - levels_x(lat, "vertebral body")
    assert behind.min() > 40.0
    centre = lat.width_mm / 2
    assert levels_x(lat, "vertebral body").mean() < centre - 12.0
    assert abs(levels_x(ap, "vertebral body").mean() - centre) < 12.0
    # The belly lies in front: the lateral's left half carries more tissue, the AP is balanced.
    half = lat.cols // 2
    assert lat.att[:, :half].mean() > 1.2 * lat.att[:, half:].mean()
    ratio = ap.att[:, : ap.cols // 2].mean() / ap.att[:, ap.cols // 2 :].mean()
    assert 0.85 < ratio < 1.15


def test_lordosis_curves_the_lateral_but_not_the_ap():
    ap, _ = render(YOUNG_MAN, "AP")
    lat, _ = render(YOUNG_MAN, "LAT")

    def bow(canvas: Canvas) -> float:  # how far the middle bodies stand off the T12-L5 chord
        x = levels_x(canvas, "vertebral body")
        return float(np.abs(x[2:4] - (x[0] + x[-1]) / 2).max())

    assert bow(lat) > 2.0 * bow(ap) + 3.0


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_elderly_discs_are_narrower_at_the_same_seed(view):
    def span(subject: Subject, seed: int) -> float:  # T12 to L5 body centres, mm
        canvas, _ = render(subject, view, seed)
        top, bottom = (bone(canvas, f"{lv} vertebral body").mean(0) for lv in ("T12", "L5"))
        return float(np.hypot(*(bottom - top)))

    young = Subject("M", 30, 1.0, 1.0, 0.9, None)
    old = Subject("M", 84, 1.0, 1.0, 0.9, None)  # same size and bone: only the discs differ
    diffs = [span(young, seed) - span(old, seed) for seed in range(3)]
    assert min(diffs) > 0.0
    assert np.mean(diffs) > 8.0  # five discs of ~10 mm lose a fifth to a half of their height


def test_low_bone_density_draws_fainter_bone():
    dense = Subject("F", 60, 1.0, 1.0, 1.0, None)
    porotic = Subject("F", 60, 1.0, 1.0, 0.55, None)
    for view in ("AP", "LAT"):
        a, _ = render(dense, view, 5)
        b, _ = render(porotic, view, 5)
        assert a.att.sum() > b.att.sum() * 1.005


def test_a_fracture_cuts_a_lucent_line_through_a_registered_bone():
    canvas = copy.deepcopy(render(YOUNG_MAN, "AP", 2)[0])
    before = canvas.att.copy()
    lesion = apply_fracture(canvas, LesionSeed((0.3, 0.5, 0.5, 0.5)), np.random.default_rng(0))
    assert lesion is not None and lesion.finding is Finding.FRACTURE
    assert lesion.mask.sum() > 5
    assert (before - canvas.att)[lesion.mask].mean() > 2.0  # mm of bone removed in the gap


def test_same_seed_same_image_other_seed_other_image():
    a, fa = render.__wrapped__(OLD_WOMAN, "LAT", 11)
    b, fb = render.__wrapped__(OLD_WOMAN, "LAT", 11)
    c, _ = render.__wrapped__(OLD_WOMAN, "LAT", 12)
    assert np.array_equal(a.att, b.att) and fa == fb
    assert [x.name for x in a.bones] == [x.name for x in b.bones]
    assert np.abs(a.att - c.att).mean() > 1.0


def test_unknown_view_is_refused():
    canvas = Canvas.blank(40, 30, 10.0)
    with pytest.raises(ValueError, match="AP and LAT"):
        render_lumbar_spine(canvas, YOUNG_MAN, "PA", {}, np.random.default_rng(0))
