"""Burned-in pixel text is found, blanked and checked; lead markers and anatomy are left alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut

from medtune.config import SynthConfig
from medtune.deid import burned_text as bt
from medtune.deid.identifiers import Identifiers
from medtune.synth.cohort import generate_cohort
from medtune.synth.glyphs import burn_text

# Tesseract is a dependency (Debian tesseract-ocr, installed by .ci/run, and tesserocr): a
# machine without it fails these tests rather than skip the de-identification they prove.
needs_ocr = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _tesseract_installed() -> None:
    if bt._engine() is None:
        pytest.fail("no Tesseract here: apt-get install tesseract-ocr (see .ci/run)")


# ---------------------------------------------------------------------------------------------
# Helpers.


def display_of(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """The image as a viewer shows it: VOI applied, MONOCHROME1 inverted, scaled to uint8."""
    ds = pydicom.dcmread(path)
    values = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        values = hi + lo - values
    return ds, np.round((values - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)


def radiograph(size: int = 1024, seed: int = 0) -> np.ndarray:
    """A noisy radiograph-like background: soft gradient, a bright 'bone', blobs and noise."""
    rng = np.random.default_rng(seed)
    n = min(size, 1024)  # anatomy is smooth: draw at most 1024 px, then scale up
    y, x = np.mgrid[0:n, 0:n] / n
    image = 60 + 90 * x + 40 * np.sin(3 * y)
    cv2.ellipse(image, (n // 2, n // 2), (n // 9, n // 3), 8, 0, 360, 200, -1)
    blobs = cv2.GaussianBlur(rng.normal(0, 1, (n, n)), (0, 0), n / 60)
    image = cv2.resize(image + 25 * blobs / blobs.std(), (size, size))
    image += rng.normal(0, 6, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def put(image: np.ndarray, text: str, org: tuple[int, int], font: int, scale: float,
        colour: int, thickness: int) -> tuple[int, int, int, int]:  # fmt: skip
    """Draw ``text`` with its baseline at ``org``; return its box x0, y0, x1, y1."""
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(image, text, org, font, scale, colour, thickness, cv2.LINE_AA)
    return org[0], org[1] - h, org[0] + w, org[1] + base


def blanked_mask(shape: tuple[int, int], boxes: list[bt.Box]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    bt.blank(mask, boxes, 1)
    return mask.astype(bool)


def known_values(known: Identifiers) -> list[str]:
    return [*known.names, *known.ids, *(str(d) for d in known.dates)]


def leaked(display: np.ndarray, boxes: list[bt.Box], known: Identifiers, glyph: int) -> list:
    """Known identifiers an OCR of the WHOLE blanked image still finds (kinds only)."""
    after = display.copy()
    bt.blank(after, boxes, 0)
    words = bt.ocr(after, bt.Box(0, 0, after.shape[1], after.shape[0]), glyph_px=glyph)
    return sorted(bt._Matcher(known).find(words))


# ---------------------------------------------------------------------------------------------
# Without OCR.


def test_candidates_cover_text_lines_but_not_a_lone_marker():
    image = radiograph(800, seed=1)
    text = put(image, "PATIENT 0012345", (60, 700), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    marker = put(image, "R", (600, 120), cv2.FONT_HERSHEY_DUPLEX, 1.4, 255, 2)
    boxes = bt.find_text_regions(image)
    covered = blanked_mask(image.shape, boxes)
    x0, y0, x1, y1 = text
    assert covered[y0:y1, x0:x1].mean() > 0.95
    mx0, my0, mx1, my1 = marker
    assert not covered[my0:my1, mx0:mx1].any()


def test_no_candidates_on_plain_anatomy():
    image = radiograph(1024, seed=2)
    area = sum(box.area for box in bt.find_text_regions(image))
    assert area < 0.002 * image.size


def test_blank_any_dtype_with_margin_and_clipping():
    pixels = np.full((50, 60), 1000, np.uint16)
    bt.blank(pixels, [bt.Box(10, 10, 30, 20), bt.Box(55, 45, 70, 60)], 4095)
    assert (pixels[8:22, 8:32] == 4095).all()  # a margin of at least 2 px
    assert pixels[30, 40] == 1000 and pixels[0, 0] == 1000
    assert (pixels[45:, 55:] == 4095).all()  # clipped at the border, no error
    rgb = np.zeros((20, 20, 3), np.uint8)
    bt.blank(rgb, [bt.Box(5, 5, 10, 10)], 255)
    assert (rgb[5:10, 5:10] == 255).all() and rgb[0, 0].sum() == 0


def test_identifiers_are_matched_fuzzily_and_reported_by_kind_only():
    known = Identifiers()
    known.add("names", "DOE^JOHN")
    known.add("ids", "0012345")
    known.add("dates", dt.date(2020, 1, 1))

    def words(text: str) -> list[bt.Word]:
        return [bt.Word(w, bt.Box(0, 0, 1, 1), 90.0) for w in text.split()]

    # Tesseract read "DOE^JOHN MRN 0012345 2020-01-01" with the caret as "*" (FACTS.md).
    kinds = bt.identifying_kinds(words("DOE*JOHN MRN 0012345 2020-01-01"), known)
    assert {"name", "id", "date", "date-shaped", "id-shaped"} <= set(kinds)
    assert "name" in bt.identifying_kinds(words("D0E-JOHN"), known)
    assert "id" in bt.identifying_kinds(words("OO12345"), known)
    assert "date" in bt.identifying_kinds(words("01.01.2020"), known)
    assert bt.identifying_kinds(words("PORTABLE AP SUPINE"), known) == []
    assert not {"DOE^JOHN", "0012345"} & set(kinds)


def test_text_regions_ship_parse_and_extend(tmp_path: Path):
    assert isinstance(bt.text_regions(), tuple)
    extra = tmp_path / "regions.yaml"
    extra.write_text(
        "regions:\n  - manufacturer: 'Acme*'\n    model: '*'\n    boxes: [[0, 0, 0.3, 0.1]]\n"
    )
    added = bt.text_regions(extra)[-1]
    assert added == bt.TextRegion("Acme*", "*", ((0.0, 0.0, 0.3, 0.1),))
    extra.write_text("regions:\n  - manufacturer: 'Acme'\n    boxes: [[0.5, 0, 0.3, 0.1]]\n")
    with pytest.raises(ValueError, match=r"regions\.yaml: region 1"):
        bt.text_regions(extra)


def test_without_an_ocr_engine_nothing_is_cleared(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bt, "_engine", lambda: None)
    image = radiograph(512, seed=3)
    put(image, "SMITH^ANNA 4417829", (30, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    result = bt.clear_burned_text(
        image, burned_in_annotation="YES", manufacturer=None, model=None, known=None
    )
    assert not result.cleared and "no OCR engine" in (result.reason or "")
    assert result.boxes  # the candidates, for a caller that blanks anyway


# ---------------------------------------------------------------------------------------------
# With Tesseract.


@pytest.mark.integration
@pytest.mark.parametrize("name", ["tesserocr", "cli"])
def test_each_engine_reads_a_burned_in_line(name: str):
    engine = bt._tesserocr_engine() if name == "tesserocr" else bt._cli_engine()
    if engine is None:
        pytest.fail(
            f"{name} is not installed here (pyproject installs tesserocr; apt tesseract-ocr)"
        )
    page = np.full((60, 640), 255, np.uint8)
    cv2.putText(page, "DOE^JOHN MRN 0012345 2020-01-01", (8, 40), cv2.FONT_HERSHEY_SIMPLEX,
                0.9, 0, 2)  # fmt: skip
    texts = [word.text for word in bt._parse_tsv(engine(page))]
    assert "0012345" in texts and "2020-01-01" in texts


@pytest.fixture(scope="module")
def ocr_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort at 512 px: modalities burn text at their matrix size (1-4k px), where glyphs are
    10-40 px tall; at the shared fixture's 256 px they are 5-6 px and past what OCR reads."""
    out = tmp_path_factory.mktemp("ocr-cohort") / "cohort"
    generate_cohort(SynthConfig(patients=16, sites=5, size=512, seed=11, workers=1), out)
    return out


