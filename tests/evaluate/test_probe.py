"""The probe suite: every default task's labels on the ingested cohort; heads that learn
informative features and not noise, stop early, repeat exactly, and match the uncached
end-to-end baseline; skipped tasks say why; a held-out site is never scored as a site class."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from medtune.dataset.annotations import annotations_path
from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.evaluate.features import FeatureSet, extract_features
from medtune.evaluate.probe import (
    ProbeConfig,
    TaskPredictions,
    predict_head,
    run_probe_suite,
    run_probe_suite_end_to_end,
    train_head,
)
from medtune.evaluate.probe_tasks import (
    DEFAULT_TASKS,
    PROBE_TASKS,
    TaskLabels,
    probe_table,
    register_probe_task,
)
from tests.evaluate.probe_builders import make_export, make_probe_workspace

FAST = ProbeConfig(hidden=32, lr=1e-2, batch_size=32, max_epochs=40, patience=5)


@pytest.fixture(scope="module")
def workspace(
    ingested_workspace: Path, synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Labelled, split by patient and by site, annotated (read-only: copy it to change it)."""
    root = tmp_path_factory.mktemp("probe") / "ws"
    return make_probe_workspace(ingested_workspace, synth_cohort, root)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("probe-export") / "export")


@pytest.fixture
def registry() -> Iterator[None]:
    """Tasks a test registers are gone after it."""
    saved = dict(PROBE_TASKS)
    yield
    PROBE_TASKS.clear()
    PROBE_TASKS.update(saved)


def catalog(workspace: Path) -> pa.Table:
    return read_catalog(workspace / "dataset" / "catalog.parquet")


def informative(workspace: Path, noise: float = 0.1) -> tuple[FeatureSet, FeatureSet]:
    """Features that state sex, view class, site and mirroring (one-hot) plus noise; the
    flipped set states the opposite mirroring."""
    table = probe_table(workspace)
    rng = np.random.default_rng(0)
    n = table.num_rows
    parts = [np.eye(2)[PROBE_TASKS["sex"].labels(table).truth.astype(int)]]
    for name in ("view", "site"):
        labels = PROBE_TASKS[name].labels(table)
        parts.append(np.eye(len(labels.classes) + 1)[labels.truth])  # -1: the last column
    mirrored = PROBE_TASKS["mirrored"].labels(table)
    base = np.concatenate([*parts, rng.normal(size=(n, 4))], axis=1)

    def with_mirror(truth: np.ndarray) -> np.ndarray:
        x = np.concatenate([base, truth[:, None]], axis=1)
        return (x + noise * rng.normal(size=x.shape)).astype(np.float32)

    orig = FeatureSet(with_mirror(mirrored.truth), False, "m", "d")
    return orig, FeatureSet(with_mirror(mirrored.flipped_truth), True, "m", "d")


