"""Report-generation evaluation as papers report it: text metrics, clinical efficacy, diversity.

Text metrics are pycocoevalcap's (BLEU-1..4, ROUGE-L, CIDEr-D, by
:mod:`medtune.evaluate.text_metrics`; METEOR through pycocoevalcap's Java scorer when Java is
installed). Clinical efficacy (CE, as CheXpert-labelled tables of R2Gen and its successors)
runs the report labeler on generated and true reports and scores the findings it reads as
classification. Diversity catches the collapse of a decoder to one report for every image,
which text metrics reward more than they should::

    scores, samples = evaluate_report_model("ws/runs/finetune-report-full", "ws", r2gen=True)
    scores.as_json()  # {"Bleu_1": ..., "CIDEr": ..., "clinical": {"f1": ...}, "diversity": ...}

    preds, refs = read_reports_json("preds.json"), read_reports_json("refs.json")
    score_reports(preds, refs).scores["Bleu_4"]
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtune.errors import MedtuneError
from medtune.evaluate.text_metrics import text_scores, tokenize

Reports = dict[str, list[str]]
TEXT_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
SHOWN_IDS = 3  # ids named in a mismatch message


def read_reports_json(path: str | os.PathLike[str]) -> Reports:
    """Reports in pycocoevalcap's layout: a JSON object id -> list of strings (a bare string
    is a one-item list). Example file: ``{"img1": ["No effusion."], "img2": "Small effusion."}``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MedtuneError(f"{path}: cannot read the reports ({type(err).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedtuneError(f"{path}: not JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise MedtuneError(f"{path}: not a JSON object of id -> reports")
    reports: Reports = {}
    for key, value in data.items():
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MedtuneError(f"{path}: {key!r} is not a string or a list of strings")
        if not value:
            raise MedtuneError(f"{path}: {key!r} has an empty list of reports")
        reports[key] = value
    return reports


@dataclass
class ReportScores:
    """The scores of one set of generated reports against their references."""

    n: int  # reports scored
    scores: dict[str, float]  # Bleu_1..Bleu_4, ROUGE_L, CIDEr (and METEOR when it ran)
    clinical: dict[str, float]  # precision, recall, f1 (micro), macro_f1
    per_finding: dict[str, dict[str, float]]  # finding -> precision, recall, f1, support
    diversity: dict[str, float]  # distinct (count), distinct_share, most_common_share
    collapsed: bool  # distinct_share < min_distinct
    r2gen: bool  # R2Gen's tokenization (published tables) rather than medtune's
    meteor_note: str | None = None  # why METEOR is missing
    # figure -> patient-bootstrap Estimate (medtune.evaluate.intervals), when computed
    intervals: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The text metrics at the top level (as pycocoevalcap's ``eval``), then the rest."""
        out: dict[str, Any] = dict(self.scores)
        out |= {
            "clinical": self.clinical,
            "per_finding": self.per_finding,
            "diversity": self.diversity,
            "collapsed": self.collapsed,
            "n": self.n,
            "r2gen": self.r2gen,
        }
        if self.meteor_note:
            out["meteor_note"] = self.meteor_note
        if self.intervals:
            out["intervals"] = {k: e.as_json() for k, e in self.intervals.items()}
        return out


def score_reports(
    predictions: Reports,
    references: Reports,
    *,
    r2gen: bool = False,
    clinical: bool = True,
    min_distinct: float = 0.2,
    rules: Any = None,
    meteor: bool = True,
) -> ReportScores:
    """Score one generated report per id against that id's references.

    Text metrics run on ``tokenize(text, r2gen)`` joined by spaces. Clinical efficacy (see
    :func:`clinical_efficacy`) uses ``rules`` (default: the shipped labeler rules). Diversity is
    counted on predictions lower-cased with whitespace collapsed. ``meteor=False`` skips the
    METEOR scorer (a Java process that takes some 15 s to start)."""
    _check_ids(predictions, references)
    for key, hyps in predictions.items():
        if isinstance(hyps, str) or len(hyps) != 1 or not isinstance(hyps[0], str):
            raise MedtuneError(f"prediction {key!r}: needs exactly one report, got {len(hyps)}")
        if isinstance(references[key], str) or not references[key]:
            raise MedtuneError(f"references {key!r}: needs a list of one or more reports")
    ids = list(predictions)
    tok_preds = {k: [" ".join(tokenize(predictions[k][0], r2gen))] for k in ids}
    tok_refs = {k: [" ".join(tokenize(r, r2gen)) for r in references[k]] for k in ids}
    scores = text_scores(tok_preds, tok_refs)
    note = None
    if meteor:
        value, note = _meteor(tok_preds, tok_refs)
        if value is not None:
            scores["METEOR"] = value
    else:
        note = "METEOR not computed (meteor=False)"
    summary: dict[str, float] = {}
    per_finding: dict[str, dict[str, float]] = {}
    if clinical:
        if rules is None:
            from medtune.curate.labeler import load_rules

            rules = load_rules()
        texts = [predictions[k][0] for k in ids]
        summary, per_finding = clinical_efficacy(texts, [references[k] for k in ids], rules)
    diversity = report_diversity([predictions[k][0] for k in ids])
    return ReportScores(
        n=len(ids),
        scores=scores,
        clinical=summary,
        per_finding=per_finding,
        diversity=diversity,
        collapsed=diversity["distinct_share"] < min_distinct,
        r2gen=r2gen,
        meteor_note=note,
    )


def _check_ids(predictions: Reports, references: Reports) -> None:
    no_prediction = sorted(set(references) - set(predictions), key=str)
    no_reference = sorted(set(predictions) - set(references), key=str)
    if no_prediction or no_reference:
        raise MedtuneError(
            f"predictions and references have different ids: {len(no_prediction)} without a "
            f"prediction {_some(no_prediction)}, {len(no_reference)} without a reference "
            f"{_some(no_reference)}"
        )
    if not predictions:
        raise MedtuneError("no reports to score: predictions and references are empty")


def _some(ids: list[Any]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN_IDS])
    return f"({shown}{', ...' if len(ids) > SHOWN_IDS else ''})" if ids else ""


def clinical_efficacy(
    predictions: list[str], references: list[list[str]], rules: Any
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Clinical efficacy (CE): the labeler's findings of each generated report scored against
    those of its references, as the CheXpert-labeller metrics of report-generation papers.

    A finding is positive in a report when :func:`~medtune.curate.labeler.label_report` says
    "positive"; uncertain, negative and unmentioned all count as not positive (the usual CE
    convention). The reference side is positive when any of the id's references is.

    Returns ({precision, recall, f1: micro over (report, finding) pairs; macro_f1: mean F1 over
    the findings positive in some reference or prediction}, {finding: {precision, recall, f1,
    support (reports whose references are positive)}} for those same findings). A ratio with
    nothing to divide is 0, as sklearn's ``zero_division=0``."""
    from sklearn.metrics import precision_recall_fscore_support

    if len(predictions) != len(references):
        raise MedtuneError(f"{len(predictions)} predictions for {len(references)} references")
    findings = list(rules.findings)
    if not findings or not predictions:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "macro_f1": 0.0}, {}
    predicted = positive_findings(predictions, rules, findings)
    truth = np.stack([positive_findings(refs, rules, findings).any(axis=0) for refs in references])
    micro = precision_recall_fscore_support(truth, predicted, average="micro", zero_division=0)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, average=None, zero_division=0
    )
    active = np.flatnonzero(truth.any(axis=0) | predicted.any(axis=0))
    summary = {
        "precision": float(micro[0]),
        "recall": float(micro[1]),
        "f1": float(micro[2]),
        "macro_f1": float(f1[active].mean()) if len(active) else 0.0,
    }
    per_finding = {
        findings[k]: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k in active
    }
    return summary, per_finding


