"""Report-generation metrics: BLEU-1..4, ROUGE-L and CIDEr-D, equal to pycocoevalcap's scorers.

Published report-generation tables are computed with pycocoevalcap (``Bleu(4)``, ``Rouge``,
``Cider``). These functions give the same numbers (to 1e-6) on the same tokens, in plain Python:
no Java, no network, and several times faster because n-grams are counted once per report and
the longest common subsequence uses a bit-parallel recurrence instead of a Python DP table.

Inputs follow pycocoevalcap's layout: a mapping from an id to a list of strings, one string per
prediction and one or more per reference, each already tokenized and joined by single spaces.
:func:`tokenize` makes such strings from raw reports::

    preds = {"s1": [" ".join(tokenize("No acute findings."))]}
    refs = {"s1": [" ".join(tokenize("No acute cardiopulmonary findings."))]}
    text_scores(preds, refs)  # {"Bleu_1": ..., "Bleu_4": ..., "ROUGE_L": ..., "CIDEr": ...}

pycocoevalcap quirks kept on purpose, since matching published numbers is the point: BLEU and
CIDEr split on any whitespace but ROUGE-L splits on single spaces (so an empty string is one
empty token); CIDEr-D's length penalty counts bigrams, not words; its document frequencies come
from the references of the evaluated set alone.
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

from medtune.errors import MedtuneError

Reports = Mapping[Hashable, Sequence[str]]

BLEU_N = 4
ROUGE_BETA = 1.2
CIDER_N = 4
CIDER_SIGMA = 6.0
# pycocoevalcap's bleu_scorer.py: `tiny` is added to matches and to the hypothesis length,
# `small` to guesses and to the reference length, so that zero matches give 0, never 0/0.
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9

# medtune's default tokens: decimal numbers whole ("3.5"), word runs, and each other
# non-space character alone, so "effusion." is "effusion" "." and "3.5cm" is "3.5" "cm".
_TOKEN = re.compile(r"\d+(?:\.\d+)?|\w+|[^\w\s]")
# R2Gen's sentence cleaner strips these characters; `:-\[` is a range (":" to "[") in R2Gen's
# pattern, which also strips ; < = > ? @ and the upper-case letters (already lowered by then).
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def tokenize(text: str, r2gen: bool = False) -> list[str]:
    """Split a report into lower-case tokens for the scorers (join them with single spaces).

    Default: lower case; decimal numbers, word runs and each punctuation mark are tokens.
    ``r2gen=True`` is R2Gen's ``clean_report_mimic_cxr`` normalisation, which published tables
    use: lower case, sentence numbering and repeated "_"/"."/spaces collapsed, punctuation and
    quotes stripped inside sentences, sentences joined by a " . " token and ended by " .".

    >>> tokenize("Small L pleural effusion, 3.5cm.")
    ['small', 'l', 'pleural', 'effusion', ',', '3.5', 'cm', '.']
    >>> tokenize("1. Small effusion. 2. No pneumothorax.", r2gen=True)
    ['small', 'effusion', '.', 'no', 'pneumothorax', '.']
    """
    if r2gen:
        return _r2gen_clean(text).split()
    return _TOKEN.findall(text.lower())


def _r2gen_clean(report: str) -> str:
    """R2Gen's report cleaner, step for step: its repeated replaces stop after a fixed count."""
    text = report.replace("\n", " ")
    for old, new, times in (("__", "_", 7), ("  ", " ", 6), ("..", ".", 8)):
        for _ in range(times):
            text = text.replace(old, new)
    for old, new in (
        ("1. ", ""),
        (". 2. ", ". "),
        (". 3. ", ". "),
        (". 4. ", ". "),
        (". 5. ", ". "),
        (" 2. ", ". "),
        (" 3. ", ". "),
        (" 4. ", ". "),
        (" 5. ", ". "),
    ):
        text = text.replace(old, new)
    sentences = [_r2gen_sentence(s) for s in text.strip().lower().split(". ")]
    return " . ".join(sentences) + " ."


def _r2gen_sentence(sentence: str) -> str:
    for char in ('"', "/", "\\", "'"):
        sentence = sentence.replace(char, "")
    return _R2GEN_STRIP.sub("", sentence.strip().lower())


def _ngrams(ids: list[int], n: int, base: int) -> list[Counter[int]]:
    """Counts of the 1..n-grams of word ids, one Counter per order (index 0: unigrams).

    An n-gram is the integer whose base-`base` digits are its word ids: unique within an order
    (orders have their own Counters), and ints hash far faster than tuples of strings. The
    map() chain keeps the per-token work in C.
    """
    grams = [Counter(ids)]
    codes = ids
    for k in range(1, n):
        # map() stops at its shortest input, so `codes` loses its last entry on each order.
        codes = list(map(operator.add, map(operator.mul, codes, repeat(base)), ids[k:]))
        grams.append(Counter(codes))
    return grams