@pytest.fixture(scope="module")
def cohort_cases(ocr_cohort: Path) -> list[dict]:
    """Every image of the cohort with its display, Burned In Annotation and pixel PHI."""
    synth_cohort = ocr_cohort
    images = pq.read_table(synth_cohort / "truth" / "images.parquet").to_pylist()
    phi = pq.read_table(synth_cohort / "truth" / "phi.parquet").to_pylist()
    cases = []
    for row in images:
        ds, display = display_of(synth_cohort / row["file"])
        known, lines = Identifiers(), []
        for item in phi:
            if item["image_id"] == row["image_id"] and item["location"] == "pixel":
                lines.append(item["value"])  # in the order burned: name, ID, date
                if item["kind"] == "date":
                    value = item["value"]
                    fmt = "%Y-%m-%d" if "-" in value else "%d.%m.%Y"
                    known.add("dates", dt.datetime.strptime(value, fmt).date())
                else:
                    known.add("names" if item["kind"] == "patient_name" else "ids", item["value"])
        result = bt.clear_burned_text(
            display,
            burned_in_annotation=ds.get("BurnedInAnnotation"),
            manufacturer=ds.get("Manufacturer"),
            model=ds.get("ManufacturerModelName"),
            known=known,
        )
        case = {"row": row, "display": display, "known": known, "lines": tuple(lines)}
        cases.append(case | {"result": result})
    return cases


