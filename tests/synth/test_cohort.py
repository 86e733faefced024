"""A whole small cohort: files read back, truth matches pixels, PHI manifest is complete."""

import csv
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from medtune.config import SynthConfig
from medtune.deid.annex_e import annex_e_rows
from medtune.synth.anatomy import ANATOMY_RENDERERS
from medtune.synth.cohort import generate_cohort
from medtune.synth.sites import TRANSFER_SYNTAXES

pytestmark = pytest.mark.integration

CONFIG = SynthConfig(
    patients=40, sites=5, size=192, seed=7, anatomies=sorted(ANATOMY_RENDERERS), workers=2,
    mirror_rate=0.2, marker_missing_rate=0.2, compressed_fraction=0.9,
)  # fmt: skip
SAFE_PRIVATE_ELEMENTS = {0x10, 0x11}  # exposure index, processing algorithm name


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(CONFIG, out)
    return out


@pytest.fixture(scope="module")
def images(cohort):
    return pq.read_table(cohort / "truth" / "images.parquet").to_pylist()


def test_every_file_reads_back_and_decodes(cohort, images):
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())
    assert len(files) == len(images) > 20
    seen_syntaxes, seen_photometric, seen_bits = set(), set(), set()
    for row in images:
        ds = pydicom.dcmread(cohort / row["file"])
        pixels = ds.pixel_array
        assert pixels.shape == (row["rows"], row["cols"])
        assert pixels.max() < (1 << ds.BitsStored)
        assert ds.SOPInstanceUID == row["sop_uid"]
        seen_syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        seen_photometric.add(ds.PhotometricInterpretation)
        seen_bits.add(int(ds.BitsStored))
    assert seen_syntaxes == set(TRANSFER_SYNTAXES.values())
    assert seen_photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert min(seen_bits) == 10 and max(seen_bits) == 16


def _identifying_tags() -> set[int]:
    """Annex E attributes, less patient characteristics and descriptions (not identities)."""
    tags = set()
    for row in annex_e_rows():
        if row.keyword_tag is None:
            continue
        if "rtnPatCharsOpt" in row.options or "cleanDescOpt" in row.options:
            continue
        tags.add(row.keyword_tag)
    return tags


def test_phi_manifest_covers_every_identifying_header_value(cohort, images):
    phi = pq.read_table(cohort / "truth" / "phi.parquet").to_pylist()
    listed: dict[str, set[str]] = {}
    for item in phi:
        if item["image_id"]:
            listed.setdefault(item["image_id"], set()).add(item["value"])
    identifying = _identifying_tags()
    checked = 0
    for row in images:
        ds = pydicom.dcmread(cohort / row["file"], stop_before_pixels=True)
        for element in ds.iterall():
            private = element.tag.is_private and not element.tag.is_private_creator
            if private and (element.tag.element & 0xFF) in SAFE_PRIVATE_ELEMENTS:
                continue
            if not private and int(element.tag) not in identifying:
                continue
            if element.VR == "SQ" or element.value in (None, ""):
                continue
            assert str(element.value) in listed[row["image_id"]], (element.keyword, row["file"])
            checked += 1
    assert checked > 15 * len(images)


def test_phi_in_reports_and_paths_is_listed(cohort):
    phi = pq.read_table(cohort / "truth" / "phi.parquet").to_pylist()
    locations = {item["location"] for item in phi}
    assert {"header", "pixel", "report", "ris", "path"} <= locations
    report_files = sorted((cohort / "reports").iterdir())
    text = "".join(p.read_text() for p in report_files)
    for item in phi:
        if item["location"] in ("report", "ris"):
            assert item["value"] in text


def test_masks_on_disk_lie_inside_their_boxes(cohort, images):
    count = 0
    for row in images:
        for item in row["findings"]:
            mask = cv2.imread(str(cohort / item["mask"]), cv2.IMREAD_GRAYSCALE) > 0
            assert mask.shape == (row["rows"], row["cols"])
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
                item["x0"], item["y0"], item["x1"], item["y1"],
            )  # fmt: skip
            assert row[f"label_{item['finding']}"] is True
            count += 1
    assert count > 5


def test_markers_lie_on_the_stated_side(images):
    checked = 0
    for row in images:
        if row["marker"] is None:
            assert row["marker_box"] is None
            continue
        x0, _, x1, _ = row["marker_box"]
        on_right = (x0 + x1) / 2 > row["cols"] / 2
        assert on_right == ((row["marker"] == "L") != row["mirrored"]), row["image_id"]
        checked += 1
    assert checked > 10
    assert any(r["mirrored"] for r in images) and any(r["marker"] is None for r in images)