def random_features(workspace: Path, seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    rng = np.random.default_rng(seed)
    n = catalog(workspace).num_rows
    return tuple(  # type: ignore[return-value]
        FeatureSet(rng.normal(size=(n, 16)).astype(np.float32), flip, "m", "d")
        for flip in (False, True)
    )


def auroc(p: TaskPredictions) -> float:
    """Binary AUROC, or the mean one-vs-rest AUROC of the classes present in the test rows."""
    if p.kind == "binary":
        return float(roc_auc_score(p.truth[p.mask], p.scores[p.mask]))
    truth, scores = p.truth[p.mask], p.scores[p.mask]
    values = [roc_auc_score(truth == k, scores[:, k]) for k in range(len(p.classes))
              if 0 < (truth == k).sum() < len(truth)]  # fmt: skip
    return float(np.mean(values))


def test_default_tasks_label_every_catalog_row(workspace: Path) -> None:
    table = probe_table(workspace)
    raw = catalog(workspace)
    n = raw.num_rows
    assert table.num_rows == n and table.column("image_id") == raw.column("image_id")
    labels = {name: PROBE_TASKS[name].labels(table) for name in DEFAULT_TASKS}
    assert all(labels[name] is not None for name in DEFAULT_TASKS)

    findings = labels["findings"]
    columns = [c for c in raw.column_names if c.startswith("label_")]
    assert findings.kind == "multilabel" and findings.classes == [c[6:] for c in columns]
    assert findings.truth.shape == findings.mask.shape == (n, len(columns))
    values = np.stack([raw.column(c).to_numpy(zero_copy_only=False) for c in columns], 1)
    values = values.astype(float)  # null -> nan
    assert np.array_equal(findings.mask, np.isin(values, (0, 1)))  # -1 and null masked
    assert np.array_equal(findings.truth[findings.mask], values[findings.mask])

    sex = labels["sex"]
    given = raw.column("sex").to_pylist()
    assert (sex.kind, sex.classes) == ("binary", ["M"])
    assert sex.truth.tolist() == [float(s == "M") for s in given]
    assert sex.mask.tolist() == [s in ("M", "F") for s in given]

    view = labels["view"]
    assert (view.kind, view.classes) == ("multiclass", ["PA", "AP", "lateral"])
    expect = {"PA": 0, "AP": 1, "LL": 2, "RL": 2}
    assert view.truth.tolist() == [expect.get(v, -1) for v in raw.column("view").to_pylist()]
    assert np.array_equal(view.mask, view.truth >= 0) and (~view.mask).sum() > 0  # LLO, RLO

    for name, column in (("anatomy", "body_part"), ("site", "site")):
        task = labels[name]
        values = raw.column(column).to_pylist()
        assert task.classes == sorted(set(values)) and task.mask.all()
        assert [task.classes[k] for k in task.truth] == values

    marker = labels["marker"]
    assert marker.classes == ["L", "R", "none"] and marker.mask.all()
    assert set(np.bincount(marker.truth, minlength=3)) != {0}
    mirrored = labels["mirrored"]
    assert PROBE_TASKS["mirrored"].flipped and mirrored.mask.all()
    assert mirrored.truth.sum() == 2 and np.array_equal(mirrored.flipped_truth, 1 - mirrored.truth)


def test_marker_is_unavailable_without_annotations() -> None:
    marker = PROBE_TASKS["marker"].labels
    assert marker(pa.table({"image_id": ["a", "b"]})) is None
    assert marker(pa.table({"image_id": ["a"], "marker": pa.array([None], pa.string())})) is None
    mirrored = PROBE_TASKS["mirrored"].labels(pa.table({"image_id": ["a", "b"]}))
    assert mirrored is not None and mirrored.truth.tolist() == [0, 0]  # unannotated: not mirrored
    assert mirrored.flipped_truth.tolist() == [1, 1]


def test_informative_features_are_learned_and_noise_is_not(workspace: Path) -> None:
    tasks = ("sex", "view", "mirrored")
    result = run_probe_suite("none", workspace, tasks=tasks, config=FAST,
                             features=informative(workspace))  # fmt: skip
    assert result.split_column == "split_site" and set(result.predictions) == set(tasks)
    for name in tasks:
        p = result.predictions[name]
        assert set(p.split) <= {"test", "ood"} and auroc(p) > 0.95, name
    mirrored = result.predictions["mirrored"]
    tested = np.isin(result.meta["split"], ["test", "ood"]).sum()
    assert len(mirrored.rows) == 2 * tested  # every test image, and its flipped copy
    assert mirrored.flipped.sum() == len(mirrored.rows) // 2
    assert np.array_equal(mirrored.truth[mirrored.flipped], 1 - mirrored.truth[~mirrored.flipped])

    # Noise: a larger synthetic set, so chance AUROC is pinned down (sd about 0.03).
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(1000, 16)), rng.integers(0, 2, 1000).astype(np.float32)
    ones = np.ones(1000, bool)
    config = ProbeConfig(hidden=32, lr=1e-2, max_epochs=200, patience=5)
    head, info = train_head("binary", 1, x[:400], y[:400], ones[:400], x[400:600], y[400:600],
                            ones[400:600], config)  # fmt: skip
    assert info["epochs"] < config.max_epochs  # stopped early
    assert info["epochs"] == info["best_epoch"] + config.patience
    scores = predict_head(head, "binary", x[600:])
    assert scores.shape == (400,) and 0.38 < roc_auc_score(y[600:], scores) < 0.62


def test_no_validation_rows_trains_every_epoch() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
    config = ProbeConfig(hidden=16, max_epochs=7, patience=2)
    head, info = train_head("multiclass", 3, x, y, np.ones(40, bool), x[:0], y[:0],
                            np.ones(0, bool), config)  # fmt: skip
    assert info["epochs"] == info["best_epoch"] == 7 and "no validation" in str(info["note"])
    assert np.isnan(info["val_loss"]) and not head.training


def test_same_inputs_same_scores(workspace: Path) -> None:
    features = random_features(workspace)
    tasks = ("findings", "site", "mirrored")
    first = run_probe_suite("none", workspace, tasks=tasks, config=FAST, features=features)
    again = run_probe_suite("none", workspace, tasks=tasks, config=FAST, features=features)
    reseeded = ProbeConfig(**{**FAST.__dict__, "seed": 1})
    other = run_probe_suite("none", workspace, tasks=tasks, config=reseeded, features=features)
    for name in tasks:
        a, b = first.predictions[name], again.predictions[name]
        assert np.array_equal(a.scores, b.scores) and a.best_epoch == b.best_epoch
        assert not np.array_equal(a.scores, other.predictions[name].scores)