@needs_ocr
@pytest.mark.integration
def test_cohort_burned_text_is_blanked_and_nothing_identifying_survives(cohort_cases):
    burned = [case for case in cohort_cases if case["row"]["burned_in_text"]]
    assert burned and len(burned[0]["known"]) == 3  # name, ID, date in each
    for case in burned:
        row, display, known, result = case["row"], case["display"], case["known"], case["result"]
        assert result.cleared, result.reason
        assert not any(value in (result.reason or "") for value in known_values(known))
        # Every legible text pixel is blanked: the glyphs, where they differ from their
        # surroundings (the generator's text is white and vanishes on white shutter areas).
        strokes = np.zeros(display.shape, np.uint16)
        burn_text(strokes, case["lines"], 1, 0)
        x0, y0, x1, y1 = row["text_box"]
        legible = np.zeros(display.shape, bool)
        local_min = cv2.erode(display, np.ones((3, 3), np.uint8))
        legible[y0:y1, x0:x1] = (display.astype(int) - local_min >= 60)[y0:y1, x0:x1]
        legible &= strokes > 0
        covered = blanked_mask(display.shape, result.boxes)
        assert covered[legible].mean() >= 0.95
        glyph = max(round(0.022 * display.shape[0]), bt.GLYPH_MIN_PX)
        assert leaked(display, result.boxes, known, glyph) == []


@needs_ocr
@pytest.mark.integration
def test_cohort_lead_markers_and_clean_images_are_left_alone(cohort_cases):
    kept, with_marker = 0, 0
    for case in cohort_cases:
        row, result = case["row"], case["result"]
        covered = blanked_mask(case["display"].shape, result.boxes)
        if row["marker_box"]:
            x0, y0, x1, y1 = row["marker_box"]
            with_marker += 1
            kept += covered[y0:y1, x0:x1].mean() < 0.25
        if not row["burned_in_text"]:
            assert result.cleared
            assert covered.mean() <= 0.01
    assert with_marker and kept >= 0.9 * with_marker


@needs_ocr
@pytest.mark.integration
def test_text_at_other_places_sizes_and_fonts_is_cleared():
    image = radiograph(1024, seed=4)
    texts = [
        put(image, "SMITH^ANNA", (640, 960), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2),
        put(image, "ID 4417829", (60, 520), cv2.FONT_HERSHEY_DUPLEX, 0.8, 255, 1),
        put(image, "03/14/2019", (700, 80), cv2.FONT_HERSHEY_COMPLEX, 1.3, 20, 2),
        put(image, "ST. ELSEWHERE", (60, 980), cv2.FONT_HERSHEY_PLAIN, 2.0, 240, 2),
    ]
    marker = put(image, "L", (120, 160), cv2.FONT_HERSHEY_DUPLEX, 2.0, 255, 3)
    known = Identifiers(names={"SMITH^ANNA"}, ids={"4417829"}, dates={dt.date(2019, 3, 14)})
    known.add("places", "ST. ELSEWHERE")
    result = bt.clear_burned_text(
        image, burned_in_annotation=None, manufacturer="Acme", model="X", known=known
    )
    assert result.cleared, result.reason
    covered = blanked_mask(image.shape, result.boxes)
    for x0, y0, x1, y1 in texts:
        assert covered[y0:y1, x0:x1].mean() > 0.95
    mx0, my0, mx1, my1 = marker
    assert covered[my0:my1, mx0:mx1].mean() < 0.25
    # Nothing is blanked away from the text: every box holds some of it.
    assert all(any(box.intersects(bt.Box(*text)) for text in texts) for box in result.boxes)
    assert leaked(image, result.boxes, known, glyph=24) == []


@needs_ocr
@pytest.mark.integration
def test_unreadably_tiny_text_flagged_yes_is_not_cleared():
    image = radiograph(2048, seed=5)  # text 7 px tall on 2048 px: beyond detection and OCR
    put(image, "SMITH^ANNA 4417829 2019-03-14", (40, 40), cv2.FONT_HERSHEY_PLAIN, 0.5, 255, 1)
    known = Identifiers(names={"SMITH^ANNA"}, ids={"4417829"})
    result = bt.clear_burned_text(
        image, burned_in_annotation="YES", manufacturer=None, model=None, known=known
    )
    assert not result.cleared
    assert "YES" in (result.reason or "") or "left after blanking" in (result.reason or "")
    assert not any(value in (result.reason or "") for value in known_values(known))


@needs_ocr
@pytest.mark.integration
def test_known_regions_are_always_blanked():
    image = radiograph(600, seed=6)
    regions = [bt.TextRegion("acme*", "*", ((0.0, 0.0, 0.3, 0.1),))]
    args = {"burned_in_annotation": "YES", "model": "Scan 9", "known": None, "regions": regions}
    result = bt.clear_burned_text(image, manufacturer="ACME Medical", **args)
    assert result.cleared and result.known_regions == 1
    assert blanked_mask(image.shape, result.boxes)[0:60, 0:180].all()
    other = bt.clear_burned_text(image, manufacturer="Other", **args)
    assert not other.cleared and other.boxes == []  # YES, and nothing found or known