def positive_findings(texts: Sequence[str], rules: Any, findings: list[str]) -> np.ndarray:
    """(reports, findings) bool: where the labeler reads the finding as positive."""
    from medtune.curate.labeler import label_report

    rows = []
    for text in texts:
        labels = label_report(text, rules)
        rows.append([labels[f].status == "positive" for f in findings])
    return np.array(rows, bool).reshape(len(texts), len(findings))


def report_diversity(reports: list[str]) -> dict[str, float]:
    """distinct (count of distinct reports), distinct_share (distinct / reports) and
    most_common_share (share of the most frequent one), lower-cased, whitespace collapsed."""
    counts = Counter(" ".join(text.lower().split()) for text in reports)
    n = max(len(reports), 1)
    return {
        "distinct": len(counts),
        "distinct_share": len(counts) / n,
        "most_common_share": (counts.most_common(1)[0][1] / n) if counts else 0.0,
    }


def _meteor(predictions: Reports, references: Reports) -> tuple[float | None, str | None]:
    """(METEOR, None), or (None, why not): pycocoevalcap's scorer is a Java program."""
    if shutil.which("java") is None:
        return None, "METEOR left out: it needs Java (pycocoevalcap runs meteor-1.5.jar)"
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        return None, "METEOR left out: pycocoevalcap is not installed (pip install medtune[dev])"
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(references, predictions)
    finally:
        # Its __del__ would stop the Java process at some later collection; stop it now.
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score), None


