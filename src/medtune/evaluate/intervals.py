"""Patient-bootstrap CIs for the figures that are not AUROCs: grounding and report generation.

The probe suite's intervals come from evaluate/suite.py; these give the same 95% percentile
bootstrap over patients to mIoU, CNR and hit rate, and to BLEU-4, ROUGE-L, CIDEr-D and the
clinical F1::

    scores, samples = evaluate_report_model(export, ws)
    scores.intervals = report_intervals(samples, patients_of(ws, [s.row for s in samples]))
    scores.intervals["CIDEr"].format()    # "0.585 [0.511, 0.662]"

A grounding figure is a mean over items, so a resample is a weight vector. Corpus text metrics
are not (CIDEr-D's document frequencies come from the evaluated references), so each resample
is scored as its own corpus: a patient drawn twice brings each of their reports twice, under
fresh ids, as pycocoevalcap would see such a test set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from medtune.evaluate.stats import Estimate, estimate_from_samples, resample_weights
from medtune.workspace import Workspace

REPORT_FIGURES = ("Bleu_4", "ROUGE_L", "CIDEr", "clinical_f1")


def patients_of(workspace: str | os.PathLike[str], rows: Sequence[int]) -> np.ndarray:
    """The patient pseudonym of each catalog row in ``rows``."""
    patients = pq.read_table(Workspace(workspace).catalog_path, columns=["patient_id"])
    column = np.array(patients.column("patient_id").to_pylist(), dtype=object)
    return column[np.asarray(rows, dtype=np.int64)]


def grounding_intervals(
    scores: Any, patients: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Estimate]:
    """mIoU, CNR and hit rate of ``scores.items`` (patients: one per item)."""
    from medtune.evaluate.grounding_eval import HIT_IOU

    iou = np.array([item.iou for item in scores.items], np.float64)
    cnr = np.array([item.cnr for item in scores.items], np.float64)
    weights = resample_weights(patients, n_boot, seed)
    groups = len(set(patients))
    out = {}
    for name, values in (("miou", iou), ("cnr", cnr), ("hit_rate", (iou >= HIT_IOU) * 1.0)):
        kept = ~np.isnan(values)
        samples = np.array([_weighted_mean(values[kept], w[kept]) for w in weights])
        value = float(values[kept].mean()) if kept.any() else float("nan")
        out[name] = estimate_from_samples(value, samples, int(kept.sum()), groups)
    return out


def report_intervals(
    samples: Sequence[Any],
    patients: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    *,
    r2gen: bool = False,
    rules: Any = None,
) -> dict[str, Estimate]:
    """BLEU-4, ROUGE-L, CIDEr-D and clinical (micro) F1 of generated against reference reports,
    one sample per image (patients: one per sample). Fewer resamples by default than the probe
    suite's: each is a corpus scored whole."""
    from medtune.curate.rules import load_rules
    from medtune.evaluate.report_gen import positive_findings
    from medtune.evaluate.text_metrics import text_scores, tokenize

    rules = rules or load_rules()
    findings = list(rules.findings)
    generated = [" ".join(tokenize(s.generated, r2gen)) for s in samples]
    references = [" ".join(tokenize(s.reference, r2gen)) for s in samples]
    predicted = positive_findings([s.generated for s in samples], rules, findings)
    truth = positive_findings([s.reference for s in samples], rules, findings)
    groups = len(set(patients))

    def scores(counts: np.ndarray | None) -> dict[str, float]:
        counts = np.ones(len(samples), np.int64) if counts is None else counts.astype(np.int64)
        preds, refs = {}, {}
        for i in np.flatnonzero(counts):
            for k in range(int(counts[i])):
                preds[f"{i}#{k}"], refs[f"{i}#{k}"] = [generated[i]], [references[i]]
        out = {key: text_scores(preds, refs)[key] for key in REPORT_FIGURES[:3]} if preds else {}
        out["clinical_f1"] = _micro_f1(predicted, truth, counts)
        return out

    value = scores(None)
    resampled = [scores(w) for w in resample_weights(patients, n_boot, seed)]
    return {
        key: estimate_from_samples(
            value.get(key, float("nan")),
            np.array([r.get(key, np.nan) for r in resampled]),
            len(samples),
            groups,
        )
        for key in REPORT_FIGURES
    }


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((values * weights).sum() / total) if total > 0 else float("nan")


def _micro_f1(predicted: np.ndarray, truth: np.ndarray, counts: np.ndarray) -> float:
    """Micro F1 over (report, finding) pairs, each report counted ``counts`` times (0 when
    nothing is positive on either side, as sklearn's zero_division=0)."""
    w = counts[:, None].astype(np.float64)
    tp = float((w * (predicted & truth)).sum())
    fp = float((w * (predicted & ~truth)).sum())
    fn = float((w * (~predicted & truth)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
