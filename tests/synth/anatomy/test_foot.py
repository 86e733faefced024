"""Foot renderer: geometry, laterality, views, determinism and how the subject shapes the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.config import Anatomy
from medtune.synth.anatomy.base import ANATOMY_RENDERERS, AnatomyResult, Subject
from medtune.synth.anatomy.foot import (
    FOOT_FIELD_MM,
    FOOT_VIEWS,
    hallux_valgus,
    layout_foot,
    render_foot,
)
from medtune.synth.canvas import Canvas

MM_PER_PX = 1.0  # coarse: geometry is what is tested, and it keeps the file fast


def subject(**changes: object) -> Subject:
    base = {"sex": "M", "age": 35.0, "body_scale": 1.0, "habitus": 1.0, "bone_density": 1.0}
    base["laterality"] = "L"
    base.update(changes)
    return Subject(**base)  # type: ignore[arg-type]


def render(view: str = "AP", seed: int = 0, **changes: object) -> AnatomyResult:
    w, h = FOOT_FIELD_MM
    canvas = Canvas.blank(int(h / MM_PER_PX), int(w / MM_PER_PX), MM_PER_PX)
    return render_foot(canvas, subject(**changes), view, {}, np.random.default_rng(seed))


def axis(result: AnatomyResult, name: str) -> np.ndarray:
    """Detector points (mm) along a registered bone's axis: its base end first."""
    (found,) = [b for b in result.canvas.bones if b.name == name]
    return found.points


def test_registered_with_its_views_and_field() -> None:
    spec = ANATOMY_RENDERERS[Anatomy.FOOT]
    assert spec.views == FOOT_VIEWS == ("AP", "OBL")
    assert spec.field_mm == FOOT_FIELD_MM
    assert spec.render is render_foot


@pytest.mark.parametrize("view", FOOT_VIEWS)
@pytest.mark.parametrize("side", ["L", "R"])
def test_renders_finite_thickness_that_stays_on_the_canvas(view: str, side: str) -> None:
    result = render(view, laterality=side)
    att = result.canvas.att
    assert np.isfinite(att).all()
    assert att.min() >= -1e-3
    assert 40.0 < att.max() < 250.0  # a hindfoot's worth of water-equivalent mm
    assert not att[[0, -1], :].any() and not att[:, [0, -1]].any()
    rows, cols = np.nonzero(att > 0.05)
    x0, y0, x1, y1 = result.field_mm
    assert x0 <= cols.min() * MM_PER_PX + 1 and (cols.max() + 1) * MM_PER_PX <= x1 + 1
    assert y0 <= rows.min() * MM_PER_PX + 1 and (rows.max() + 1) * MM_PER_PX <= y1 + 1
    assert result.lesions == []


def test_part_is_foot_sized_and_the_heel_is_cut_to_fit() -> None:
    result = render()
    x0, y0, x1, y1 = result.field_mm
    assert 220.0 < y1 - y0 < 290.0  # toes to heel: about 25 cm
    assert 80.0 < x1 - x0 < 140.0
    # A big foot on the same field loses some heel rather than leaving the canvas.
    big = render(body_scale=1.15)
    assert big.field_mm[3] - big.field_mm[1] <= FOOT_FIELD_MM[1]
    assert not big.canvas.att[[0, -1], :].any()


def test_bones_carry_the_names_a_report_uses() -> None:
    names = {b.name for b in render().canvas.bones}
    expected = {
        "first metatarsal",
        "fifth metatarsal",
        "proximal phalanx of the great toe",
        "distal phalanx of the great toe",
        "proximal phalanx of the second toe",
        "middle phalanx of the fourth toe",
        "distal phalanx of the fifth toe",
    }
    assert expected <= names
    assert len(names) == 5 + 14  # metatarsals, phalanges (great toe has two)
    assert "middle phalanx of the great toe" not in names


@pytest.mark.parametrize("view", FOOT_VIEWS)
def test_left_great_toe_on_the_image_left_and_right_on_the_right(view: str) -> None:
    left, right = render(view, laterality="L"), render(view, laterality="R")
    centre = FOOT_FIELD_MM[0] / 2
    first_l, first_r = axis(left, "first metatarsal"), axis(right, "first metatarsal")
    assert first_l[:, 0].mean() < centre < first_r[:, 0].mean()
    assert first_l[:, 0].mean() < axis(left, "fifth metatarsal")[:, 0].mean()
    assert first_r[:, 0].mean() > axis(right, "fifth metatarsal")[:, 0].mean()
    # Toes up the image: the great toe's distal phalanx above its metatarsal.
    assert axis(left, "distal phalanx of the great toe")[:, 1].mean() < first_l[:, 1].mean()


def test_medial_oblique_overlaps_the_first_two_rays_and_opens_the_lateral_ones() -> None:
    def bases(result: AnatomyResult) -> np.ndarray:
        names = ["first", "second", "third", "fourth", "fifth"]
        return np.array([axis(result, f"{n} metatarsal")[0, 0] for n in names])

    for seed in range(3):
        ap, obl = bases(render("AP", seed)), bases(render("OBL", seed))
        gap_ap, gap_obl = np.abs(np.diff(ap)), np.abs(np.diff(obl))
        assert gap_obl[0] < 0.7 * gap_ap[0]  # first and second bases overlap
        assert (gap_obl[2:] > gap_ap[2:]).all()  # third to fifth bases separate


def test_same_seed_same_picture_other_seed_other_picture() -> None:
    a, b, c = render(seed=5), render(seed=5), render(seed=6)
    np.testing.assert_array_equal(a.canvas.att, b.canvas.att)
    assert not np.array_equal(a.canvas.att, c.canvas.att)


def test_low_bone_density_fades_the_bones() -> None:
    strong, weak = render(bone_density=1.0), render(bone_density=0.6)
    assert weak.canvas.att.sum() < 0.95 * strong.canvas.att.sum()
    assert (weak.canvas.att > 0).sum() == (strong.canvas.att > 0).sum()


def test_habitus_thickens_the_soft_tissue() -> None:
    assert render(habitus=1.4).canvas.att.sum() > 1.2 * render(habitus=0.85).canvas.att.sum()


def test_hallux_valgus_worse_in_elderly_women() -> None:
    def mean_angle(**changes: object) -> float:
        return float(np.mean([hallux_valgus(np.random.default_rng(s), subject(**changes))
                              for s in range(60)]))  # fmt: skip

    assert mean_angle(sex="F", age=85.0) > mean_angle(sex="F", age=30.0) + 4.0
    assert mean_angle(sex="F", age=85.0) > mean_angle(sex="M", age=85.0)


def test_first_mtp_osteoarthritis_only_in_the_elderly() -> None:
    canvas = Canvas.blank(290, 190, 1.0)

    def affected(age: float) -> int:
        rngs = [np.random.default_rng(s) for s in range(25)]
        return sum(layout_foot(canvas, subject(age=age), rng).oa[(0, 0)] > 0 for rng in rngs)

    assert affected(50.0) == 0
    assert 0 < affected(65.0) < affected(90.0)


def test_rejects_unknown_view() -> None:
    with pytest.raises(ValueError, match="foot view"):
        render("PA")