def test_longitudinal_studies_and_report_truth(cohort, images):
    by_patient: dict[str, set[str]] = {}
    for row in images:
        by_patient.setdefault(row["patient_key"], set()).add(row["study_key"])
    assert max(len(s) for s in by_patient.values()) >= 2
    truth = pq.read_table(cohort / "truth" / "reports.parquet").to_pylist()
    assert {t["study_key"] for t in truth} == {r["study_key"] for r in images}
    for t in truth:
        if not t["present"]:
            assert t["status"] != "positive"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_same_seed_gives_byte_identical_output_whatever_the_workers(tmp_path):
    small = CONFIG.model_copy(update={"patients": 6, "workers": 1})
    generate_cohort(small, tmp_path / "a")
    generate_cohort(small.model_copy(update={"workers": 2}), tmp_path / "b")
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 10
    generate_cohort(small.model_copy(update={"seed": 8}), tmp_path / "c")
    assert _digest(tmp_path / "c") != a


def test_max_images_caps_the_cohort(tmp_path):
    config = CONFIG.model_copy(update={"patients": 50, "max_images": 7, "workers": 1})
    summary = generate_cohort(config, tmp_path)
    assert len(pq.read_table(tmp_path / "truth" / "images.parquet")) == 7
    assert "7 images" in summary.lines[-1]


def test_reports_name_the_bone_the_image_shows_broken(cohort):
    truth = pq.read_table(cohort / "truth" / "reports.parquet").to_pylist()
    texts: dict[str, str] = {}
    for path in sorted((cohort / "reports").iterdir()):
        with path.open(encoding="utf-8") as fh:
            if path.suffix == ".csv":
                rows = list(csv.DictReader(fh))
            else:
                rows = [json.loads(line) for line in fh]
        texts.update({r["accession_number"]: r["report_text"].lower() for r in rows})
    checked = 0
    for t in truth:
        if t["finding"] == "fracture" and t["status"] == "positive" and t["location"]:
            # Reports may put the side anywhere in the phrase: "phalanx of the left fourth toe".
            words = [w for w in t["location"].lower().split() if w not in ("left", "right")]
            pattern = r"\s+(?:(?:left|right)\s+)?".join(map(re.escape, words))
            assert re.search(pattern, texts[t["accession"]]), (words, t["accession"])
            checked += 1
    assert checked > 0


def _thumbnail(path: Path, side: int = 24) -> np.ndarray:
    """The image as a viewer shows it (VOI, photometric), padded square and shrunk."""
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(path)
    shown = apply_voi_lut(ds.pixel_array, ds).astype(np.float32)
    shown = (shown - shown.min()) / (np.ptp(shown) + 1e-6)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        shown = 1.0 - shown
    h, w = shown.shape
    square = np.zeros((max(h, w), max(h, w)), np.float32)
    square[(max(h, w) - h) // 2 :][:h, (max(h, w) - w) // 2 :][:, :w] = shown
    return cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA).ravel()


@pytest.mark.slow
def test_anatomy_and_view_can_be_told_from_the_pixels(tmp_path):
    # 5-nearest-neighbour on tiny thumbnails, split by patient: far above the majority class.
    config = SynthConfig(patients=150, size=128, seed=11, workers=2)
    generate_cohort(config, tmp_path)
    images = pq.read_table(tmp_path / "truth" / "images.parquet").to_pylist()
    x = np.stack([_thumbnail(tmp_path / row["file"]) for row in images])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    test = np.array([int(row["patient_key"][1:]) % 3 == 0 for row in images])
    distances = ((x[test][:, None] - x[~test][None]) ** 2).sum(-1)
    neighbours = np.argsort(distances, axis=1)[:, :5]
    for labels, floor in (
        ([r["anatomy"] for r in images], 0.7),
        ([f"{r['anatomy']} {r['view']}" for r in images], 0.55),
    ):
        y = np.array(labels)
        train = y[~test]
        predicted = np.array([max(set(train[i]), key=list(train[i]).count) for i in neighbours])
        accuracy = float((predicted == y[test]).mean())
        majority = max(np.mean(y[test] == label) for label in set(y[test]))
        assert accuracy > floor and accuracy > majority + 0.25, (accuracy, majority)
