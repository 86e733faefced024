"""Pelvis renderer: both sides in place, sex differences, determinism, fracture sites."""

import numpy as np
import pytest

from medtune.synth.anatomy.base import LesionSeed, Subject
from medtune.synth.anatomy.pelvis import render_pelvis
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture

ROWS, COLS, MM = 420, 512, 0.85  # 357 x 435 mm: the pelvis's field


def _render(sex: str = "M", seed: int = 0, coarse: bool = False, **subject) -> Canvas:
    """A render; ``coarse`` quarters the pixels for tests of geometry (mm are the same)."""
    canvas = Canvas.blank(ROWS // 2, COLS // 2, MM * 2) if coarse else Canvas.blank(ROWS, COLS, MM)
    params = {"age": 45.0, "body_scale": 1.0, "habitus": 1.0, "bone_density": 1.0}
    params.update(subject)
    render_pelvis(canvas, Subject(sex, **params, laterality=None), "AP", {},
                  np.random.default_rng(seed))  # fmt: skip
    return canvas


def _points(canvas: Canvas, name: str) -> np.ndarray:
    return next(b for b in canvas.bones if b.name == name).points


def test_renders_finite_values_with_the_pelvis_inside_the_canvas():
    canvas = Canvas.blank(ROWS, COLS, MM)
    subject = Subject("F", 70.0, 1.1, 1.5, 0.7, None)  # large and heavy: the hardest fit
    result = render_pelvis(canvas, subject, "AP", {}, np.random.default_rng(2))
    att = canvas.att
    assert np.isfinite(att).all() and att.min() > -1.0
    # 180-260 mm of soft tissue times habitus through the hips.
    assert 180.0 < np.percentile(att, 50) < 420.0
    x0, y0, x1, y1 = result.field_mm
    assert 0.0 <= x0 < x1 <= canvas.width_mm and 0.0 <= y0 < y1 <= canvas.height_mm
    for name in ("right femoral neck", "left femoral neck", "right superior pubic ramus"):
        x, y = _points(canvas, name)[0]
        assert 0.1 * canvas.width_mm < x < 0.9 * canvas.width_mm
        assert 0.2 * canvas.height_mm < y < 0.8 * canvas.height_mm


def test_patients_right_femur_is_on_the_image_left():
    canvas = _render(coarse=True)
    centre = canvas.width_mm / 2
    for part in ("femoral neck", "femoral shaft", "superior pubic ramus", "inferior pubic ramus"):
        right, left = _points(canvas, f"right {part}"), _points(canvas, f"left {part}")
        assert right[:, 0].mean() < centre - 10.0 < centre + 10.0 < left[:, 0].mean(), part


def test_female_pelvis_is_wider_with_a_wider_subpubic_angle():
    def measures(sex: str) -> tuple[float, float]:
        widths, angles = [], []
        for seed in range(6):
            canvas = _render(sex, seed, coarse=True)
            heads = (
                _points(canvas, "left femoral neck")[0] - _points(canvas, "right femoral neck")[0]
            )
            widths.append(np.hypot(*heads))
            # Directions of the inferior rami, down and away from the symphysis.
            rami = [_points(canvas, f"{side} inferior pubic ramus") for side in ("left", "right")]
            d = [r[-1] - r[0] for r in rami]
            cos = d[0] @ d[1] / (np.linalg.norm(d[0]) * np.linalg.norm(d[1]))
            angles.append(np.degrees(np.arccos(cos)))
        return float(np.mean(widths)), float(np.mean(angles))

    (male_width, male_angle), (female_width, female_angle) = measures("M"), measures("F")
    assert female_width > 1.04 * male_width
    assert female_angle > 80.0 and male_angle < 70.0


def test_fracture_sites_are_registered_and_cuttable():
    canvas = _render()
    names = {b.name for b in canvas.bones}
    for side in ("left", "right"):
        assert {f"{side} femoral neck", f"{side} superior pubic ramus"} <= names
    before = canvas.att.copy()
    lesion = apply_fracture(canvas, LesionSeed((0.05, 0.5, 0.5, 0.5)), np.random.default_rng(0))
    assert lesion is not None and lesion.mask.sum() > 10
    assert (before - canvas.att)[lesion.mask].mean() > 5.0


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b, c = _render(seed=5), _render(seed=5), _render(seed=6)
    assert np.array_equal(a.att, b.att)
    assert not np.array_equal(a.att, c.att)


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="AP"):
        render_pelvis(Canvas.blank(ROWS, COLS, MM), Subject("M", 40, 1, 1, 1, None), "LAT", {},
                      np.random.default_rng(0))  # fmt: skip
