"""Knee renderer: anatomy where it belongs, laterality, determinism, age, fracture sites."""

import numpy as np
import pytest

from medtune.synth.anatomy.base import LesionSeed, Subject
from medtune.synth.anatomy.knee import KneeShape, render_knee
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture

ROWS, COLS, MM = 512, 420, 0.6  # 307 x 252 mm: the knee's field plus a little


def _subject(laterality: str = "L", age: float = 40.0, sex: str = "M") -> Subject:
    return Subject(sex, age, 1.0, 1.0, 1.0, laterality)


def _render(view: str, laterality: str = "L", seed: int = 0) -> Canvas:
    canvas = Canvas.blank(ROWS, COLS, MM)
    render_knee(canvas, _subject(laterality), view, {}, np.random.default_rng(seed))
    return canvas


def _bone(canvas: Canvas, name: str) -> np.ndarray:
    return next(b for b in canvas.bones if b.name == name).points


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_renders_finite_bone_and_tissue_inside_the_canvas(view):
    canvas = Canvas.blank(ROWS, COLS, MM)
    result = render_knee(canvas, _subject(), view, {}, np.random.default_rng(1))
    att = canvas.att
    assert np.isfinite(att).all() and att.min() > -1.0
    # Soft tissue about 100-130 mm thick through the knee; bone adds to it.
    assert 90.0 < np.percentile(att[att > 1.0], 50) < 200.0
    x0, y0, x1, y1 = result.field_mm
    assert 0.0 <= x0 < x1 <= canvas.width_mm and 0.0 <= y0 < y1 <= canvas.height_mm
    # The joint (where the fibular head sits) is well inside the canvas, not at an edge.
    head = _bone(canvas, "fibular head")[0]
    assert 0.2 * canvas.width_mm < head[0] < 0.8 * canvas.width_mm
    assert 0.3 * canvas.height_mm < head[1] < 0.7 * canvas.height_mm
    # Air beside the limb on at least one side: the skin line is on the canvas.
    assert min(att[:, :5].mean(), att[:, -5:].mean()) < 1.0


def test_fracture_sites_are_registered_and_cuttable():
    canvas = _render("AP")
    names = {b.name for b in canvas.bones}
    assert names == {"distal femur", "proximal tibia", "fibular head", "proximal fibula"}
    before = canvas.att.copy()
    lesion = apply_fracture(canvas, LesionSeed((0.3, 0.5, 0.5, 0.5)), np.random.default_rng(0))
    assert lesion is not None and lesion.mask.sum() > 20
    assert (before - canvas.att)[lesion.mask].mean() > 5.0  # a lucent gap through real bone


def test_fibula_is_lateral_on_the_ap_and_posterior_on_the_lateral():
    for view in ("AP", "LAT"):
        left, right = _render(view, "L"), _render(view, "R")
        for canvas, sign in ((left, 1.0), (right, -1.0)):
            fibula = _bone(canvas, "proximal fibula")[:2].mean(0)[0]
            tibia = _bone(canvas, "proximal tibia")[:2].mean(0)[0]
            # AP: a left knee's lateral side (fibula) is on the image right. LAT, seen from
            # the lateral side: a left knee faces the image left, so its back is on the right.
            assert sign * (fibula - tibia) > 10.0, (view, sign)


def test_same_seed_same_pixels_other_seed_other_pixels_views_differ():
    a, b, c = _render("AP", seed=5), _render("AP", seed=5), _render("AP", seed=6)
    assert np.array_equal(a.att, b.att)
    assert not np.array_equal(a.att, c.att)
    lateral = _render("LAT", seed=5)
    assert np.abs(lateral.att - a.att).mean() > 10.0


def test_older_knees_have_narrower_medial_joint_spaces():
    rng = np.random.default_rng(0)
    young = [KneeShape.draw(_subject(age=25), rng) for _ in range(60)]
    old = [KneeShape.draw(_subject(age=80), rng) for _ in range(60)]
    assert np.mean([k.js_medial for k in old]) < np.mean([k.js_medial for k in young]) - 1.0
    assert np.mean([k.arthritis > 0 for k in old]) > 0.5 > np.mean([k.arthritis > 0 for k in young])


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="AP or LAT"):
        _render("PA")
