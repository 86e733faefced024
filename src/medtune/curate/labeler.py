"""Rule-based radiology report labeler: report text in, one label per finding out.

NegEx / CheXpert-labeler style. Each finding of the vocabulary is found by its words
(``rules/findings.yaml``), and each mention is read as positive, negative or uncertain from the
negation, uncertainty and pseudo-negation triggers around it in its sentence
(``rules/modifiers.yaml``). Mentions of one finding are aggregated the CheXpert way: positive if
any mention is positive, else uncertain if any is uncertain, else negative if any is negative,
else not_mentioned. The rules are data, not code: users add findings, synonyms and triggers in
YAML files of the same shape (:func:`load_rules`).

What is read: with section headers in the text, FINDINGS, IMPRESSION, CONCLUSION, SUMMARY (and
the like), because INDICATION, HISTORY, COMPARISON and TECHNIQUE hold clinical questions ("r/o
pneumonia") rather than findings; a skipped section ends at its first blank line, and text after
that under no header of its own is read too ("COMPARISON: None." then the body). A header counts
at a line start, or after a sentence end when a colon follows it (exports that lost their line
breaks). Without headers, the whole text is read.

How: each part is cut into sentences, and each sentence is labelled on its own, once
(:mod:`medtune.curate.sentences`), by rules loaded and compiled once
(:mod:`medtune.curate.rules`) into one scan of every phrase (:mod:`medtune.curate.phrases`).
Report text is never logged. ``benchmarks/bench_label.py`` measures the speed (target: 2,000
reports/s on one core).

Not covered: negation across sentences ("Pneumothorax? No."), double negatives, temporal
reasoning beyond pseudo-negations ("previously seen effusion" counts as a mention), and the
meaning of a finding's size or severity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medtune.curate.rules import SHIPPED, Rules, load_rules
from medtune.curate.sentences import _labelled_sentences, _lower

# Rules, load_rules and SHIPPED live in medtune.curate.rules; callers import them from here.
__all__ = [
    "NOT_PATHOLOGY",
    "NO_FINDING",
    "SHIPPED",
    "STATUSES",
    "Evidence",
    "Label",
    "Rules",
    "label_report",
    "load_rules",
]

STATUSES = ("positive", "negative", "uncertain", "not_mentioned")
NO_FINDING = "no_finding"
# Findings that do not make a study abnormal for no_finding (the CheXpert convention).
NOT_PATHOLOGY = frozenset({NO_FINDING, "support_devices"})
# Sentence ends: punctuation followed by a space, or a line end. One character class first, so the
# engine scans for it in C; what follows is checked in Python.
# A period after "vs", "dr", "e.g", "i.e" ends no sentence, nor one inside "1.5 cm"; nor does a
# "?" that opens a sentence: it is a query ("? early consolidation").
_SENTENCE_BREAK = re.compile(
    r"[.;!?\n](?:(?<=\n)|(?<!\bvs\.)(?<!\bdr\.)(?<!\be\.g\.)(?<!\bi\.e\.)"
    r"(?<![\n.;:!?]\?)(?<![\n.;:!?] \?)[.;!?]*(?=\s|\Z))"
)
_TEXT_START = re.compile(r"\S")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


# ---------------------------------------------------------------------------------------------
# Interface.


@dataclass(frozen=True)
class Evidence:
    start: int  # character span of the matched finding phrase in the text
    end: int
    sentence: tuple[int, int]  # span of the sentence it is in
    status: str  # "positive" | "negative" | "uncertain" for this mention
    trigger: str | None  # the negation/uncertainty trigger that applied, if any
    region: str | None  # laterality/location hint in the sentence: "left", "distal radius"


@dataclass(frozen=True)
class Label:
    status: str  # "positive" | "negative" | "uncertain" | "not_mentioned"
    evidence: tuple[Evidence, ...]


_NOT_MENTIONED = Label("not_mentioned", ())
# Aggregation, the CheXpert labeler's rule: positive if any mention is, else uncertain, else
# negative.
_RANK = {"positive": 3, "uncertain": 2, "negative": 1}
_BY_RANK = ("not_mentioned", "negative", "uncertain", "positive")


def label_report(text: str, rules: Rules) -> dict[str, Label]:
    """One :class:`Label` per finding of ``rules.findings`` for the report ``text``.

    The report is cut into the sections worth reading and those into sentences; each sentence
    is labelled on its own (:mod:`medtune.curate.sentences`) and its mentions are added up per
    finding.
    """
    work = "\n" + _lower(text)  # work offset = text offset + 1, as in sentences._Text
    spans = []
    for a, b in _read_ranges(work, rules):
        ends = [m.end() for m in _SENTENCE_BREAK.finditer(work, a, b)]
        ends.append(b)
        spans += zip([a - 1, *[e - 1 for e in ends[:-1]]], [e - 1 for e in ends], strict=True)
    found: dict[str, list[Evidence]] = {}
    best: dict[str, int] = {}  # finding -> rank of its strongest status so far
    labelled = _labelled_sentences([text[a:b] for a, b in spans], rules)
    for (base, _), mentions in zip(spans, labelled, strict=True):
        for finding, start, end, t0, t1, status, trigger, region in mentions:
            # A frozen dataclass built without its __init__, which sets each field through
            # object.__setattr__ and would cost as much as the rest of a warm report.
            evidence = object.__new__(Evidence)
            evidence.__dict__.update(start=base + start, end=base + end,
                                     sentence=(base + t0, base + t1), status=status,
                                     trigger=trigger, region=region)  # fmt: skip
            if finding in found:
                found[finding].append(evidence)
                best[finding] = max(best[finding], _RANK[status])
            else:
                found[finding] = [evidence]
                best[finding] = _RANK[status]
    labels = {
        f: _label(_BY_RANK[best[f]], tuple(found[f])) if f in found else _NOT_MENTIONED
        for f in rules.findings
    }
    _settle_no_finding(labels)
    return labels


def report_body(text: str, rules: Rules) -> str:
    """The parts of ``text`` the labeler reads (FINDINGS, IMPRESSION, text under no header; not
    the indication or history), joined by newlines: what a text tower should learn from."""
    work = "\n" + _lower(text)  # work offset = text offset + 1, as in label_report
    return "\n".join(text[a - 1 : b - 1].strip() for a, b in _read_ranges(work, rules)).strip()


def _label(status: str, evidence: tuple[Evidence, ...]) -> Label:
    label = object.__new__(Label)  # as for Evidence above
    label.__dict__.update(status=status, evidence=evidence)
    return label


def _settle_no_finding(labels: dict[str, Label]) -> None:
    """A "normal study" statement stands only if nothing else is positive or uncertain."""
    label = labels.get(NO_FINDING)
    if label is None or label.status != "positive":
        return
    abnormal = any(
        v.status in ("positive", "uncertain") for k, v in labels.items() if k not in NOT_PATHOLOGY
    )
    if abnormal:
        labels[NO_FINDING] = Label("not_mentioned", label.evidence)


def _read_ranges(work: str, rules: Rules) -> list[tuple[int, int]]:
    """The parts of the report to label.

    Without headers, everything. With headers, the kept sections, what comes before the first
    header (see below), and what follows a skipped section's first paragraph: a report body
    under no header of its own ("COMPARISON: None.\\n\\nLungs are clear.").
    """
    headers = list(rules.header_re.finditer(work))
    if not headers:
        return [(0, len(work))]
    # A header found after a sentence end starts after its punctuation (see Rules.header_re).
    starts = [h.start() + (work[h.start()] != "\n") for h in headers]
    starts.append(len(work))
    # What comes before the first header is read when nothing else is, or when that header
    # follows a sentence on its line: the text before it is then report body, not a banner.
    inline = work[headers[0].start()] != "\n"
    kept = any(h.group("keep") for h in headers)
    ranges = [(0, starts[0])] if starts[0] > 0 and (inline or not kept) else []
    for i, h in enumerate(headers):
        if h.group("keep"):
            ranges.append((h.end(), starts[i + 1]))
        elif body := _after_first_paragraph(work, h.end(), starts[i + 1]):
            ranges.append((body, starts[i + 1]))
    return ranges


def _after_first_paragraph(work: str, a: int, b: int) -> int | None:
    """Where the text of work[a:b] goes on after a blank line, if it does."""
    text = _TEXT_START.search(work, a, b)
    gap = _PARAGRAPH_BREAK.search(work, text.start(), b) if text else None
    return gap.end() if gap else None