@dataclass(slots=True)
class _Pair:
    """One id's prediction and references, each counted once for every metric."""

    hyp: str
    refs: Sequence[str]
    hyp_len: int
    ref_lens: list[int]
    hyp_grams: list[Counter[int]]
    ref_grams: list[list[Counter[int]]]


def _prepare(predictions: Reports, references: Reports, n: int) -> list[_Pair]:
    """Check the pycocoevalcap layout and count n-grams (whitespace split, as its scorers)."""
    if predictions.keys() != references.keys():
        missing = set(predictions.keys()) ^ set(references.keys())
        example = next(iter(missing))
        raise MedtuneError(f"predictions and references have different ids, e.g. {example!r}")
    if not predictions:
        raise MedtuneError("no reports to score: predictions and references are empty")
    split = []
    for key, hyps in predictions.items():
        refs = references[key]
        if isinstance(hyps, str) or len(hyps) != 1:
            raise MedtuneError(f"prediction {key!r} must be a list of exactly one string")
        if isinstance(refs, str) or len(refs) < 1:
            raise MedtuneError(f"references {key!r} must be a list of one or more strings")
        split.append((hyps[0], refs, hyps[0].split(), [r.split() for r in refs]))
    # Word ids over the whole set first, so that every n-gram code uses one base.
    words = chain.from_iterable(chain([h], r) for _, _, h, r in split)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(chain.from_iterable(words)))}
    base = len(vocab)
    pairs = []
    for hyp, refs, hyp_words, ref_words in split:
        pairs.append(
            _Pair(
                hyp=hyp,
                refs=refs,
                hyp_len=len(hyp_words),
                ref_lens=[len(w) for w in ref_words],
                hyp_grams=_ngrams(list(map(vocab.__getitem__, hyp_words)), n, base),
                ref_grams=[_ngrams(list(map(vocab.__getitem__, w)), n, base) for w in ref_words],
            )
        )
    return pairs


def bleu(predictions: Reports, references: Reports) -> list[float]:
    """Corpus BLEU-1..4 as ``pycocoevalcap.bleu.bleu.Bleu(4).compute_score`` returns it.

    Clipped n-gram matches and guesses are summed over the corpus; the brevity penalty uses, per
    report, the reference length closest to the prediction's (the shorter one on a tie).
    """
    return _bleu(_prepare(predictions, references, BLEU_N), BLEU_N)