def test_classes_unseen_in_training_are_masked(workspace: Path) -> None:
    result = run_probe_suite("none", workspace, tasks=("site", "findings"), config=FAST,
                             features=informative(workspace))  # fmt: skip
    site = result.predictions["site"]
    split = np.array(catalog(workspace).column("split_site").to_pylist())
    sites = np.array(catalog(workspace).column("site").to_pylist())
    assert site.classes == sorted(set(sites[split == "train"])) and len(site.classes) >= 2
    held_out = set(sites[split == "ood"]) - set(sites[split == "train"])
    assert held_out and not held_out & set(site.classes)
    assert np.array_equal(site.mask, np.isin(sites[site.rows], site.classes))
    assert site.mask.any() and not site.mask[site.split == "ood"].any()
    assert site.scores.shape == (len(site.rows), len(site.classes))
    np.testing.assert_allclose(site.scores.sum(axis=1), 1.0, rtol=1e-5)
    assert auroc(site) > 0.95

    findings = result.predictions["findings"]  # only labels with both classes in training
    train = np.flatnonzero(split == "train")
    for name in findings.classes:
        values = catalog(workspace).column(f"label_{name}").to_numpy(zero_copy_only=False)
        assert {0.0, 1.0} <= set(values[train].astype(float))
    assert 0 < len(findings.classes) < len([c for c in catalog(workspace).column_names
                                            if c.startswith("label_")])  # fmt: skip


def test_skipped_tasks_say_why(workspace: Path, tmp_path: Path, registry: None) -> None:
    @register_probe_task("constant")
    def constant(table: pa.Table) -> TaskLabels:
        n = table.num_rows
        return TaskLabels("binary", ["yes"], np.ones(n, np.float32), np.ones(n, bool))

    @register_probe_task("one_site")
    def one_site(table: pa.Table) -> TaskLabels:
        n = table.num_rows
        return TaskLabels("multiclass", ["a", "b"], np.zeros(n, np.int64), np.ones(n, bool))

    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    annotations_path(ws).unlink()
    orig, _ = random_features(ws)
    tasks = ("marker", "mirrored", "constant", "one_site", "sex")
    result = run_probe_suite("none", ws, tasks=tasks, config=FAST, features=(orig, None))
    assert result.skipped == {
        "marker": "no labels in this workspace (lead marker side: L, R or none (annotations))",
        "mirrored": "needs features of flipped images (none given)",
        "constant": "one class in train",
        "one_site": "fewer than 2 classes in train",
    }
    assert list(result.predictions) == ["sex"]
    patient = run_probe_suite("none", ws, tasks=("sex",), split_column="split", test=("nope",),
                              config=FAST, features=(orig, None))  # fmt: skip
    assert patient.split_column == "split" and patient.skipped == {"sex": "no rows in nope"}

    with pytest.raises(MedtuneError, match=r"'sexx': unknown .*did you mean 'sex'"):
        run_probe_suite("none", ws, tasks=("sexx",), features=(orig, None))
    with pytest.raises(MedtuneError, match="no column 'fold'"):
        run_probe_suite("none", ws, tasks=("sex",), split_column="fold", features=(orig, None))


def test_a_registered_task_runs_on_extracted_features(
    workspace: Path, export: Path, tmp_path: Path, registry: None
) -> None:
    @register_probe_task("chest", description="chest or not")
    def chest(table: pa.Table) -> TaskLabels:
        parts = table.column("body_part").to_pylist()
        truth = np.array([p == "CHEST" for p in parts], np.float32)
        return TaskLabels("binary", ["CHEST"], truth, np.ones(len(parts), bool))

    assert PROBE_TASKS["chest"].description == "chest or not"
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    features = ws / "eval" / "features"
    result = run_probe_suite(export, ws, tasks=("chest",), config=FAST)
    assert [p.name.rsplit("-", 1)[1] for p in features.iterdir()] == ["orig.npy"]  # no flips
    chest_ = result.predictions["chest"]
    assert result.model == str(export) and len(result.digest) == 16
    assert chest_.scores.shape == chest_.truth.shape == (len(chest_.rows),)
    assert set(result.meta) == {"image_id", "patient_id", "site", "manufacturer", "sex", "age",
                                "body_part", "split"}  # fmt: skip
    assert result.meta["age"].dtype == np.float64 and len(result.meta["age"]) == 68
    run_probe_suite(export, ws, tasks=("mirrored",), config=FAST)
    assert sorted(p.name.rsplit("-", 1)[1] for p in features.iterdir()) == ["flip.npy", "orig.npy"]


def test_the_end_to_end_baseline_gives_the_same_predictions(workspace: Path, export: Path) -> None:
    config = ProbeConfig(hidden=16, batch_size=16, max_epochs=4, patience=2)
    tasks = ("sex", "mirrored")
    features = (extract_features(export, workspace, cache=False),
                extract_features(export, workspace, flipped=True, cache=False))  # fmt: skip
    cached = run_probe_suite(export, workspace, tasks=tasks, config=config, features=features)
    naive = run_probe_suite_end_to_end(export, workspace, tasks=tasks, config=config)
    for name in tasks:
        a, b = cached.predictions[name], naive.predictions[name]
        assert np.array_equal(a.rows, b.rows) and a.best_epoch == b.best_epoch
        assert np.abs(a.scores - b.scores).max() < 1e-4


def test_probe_config_is_checked() -> None:
    for bad in ({"hidden": 0}, {"lr": -1.0}, {"dropout": 1.0}, {"patience": 0},
                {"weight_decay": -0.1}, {"max_epochs": 0}, {"seed": -1}):  # fmt: skip
        with pytest.raises(MedtuneError, match="probe config"):
            ProbeConfig(**bad)  # type: ignore[arg-type]
