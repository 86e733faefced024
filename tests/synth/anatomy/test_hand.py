"""Hand renderer: geometry, laterality, views, determinism and how the subject shapes the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.config import Anatomy
from medtune.synth.anatomy.base import ANATOMY_RENDERERS, AnatomyResult, Subject
from medtune.synth.anatomy.hand import HAND_FIELD_MM, HAND_VIEWS, layout_hand, render_hand
from medtune.synth.canvas import Canvas

MM_PER_PX = 1.0  # coarse: geometry is what is tested, and it keeps the file fast


def subject(**changes: object) -> Subject:
    base = {"sex": "M", "age": 35.0, "body_scale": 1.0, "habitus": 1.0, "bone_density": 1.0}
    base["laterality"] = "L"
    base.update(changes)
    return Subject(**base)  # type: ignore[arg-type]


def render(view: str = "PA", seed: int = 0, **changes: object) -> AnatomyResult:
    w, h = HAND_FIELD_MM
    canvas = Canvas.blank(int(h / MM_PER_PX), int(w / MM_PER_PX), MM_PER_PX)
    return render_hand(canvas, subject(**changes), view, {}, np.random.default_rng(seed))


def axis(result: AnatomyResult, name: str) -> np.ndarray:
    """Detector points (mm) along a registered bone's axis."""
    (found,) = [b for b in result.canvas.bones if b.name == name]
    return found.points


def bone(result: AnatomyResult, name: str) -> np.ndarray:
    """Mean detector position (mm) of a registered bone's axis."""
    return axis(result, name).mean(0)


def test_registered_with_its_views_and_field() -> None:
    spec = ANATOMY_RENDERERS[Anatomy.HAND]
    assert spec.views == HAND_VIEWS == ("PA", "OBL")
    assert spec.field_mm == HAND_FIELD_MM
    assert spec.render is render_hand


@pytest.mark.parametrize("view", HAND_VIEWS)
@pytest.mark.parametrize("side", ["L", "R"])
def test_renders_finite_thickness_that_stays_on_the_canvas(view: str, side: str) -> None:
    result = render(view, laterality=side)
    att = result.canvas.att
    assert np.isfinite(att).all()
    assert att.min() >= -1e-3  # thickness never goes negative
    assert 20.0 < att.max() < 150.0  # a wrist's worth of water-equivalent mm, not a chest's
    # Nothing touches the canvas edge, and the reported field holds every drawn pixel.
    assert not att[[0, -1], :].any() and not att[:, [0, -1]].any()
    rows, cols = np.nonzero(att > 0.05)
    x0, y0, x1, y1 = result.field_mm
    assert x0 <= cols.min() * MM_PER_PX + 1 and (cols.max() + 1) * MM_PER_PX <= x1 + 1
    assert y0 <= rows.min() * MM_PER_PX + 1 and (rows.max() + 1) * MM_PER_PX <= y1 + 1
    assert result.lesions == []


def test_part_is_a_hand_sized_and_centred() -> None:
    result = render()
    x0, y0, x1, y1 = result.field_mm
    assert 170.0 < y1 - y0 < 260.0  # fingertips to the cut forearm: about 19 cm of hand
    assert 80.0 < x1 - x0 < 180.0  # fingers and thumb spread
    w, h = HAND_FIELD_MM
    assert abs((x0 + x1) / 2 - w / 2) < 0.1 * w and abs((y0 + y1) / 2 - h / 2) < 0.1 * h


def test_bones_carry_the_names_a_report_uses() -> None:
    names = {b.name for b in render().canvas.bones}
    expected = {
        "distal radius",
        "distal ulna",
        "first metacarpal",
        "fifth metacarpal",
        "proximal phalanx of the thumb",
        "distal phalanx of the thumb",
        "proximal phalanx of the index finger",
        "middle phalanx of the middle finger",
        "distal phalanx of the little finger",
    }
    assert expected <= names
    assert len(names) == 2 + 5 + 14  # radius, ulna, metacarpals, phalanges (thumb has two)
    assert "middle phalanx of the thumb" not in names


