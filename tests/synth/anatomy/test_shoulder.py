"""Shoulder renderer: anatomy where it belongs, laterality, determinism, fracture sites."""

import numpy as np
import pytest

from medtune.synth.anatomy.base import LesionSeed, Subject
from medtune.synth.anatomy.shoulder import render_shoulder
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture

ROWS, COLS, MM = 420, 512, 0.6  # 252 x 307 mm: the shoulder's field plus a little


def _render(laterality: str = "L", seed: int = 0, **subject) -> Canvas:
    canvas = Canvas.blank(ROWS, COLS, MM)
    params = {"sex": "M", "age": 45.0, "body_scale": 1.0, "habitus": 1.0, "bone_density": 1.0}
    params.update(subject)
    render_shoulder(canvas, Subject(**params, laterality=laterality), "AP", {},
                    np.random.default_rng(seed))  # fmt: skip
    return canvas


def _points(canvas: Canvas, name: str) -> np.ndarray:
    return next(b for b in canvas.bones if b.name == name).points


def test_renders_finite_values_with_the_joint_inside_the_canvas():
    canvas = Canvas.blank(ROWS, COLS, MM)
    subject = Subject("F", 70.0, 0.95, 1.3, 0.7, "R")
    result = render_shoulder(canvas, subject, "AP", {}, np.random.default_rng(3))
    assert np.isfinite(canvas.att).all() and canvas.att.min() > -1.0
    x0, y0, x1, y1 = result.field_mm
    assert 0.0 <= x0 < x1 <= canvas.width_mm and 0.0 <= y0 < y1 <= canvas.height_mm
    neck = _points(canvas, "surgical neck of the humerus")[0]  # in the humeral head
    assert 0.1 * canvas.width_mm < neck[0] < 0.9 * canvas.width_mm
    assert 0.15 * canvas.height_mm < neck[1] < 0.6 * canvas.height_mm
    # Air above the shoulder on the lateral side, tissue (neck, chest) on the medial side.
    assert canvas.att[:8, :40].mean() < 1.0 < canvas.att[:8, -40:].mean()


def test_left_shoulder_has_the_humerus_on_the_image_right_and_the_lung_on_the_left():
    for laterality, sign in (("L", 1.0), ("R", -1.0)):
        canvas = _render(laterality)
        centre = canvas.width_mm / 2
        humerus = _points(canvas, "humeral shaft")[:2].mean(0)[0]
        clavicle = _points(canvas, "clavicular shaft")[-1][0]  # medial end
        assert sign * (humerus - centre) > 20.0 and sign * (humerus - clavicle) > 120.0
        # The lung (air) makes the medial side darker than the arm beside the humerus.
        rows = slice(ROWS // 2, ROWS * 3 // 4)
        medial = slice(0, COLS // 6) if sign > 0 else slice(-COLS // 6, None)
        arm = int((humerus + sign * 30.0) / MM)
        assert canvas.att[rows, medial].mean() < canvas.att[rows, arm].mean() - 20.0


def test_fracture_sites_are_registered_and_cuttable():
    canvas = _render()
    names = {b.name for b in canvas.bones}
    assert names == {
        "surgical neck of the humerus", "humeral shaft", "lateral clavicle", "clavicular shaft"
    }  # fmt: skip
    before = canvas.att.copy()
    for u0 in (0.1, 0.6):  # one clavicle and one humerus site
        lesion = apply_fracture(canvas, LesionSeed((u0, 0.5, 0.5, 0.5)), np.random.default_rng(0))
        assert lesion is not None and lesion.mask.sum() > 10
    assert (before - canvas.att).max() > 5.0


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b, c = _render(seed=5), _render(seed=5), _render(seed=6)
    assert np.array_equal(a.att, b.att)
    assert not np.array_equal(a.att, c.att)


def test_habitus_thickens_the_soft_tissue():
    thin, heavy = _render(habitus=0.8), _render(habitus=1.5)
    assert np.median(heavy.att[heavy.att > 1]) > 1.25 * np.median(thin.att[thin.att > 1])


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="AP"):
        render_shoulder(Canvas.blank(ROWS, COLS, MM), Subject("M", 40, 1, 1, 1, "L"), "LAT", {},
                        np.random.default_rng(0))  # fmt: skip