def _bleu(pairs: list[_Pair], n: int) -> list[float]:
    correct = [0] * n
    guess = [0] * n
    test_len = ref_len = 0
    for p in pairs:
        test_len += p.hyp_len
        ref_len += min(p.ref_lens, key=lambda length: (abs(length - p.hyp_len), length))
        for k in range(n):
            # A hypothesis n-gram counts at most as often as in the reference that has it most.
            max_ref = p.ref_grams[0][k]
            for grams in p.ref_grams[1:]:
                max_ref = max_ref | grams[k]
            hyp = p.hyp_grams[k]
            # map() keeps this per-n-gram loop in C.
            correct[k] += sum(map(min, hyp.values(), map(max_ref.get, hyp.keys(), repeat(0))))
            guess[k] += max(0, p.hyp_len - k)
    scores = []
    product = 1.0
    for k in range(n):
        product *= (correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def rouge_l(predictions: Reports, references: Reports) -> float:
    """Mean ROUGE-L F-score (beta 1.2) as ``pycocoevalcap.rouge.rouge.Rouge`` computes it.

    Per report: the best LCS precision and the best LCS recall over its references, combined.
    """
    return _rouge_l(_prepare(predictions, references, 1), ROUGE_BETA)


def _rouge_l(pairs: list[_Pair], beta: float) -> float:
    total = 0.0
    for p in pairs:
        # pycocoevalcap splits on " " here, not on whitespace: keep its empty tokens.
        hyp = p.hyp.split(" ")
        masks = _match_masks(hyp)
        prec = rec = 0.0
        for ref in p.refs:
            ref_tokens = ref.split(" ")
            lcs = _lcs_length(masks, len(hyp), ref_tokens)
            prec = max(prec, lcs / len(hyp))
            rec = max(rec, lcs / len(ref_tokens))
        if prec != 0 and rec != 0:
            total += (1 + beta**2) * prec * rec / (rec + beta**2 * prec)
    return total / len(pairs)


def _match_masks(tokens: list[str]) -> dict[str, int]:
    """For each distinct token, an int whose bit i is set where ``tokens[i]`` is that token."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def _lcs_length(masks: dict[str, int], length: int, other: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro).

    One row of the LCS table is held as the bits of an int (a zero bit marks a step up), so each
    token of `other` costs a few big-int operations instead of a Python loop over `length`.
    """
    full = (1 << length) - 1
    row = full
    for tok in other:
        match = masks.get(tok)
        if match:  # a token absent from the first sequence leaves the row unchanged
            hit = row & match
            row = ((row + hit) | (row - hit)) & full
    return length - row.bit_count()


def cider_d(predictions: Reports, references: Reports) -> float:
    """Corpus CIDEr-D as ``pycocoevalcap.cider.cider.Cider`` computes it (n 4, sigma 6).

    TF-IDF vectors of 1..4-grams (document frequency over the evaluated set's references), the
    prediction's weights clipped at the reference's, a Gaussian length penalty, averaged over
    orders and references, times 10, then averaged over reports.
    """
    return _cider_d(_prepare(predictions, references, CIDER_N), CIDER_N, CIDER_SIGMA)


def _cider_d(pairs: list[_Pair], n: int, sigma: float) -> float:
    idf = _idf(pairs, n)
    # An n-gram in no reference has document frequency 0, floored at 1: idf = log(documents).
    unseen = math.log(len(pairs))
    total = 0.0
    for p in pairs:
        hyp_norms = [_tfidf_norm(p.hyp_grams[k], idf[k], unseen) for k in range(n)]
        hyp_bigrams = max(0, p.hyp_len - 1)
        score = 0.0
        for grams, ref_len in zip(p.ref_grams, p.ref_lens, strict=True):
            # pycocoevalcap's length penalty counts bigrams (its `n == 1`), not words.
            delta = hyp_bigrams - max(0, ref_len - 1)
            penalty = math.exp(-(delta**2) / (2 * sigma**2))
            for k in range(n):
                val = _clipped_dot(p.hyp_grams[k], grams[k], idf[k])
                ref_norm = _tfidf_norm(grams[k], idf[k], unseen)
                if hyp_norms[k] != 0 and ref_norm != 0:
                    val /= hyp_norms[k] * ref_norm
                score += val * penalty
        total += score / n / len(p.ref_grams) * 10.0
    return total / len(pairs)


def _idf(pairs: list[_Pair], n: int) -> list[dict[int, float]]:
    """Per order, log(documents) - log(document frequency) over the references' n-grams.

    A document is one id's set of references, as in pycocoevalcap's compute_doc_freq.
    """
    doc_freq: list[Counter[int]] = [Counter() for _ in range(n)]
    for p in pairs:
        for k in range(n):
            if len(p.ref_grams) == 1:  # one reference: its keys are already distinct
                doc_freq[k].update(p.ref_grams[0][k].keys())
            else:
                doc_freq[k].update(set().union(*(grams[k] for grams in p.ref_grams)))
    log_docs = math.log(len(pairs))
    idf = []
    for freq in doc_freq:
        weights = map(operator.sub, repeat(log_docs), map(math.log, freq.values()))
        idf.append(dict(zip(freq, weights, strict=True)))
    return idf


def _tfidf_norm(counts: Counter[int], idf: dict[int, float], unseen: float) -> float:
    """Euclidean norm of the tf-idf vector of one order's n-gram counts."""
    # map() keeps the per-n-gram loop in C: this norm was most of CIDEr's time as a generator.
    weights = list(map(operator.mul, counts.values(), map(idf.get, counts.keys(), repeat(unseen))))
    return math.sqrt(sum(map(operator.mul, weights, weights)))


def _clipped_dot(hyp: Counter[int], ref: Counter[int], idf: dict[int, float]) -> float:
    """CIDEr-D's clipped dot product: sum of min(hyp, ref) * ref tf-idf weights.

    Both weights share the n-gram's idf, so min(h*idf, r*idf) * r*idf = min(h, r) * r * idf**2;
    only n-grams in both can contribute, and those are all in `idf` (they occur in a reference).
    """
    common = hyp.keys() & ref.keys()
    ref_counts = list(map(ref.__getitem__, common))
    weights = list(map(idf.__getitem__, common))
    # map() chains, as in _tfidf_norm, keep the per-n-gram products in C.
    clipped = map(operator.mul, map(min, map(hyp.__getitem__, common), ref_counts), ref_counts)
    return sum(map(operator.mul, clipped, map(operator.mul, weights, weights)))


def text_scores(predictions: Reports, references: Reports) -> dict[str, float]:
    """All of BLEU-1..4, ROUGE-L and CIDEr-D in one pass, keyed as pycocoevalcap's COCOEvalCap.

    >>> text_scores({1: ["no effusion"]}, {1: ["no effusion"]})["ROUGE_L"]
    1.0
    """
    pairs = _prepare(predictions, references, max(BLEU_N, CIDER_N))
    scores = {f"Bleu_{k + 1}": s for k, s in enumerate(_bleu(pairs, BLEU_N))}
    scores["ROUGE_L"] = _rouge_l(pairs, ROUGE_BETA)
    scores["CIDEr"] = _cider_d(pairs, CIDER_N, CIDER_SIGMA)
    return scores