@pytest.mark.parametrize("view", HAND_VIEWS)
def test_left_thumb_on_the_image_right_and_right_thumb_on_the_left(view: str) -> None:
    left, right = render(view, laterality="L"), render(view, laterality="R")
    centre = HAND_FIELD_MM[0] / 2
    assert bone(left, "first metacarpal")[0] > centre > bone(right, "first metacarpal")[0]
    assert bone(left, "first metacarpal")[0] > bone(left, "fifth metacarpal")[0]
    assert bone(right, "first metacarpal")[0] < bone(right, "fifth metacarpal")[0]
    # The radius is on the thumb side, and the fingers point up the image.
    assert bone(left, "distal radius")[0] > bone(left, "distal ulna")[0]
    assert bone(left, "distal phalanx of the middle finger")[1] < bone(left, "third metacarpal")[1]


def test_oblique_overlaps_the_metacarpals() -> None:
    names = ["second metacarpal", "third metacarpal", "fourth metacarpal", "fifth metacarpal"]
    for seed in range(3):
        pa, obl = render("PA", seed), render("OBL", seed)
        spread_pa = np.ptp([bone(pa, n)[0] for n in names])
        spread_obl = np.ptp([bone(obl, n)[0] for n in names])
        assert spread_obl < 0.8 * spread_pa
        assert obl.field_mm[2] - obl.field_mm[0] < pa.field_mm[2] - pa.field_mm[0]


def test_same_seed_same_picture_other_seed_other_picture() -> None:
    a, b, c = render(seed=3), render(seed=3), render(seed=4)
    np.testing.assert_array_equal(a.canvas.att, b.canvas.att)
    assert not np.array_equal(a.canvas.att, c.canvas.att)


def test_bigger_people_have_bigger_hands() -> None:
    small, big = render(body_scale=0.88), render(body_scale=1.12)
    lengths = [np.linalg.norm(np.diff(axis(r, "third metacarpal"), axis=0)) for r in (small, big)]
    assert lengths[1] / lengths[0] == pytest.approx(1.12 / 0.88, rel=0.02)
    sizes = [(r.field_mm[3] - r.field_mm[1]) for r in (small, big)]
    assert sizes[1] > sizes[0]


def test_low_bone_density_fades_the_bones_not_the_soft_tissue() -> None:
    strong, weak = render(bone_density=1.0), render(bone_density=0.6)
    soft = strong.canvas.att > 0  # same seed: same outline
    assert (weak.canvas.att > 0).sum() == soft.sum()
    assert weak.canvas.att.sum() < 0.95 * strong.canvas.att.sum()
    (s_bone,) = [b for b in strong.canvas.bones if b.name == "third metacarpal"]
    (w_bone,) = [b for b in weak.canvas.bones if b.name == "third metacarpal"]
    assert w_bone.cortex < s_bone.cortex  # thinner cortex


def test_habitus_thickens_the_soft_tissue() -> None:
    thin, heavy = render(habitus=0.85), render(habitus=1.4)
    assert heavy.canvas.att.sum() > 1.2 * thin.canvas.att.sum()


def test_osteoarthritis_only_in_the_elderly_and_more_with_age() -> None:
    canvas = Canvas.blank(260, 200, 1.0)

    def affected(age: float) -> int:
        rngs = [np.random.default_rng(s) for s in range(25)]
        grades = [layout_hand(canvas, subject(age=age), rng).oa for rng in rngs]
        return sum(g > 0 for oa in grades for g in oa.values())

    assert affected(45.0) == 0
    assert 0 < affected(65.0) < affected(90.0)


def test_joint_spaces_narrow_with_age() -> None:
    def dip_gap(result: AnatomyResult) -> float:
        """Distance between the middle and distal phalanx tube ends of the index finger: the
        bones and the random draws are the same at any age, only the joint space differs."""
        (mid,) = [b for b in result.canvas.bones if b.name == "middle phalanx of the index finger"]
        (dist,) = [b for b in result.canvas.bones if b.name == "distal phalanx of the index finger"]
        return float(np.linalg.norm(dist.points[0] - mid.points[-1]))

    for seed in range(3):
        assert dip_gap(render(age=88.0, seed=seed)) < dip_gap(render(age=30.0, seed=seed))


def test_rejects_unknown_view() -> None:
    with pytest.raises(ValueError, match="hand view"):
        render("LAT")
