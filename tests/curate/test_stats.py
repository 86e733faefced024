"""Dataset statistics (curate/stats*.py), provenance and the shortcut warnings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from medtune.curate import shortcuts
from medtune.curate.provenance import deid_settings, read_provenance
from medtune.curate.stats import AGE_BANDS, DatasetStats, dataset_stats
from medtune.curate.stats_pixels import thumbnail
from medtune.curate.tables import UNKNOWN, Groups
from medtune.dataset.catalog import read_catalog, write_catalog
from medtune.workspace import Workspace


@pytest.fixture
def ws(ingested_workspace: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(ingested_workspace, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def stats(ingested_workspace: Path) -> DatasetStats:
    return dataset_stats(ingested_workspace)  # reads only


def _catalog(ws: Path) -> pa.Table:
    return read_catalog(Workspace(ws).catalog_path)


def _rows(stats: DatasetStats, slug: str) -> dict[object, list[object]]:
    return {row[0]: row[1:] for row in stats.tables[slug].rows}


# ---------------------------------------------------------------------------------------------
# Composition.


def test_counts_per_group_add_up_to_the_catalog(stats: DatasetStats, ingested_workspace: Path):
    catalog = _catalog(ingested_workspace)
    assert stats.images == catalog.num_rows == 68
    assert stats.patients == len(set(catalog["patient_id"].to_pylist())) == 24
    assert stats.studies == len(set(catalog["study_id"].to_pylist()))
    for slug in ("sites", "vendors", "anatomy", "views", "sex", "age_bands"):
        images = sum(row[1] for row in stats.tables[slug].rows)
        assert images == catalog.num_rows, slug
    assert sum(row[2] for row in stats.tables["models"].rows) == catalog.num_rows
    assert sum(row[-1] for row in stats.tables["site_anatomy"].rows) == catalog.num_rows


def test_patient_and_study_counts_are_distinct_counts(stats, ingested_workspace: Path) -> None:
    catalog = _catalog(ingested_workspace).to_pylist()
    for site, (images, studies, patients, *_) in _rows(stats, "sites").items():
        mine = [row for row in catalog if row["site"] == site]
        assert images == len(mine)
        assert studies == len({row["study_id"] for row in mine})
        assert patients == len({row["patient_id"] for row in mine})
    # The cohort has several images per study and per patient, so counting rows would differ.
    assert any(images > patients for images, _, patients, *_ in _rows(stats, "sites").values())


def test_age_bands_put_edge_ages_in_the_right_band(ws: Path) -> None:
    catalog = _catalog(ws)
    planted = [5, 17, 18, 39, 40, 59, 60, 79, 80, 90, None]
    ages = planted + [30] * (catalog.num_rows - len(planted))
    write_catalog(Workspace(ws).catalog_path, catalog, {"age": pa.array(ages, pa.int16())})
    bands = {band: images for band, (images, *_) in _rows(dataset_stats(ws), "age_bands").items()}
    assert bands == {
        "0-17": 2,
        "18-39": 2 + catalog.num_rows - len(planted),
        "40-59": 2,
        "60-79": 2,
        "80+": 2,
        "unknown": 1,
    }
    assert [label for label, _, _ in AGE_BANDS] + ["unknown"] == list(bands)


def test_missing_values_count_nulls_and_empty_strings(ws: Path) -> None:
    catalog = _catalog(ws)
    body = catalog["body_part"].to_pylist()
    view = catalog["view"].to_pylist()
    body[:3] = [None] * 3
    view[5:7] = ["", ""]
    write_catalog(Workspace(ws).catalog_path, catalog, {"body_part": body, "view": view})
    stats = dataset_stats(ws)
    missing = _rows(stats, "missing")
    assert missing["body_part"][0] == 3
    assert missing["view"][0] == 2
    assert "site" not in missing
    # The null and the empty strings group as one "(unknown)" anatomy/view, not vanish.
    assert _rows(stats, "anatomy")[UNKNOWN][0] == 3
    assert _rows(stats, "views")[UNKNOWN][0] == 2


# ---------------------------------------------------------------------------------------------
# Labels and splits.


def _plant_labels(ws: Path, values: dict[str, list[int | None]]) -> None:
    catalog = _catalog(ws)
    columns = {f"label_{f}": pa.array(v, pa.int8()) for f, v in values.items()}
    write_catalog(
        Workspace(ws).catalog_path,
        catalog,
        columns,
        {"labels": {"findings": list(values), "rules": ["findings.yaml"]}},
    )


def test_prevalence_counts_positive_uncertain_negative_and_unmentioned(ws: Path) -> None:
    n = _catalog(ws).num_rows
    cycle = [1, 1, -1, 0, None]
    _plant_labels(ws, {"nodule": [cycle[i % 5] for i in range(n)]})
    stats = dataset_stats(ws)
    assert stats.findings == ["nodule"]
    positive, uncertain, negative, unmentioned, share, unsure = _rows(stats, "prevalence")["nodule"]
    expected = [sum(cycle[i % 5] == v for i in range(n)) for v in (1, -1, 0, None)]
    assert [positive, uncertain, negative, unmentioned] == expected
    assert share == round(100 * positive / n, 1)  # of all images: unmentioned is not negative
    assert unsure == round(100 * uncertain / n, 1)
    per_site = stats.tables["prevalence_site"]
    assert per_site.columns == ["site", "images", "nodule"]
    assert sum(row[1] * row[2] / 100 for row in per_site.rows) == pytest.approx(positive, abs=0.5)


def test_without_label_columns_there_are_no_prevalence_tables(stats: DatasetStats) -> None:
    assert stats.findings == []
    assert "prevalence" not in stats.tables
    assert not any(
        w.kind in {"concentrated_finding", "site_predicts_label"} for w in stats.warnings
    )


def test_split_table_counts_per_site_and_value(ws: Path) -> None:
    catalog = _catalog(ws)
    patients = catalog["patient_id"].to_pylist()
    order = sorted(set(patients))
    split = [("train", "val", "test")[order.index(p) % 3] for p in patients]
    row = next(i for i, p in enumerate(patients) if patients.count(p) > 1)
    split[row] = "test" if split[row] != "test" else "train"  # one patient now in two splits
    write_catalog(
        Workspace(ws).catalog_path,
        catalog,
        {"split": split},
        {"splits": {"split": {"method": "random", "seed": 3}}},
    )
    stats = dataset_stats(ws)
    table = stats.tables["split_split"]
    assert table.columns == ["site", "train", "val", "test"]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["all images"] == [split.count(v) for v in ("train", "val", "test")]
    per_site = [row[1:] for row in table.rows if row[0] not in {"all images", "all patients"}]
    assert [sum(col) for col in zip(*per_site, strict=True)] == rows["all images"]
    assert "Patients in more than one split value: 1." in table.note
    assert stats.splits == {"split": {"method": "random", "seed": 3}}


# ---------------------------------------------------------------------------------------------
# Duplicates.


def _add_copy_of_row(ws: Path, row: int, new_patient: bool) -> tuple[str, str]:
    catalog = _catalog(ws)
    copy = catalog.slice(row, 1).to_pylist()[0]
    copy["image_id"] = "ICOPYOFROWZERO"
    if new_patient:
        copy["patient_id"] = "PSOMEONEELSE"
    extra = pa.Table.from_pylist([copy], schema=catalog.schema)
    write_catalog(Workspace(ws).catalog_path, pa.concat_tables([catalog, extra]))
    return catalog["image_id"][row].as_py(), copy["image_id"]


def test_exact_duplicate_under_another_patient_is_flagged(ws: Path) -> None:
    original, copy = _add_copy_of_row(ws, 0, new_patient=True)
    stats = dataset_stats(ws)
    counts = _rows(stats, "duplicates")
    assert counts["exact duplicate groups (identical hash)"] == [1]
    assert counts["images in exact duplicate groups"] == [2]
    assert counts["near-duplicate pairs across patients"] == [1]
    pairs = stats.tables["duplicate_pairs"].rows
    assert pairs[0][:3] == [original, copy, 0]
    assert "cross_patient_duplicates" in {w.kind for w in stats.warnings}


def test_duplicate_pair_across_splits_is_counted_in_the_split_note(ws: Path) -> None:
    _add_copy_of_row(ws, 0, new_patient=True)
    catalog = _catalog(ws)
    split = ["train"] * (catalog.num_rows - 1) + ["test"]  # the copy in test, its original not
    write_catalog(Workspace(ws).catalog_path, catalog, {"split": split})
    note = dataset_stats(ws).tables["split_split"].note
    assert "Near-duplicate pairs across patients and split values: 1." in note


def test_duplicate_within_one_patient_is_not_a_leak(ws: Path) -> None:
    _add_copy_of_row(ws, 0, new_patient=False)
    stats = dataset_stats(ws)
    counts = _rows(stats, "duplicates")
    assert counts["near-duplicate pairs within a patient"] == [1]
    assert counts["near-duplicate pairs across patients"] == [0]
    assert stats.tables["duplicate_pairs"].rows == []
    assert "cross_patient_duplicates" not in {w.kind for w in stats.warnings}


# ---------------------------------------------------------------------------------------------
# Pixels and sizes.


def test_pixel_statistics_match_a_direct_computation(ingested_workspace: Path) -> None:
    ws = Workspace(ingested_workspace)
    stats = dataset_stats(ingested_workspace, sample_per_site=1000)  # every image sampled
    catalog = _catalog(ingested_workspace).to_pylist()
    site = stats.tables["sites"].rows[0][0]
    pixels, padding = [], []
    for row in (r for r in catalog if r["site"] == site):
        image = np.load(ws.images_dir / f"{row['shard_file']}.npy", mmap_mode="r")[row["index"]]
        h, w = round(row["rows"] * row["scale"]), round(row["cols"] * row["scale"])
        inner = image[row["pad_y"] : row["pad_y"] + h, row["pad_x"] : row["pad_x"] + w]
        pixels.append(inner.ravel())
        padding.append(1 - inner.size / image.size)
    values = np.concatenate(pixels).astype(np.float64)
    sampled, mean, std, p1, p99, padded = _rows(stats, "intensity")[site]
    assert sampled == len(pixels)
    assert mean == pytest.approx(values.mean(), abs=0.06)
    assert std == pytest.approx(values.std(), abs=0.06)
    assert p1 <= np.percentile(values, 1) + 1 and p99 >= np.percentile(values, 99) - 1
    assert padded == pytest.approx(100 * np.mean(padding), abs=0.06)


def test_pixel_sample_is_seeded_and_bounded(ingested_workspace: Path) -> None:
    one = dataset_stats(ingested_workspace, sample_per_site=2)
    two = dataset_stats(ingested_workspace, sample_per_site=2)
    assert one.tables["intensity"].rows == two.tables["intensity"].rows
    assert all(row[1] <= 2 for row in one.tables["intensity"].rows)
    assert one.pixels.shape == (64, 64) and one.pixels.dtype == "uint8"
    assert all(len(images) <= 2 for images in one.pixels.thumbnails.values())


def test_thumbnails_of_large_images_are_shrunk_keeping_dtype() -> None:
    big = np.arange(1024 * 768, dtype=np.uint16).reshape(1024, 768)
    small = thumbnail(big, side=256)
    assert small.shape == (256, 192) and small.dtype == np.uint16
    assert thumbnail(big[:100, :100], side=256).shape == (100, 100)


def test_size_table_reports_the_original_geometry(stats: DatasetStats, ingested_workspace):
    catalog = _catalog(ingested_workspace)
    rows = _rows(stats, "size")
    assert sum(r[0] for r in rows.values()) == catalog.num_rows
    for site, (_, _, rows_min, rows_max, *_) in rows.items():
        mine = pc.filter(catalog["rows"], pc.equal(catalog["site"], site))
        assert (rows_min, rows_max) == (pc.min(mine).as_py(), pc.max(mine).as_py())


# ---------------------------------------------------------------------------------------------
# Shortcut warnings: each rule fires on a planted case and stays quiet on a balanced one.


def _cohort(sites: int = 4, patients: int = 30) -> tuple[Groups, Groups, np.ndarray]:
    """``patients`` patients per site, two images each: (sites, patients, site per image)."""
    site = [f"site-{s}" for s in range(sites) for _ in range(2 * patients)]
    patient = [f"P{s}-{p}" for s in range(sites) for p in range(patients) for _ in range(2)]
    return Groups.of(site), Groups.of(patient), np.array(site)


def test_concentrated_finding_fires_on_one_site_only() -> None:
    sites, _, names = _cohort()
    planted = names == "site-2"  # every positive at one of four equal sites
    warnings = shortcuts.concentrated_finding("edema", planted, sites, "site")
    assert [w.kind for w in warnings] == ["concentrated_finding"]
    assert "site-2 holds 100% of 60 positives with 25% of the images (4.0x" in warnings[0].message
    balanced = np.arange(len(names)) % 4 == 0  # a quarter positive at every site
    assert shortcuts.concentrated_finding("edema", balanced, sites, "site") == []


def test_concentrated_finding_needs_enough_positives() -> None:
    sites, _, names = _cohort()
    few = (names == "site-2") & (np.arange(len(names)) % 10 == 0)  # 6 positives
    assert few.sum() < shortcuts.MIN_POSITIVES
    assert shortcuts.concentrated_finding("edema", few, sites, "site") == []


def test_site_predicts_label_fires_when_prevalence_differs_by_site() -> None:
    sites, patients, names = _cohort()
    rng = np.random.default_rng(0)
    planted = rng.random(len(names)) < np.where(np.isin(names, ["site-0", "site-1"]), 0.8, 0.05)
    warnings = shortcuts.site_predicts_labels({"edema": planted}, sites, patients)
    assert [w.kind for w in warnings] == ["site_predicts_label"]
    assert "AUROC 0.8" in warnings[0].message or "AUROC 0.9" in warnings[0].message
    balanced = rng.random(len(names)) < 0.3
    assert shortcuts.site_predicts_labels({"edema": balanced}, sites, patients) == []


def test_site_prevalence_is_out_of_fold() -> None:
    # One patient per site, positive at one site: in-sample prevalence would score 1.0 and
    # the rule would fire; out of fold each site is unseen, so every score is the same.
    sites = Groups.of([f"s{i}" for i in range(40)])
    patients = Groups.of([f"p{i}" for i in range(40)])
    positive = np.arange(40) < 20
    folds = shortcuts.patient_folds(patients)
    score = shortcuts.site_prevalence_out_of_fold(positive, sites, folds)
    assert len(set(np.round(score[folds == 0], 6))) == 1
    assert shortcuts.site_predicts_labels({"x": positive}, sites, patients) == []


def test_small_sites_are_named_and_large_ones_are_not() -> None:
    sites, patients, _ = _cohort(sites=3, patients=25)
    assert shortcuts.small_sites(sites, patients, minimum=20) == []
    small = Groups.of(["a", "a", "b", "c", "c", "c"])
    people = Groups.of(["p1", "p1", "p2", "p3", "p4", "p5"])
    [warning] = shortcuts.small_sites(small, people, minimum=3)
    assert warning.kind == "small_site"
    assert "2 of 3 sites have fewer than 3 patients" in warning.message
    assert "a (1)" in warning.message and "b (1)" in warning.message
    assert "c (" not in warning.message  # exactly the minimum is enough


def test_small_site_warning_fires_on_the_fixture(stats: DatasetStats) -> None:
    [warning] = [w for w in stats.warnings if w.kind == "small_site"]
    assert f"5 of 5 sites have fewer than {shortcuts.MIN_SITE_PATIENTS} patients" in warning.message


def test_deid_warnings() -> None:
    assert shortcuts.deid_warnings({"enabled": True, "options": [], "ocr": "flagged"}) == []
    [off] = shortcuts.deid_warnings({"enabled": False, "options": [], "ocr": "off"})
    assert off.kind == "deid_off" and "DE-IDENTIFICATION OFF" in off.message
    [unknown] = shortcuts.deid_warnings(None)
    assert unknown.kind == "deid_unknown"


def test_cross_patient_duplicate_warning_counts_pairs() -> None:
    assert shortcuts.cross_patient_duplicates(0, 20) == []
    [warning] = shortcuts.cross_patient_duplicates(3, 20)
    assert warning.message.startswith("3 near-duplicate image pairs (at most 20 bits apart)")


def test_planted_site_shortcut_warns_through_dataset_stats(ws: Path) -> None:
    sites = _catalog(ws)["site"].to_pylist()
    biggest = max(set(sites), key=sites.count)
    # Positive at the largest site (about 60% of images) only: concentrated (100% of
    # positives), but not at 2x its share; the site still predicts the label perfectly.
    _plant_labels(ws, {"edema": [1 if s == biggest else None for s in sites]})
    kinds = [w.kind for w in dataset_stats(ws).warnings]
    assert "site_predicts_label" in kinds
    assert "concentrated_finding" not in kinds


# ---------------------------------------------------------------------------------------------
# Provenance.


def test_provenance_counts_inputs_and_reports(stats: DatasetStats) -> None:
    p = stats.provenance
    assert p.inputs == {"ingested": 68}
    assert p.reports["reports"] == 43
    options = ["retain-long-modified-dates", "retain-patient-chars"]
    assert p.deid == {"enabled": True, "ocr": "flagged", "options": options}
    assert p.config_kind == "ingest" and "deid:" in p.config_text


def test_deid_settings_of_a_demo_config_and_yaml_off() -> None:
    demo = {
        "kind": "demo",
        "key": "secret/place.key",
        "ingest": {"deid": {"enabled": False, "ocr": False}},
    }
    assert deid_settings(demo) == {"enabled": False, "options": [], "ocr": "off"}
    assert deid_settings({"kind": "synth"}) is None


def test_provenance_leaves_out_the_key_path_and_handles_a_missing_config(ws: Path) -> None:
    config = Workspace(ws).config_path
    config.write_text(
        yaml.safe_dump(
            {"kind": "demo", "key": "/secret/place.key", "ingest": {"deid": {"enabled": True}}}
        )
    )
    p = read_provenance(Workspace(ws))
    assert "secret" not in p.config_text and p.config_kind == "demo"
    config.unlink()
    p = read_provenance(Workspace(ws))
    assert p.deid is None and p.config_text == ""
