"""Patient-bootstrap CIs of grounding and report-generation figures."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.evaluate.grounding_eval import GroundingItem, score_grounding
from medtune.evaluate.intervals import _micro_f1, grounding_intervals, report_intervals
from medtune.evaluate.report_gen import ReportSample
from medtune.evaluate.text_metrics import text_scores, tokenize


def items(ious: list[float]) -> list[GroundingItem]:
    box = (0.0, 0.0, 1.0, 1.0)
    return [GroundingItem(f"I{k}", k, "nodule", "nodule", iou, 1.0 + iou, box, box)
            for k, iou in enumerate(ious)]  # fmt: skip


def test_grounding_intervals_hold_the_means_and_follow_patients() -> None:
    rng = np.random.default_rng(0)
    ious = rng.random(60).tolist()
    patients = np.repeat([f"P{k}" for k in range(30)], 2)
    ci = grounding_intervals(score_grounding(items(ious)), patients, n_boot=300)
    assert ci["miou"].value == pytest.approx(np.mean(ious))
    assert ci["miou"].low < ci["miou"].value < ci["miou"].high
    assert ci["hit_rate"].value == pytest.approx(np.mean(np.array(ious) >= 0.5))
    assert ci["miou"].groups == 30 and ci["miou"].n == 60
    same = grounding_intervals(score_grounding(items([0.4] * 10)), np.arange(10), n_boot=50)
    assert (same["miou"].low, same["miou"].high) == pytest.approx((0.4, 0.4))


def test_report_intervals_score_each_resample_as_a_corpus() -> None:
    texts = ["Small left pleural effusion.", "No pneumothorax.", "Cardiomegaly.",
             "Fracture of the distal radius.", "No acute findings.",
             "Right lower lobe nodule."]  # fmt: skip
    perfect = [ReportSample(f"I{k}", k, t, t) for k, t in enumerate(texts * 3)]
    ci = report_intervals(perfect, np.arange(len(perfect)) // 2, n_boot=40)
    assert ci["ROUGE_L"].value == pytest.approx(1.0)
    assert (ci["ROUGE_L"].low, ci["ROUGE_L"].high) == pytest.approx((1.0, 1.0))
    assert ci["clinical_f1"].value == pytest.approx(1.0)
    shuffled = [ReportSample(f"I{k}", k, texts[(k + 1) % 6], texts[k % 6]) for k in range(18)]
    ci = report_intervals(shuffled, np.arange(18), n_boot=40)
    preds = {k: [" ".join(tokenize(s.generated))] for k, s in enumerate(shuffled)}
    refs = {k: [" ".join(tokenize(s.reference))] for k, s in enumerate(shuffled)}
    assert ci["CIDEr"].value == pytest.approx(text_scores(preds, refs)["CIDEr"])
    assert ci["CIDEr"].low <= ci["CIDEr"].value <= ci["CIDEr"].high


def test_micro_f1_counts_repeated_reports() -> None:
    predicted = np.array([[True, False], [True, True]])
    truth = np.array([[True, False], [False, True]])
    # once each: tp 2, fp 1, fn 0 -> 4/5; the second report twice: tp 3, fp 2 -> 6/8
    assert _micro_f1(predicted, truth, np.array([1, 1])) == pytest.approx(0.8)
    assert _micro_f1(predicted, truth, np.array([1, 2])) == pytest.approx(0.75)
    assert _micro_f1(predicted & False, truth & False, np.array([1, 1])) == 0.0
