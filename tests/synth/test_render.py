"""One image: the truth agrees with the pixels (mirror, marker, boxes, MONOCHROME1)."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from medtune.config import Finding
from medtune.synth.anatomy import ANATOMY_RENDERERS, Subject
from medtune.synth.anatomy.base import LesionSeed
from medtune.synth.glyphs import marker_patch
from medtune.synth.render import ImageSpec, render_image
from medtune.synth.sites import VENDORS

ANATOMIES = sorted(ANATOMY_RENDERERS, key=lambda a: a.value)


def spec_for(anatomy, view=None, **changes) -> ImageSpec:
    renderer = ANATOMY_RENDERERS[anatomy]
    lesions = tuple(
        (f, LesionSeed(tuple(np.random.default_rng(i).random(8))))
        for i, f in enumerate(sorted(renderer.findings, key=lambda f: f.value))
    )
    base = ImageSpec(
        anatomy=anatomy,
        view=view or renderer.views[0],
        subject=Subject("F", 64.0, 0.95, 1.0, 0.85, "L"),
        findings=lesions,
        processing=VENDORS[0].processing,
        detector_mm=(350.0, 430.0),
        size=256,
        mirrored=False,
        marker="L",
        burned_text=(),
        dose=1.0,
        seed=1234,
    )
    return replace(base, **changes)


@pytest.mark.parametrize("anatomy", ANATOMIES, ids=lambda a: a.value)
def test_mirrored_render_is_the_flip_of_the_unmirrored(anatomy):
    plain = render_image(spec_for(anatomy))
    flipped = render_image(spec_for(anatomy, mirrored=True))
    assert np.array_equal(flipped.stored.pixels, plain.stored.pixels[:, ::-1])
    cols = plain.stored.pixels.shape[1]
    for a, b in zip(plain.findings, flipped.findings, strict=True):
        assert b.box == (cols - a.box[2], a.box[1], cols - a.box[0], a.box[3])
        assert np.array_equal(b.mask, a.mask[:, ::-1])


@pytest.mark.parametrize("anatomy", ANATOMIES, ids=lambda a: a.value)
def test_same_spec_same_pixels_other_seed_other_pixels(anatomy):
    a = render_image(spec_for(anatomy))
    b = render_image(spec_for(anatomy))
    c = render_image(spec_for(anatomy, seed=99))
    assert np.array_equal(a.stored.pixels, b.stored.pixels)
    assert not np.array_equal(a.stored.pixels, c.stored.pixels)


@pytest.mark.parametrize("anatomy", ANATOMIES, ids=lambda a: a.value)
def test_every_box_contains_its_mask_tightly(anatomy):
    image = render_image(spec_for(anatomy))
    assert image.findings, "each anatomy draws its findings"
    for item in image.findings:
        ys, xs = np.nonzero(item.mask)
        assert xs.size > 0
        assert item.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _glyph_score(display: np.ndarray, box, letter: str, mirrored: bool) -> float:
    x0, y0, x1, y1 = box
    region = display[y0:y1, x0:x1].astype(np.float32)
    template = marker_patch(letter, 24)
    if mirrored:
        template = template[:, ::-1]
    template = cv2.resize(template, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    r = region - region.mean()
    t = template - template.mean()
    return float((r * t).sum() / (np.linalg.norm(r) * np.linalg.norm(t) + 1e-9))


@pytest.mark.parametrize("letter", ["L", "R"])
@pytest.mark.parametrize("mirrored", [False, True])
def test_marker_glyph_sits_on_its_side_and_reads_right(letter, mirrored):
    anatomy = ANATOMIES[0]
    image = render_image(spec_for(anatomy, marker=letter, mirrored=mirrored, size=384))
    x0, _, x1, _ = image.marker_box
    cols = image.stored.pixels.shape[1]
    on_right = (x0 + x1) / 2 > cols / 2
    # Patient's left on the image right; a mirror puts it on the other side.
    assert on_right == ((letter == "L") != mirrored)
    display = image.stored.pixels  # MONOCHROME2 vendor: high = bright = lead
    other = "R" if letter == "L" else "L"
    right = _glyph_score(display, image.marker_box, letter, mirrored)
    assert right > 0.5
    assert right > _glyph_score(display, image.marker_box, letter, not mirrored)
    assert right > _glyph_score(display, image.marker_box, other, mirrored)


def test_monochrome1_is_the_inverse_of_monochrome2():
    m2 = replace(VENDORS[0].processing, photometric="MONOCHROME2")
    m1 = replace(VENDORS[0].processing, photometric="MONOCHROME1")
    anatomy = ANATOMIES[0]
    a = render_image(spec_for(anatomy, processing=m2))
    b = render_image(spec_for(anatomy, processing=m1))
    top = (1 << m2.bits_stored) - 1
    assert np.array_equal(b.stored.pixels, top - a.stored.pixels)


def test_voi_lut_displays_monochrome1_like_monochrome2():
    lut_vendor = next(v for v in VENDORS if v.processing.voi == "lut")
    m2 = replace(lut_vendor.processing, photometric="MONOCHROME2")
    m1 = replace(lut_vendor.processing, photometric="MONOCHROME1")
    a = render_image(spec_for(ANATOMIES[0], processing=m2)).stored
    b = render_image(spec_for(ANATOMIES[0], processing=m1)).stored
    lut_max = (1 << a.voi_lut_bits) - 1
    shown_a = a.voi_lut[a.pixels]
    shown_b = lut_max - b.voi_lut[b.pixels]  # MONOCHROME1 displays inverted after the LUT
    assert np.array_equal(shown_a, shown_b)


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_stored_values_use_the_declared_bit_depth(bits):
    processing = replace(VENDORS[0].processing, bits_stored=bits)
    pixels = render_image(spec_for(ANATOMIES[0], processing=processing)).stored.pixels
    assert pixels.max() <= (1 << bits) - 1
    assert pixels.max() > (1 << (bits - 1))  # the range is actually used


def test_burned_text_is_written_after_the_flip_and_reads_forwards():
    spec = spec_for(ANATOMIES[0], burned_text=("DOE^JANE", "0012345"), mirrored=True)
    image = render_image(spec)
    x0, y0, x1, y1 = image.text_box
    top = (1 << spec.processing.bits_stored) - 1
    assert (image.stored.pixels[y0:y1, x0:x1] == top).sum() > 20
    # Text sits top-left whatever the mirror: it is software, not lead.
    assert x1 < image.stored.pixels.shape[1] / 2


@pytest.mark.parametrize("anatomy", ANATOMIES, ids=lambda a: a.value)
def test_each_finding_changes_the_pixels_inside_its_mask(anatomy):
    base = spec_for(anatomy)
    without = render_image(replace(base, findings=())).stored.pixels.astype(int)
    for finding, seed in base.findings:
        if finding == Finding.CARDIOMEGALY:
            continue  # it enlarges the heart: the change is the silhouette's growth
        image = render_image(replace(base, findings=((finding, seed),)))
        diff = np.abs(image.stored.pixels.astype(int) - without)
        (item,) = image.findings
        assert diff[item.mask].mean() > 3 * diff[~item.mask].mean() + 1, finding
