"""`medtune split`: patient-disjoint train/val/test, grouped k-fold and out-of-domain splits on
the ingested fixture and on larger synthetic catalogs; determinism, metadata, bad specs."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from medtune import __version__
from medtune.curate.leakage import Groups, check_workspace_split
from medtune.curate.splits import SplitSpec, make_split
from medtune.dataset.catalog import catalog_metadata, read_catalog, write_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

PREVALENCES = (0.05, 0.1, 0.2, 0.3)  # of positive images, label_f0 .. label_f3


def synthetic_catalog(patients: int = 400, seed: int = 0, sites: int = 5) -> pa.Table:
    """About 5 images a patient (1-9), each patient at one site, labels with the prevalences
    above clustered by patient (a sick patient has the finding on 2/3 of their images)."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(patients), rng.integers(1, 10, patients))
    rows = len(patient)
    columns: dict[str, object] = {
        "image_id": [f"img-{i:06d}" for i in range(rows)],
        "patient_id": [f"pat-{p:05d}" for p in patient],
        "site": [f"site-{s}" for s in rng.integers(0, sites, patients)[patient]],
        "manufacturer": ["Kestrel"] * rows,
        "body_part": ["CHEST"] * rows,
        "phash": pa.array([rng.bytes(32) for _ in range(rows)], pa.binary(32)),
    }
    for k, prevalence in enumerate(PREVALENCES):
        sick = rng.random(patients) < prevalence * 1.5
        positive = sick[patient] & (rng.random(rows) < 2 / 3)
        columns[f"label_f{k}"] = pa.array(positive.astype(np.int8))
    return pa.table(columns)


def workspace_with(tmp_path: Path, table: pa.Table) -> Workspace:
    ws = Workspace(tmp_path / "syn").create()
    write_catalog(ws.catalog_path, table)
    return ws


