"""Statistics behind every evaluation figure: AUROC, patient bootstrap CIs, paired tests, ECE.

Confidence intervals resample *patients*, not images: images of one patient are correlated, and
an image-level bootstrap would give intervals that are too narrow. One resample draws as many
patients as there are, with replacement; each image then counts as many times as its patient was
drawn. Rather than building resampled arrays, every metric here takes ``weights`` (one float per
row, ``None`` = all ones), so one resample is one weight vector and the arrays are never copied.
Integer weights give exactly the metric of the physically repeated rows::

    metric = task_auroc_metric("binary", truth, scores)      # sorts once, then ~50 us a call
    est = bootstrap(metric, groups=patient_ids, n=1000)       # patient-level 95% percentile CI
    est.format()                                              # "0.812 [0.774, 0.851]"
    cmp = paired_bootstrap(metric_a, metric_b, patient_ids)   # same resamples for both models
    cmp.difference, cmp.low, cmp.high, cmp.p_value

AUROC is the weighted Mann-Whitney statistic (ties count half), equal to scikit-learn's
``roc_auc_score(..., sample_weight=weights)``; scores are sorted once per label and each weight
vector costs one gather and two segment sums, which keeps 1000 resamples to well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from medtune.errors import MedtuneError

Weights = np.ndarray | None
Metric = Callable[[Weights], float]
KINDS = ("binary", "multiclass", "multilabel")
# Age bands of the subgroup tables: (exclusive upper bound in years, label).
AGE_BANDS = ((18.0, "<18"), (40.0, "18-39"), (60.0, "40-59"), (80.0, "60-79"), (math.inf, "80+"))


@dataclass(frozen=True)
class _Ranked:
    """One binary problem with its scores sorted once, so each weight vector is cheap to score."""

    n_rows: int  # rows of the full arrays the weights refer to
    index: np.ndarray  # full-array row of each used row, in ascending score order
    positive: np.ndarray  # truth of the used rows, in the same order
    starts: np.ndarray  # offset of each run of tied scores in that order

    @classmethod
    def build(cls, truth: np.ndarray, score: np.ndarray, rows: np.ndarray | None = None) -> _Ranked:
        n_rows = len(truth)
        index = np.arange(n_rows) if rows is None else np.flatnonzero(rows)
        t, s = truth[index], score[index]
        if not np.all(np.isfinite(s)):
            raise MedtuneError("AUROC: scores contain nan or inf")
        if not np.all((t == 0) | (t == 1)):
            raise MedtuneError("AUROC: truth must be 0 or 1 on the rows used (mask the others)")
        order = np.argsort(s, kind="stable")
        s = s[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, int)
        return cls(n_rows, index[order], t[order] == 1, starts)

    def auc(self, weights: Weights = None) -> float:
        if len(self.index) == 0:
            return math.nan
        if weights is None:
            w = np.ones(len(self.index))
        else:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (self.n_rows,):
                raise MedtuneError(
                    f"AUROC: weights have shape {weights.shape}, need ({self.n_rows},)"
                )
            w = weights[self.index]
        pos = w * self.positive
        if len(self.starts) == len(w):  # no tied scores: skip the segment sums
            pos_tie, neg_tie = pos, w - pos
        else:
            pos_tie = np.add.reduceat(pos, self.starts)
            neg_tie = np.add.reduceat(w, self.starts) - pos_tie
        total_pos, total_neg = pos_tie.sum(), neg_tie.sum()
        if total_pos <= 0 or total_neg <= 0:
            return math.nan
        # A positive beats every negative with a lower score and ties half of its own group.
        below = np.cumsum(neg_tie) - neg_tie
        return float(np.dot(pos_tie, below + 0.5 * neg_tie) / (total_pos * total_neg))


def weighted_auroc(
    truth: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Binary AUROC (probability a positive outranks a negative, ties count half), each row
    counted ``weights`` times. nan when either class has zero total weight."""
    truth = np.asarray(truth, dtype=np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if truth.shape != score.shape:
        raise MedtuneError(f"AUROC: truth has {truth.size} rows but score has {score.size}")
    return _Ranked.build(truth, score).auc(weights)


def _problems(kind: str, truth: np.ndarray, scores: np.ndarray, mask: np.ndarray | None):
    """The binary problems (one per class or label) a task's AUROC averages."""
    if kind not in KINDS:
        raise MedtuneError(f"AUROC: unknown task kind {kind!r} (expected one of {KINDS})")
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    n = len(truth)
    if len(scores) != n:
        raise MedtuneError(f"AUROC: truth has {n} rows but scores have {len(scores)}")
    if kind == "multilabel":
        if truth.ndim != 2 or scores.shape != truth.shape:
            raise MedtuneError(
                f"AUROC: multilabel needs truth and scores of shape (N, L), got "
                f"{truth.shape} and {scores.shape}"
            )
        mask = ~np.isnan(truth) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != truth.shape:
            raise MedtuneError(f"AUROC: mask has shape {mask.shape}, need {truth.shape}")
        return [_Ranked.build(truth[:, j], scores[:, j], mask[:, j]) for j in range(truth.shape[1])]
    rows = None if mask is None else np.asarray(mask, dtype=bool)
    if rows is not None and rows.shape != (n,):
        raise MedtuneError(f"AUROC: {kind} mask has shape {rows.shape}, need ({n},)")
    if kind == "binary":
        if truth.ndim != 1 or scores.shape != (n,):
            raise MedtuneError(
                f"AUROC: binary needs truth and scores of shape (N,), got {scores.shape}"
            )
        return [_Ranked.build(truth, scores, rows)]
    if truth.ndim != 1 or scores.ndim != 2:
        raise MedtuneError(
            f"AUROC: multiclass needs truth (N,) and scores (N, C), "
            f"got {truth.shape} and {scores.shape}"
        )
    used = truth if rows is None else truth[rows]
    if np.any((used < 0) | (used >= scores.shape[1]) | (used != np.round(used))):
        raise MedtuneError(f"AUROC: multiclass truth must be class ids 0..{scores.shape[1] - 1}")
    return [
        _Ranked.build((truth == c).astype(np.float64), scores[:, c], rows)
        for c in range(scores.shape[1])
    ]


def _mean_scorable(values: np.ndarray) -> float:
    scorable = values[~np.isnan(values)]
    return float(scorable.mean()) if len(scorable) else math.nan


def task_auroc_metric(
    kind: str, truth: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None
) -> Metric:
    """``task_auroc`` as a function of the weights, with the sorting done once: the fast
    ``metric`` for :func:`bootstrap` and :func:`paired_bootstrap`."""
    problems = _problems(kind, truth, scores, mask)
    return lambda weights=None: _mean_scorable(np.array([p.auc(weights) for p in problems]))


def task_auroc(
    kind: str,
    truth: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> float:
    """kind "binary": truth (N,) 0/1, scores (N,). kind "multiclass": truth (N,) int class ids,
    scores (N, C): macro one-vs-rest AUROC over classes that have both positive and negative
    weight in this (re)sample. kind "multilabel": truth (N, L) 0/1 floats, mask (N, L) bool (rows
    to use per label; None = the non-nan truth), scores (N, L): mean AUROC over labels with both
    classes. For binary and multiclass a mask (N,) selects rows. nan if nothing is scorable."""
    return task_auroc_metric(kind, truth, scores, mask)(weights)


def per_class_auroc(
    kind: str,
    truth: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The per-class (multiclass) / per-label (multilabel) / single (binary, shape (1,)) AUROCs
    that task_auroc averages (nan where not scorable)."""
    return np.array([p.auc(weights) for p in _problems(kind, truth, scores, mask)])


def _group_codes(groups: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes 0..G-1 for the groups, and G; missing groups are an error."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) == 0:
        raise MedtuneError(f"bootstrap: groups must be a non-empty 1-d sequence, got {arr.shape}")
    if arr.dtype.kind in "biuUS" or (arr.dtype.kind == "f" and not np.isnan(arr).any()):
        uniques, codes = np.unique(arr, return_inverse=True)
        return codes.ravel(), len(uniques)
    seen: dict[Hashable, int] = {}
    codes = np.empty(len(arr), dtype=np.int64)
    for i, g in enumerate(groups):
        if g is None or (isinstance(g, float) and math.isnan(g)):
            raise MedtuneError(f"bootstrap: row {i} has no group (patient id)")
        codes[i] = seen.setdefault(g, len(seen))
    return codes, len(seen)


def resample_weights(groups: Sequence[Hashable] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n, N) bootstrap weights: for each of n resamples, patients drawn with replacement
    (as many draws as distinct groups), each row weighted by its group's draw count."""
    codes, n_groups = _group_codes(groups)
    rng = np.random.default_rng(seed)
    # G uniform draws with replacement, counted per group, is a multinomial(G, 1/G) draw.
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n)
    return counts.astype(np.float32)[:, codes]


@dataclass(frozen=True)
class Estimate:
    """A metric on all rows with its patient-bootstrap percentile interval."""

    value: float  # the metric on all rows (weights None)
    low: float  # lower percentile of the bootstrap distribution (nan-ignoring)
    high: float  # upper percentile
    n: int  # rows
    groups: int  # distinct groups (patients)

    def format(self, digits: int = 3) -> str:
        """``"0.812 [0.774, 0.851]"``; ``"-"`` for a nan value, ``[-, -]`` for a missing CI."""
        if math.isnan(self.value):
            return "-"
        bounds = [("-" if math.isnan(b) else f"{b:.{digits}f}") for b in (self.low, self.high)]
        return f"{self.value:.{digits}f} [{bounds[0]}, {bounds[1]}]"

    def as_json(self) -> dict[str, float | int | None]:
        """{value, low, high, n, patients}, NaN as null (JSON has no NaN)."""
        bounds = {k: finite_or_none(v) for k, v in
                  (("value", self.value), ("low", self.low), ("high", self.high))}  # fmt: skip
        return {**bounds, "n": self.n, "patients": self.groups}


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None or not finite (for JSON)."""
    return None if value is None or not math.isfinite(value) else float(value)


def _interval(samples: np.ndarray, n: int, level: float) -> tuple[float, float, np.ndarray]:
    """Percentile interval of the non-nan samples (nan when over half of the n are nan)."""
    if not 0 < level < 1:
        raise MedtuneError(f"bootstrap: level must be in (0, 1), got {level}")
    kept = samples[~np.isnan(samples)]
    if len(kept) * 2 < n or len(kept) == 0:
        return math.nan, math.nan, kept
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return float(low), float(high), kept


def bootstrap(
    metric: Metric,
    groups: Sequence[Hashable] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """metric(weights) -> float. Percentile CI over patient resamples (nan resamples dropped;
    if more than half are nan, low/high are nan)."""
    weights = resample_weights(groups, n, seed)
    samples = np.array([metric(w) for w in weights], dtype=np.float64)
    n_groups = _group_codes(groups)[1]
    return estimate_from_samples(float(metric(None)), samples, weights.shape[1], n_groups, level)


def estimate_from_samples(
    value: float, samples: np.ndarray, n: int, groups: int, level: float = 0.95
) -> Estimate:
    """An :class:`Estimate` from a metric's value and its resampled values (as
    :func:`bootstrap` makes them; for callers that share one weight matrix across metrics)."""
    samples = np.asarray(samples, dtype=np.float64)
    low, high, _ = _interval(samples, len(samples), level)
    if math.isnan(value):
        low = high = math.nan
    return Estimate(float(value), low, high, n, groups)


@dataclass(frozen=True)
class Comparison:
    """metric_b minus metric_a, with a paired patient-bootstrap CI and two-sided p-value."""

    difference: float  # metric_b - metric_a on all rows
    low: float  # CI of the difference
    high: float
    p_value: float  # two-sided paired bootstrap p-value for difference == 0
    n: int  # rows


def paired_bootstrap(
    metric_a: Metric,
    metric_b: Metric,
    groups: Sequence[Hashable] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """Compare two models on the same rows; both metrics see the SAME weights in each resample.

    The p-value is the percentile-bootstrap two-sided test of "difference == 0": with d_1..d_m
    the non-nan resampled differences (b - a),
    ``p = min(1, 2 * min((#{d_i <= 0} + 1) / (m + 1), (#{d_i >= 0} + 1) / (m + 1)))``;
    the +1 keeps p above 0 (a bootstrap of m resamples cannot show p < 1/(m+1)). Identical
    metrics give p = 1. If more than half of the resamples are nan, the CI and p are nan.
    """
    weights = resample_weights(groups, n, seed)
    samples = np.array([metric_b(w) - metric_a(w) for w in weights], dtype=np.float64)
    difference = float(metric_b(None) - metric_a(None))
    return comparison_from_samples(difference, samples, weights.shape[1], level)


def comparison_from_samples(
    difference: float, samples: np.ndarray, n: int = 0, level: float = 0.95
) -> Comparison:
    """A :class:`Comparison` from the difference on all rows and its paired resampled values
    (b - a under the same weights), with :func:`paired_bootstrap`'s interval and p-value."""
    samples = np.asarray(samples, dtype=np.float64)
    low, high, kept = _interval(samples, len(samples), level)
    if math.isnan(low) or math.isnan(difference):
        return Comparison(difference, math.nan, math.nan, math.nan, n)
    m = len(kept)
    below, above = (np.sum(kept <= 0) + 1) / (m + 1), (np.sum(kept >= 0) + 1) / (m + 1)
    return Comparison(difference, low, high, float(min(1.0, 2 * min(below, above))), n)


def _bin_sums(truth, prob, bins: int, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: total weight, weighted truth sum, weighted probability sum."""
    truth = np.asarray(truth, dtype=np.float64).ravel()
    prob = np.asarray(prob, dtype=np.float64).ravel()
    if truth.shape != prob.shape:
        raise MedtuneError(f"calibration: truth has {truth.size} rows but prob has {prob.size}")
    if not np.all((prob >= 0) & (prob <= 1)):
        raise MedtuneError("calibration: probabilities must lie in [0, 1] (no nan)")
    if bins < 1:
        raise MedtuneError(f"calibration: bins must be at least 1, got {bins}")
    w = np.ones_like(prob) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != prob.shape:
        raise MedtuneError(f"calibration: weights have {w.size} rows but prob has {prob.size}")
    # Bin i is [i/bins, (i+1)/bins); the last bin also takes 1.0.
    idx = np.minimum((prob * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, weights=w, minlength=bins)
    return (
        count,
        np.bincount(idx, weights=w * truth, minlength=bins),
        np.bincount(idx, weights=w * prob, minlength=bins),
    )


def expected_calibration_error(
    truth: np.ndarray, prob: np.ndarray, bins: int = 10, weights: np.ndarray | None = None
) -> float:
    """ECE with equal-width probability bins on [0, 1]: sum over bins of (bin weight / total) *
    |mean truth - mean prob| (Guo et al. 2017). Binary probabilities; for multilabel the caller
    flattens the masked entries. Last bin includes 1.0. nan when the total weight is 0."""
    count, truth_sum, prob_sum = _bin_sums(truth, prob, bins, weights)
    total = count.sum()
    # weight/total * |sum_t/weight - sum_p/weight| == |sum_t - sum_p| / total
    return float(np.abs(truth_sum - prob_sum).sum() / total) if total > 0 else math.nan


def reliability(truth: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """For a reliability diagram: {"confidence": mean prob per bin, "accuracy": mean truth per
    bin, "count": rows per bin, "edges": bin edges}; empty bins have nan means."""
    count, truth_sum, prob_sum = _bin_sums(truth, prob, bins, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = prob_sum / count, truth_sum / count
    return {
        "confidence": confidence,
        "accuracy": accuracy,
        "count": count.astype(np.int64),
        "edges": np.linspace(0.0, 1.0, bins + 1),
    }


def roc_points(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve (sklearn.metrics.roc_curve), for plots."""
    from sklearn.metrics import roc_curve  # imported here: sklearn is slow to import

    fpr, tpr, _ = roc_curve(np.asarray(truth).ravel(), np.asarray(score).ravel())
    return fpr, tpr


def age_band(age: float | None) -> str:
    """ "<18", "18-39", "40-59", "60-79", "80+", or "unknown" for None/nan."""
    try:
        years = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "unknown"
    if math.isnan(years):
        return "unknown"
    return next(label for upper, label in AGE_BANDS if years < upper)