@dataclass
class ReportSample:
    """One image's generated report beside its true report, for a report's pages."""

    image_id: str
    row: int  # catalog row
    generated: str
    reference: str


def evaluate_report_model(
    export_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    split_column: str = "split",
    splits: Sequence[str] = ("test",),
    r2gen: bool = False,
    batch_size: int = 16,
    max_images: int | None = None,
    meteor: bool = True,
    **decode: Any,
) -> tuple[ReportScores, list[ReportSample]]:
    """Generate one report per image of the ``splits`` rows that have a report and score them
    against it (:func:`score_reports`; ids are image ids). The reference is the text the model
    was trained to write: the report body of :class:`~medtune.train.data.ImageDataset` with
    ``text=True``. ``decode`` overrides the export's decoding (``decode="beam", beams=3``);
    ``max_images`` takes the first rows only. The collapse flag uses the export's
    ``min_distinct``."""
    import pyarrow as pa
    import torch

    from medtune.dataset.catalog import read_catalog
    from medtune.train.data import ImageDataset
    from medtune.train.report import generate_reports, load_report_model

    loaded = load_report_model(export_dir)
    data = ImageDataset(
        workspace,
        contract=loaded.contract,
        split_column=split_column,
        split_values=list(splits),
        label_columns=[],
        text=True,
    )
    count = len(data) if max_images is None else min(len(data), max_images)
    rows = data.rows[:count]
    ids = read_catalog(data.workspace.catalog_path, columns=["image_id"]).column(0)
    image_ids = [str(i) for i in ids.take(pa.array(rows)).to_pylist()]
    generated: list[str] = []
    for start in range(0, count, batch_size):
        chunk = range(start, min(start + batch_size, count))
        images = torch.stack([data[i]["image"] for i in chunk])
        generated += generate_reports(loaded, images, batch_size=batch_size, **decode)
    texts = data.texts[:count]
    min_distinct = loaded.record.get("collapse", {}).get("min_distinct", 0.2)
    scores = score_reports(
        {i: [g] for i, g in zip(image_ids, generated, strict=True)},
        {i: [t] for i, t in zip(image_ids, texts, strict=True)},
        r2gen=r2gen,
        min_distinct=float(min_distinct),
        meteor=meteor,
    )
    samples = [
        ReportSample(i, int(r), g, t)
        for i, r, g, t in zip(image_ids, rows, generated, texts, strict=True)
    ]
    return scores, samples