@pytest.fixture
def workspace(ingested_workspace: Path, tmp_path: Path) -> Workspace:
    shutil.copytree(ingested_workspace, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


@pytest.fixture
def synthetic(tmp_path: Path) -> Workspace:
    return workspace_with(tmp_path, synthetic_catalog())


def values_by_patient(ws: Workspace, column: str) -> dict[str, set[object]]:
    table = read_catalog(ws.catalog_path, columns=["patient_id", column])
    out: dict[str, set[object]] = defaultdict(set)
    for patient, value in zip(
        *(table.column(c).to_pylist() for c in table.column_names), strict=True
    ):
        out[patient].add(value)
    return out


def column(ws: Workspace, name: str) -> list[object]:
    return read_catalog(ws.catalog_path, columns=[name]).column(name).to_pylist()


# ---------------------------------------------------------------------------------------------
# Patient-level train/val/test.


def test_patient_split_puts_each_patient_in_one_part(workspace: Workspace) -> None:
    result = make_split(workspace.root, SplitSpec())
    by_patient = values_by_patient(workspace, "split")
    assert len(by_patient) == 24
    assert all(len(values) == 1 for values in by_patient.values())
    assert set().union(*by_patient.values()) == {"train", "val", "test"}
    assert check_workspace_split(workspace.root, "split") == []
    assert result.tables["split"][0] == ["split", "images", "patients"]
    assert sum(row[1] for row in result.tables["split"][1:]) == 68


def test_fractions_are_met_at_patient_level(synthetic: Workspace) -> None:
    make_split(synthetic.root, SplitSpec(fractions=(0.6, 0.15, 0.25)))
    part_of = {p: v.pop() for p, v in values_by_patient(synthetic, "split").items()}
    shares = Counter(part_of.values())
    for part, target in (("train", 0.6), ("val", 0.15), ("test", 0.25)):
        assert shares[part] / len(part_of) == pytest.approx(target, abs=0.02), shares
    images = Counter(column(synthetic, "split"))
    assert images["test"] / sum(images.values()) == pytest.approx(0.25, abs=0.03), images


def test_positives_of_each_label_spread_by_the_fractions(synthetic: Workspace) -> None:
    # Unstratified, the worst share on this catalog is 0.185 from its target (0.05 to 0.2
    # over seeds); stratified, within 0.05 for positive patients and about that for images.
    result = make_split(synthetic.root, SplitSpec())
    assert result.record["stratify"] == [f"label_f{k}" for k in range(4)]
    table = read_catalog(synthetic.catalog_path)
    split = np.array(table.column("split").to_pylist())
    patients = np.array(table.column("patient_id").to_pylist())
    for k in range(len(PREVALENCES)):
        positive = np.array(table.column(f"label_f{k}").to_pylist()) == 1
        part_of = dict(zip(patients[positive].tolist(), split[positive].tolist(), strict=True))
        by_patient, by_image = Counter(part_of.values()), Counter(split[positive].tolist())
        for part, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert by_patient[part] / len(part_of) == pytest.approx(target, abs=0.05), (k, part)
            assert by_image[part] / positive.sum() == pytest.approx(target, abs=0.07), (k, part)
    positives = result.tables["positives by split"]
    assert positives[0] == ["finding", "train", "val", "test"]
    assert [row[0] for row in positives[1:]] == ["f0", "f1", "f2", "f3"]


def test_a_stratum_is_dealt_evenly_over_folds(synthetic: Workspace) -> None:
    # One label: every positive patient is in its stratum, so each fold gets the same number
    # of them to within one; an unstratified split would miss that almost surely.
    make_split(synthetic.root, SplitSpec(method="kfold", stratify="label_f1"))
    table = read_catalog(synthetic.catalog_path, columns=["patient_id", "fold", "label_f1"])
    sick_patients_per_fold: dict[int, set[str]] = defaultdict(set)
    rows = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
    for patient, fold, label in rows:
        if label == 1:
            sick_patients_per_fold[fold].add(patient)
    counts = [len(sick_patients_per_fold[f]) for f in range(5)]
    assert max(counts) - min(counts) <= 1, counts


def test_without_labels_the_split_says_so(workspace: Workspace) -> None:
    result = make_split(workspace.root, SplitSpec())
    assert result.record["stratify"] == []
    assert any("not stratified" in line for line in result.lines)


# ---------------------------------------------------------------------------------------------
# k-fold.


def test_kfold_every_row_in_one_fold_and_patients_whole(synthetic: Workspace) -> None:
    make_split(synthetic.root, SplitSpec(method="kfold", folds=5))
    folds = column(synthetic, "fold")
    assert read_catalog(synthetic.catalog_path).schema.field("fold").type == pa.int8()
    assert set(folds) == set(range(5))  # no null, nothing else
    assert all(len(v) == 1 for v in values_by_patient(synthetic, "fold").values())
    sizes = Counter(folds)
    mean = len(folds) / 5
    assert all(abs(n - mean) <= 0.03 * mean for n in sizes.values()), sizes  # balanced images
    assert check_workspace_split(synthetic.root, "fold") == []


def test_kfold_on_the_ingested_workspace(workspace: Workspace) -> None:
    result = make_split(workspace.root, SplitSpec(method="kfold", folds=4, column="cv"))
    assert all(len(v) == 1 for v in values_by_patient(workspace, "cv").values())
    assert [row[0] for row in result.tables["cv"][1:]] == ["0", "1", "2", "3"]
    assert result.record["folds"] == 4


# ---------------------------------------------------------------------------------------------
# Out-of-domain.


def test_site_split_holds_out_whole_sites(workspace: Workspace) -> None:
    sites = Counter(column(workspace, "site"))
    held = sorted(sites, key=lambda s: (sites[s], s))[2]  # a site of a few patients
    result = make_split(workspace.root, SplitSpec(method="site", hold_out=(held,)))
    table = read_catalog(workspace.catalog_path, columns=["site", "split_site"])
    rows = zip(
        table.column("site").to_pylist(), table.column("split_site").to_pylist(), strict=True
    )
    for site, value in rows:
        assert (value == "ood") == (site == held), (site, value)
    assert all(len(v) == 1 for v in values_by_patient(workspace, "split_site").values())
    assert check_workspace_split(workspace.root, "split_site") == []
    assert result.record["hold_out"] == [held]
    assert result.record["hold_out_column"] == "site"
    by_site = {row[0]: row[1:] for row in result.tables["images by site"][1:]}
    assert by_site[held][-1] == sites[held]  # the ood column of the held-out site


def test_default_hold_out_takes_the_rarest_values_up_to_15_percent(workspace: Workspace) -> None:
    sites = Counter(column(workspace, "site"))
    result = make_split(workspace.root, SplitSpec(method="site"))
    held = result.record["hold_out"]
    rarest_first = sorted(sites, key=lambda s: (sites[s], s))
    assert sorted(held) == sorted(rarest_first[: len(held)])
    share = sum(sites[s] for s in held) / sum(sites.values())
    without_last = share - max(sites[s] for s in held) / sum(sites.values())
    assert share >= 0.15 > without_last  # the fewest values that reach 15%
    assert result.record["counts"]["ood"] == sum(sites[s] for s in held)


@pytest.mark.parametrize(
    ("sizes", "held"),
    [
        ({"a": 47, "b": 30, "c": 10, "d": 8, "e": 5}, ["c", "d", "e"]),  # 5 + 8 + 10 >= 15
        ({"a": 70, "b": 15, "c": 15}, ["b"]),  # exactly 15% is enough
        ({"a": 90, "b": 10}, ["b"]),  # short of 15%, but one value is always kept
        ({"a": 50, "b": 50}, ["a"]),  # ties by name
    ],
)
def test_default_hold_out_rule(tmp_path: Path, sizes: dict[str, int], held: list[str]) -> None:
    sites = [site for site, n in sizes.items() for _ in range(n)]
    table = pa.table({
        "image_id": [f"img-{i}" for i in range(len(sites))],
        "patient_id": [f"pat-{i}" for i in range(len(sites))],
        "site": sites,
        "phash": pa.nulls(len(sites), pa.binary(32)),
    })  # fmt: skip
    result = make_split(workspace_with(tmp_path, table).root, SplitSpec(method="site"))
    assert result.record["hold_out"] == held
    assert any("without a perceptual hash" in line for line in result.lines)


def test_default_hold_out_gives_back_values_until_the_parts_have_patients(tmp_path: Path) -> None:
    # One patient at each of four rare sites (1 image each; 15% of 24 images needs all four)
    # and one at each common site: holding out all four rare sites would leave 2 patients for
    # 3 parts, so the default gives back the last-chosen one (ties go by name).
    sites = ["a"] * 10 + ["b"] * 10 + ["c", "d", "e", "f"]
    patients = ["p0"] * 10 + ["p1"] * 10 + ["p2", "p3", "p4", "p5"]
    table = pa.table({
        "image_id": [f"img-{i}" for i in range(len(sites))],
        "patient_id": patients,
        "site": sites,
        "phash": pa.nulls(len(sites), pa.binary(32)),
    })  # fmt: skip
    result = make_split(workspace_with(tmp_path, table).root, SplitSpec(method="site"))
    assert result.record["hold_out"] == ["c", "d", "e"]
    assert result.record["counts"]["ood"] == 3
    # Asked for by name, the same hold-out is refused instead of quietly changed.
    with pytest.raises(MedtuneError, match="too few"):
        make_split(workspace_with(tmp_path / "asked", table).root,
                   SplitSpec(method="site", hold_out=("c", "d", "e", "f")))  # fmt: skip


def test_patient_on_both_sides_of_the_domain_is_excluded_in_domain(tmp_path: Path) -> None:
    table = synthetic_catalog(patients=60, sites=3)
    sites = table.column("site").to_pylist()
    patients = table.column("patient_id").to_pylist()
    # The first patient gets one extra image at site-0, the site held out below.
    traveller = next(p for p, s in zip(patients, sites, strict=True) if s != "site-0")
    first = patients.index(traveller)
    extra = table.slice(first, 1).to_pylist()[0]
    extra.update(image_id="img-extra", site="site-0", phash=bytes(range(32)))
    table = pa.concat_tables([table, pa.Table.from_pylist([extra], schema=table.schema)])
    ws = workspace_with(tmp_path, table)
    result = make_split(ws.root, SplitSpec(method="site", hold_out=("site-0",)))
    split = column(ws, "split_site")
    mine = [v for p, v in zip(table.column("patient_id").to_pylist(), split, strict=True)
            if p == traveller]  # fmt: skip
    assert mine[-1] == "ood" and set(mine[:-1]) == {"excluded"}
    others = zip(table.column("patient_id").to_pylist(), split, strict=True)
    assert "excluded" not in {v for p, v in others if p != traveller}
    assert check_workspace_split(ws.root, "split_site") == []
    assert result.record["counts"]["excluded"] == len(mine) - 1
    assert any("excluded" in line for line in result.lines)


def test_anatomy_split_keeps_patients_out_of_train_when_they_have_held_out_parts(
    workspace: Workspace,
) -> None:
    result = make_split(workspace.root, SplitSpec(method="anatomy", hold_out=("SKULL",)))
    table = read_catalog(
        workspace.catalog_path, columns=["patient_id", "body_part", "split_anatomy"]
    )
    rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    skull_patients = {p for p, part, _ in rows if part == "SKULL"}
    for patient, part, value in rows:
        if part == "SKULL":
            assert value == "ood"
        elif patient in skull_patients:
            assert value == "excluded"
        else:
            assert value in {"train", "val", "test"}
    assert check_workspace_split(workspace.root, "split_anatomy") == []
    assert result.record["hold_out_column"] == "body_part"


def test_vendor_split_holds_out_manufacturers(workspace: Workspace) -> None:
    vendors = Counter(column(workspace, "manufacturer"))
    held = min(vendors, key=lambda v: (vendors[v], v))
    make_split(workspace.root, SplitSpec(method="vendor", hold_out=(held,), column="by_vendor"))
    table = read_catalog(workspace.catalog_path, columns=["manufacturer", "by_vendor"])
    pairs = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
    assert {v for m, v in pairs if m == held} == {"ood"}
    assert column(workspace, "by_vendor").count("ood") == vendors[held]


# ---------------------------------------------------------------------------------------------
# Groups: near-duplicates and unknown patients.


@pytest.mark.parametrize("method", ["patient", "kfold"])
def test_planted_near_duplicate_lands_in_one_part(tmp_path: Path, method: str) -> None:
    table = synthetic_catalog(patients=80)
    patients = table.column("patient_id").to_pylist()
    hashes = table.column("phash").to_pylist()
    # The same picture under two patient ids (a re-export after a record merge).
    a, b = patients.index("pat-00003"), patients.index("pat-00071")
    hashes[b] = hashes[a]
    table = table.set_column(table.schema.get_field_index("phash"), "phash",
                             pa.array(hashes, pa.binary(32)))  # fmt: skip
    ws = workspace_with(tmp_path, table)
    name = "split" if method == "patient" else "fold"
    for seed in range(8):  # by chance alone they would share a part in few of these seeds
        result = make_split(ws.root, SplitSpec(method=method, seed=seed))
        values = values_by_patient(ws, name)
        assert values["pat-00003"] == values["pat-00071"], seed
    assert result.record["near_duplicate_pairs"] == 1
    assert any("2 patients grouped" in line for line in result.lines)


def test_images_without_a_patient_are_each_their_own_group(tmp_path: Path) -> None:
    table = synthetic_catalog(patients=40)
    patients = table.column("patient_id").to_pylist()
    unknown = [None if i % 10 == 0 else p for i, p in enumerate(patients)]
    table = table.set_column(1, "patient_id", pa.array(unknown, pa.string()))
    ws = workspace_with(tmp_path, table)
    result = make_split(ws.root, SplitSpec())
    without = unknown.count(None)
    assert result.record["groups"] == len(set(unknown) - {None}) + without
    assert any(f"{without} images without a patient id" in line for line in result.lines)
    assert None not in column(ws, "split")


def test_a_split_that_would_leak_is_not_written(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A grouping bug (every image its own group) must be caught by the guard, not written.
    import medtune.curate.splits as splits

    def one_group_per_image(table: pa.Table, bits: int) -> Groups:
        rows = table.num_rows
        return Groups(np.arange(rows), rows, [], 0, 0, 0)

    monkeypatch.setattr(splits, "leak_groups", one_group_per_image)
    with pytest.raises(MedtuneError, match=r"patients? in more than one split; not written"):
        make_split(workspace.root, SplitSpec())
    assert "split" not in read_catalog(workspace.catalog_path).column_names


# ---------------------------------------------------------------------------------------------
# Determinism, metadata, re-runs.


def test_same_seed_same_split_and_another_seed_another(synthetic: Workspace) -> None:
    make_split(synthetic.root, SplitSpec(seed=7))
    first = column(synthetic, "split")
    make_split(synthetic.root, SplitSpec(seed=7))
    assert column(synthetic, "split") == first
    make_split(synthetic.root, SplitSpec(seed=8))
    assert column(synthetic, "split") != first


def test_metadata_records_how_the_split_was_made(workspace: Workspace) -> None:
    table = read_catalog(workspace.catalog_path)
    write_catalog(workspace.catalog_path, table, metadata={"labels": {"findings": ["x"]}})
    make_split(workspace.root, SplitSpec(method="kfold", folds=3, seed=5))
    make_split(workspace.root, SplitSpec(seed=3, fractions=(0.8, 0.0, 0.2)))
    metadata = catalog_metadata(read_catalog(workspace.catalog_path, columns=[]))
    assert metadata["labels"] == {"findings": ["x"]}  # other curation metadata kept
    assert set(metadata["splits"]) == {"fold", "split"}
    record = metadata["splits"]["split"]
    assert (record["method"], record["seed"], record["fractions"]) == ("patient", 3, [0.8, 0, 0.2])
    assert set(record["counts"]) == {"train", "test"}  # no val asked for
    assert sum(record["counts"].values()) == 68
    assert sum(record["patients"].values()) == 24
    assert record["groups"] == 24 and record["near_duplicate_bits"] == 20
    assert record["medtune_version"] == __version__
    assert dt.datetime.fromisoformat(record["created"]).tzinfo is not None
    fold = metadata["splits"]["fold"]
    assert (fold["method"], fold["folds"], fold["seed"]) == ("kfold", 3, 5)
    assert set(fold["counts"]) == {"0", "1", "2"}


# ---------------------------------------------------------------------------------------------
# Bad specs.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.7, 0.2, 0.2)}, "summing to 1"),
        ({"fractions": (0.0, 0.5, 0.5)}, "train must be more than 0"),
        ({"method": "random"}, "method 'random'"),
        ({"folds": 1, "method": "kfold"}, "use 2 to 100"),
        ({"folds": 128, "method": "kfold"}, "use 2 to 100"),
        ({"hold_out": ("site-x",)}, "only for the methods"),
        ({"column": "Split!"}, "lower-case"),
        ({"column": "patient_id"}, "taken by the catalog"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MedtuneError, match=message):
        SplitSpec(**kwargs)  # type: ignore[arg-type]


def test_specs_that_do_not_fit_the_catalog_are_refused(workspace: Workspace) -> None:
    with pytest.raises(MedtuneError, match="'Mars General' is not a site in the catalog"):
        make_split(workspace.root, SplitSpec(method="site", hold_out=("Mars General",)))
    with pytest.raises(MedtuneError, match=r"no column 'label_nodule'.*run `medtune label`"):
        make_split(workspace.root, SplitSpec(stratify=("label_nodule",)))
    with pytest.raises(MedtuneError, match="too few for 30 folds"):
        make_split(workspace.root, SplitSpec(method="kfold", folds=30))
    sites = tuple(set(column(workspace, "site")))
    with pytest.raises(MedtuneError, match="every site"):
        make_split(workspace.root, SplitSpec(method="site", hold_out=sites))
    names = read_catalog(workspace.catalog_path).column_names
    assert not [name for name in names if name.startswith(("split", "fold"))]  # nothing written


def test_default_columns_keep_an_out_of_domain_split_beside_the_patient_split() -> None:
    assert SplitSpec().column == "split"
    assert SplitSpec(method="kfold").column == "fold"
    assert SplitSpec(method="site").column == "split_site"
    assert SplitSpec(method="vendor").column == "split_vendor"
    assert SplitSpec(method="anatomy", column="mine").column == "mine"
