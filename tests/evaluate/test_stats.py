"""Tests of the evaluation statistics against scikit-learn and known closed forms."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from medtune.errors import MedtuneError
from medtune.evaluate.stats import (
    Estimate,
    age_band,
    bootstrap,
    expected_calibration_error,
    paired_bootstrap,
    per_class_auroc,
    reliability,
    resample_weights,
    roc_points,
    task_auroc,
    task_auroc_metric,
    weighted_auroc,
)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_auroc_matches_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    n = 300
    truth = rng.integers(0, 2, n)
    for score in (rng.normal(size=n) + truth, rng.integers(0, 4, n).astype(float)):  # heavy ties
        assert weighted_auroc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-9)
        weights = rng.exponential(size=n)
        expected = roc_auc_score(truth, score, sample_weight=weights)
        assert weighted_auroc(truth, score, weights) == pytest.approx(expected, abs=1e-9)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(1)
    truth, score = rng.integers(0, 2, 80), rng.integers(0, 5, 80).astype(float)
    counts = rng.integers(0, 4, 80)
    repeated = weighted_auroc(np.repeat(truth, counts), np.repeat(score, counts))
    assert weighted_auroc(truth, score, counts) == pytest.approx(repeated, abs=1e-12)


def test_weighted_auroc_nan_when_one_class_and_bad_input_raises():
    assert math.isnan(weighted_auroc(np.ones(5), np.arange(5.0)))
    assert math.isnan(weighted_auroc([0, 1, 1], [0.1, 0.2, 0.3], weights=[0.0, 1.0, 1.0]))
    with pytest.raises(MedtuneError):
        weighted_auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MedtuneError):
        weighted_auroc([0, 1], [0.1, np.nan])


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_multiclass_macro_ovr_matches_sklearn():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, 400)
    scores = _softmax(rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[truth])
    expected = roc_auc_score(truth, scores, multi_class="ovr", average="macro")
    assert task_auroc("multiclass", truth, scores) == pytest.approx(expected, abs=1e-9)
    per_class = per_class_auroc("multiclass", truth, scores)
    assert per_class.shape == (4,)
    assert per_class[0] == pytest.approx(roc_auc_score(truth == 0, scores[:, 0]), abs=1e-9)


def test_multiclass_absent_class_is_skipped():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 90)
    scores = _softmax(rng.normal(size=(90, 3)))
    weights = (truth != 2).astype(float)  # a resample in which class 2 never appears
    per_class = per_class_auroc("multiclass", truth, scores, weights=weights)
    assert math.isnan(per_class[2]) and not np.isnan(per_class[:2]).any()
    assert task_auroc("multiclass", truth, scores, weights=weights) == pytest.approx(
        per_class[:2].mean()
    )


def test_multilabel_skips_masked_rows_and_one_class_labels():
    rng = np.random.default_rng(4)
    n = 200
    truth = rng.integers(0, 2, (n, 3)).astype(float)
    scores = rng.normal(size=(n, 3)) + truth
    mask = rng.random((n, 3)) > 0.3
    truth[~mask] = -1.0  # uncertain/unmentioned: must be ignored, not read as a class
    truth[:, 2] = np.where(mask[:, 2], 1.0, np.nan)  # label 2 has only positives
    per_label = per_class_auroc("multilabel", truth, scores, mask)
    for j in range(2):
        expected = roc_auc_score(truth[mask[:, j], j], scores[mask[:, j], j])
        assert per_label[j] == pytest.approx(expected, abs=1e-9)
    assert math.isnan(per_label[2])
    assert task_auroc("multilabel", truth, scores, mask) == pytest.approx(per_label[:2].mean())
    assert math.isnan(task_auroc("multilabel", truth[:, 2:], scores[:, 2:], mask[:, 2:]))


def test_task_auroc_metric_matches_task_auroc_for_weights():
    rng = np.random.default_rng(5)
    truth, scores = rng.integers(0, 2, 60), rng.normal(size=60)
    weights = resample_weights(np.arange(60) // 3, 4, seed=1)
    metric = task_auroc_metric("binary", truth, scores)
    for w in weights:
        assert metric(w) == pytest.approx(roc_auc_score(truth, scores, sample_weight=w), abs=1e-9)


def test_resample_weights_groups_and_determinism():
    rng = np.random.default_rng(6)
    groups = [f"p{g}" for g in rng.integers(0, 30, 200)]
    weights = resample_weights(groups, 50, seed=7)
    assert weights.shape == (50, 200) and weights.dtype == np.float32
    codes = np.unique(groups, return_inverse=True)[1]
    first_row = np.unique(codes, return_index=True)[1]
    n_groups = len(first_row)
    # Summing one row per group gives the draw counts, which add up to the number of groups.
    assert np.all(weights[:, first_row].sum(axis=1) == n_groups)
    for g in range(n_groups):
        assert np.all(weights[:, codes == g] == weights[:, [first_row[g]]])
    assert np.array_equal(weights, resample_weights(groups, 50, seed=7))
    assert not np.array_equal(weights, resample_weights(groups, 50, seed=8))
    with pytest.raises(MedtuneError):
        resample_weights(["a", None, "b"], 5)


def _cohort(patients, seed, images=3, noise=1.0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(patients), images)
    truth = np.repeat(rng.integers(0, 2, patients), images)
    return groups, truth, truth + noise * rng.normal(size=len(truth))


def test_bootstrap_contains_estimate_and_narrows_with_more_data():
    small = bootstrap(task_auroc_metric("binary", *_cohort(50, 0)[1:]), _cohort(50, 0)[0], n=300)
    groups, truth, score = _cohort(200, 0)
    large = bootstrap(task_auroc_metric("binary", truth, score), groups, n=300)
    for est in (small, large):
        assert est.low <= est.value <= est.high
    assert large.high - large.low < 0.75 * (small.high - small.low)
    assert (large.n, large.groups) == (600, 200)


def test_bootstrap_perfect_classifier_and_format():
    groups, truth, _ = _cohort(40, 1)
    est = bootstrap(lambda w: weighted_auroc(truth, truth.astype(float), w), groups, n=200)
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)
    assert est.format() == "1.000 [1.000, 1.000]"
    assert Estimate(math.nan, math.nan, math.nan, 0, 0).format() == "-"
    assert Estimate(0.8123, 0.7744, 0.851, 10, 5).format(2) == "0.81 [0.77, 0.85]"


def test_bootstrap_mostly_nan_gives_nan_interval():
    groups = np.arange(20)
    truth, score = np.r_[0.0, 1.0, np.full(18, -1.0)], np.arange(20.0)
    rows = truth >= 0  # only patients 0 and 1 are labelled: both drawn in ~40% of resamples
    est = bootstrap(task_auroc_metric("binary", truth, score, rows), groups, n=200)
    assert est.value == 1.0 and math.isnan(est.low) and math.isnan(est.high)
    assert est.format() == "1.000 [-, -]"


def test_paired_bootstrap_identical_metrics():
    groups, truth, score = _cohort(60, 2)
    metric = task_auroc_metric("binary", truth, score)
    cmp = paired_bootstrap(metric, metric, groups, n=200)
    assert (cmp.difference, cmp.low, cmp.high, cmp.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_detects_clearly_better_model():
    groups, truth, _ = _cohort(200, 3)
    rng = np.random.default_rng(9)
    good = task_auroc_metric("binary", truth, truth + 0.3 * rng.normal(size=len(truth)))
    noise = task_auroc_metric("binary", truth, rng.normal(size=len(truth)))
    cmp = paired_bootstrap(noise, good, groups, n=500)
    assert cmp.difference > 0.3 and cmp.low > 0 and cmp.p_value < 0.01
    assert cmp.p_value == pytest.approx(2 / 501)  # the +1 correction: never 0
    reverse = paired_bootstrap(good, noise, groups, n=500)
    assert reverse.high < 0 and reverse.difference == pytest.approx(-cmp.difference)


def test_ece_calibrated_and_overconfident():
    rng = np.random.default_rng(10)
    prob = rng.random(100_000)
    truth = (rng.random(100_000) < prob).astype(float)
    assert expected_calibration_error(truth, prob) < 0.01
    truth = np.r_[np.ones(500), np.zeros(500)]
    assert expected_calibration_error(truth, np.full(1000, 0.9)) == pytest.approx(0.4)
    # Weights act as repeated rows; 1.0 falls in the last bin rather than out of range.
    probs, labels = np.array([0.2, 1.0, 0.95]), np.array([0.0, 1.0, 0.0])
    repeated = expected_calibration_error(np.repeat(labels, [1, 2, 3]), np.repeat(probs, [1, 2, 3]))
    assert expected_calibration_error(labels, probs, weights=[1, 2, 3]) == pytest.approx(repeated)
    with pytest.raises(MedtuneError):
        expected_calibration_error([1.0], [1.5])


def test_reliability_bins():
    rng = np.random.default_rng(11)
    prob = np.r_[rng.random(500) * 0.5, 1.0]  # nothing in the upper half except 1.0
    truth = (rng.random(501) < prob).astype(float)
    out = reliability(truth, prob, bins=4)
    assert out["count"].sum() == 501 and out["count"][2] == 0 and out["count"][3] == 1
    assert np.allclose(out["edges"], [0, 0.25, 0.5, 0.75, 1])
    assert math.isnan(out["confidence"][2]) and math.isnan(out["accuracy"][2])
    assert out["confidence"][0] == pytest.approx(prob[prob < 0.25].mean())
    assert out["accuracy"][3] == truth[-1]


def test_roc_points_match_sklearn():
    truth, score = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr = roc_points(truth, score)
    expected = roc_curve(truth, score)
    assert np.array_equal(fpr, expected[0]) and np.array_equal(tpr, expected[1])


def test_age_band_edges():
    cases = {0: "<18", 17.9: "<18", 18: "18-39", 39: "18-39", 40: "40-59", 59.5: "40-59"}
    cases |= {60: "60-79", 79: "60-79", 80: "80+", 104: "80+"}
    for age, band in cases.items():
        assert age_band(age) == band
    assert age_band(None) == age_band(float("nan")) == age_band(np.float32("nan")) == "unknown"


def test_bootstrap_speed_sanity(capsys):
    groups, truth, score = _cohort(1250, 12, images=4)  # 5000 rows
    start = time.perf_counter()
    est = bootstrap(task_auroc_metric("binary", truth, score), groups, n=1000)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nbootstrap of task_auroc, 5000 rows x 1000 resamples: {elapsed:.2f} s")
    assert est.low < est.value < est.high
