"""Scoring probe-suite predictions: CIs, subgroups, paired comparisons, the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtune.errors import MedtuneError
from medtune.evaluate.probe import ProbeSuiteResult, TaskPredictions
from medtune.evaluate.report_html import (
    Evaluation,
    headline_table,
    summary_lines,
    write_evaluation,
)
from medtune.evaluate.suite import group_labels, score_suites

PATIENTS = 120  # two images each: the bootstrap must keep a patient's images together


def cohort(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2 * PATIENTS
    patient = np.repeat([f"P{i:03d}" for i in range(PATIENTS)], 2)
    site = np.repeat(rng.choice(["site-a", "site-b", "site-c"], PATIENTS), 2)
    return {
        "image_id": np.array([f"I{i:04d}" for i in range(n)], object),
        "patient_id": patient.astype(object),
        "site": site.astype(object),
        "manufacturer": np.where(site == "site-a", "Acme", "Zeta").astype(object),
        "sex": np.repeat(rng.choice(["F", "M"], PATIENTS), 2).astype(object),
        "age": np.repeat(rng.integers(20, 90, PATIENTS), 2).astype(float),
        "body_part": np.where(np.arange(n) % 2 == 0, "CHEST", "HAND").astype(object),
        "split": np.where(site == "site-c", "ood", "test").astype(object),
    }


def result(meta: dict, quality: float, seed: int, name: str = "m") -> ProbeSuiteResult:
    """A binary and a 3-class task on every row; ``quality`` 1: scores follow the truth, 0:
    noise."""
    rng = np.random.default_rng(seed)
    n = len(meta["image_id"])
    rows = np.arange(n)
    truth = (np.arange(n) // 3 % 2).astype(float)
    binary = quality * truth + (1 - quality) * rng.random(n) + 0.01 * rng.random(n)
    classes = np.arange(n) % 3
    logits = quality * np.eye(3)[classes] + rng.random((n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    split = meta["split"]
    preds = {
        "sex": TaskPredictions("sex", "binary", ["M"], rows, np.zeros(n, bool), split, truth,
                               np.ones(n, bool), binary, 10, 5, 0.5),
        "view": TaskPredictions("view", "multiclass", ["PA", "AP", "lateral"], rows,
                                np.zeros(n, bool), split, classes, np.ones(n, bool), probs, 10,
                                5, 0.5),
    }  # fmt: skip
    return ProbeSuiteResult(name, "digest", "split_site", preds, {}, meta)


def test_a_perfect_model_scores_one_and_noise_about_a_half() -> None:
    meta = cohort()
    scores = score_suites([result(meta, 0.0, 1), result(meta, 1.0, 2)], ["noise", "good"],
                          n_boot=200)  # fmt: skip
    good, noise = scores.models["good"], scores.models["noise"]
    assert good.tasks["sex"].auroc.value == 1.0
    assert (good.tasks["sex"].auroc.low, good.tasks["sex"].auroc.high) == (1.0, 1.0)
    assert 0.35 < noise.mean.value < 0.65
    assert noise.mean.low < noise.mean.value < noise.mean.high
    assert good.mean.groups == PATIENTS and good.mean.n == 2 * PATIENTS
    comparison = scores.comparisons["good"]["noise"]["mean"]
    assert comparison.difference > 0.3 and comparison.low > 0 and comparison.p_value < 0.01
    assert set(scores.comparisons["good"]["noise"]) >= {"sex", "view", "region:chest",
                                                       "region:non-chest"}  # fmt: skip
    json.dumps(scores.as_json(), allow_nan=False)  # NaN written as null, never as NaN


def test_a_model_compared_with_itself_differs_by_nothing() -> None:
    meta = cohort()
    same = result(meta, 0.5, 3)
    scores = score_suites([same, same], ["a", "b"], n_boot=100)
    for comparison in scores.comparisons["b"]["a"].values():
        assert comparison.difference == 0 and comparison.p_value == 1.0


def test_subgroups_are_the_rows_of_each_group_and_small_groups_are_left_out() -> None:
    meta = cohort()
    meta["site"][:4] = "site-tiny"  # two patients: too few for an interval worth showing
    scores = score_suites([result(meta, 0.6, 4)], ["m"], n_boot=50)
    assert scores.groups["region"] == ["chest", "non-chest"]
    assert scores.groups["domain"] == ["held-out sites", "in-domain"]
    assert "site-tiny" not in scores.groups["site"]
    model = scores.models["m"]
    chest = model.subgroup_tasks["region"]["chest"]["sex"]
    assert chest.n == PATIENTS  # the even rows
    groups = group_labels(meta, "split_site")
    assert set(groups["age"]) <= {"18-39", "40-59", "60-79", "80+"}
    assert (groups["domain"] == "held-out sites").sum() == (meta["split"] == "ood").sum()


def test_models_of_different_workspaces_are_refused() -> None:
    a, b = cohort(0), cohort(0)
    b["image_id"] = b["image_id"][::-1].copy()
    with pytest.raises(MedtuneError, match="different workspaces"):
        score_suites([result(a, 1, 0), result(b, 1, 0)], ["a", "b"], n_boot=10)


def test_the_report_is_one_self_contained_page(tmp_path: Path) -> None:
    meta = cohort()
    scores = score_suites([result(meta, 0.0, 1), result(meta, 1.0, 2)], ["noise", "good"],
                          n_boot=50)  # fmt: skip
    lines = summary_lines(scores, [("good", "noise")])
    assert lines[0].startswith("good vs noise: on non-chest images +") and "(better)" in lines[0]
    html_path = write_evaluation(Evaluation("test", probe=scores, summary=lines), tmp_path / "e")
    page = html_path.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") >= 3  # ROC grid, subgroup bars, ...
    assert "Mean AUROC over the probe tasks" in page and "Paired comparisons" in page
    numbers = json.loads((tmp_path / "e" / "results.json").read_text())
    assert numbers["probe"]["models"]["good"]["mean_auroc"]["value"] == pytest.approx(1.0, abs=1e-3)
    headline = headline_table(scores)
    assert headline.columns[:3] == ["model", "all images", "chest images"]
