"""Skull renderer: geometry, registered bones, PA symmetry against the lateral, sex, determinism."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

from medtune.config import Anatomy, Finding
from medtune.synth.anatomy import ANATOMY_RENDERERS
from medtune.synth.anatomy.base import LesionSeed, Subject
from medtune.synth.anatomy.skull import render_skull
from medtune.synth.canvas import Canvas
from medtune.synth.fracture import apply_fracture

MM_PER_PX = 0.75
SPEC = ANATOMY_RENDERERS[Anatomy.SKULL]

MAN = Subject("M", 35, 1.0, 1.0, 1.0, None)
WOMAN = Subject("F", 35, 1.0, 1.0, 1.0, None)
OLD_WOMAN = Subject("F", 84, 0.9, 1.2, 0.6, None)
SMALL_MAN = Subject("M", 70, 0.95, 0.9, 0.85, None)
BIG_MAN = Subject("M", 45, 1.15, 1.3, 1.0, None)  # the landscape lateral field must hold him
BONES = {
    "frontal bone",
    "occipital bone",
    "right parietal bone",
    "left parietal bone",
    "right temporal bone",
    "left temporal bone",
    "mandibular body",
    "nasal bone",
}


@functools.lru_cache(maxsize=64)
def render(subject: Subject, view: str, seed: int = 0) -> tuple[Canvas, tuple]:
    """Render onto a canvas exactly the size of the renderer's field (the tightest allowed).

    Cached: tests only read the result (the fracture test copies it first).
    """
    width, height = SPEC.field_for(view)
    canvas = Canvas.blank(round(height / MM_PER_PX), round(width / MM_PER_PX), MM_PER_PX)
    result = render_skull(canvas, subject, view, {}, np.random.default_rng(seed))
    return canvas, result.field_mm


def centre_of(canvas: Canvas, name: str) -> np.ndarray:
    """Mean registered point (mm) of the bone called ``name``."""
    matches = [b for b in canvas.bones if b.name == name]
    assert len(matches) == 1, f"{name!r} registered {len(matches)} times"
    return matches[0].points.mean(0)


@pytest.mark.parametrize("view", ["PA", "LAT"])
@pytest.mark.parametrize("subject", [MAN, OLD_WOMAN, SMALL_MAN, BIG_MAN])
def test_renders_finite_thickness_with_the_head_inside_the_canvas(subject, view):
    canvas, (x0, y0, x1, y1) = render(subject, view)
    att = canvas.att
    assert att.dtype == np.float32 and np.isfinite(att).all()
    assert att.min() >= 0.0
    assert att.max() > 120.0  # a head's worth of brain, scalp and bone
    assert 0.0 < x0 < x1 < canvas.width_mm and 0.0 < y0 < y1 <= canvas.height_mm
    assert x1 - x0 > 130.0 and y1 - y0 > 180.0
    # The vault is drawn: bright rim, air all around it at the top corners.
    assert att[:5, :5].max() == 0.0 and att[:5, -5:].max() == 0.0
    for b in canvas.bones:
        assert (b.points >= 0).all(), b.name
        assert (b.points[:, 0] <= canvas.width_mm).all(), b.name
        assert (b.points[:, 1] <= canvas.height_mm).all(), b.name


def test_both_views_register_the_same_report_named_bones():
    pa, _ = render(MAN, "PA")
    lat, _ = render(MAN, "LAT")
    names = {b.name for b in pa.bones}
    assert names >= BONES
    assert names == {b.name for b in lat.bones}  # a study breaks the same bone in each view


def test_pa_shows_the_patients_right_on_the_image_left():
    canvas, _ = render(MAN, "PA")
    assert centre_of(canvas, "right parietal bone")[0] < centre_of(canvas, "left parietal bone")[0]
    assert centre_of(canvas, "right temporal bone")[0] < centre_of(canvas, "left temporal bone")[0]
    assert centre_of(canvas, "frontal bone")[1] < centre_of(canvas, "mandibular body")[1]


@pytest.mark.parametrize("seed", range(3))
def test_pa_is_symmetric_about_the_midline_and_the_lateral_is_not(seed):
    pa, _ = render(MAN, "PA", seed)
    lat, _ = render(MAN, "LAT", seed)
    # PA: frontal and occipital bone both lie on the midline, the parietals either side of it.
    mid = centre_of(pa, "frontal bone")[0]
    assert abs(centre_of(pa, "occipital bone")[0] - mid) < 8.0
    sides = centre_of(pa, "right parietal bone")[0] + centre_of(pa, "left parietal bone")[0]
    assert abs(sides / 2 - mid) < 8.0
    # LAT: front and back of the vault are a skull's length apart.
    assert centre_of(lat, "occipital bone")[0] - centre_of(lat, "frontal bone")[0] > 120.0


def test_pa_pixels_mirror_better_than_the_laterals():
    def symmetry(view: str, seed: int) -> float:
        canvas, (x0, y0, x1, y1) = render(MAN, view, seed)
        c0, c1 = int(x0 / MM_PER_PX), int(x1 / MM_PER_PX)
        part = canvas.att[int(y0 / MM_PER_PX) : int(y1 / MM_PER_PX), c0:c1]
        return float(np.corrcoef(part.ravel(), part[:, ::-1].ravel())[0, 1])

    pa = np.mean([symmetry("PA", seed) for seed in range(3)])
    lat = np.mean([symmetry("LAT", seed) for seed in range(3)])
    assert pa > 0.8 and pa > lat + 0.05


def test_lateral_has_the_face_in_front_and_the_occiput_behind():
    canvas, _ = render(MAN, "LAT")
    jaw, nose = centre_of(canvas, "mandibular body"), centre_of(canvas, "nasal bone")
    occiput = centre_of(canvas, "occipital bone")
    assert nose[0] < occiput[0] - 120.0  # the face looks to the image left
    assert jaw[0] < occiput[0] - 60.0
    # The near and far parietal bones superimpose, a few mm apart by magnification.
    gap = centre_of(canvas, "right parietal bone") - centre_of(canvas, "left parietal bone")
    assert 0.5 < np.hypot(*gap) < 10.0


@pytest.mark.parametrize("view", ["PA", "LAT"])
def test_men_have_larger_skulls_than_women_of_the_same_stature(view):
    for seed in range(2):
        _, (mx0, my0, mx1, my1) = render(MAN, view, seed)
        _, (fx0, fy0, fx1, fy1) = render(WOMAN, view, seed)
        assert mx1 - mx0 > fx1 - fx0 and my1 - my0 > fy1 - fy0


def test_weak_bone_draws_a_fainter_vault():
    strong = Subject("F", 60, 1.0, 1.0, 1.0, None)
    weak = Subject("F", 60, 1.0, 1.0, 0.55, None)
    a, _ = render(strong, "PA", 3)
    b, _ = render(weak, "PA", 3)
    assert a.att.sum() > b.att.sum() * 1.01


def test_a_fracture_cuts_a_lucent_line_through_a_registered_bone():
    canvas = copy.deepcopy(render(MAN, "LAT", 1)[0])
    before = canvas.att.copy()
    lesion = apply_fracture(canvas, LesionSeed((0.45, 0.5, 0.5, 0.6)), np.random.default_rng(0))
    assert lesion is not None and lesion.finding is Finding.FRACTURE
    assert lesion.mask.sum() > 5
    assert (before - canvas.att)[lesion.mask].mean() > 2.0


def test_same_seed_same_image_other_seed_other_image():
    a, fa = render.__wrapped__(OLD_WOMAN, "PA", 7)
    b, fb = render.__wrapped__(OLD_WOMAN, "PA", 7)
    c, _ = render.__wrapped__(OLD_WOMAN, "PA", 8)
    assert np.array_equal(a.att, b.att) and fa == fb
    assert np.abs(a.att - c.att).mean() > 0.5


def test_unknown_view_is_refused():
    canvas = Canvas.blank(40, 30, 10.0)
    with pytest.raises(ValueError, match="PA and LAT"):
        render_skull(canvas, MAN, "AP", {}, np.random.default_rng(0))
