"""Labelling sentences: each finding mention in a sentence, and the status its triggers give it.

Each sentence is labelled on its own, once: reports repeat sentences ("No pneumothorax.") far
more than they vary, so a sentence seen before costs a dict lookup (:func:`_labelled_sentences`,
bounded, remembered with the rules that labelled it). New sentences are lower-cased, their
misspellings fixed, and scanned together by one compiled regex of every finding, trigger and
region phrase (:mod:`medtune.curate.phrases`). A mention is negative or uncertain when the
nearest trigger before or after it, within the rules' word windows, says so; a trigger carries
along a list ("no X, Y or Z"), and a structured-report line label answered in one word
("Pneumothorax: none.") negates what it names. Sentence text is never logged.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass

from medtune.curate.phrases import _WORD, _regex_spans, _squash
from medtune.curate.rules import _CACHE_LIMIT, Rules, _Found

# A structured-report line label ("Heart:", "Lungs and pleura:"): not part of the sentence,
# unless answered in one word: "Pneumothorax: none." (the label names what is absent).
_SUBLABEL = re.compile(r"\s*(?:[-*•]\s*)?[a-z][a-z /&,-]{0,30}:(?=\s|$)")
_ANSWER = re.compile(r"(none|no|negative|absent|nil|not seen|not present|not identified)\W*")
_JOIN = "\x1f"  # between sentences labelled together: no phrase matches across it
# Mentions that continue a list: "no X, Y, or Z" carries the negation from X to Z.
_GLUE = re.compile(r"\s*,?\s*(?:(?:and/or|and|or|nor)\s+(?:[a-z-]+\s+){0,2})?|\s*/\s*")


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int
    text: str
    roles: frozenset[str]


@dataclass(slots=True)
class _Mention:
    start: int
    end: int
    targets: tuple[tuple[str, str | None], ...]  # (finding, its own status or None), sorted
    fixed: bool  # every target has its own status: triggers inside it do not count
    pre: tuple[str, _Trigger] | None = None  # (status, trigger) from a trigger before the mention
    post: tuple[str, _Trigger] | None = None  # (status, trigger) from a trigger after it
    pre_seen: bool = False  # a pre-side trigger or terminator was nearest, even if it gave none


def _lower(text: str) -> str:
    """``text`` lower-cased, character for character (offsets stay those of ``text``)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few Unicode capitals lower to two characters
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return lowered


class _Text:
    """Text lower-cased with typos fixed, and the ways between its offsets and the original's."""

    def __init__(self, text: str, rules: Rules) -> None:
        lowered = _lower(text)
        self.original = text
        self._ends: list[int] = []  # work offsets where a replaced word ends
        self._shifts: list[int] = []  # original minus work offset from that point on
        self._orig_ends: list[int] = []  # the same points as original offsets
        pieces: list[str] = []
        last = length = shift = 0
        # Most sentences have no typo: a set intersection in C says so without a Python loop.
        typos = rules.typo_keys.intersection(rules.typo_word.findall(lowered))
        for m in rules.typo_word.finditer(lowered) if typos else ():
            fixed = rules.typos.get(m.group())
            if fixed is None:
                continue
            pieces += [lowered[last : m.start()], fixed]
            length += m.start() - last + len(fixed)
            shift += len(m.group()) - len(fixed)
            self._ends.append(length)
            self._shifts.append(shift)
            self._orig_ends.append(m.end())
            last = m.end()
        # A leading newline: every word then follows a non-word character (see phrases._Scan).
        self.work = "\n" + ("".join([*pieces, lowered[last:]]) if pieces else lowered)

    def orig(self, pos: int) -> int:
        """The offset in the original text of offset ``pos`` of the work text."""
        pos = max(pos - 1, 0)  # the leading newline
        if not self._ends:
            return pos
        i = bisect.bisect_right(self._ends, pos) - 1
        return pos + (self._shifts[i] if i >= 0 else 0)

    def work_pos(self, pos: int) -> int:
        """The offset in the work text of offset ``pos`` of the original (outside any word)."""
        if not self._ends:
            return pos + 1
        i = bisect.bisect_right(self._orig_ends, pos) - 1
        return pos + 1 - (self._shifts[i] if i >= 0 else 0)


def _labelled_sentences(texts: list[str], rules: Rules) -> list[tuple[_Found, ...]]:
    """The labelled mentions of each sentence of a report (``texts``, as written).

    Remembered: reports repeat sentences ("No pneumothorax.", "The lungs are clear.") far
    more than they vary, and a sentence is labelled the same wherever it appears. The new
    ones are labelled together, in one scan.
    """
    memo = rules.sentence_memo
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    if not new:
        return [memo[t] for t in texts]
    fresh = dict(zip(new, _label_sentences(new, rules), strict=True))
    out = [fresh[t] if t in fresh else memo[t] for t in texts]
    if len(memo) + len(fresh) > _CACHE_LIMIT:  # bounded: reports vary without end
        memo.clear()
    memo.update(fresh)
    return out


def _label_sentences(texts: list[str], rules: Rules) -> list[tuple[_Found, ...]]:
    """Label sentences each on its own, in one scan of them all (per-call costs of the regex
    engine and of Python, paid per sentence, would cost more than the labelling)."""
    doc = _Text(_JOIN.join(texts), rules)
    hits = _scan(doc, 0, len(doc.work), rules)
    mentions = _mentions(doc.work, 0, len(doc.work), hits, rules)
    out: list[tuple[_Found, ...]] = [()] * len(texts)
    if not mentions:
        return out
    bases = list(itertools.accumulate((len(t) + len(_JOIN) for t in texts[:-1]), initial=0))
    starts = [doc.work_pos(base) for base in bases]
    groups: dict[int, list[_Mention]] = {}
    for mention in mentions:
        i = bisect.bisect_right(starts, mention.start) - 1
        if mention.end <= doc.work_pos(bases[i] + len(texts[i])):
            groups.setdefault(i, []).append(mention)
    for i, group in groups.items():
        bounds = (starts[i], doc.work_pos(bases[i] + len(texts[i])))
        out[i] = _label_sentence(doc, bounds, bases[i], group, hits, rules)
    return out


def _label_sentence(
    doc: _Text, bounds: tuple[int, int], base: int, mentions: list[_Mention], hits: _Hits,
    rules: Rules,
) -> tuple[_Found, ...]:  # fmt: skip
    """The labelled mentions of the sentence doc.work[bounds], offsets relative to ``base``,
    its start in the original text."""
    work, (w0, w1) = doc.work, bounds
    label = _SUBLABEL.match(work, w0, w1)
    s0, s1 = _trim(work, label.end() if label else w0, w1)
    answer = _ANSWER.fullmatch(work, s0, s1) if label and s0 < s1 else None
    if answer:  # "Pneumothorax: none." - the line label names what is absent
        trigger = _Trigger(answer.start(1), answer.end(1), answer.group(1), frozenset({"neg"}))
        mentions = [m for m in mentions if m.end <= label.end()]
        for mention in mentions:
            mention.post = ("negative", trigger)
        s0 = _trim(work, w0, s1)[0]
    else:
        mentions = [m for m in mentions if m.start >= s0 and m.end <= s1]
        _apply_triggers(work, mentions, _triggers(s0, s1, hits, mentions), rules)
    regions = [r for r in hits.regions if s0 <= r[0] and r[1] <= s1]
    t0, t1 = doc.orig(s0) - base, doc.orig(s1) - base
    out = []
    for mention in mentions:
        status, trigger_text = _status(mention)
        region = _nearest(regions, mention)
        start, end = doc.orig(mention.start) - base, doc.orig(mention.end) - base
        for finding, fixed in mention.targets:
            out.append((finding, start, end, t0, t1, fixed or status,
                        None if fixed else trigger_text, region))  # fmt: skip
    return tuple(out)


@dataclass
class _Hits:
    """What the scan found."""

    mentions: list[tuple[int, int]]
    blocked: list[tuple[int, int]]
    triggers: list[_Trigger]
    regions: list[tuple[int, int, str]]
    gates: list[tuple[int, frozenset[str]]]  # where the start words of user regexes are


def _scan(doc: _Text, a: int, b: int, rules: Rules) -> _Hits:
    work, size = doc.work, len(doc.work)
    hits = _Hits([], [], [], [], [])
    for start, end in rules.scan.spans(work, a, b):
        text = work[start:end]
        info = rules.hit_info.get(text) or rules.hit_info.get(_squash(text))
        if info is None:
            continue
        if info.gates:
            hits.gates.append((start, info.gates))
        if end < size and work[end].isalnum() and work[end - 1].isalnum():
            continue  # a regex start word inside a longer word: nothing else
        if info.mention:
            hits.mentions.append((start, end))
        if info.exclude:
            hits.blocked.append((start, end))
        if info.roles:
            hits.triggers.append(_Trigger(start, end, text, info.roles))
        if info.region:
            original = doc.original[doc.orig(start) : doc.orig(end)]
            name = rules.region_name(text, original)
            if name:
                hits.regions.append((start, end, name))
    hits.triggers.sort(key=lambda t: t.start)
    return hits


def _mentions(work: str, a: int, b: int, hits: _Hits, rules: Rules) -> list[_Mention]:
    """Finding phrases in work[a:b], leftmost-longest, none inside an excluded phrase."""
    spans = hits.mentions + _regex_spans(work, a, b, hits.gates, rules.mention_gated)
    if not spans:
        return []
    blocked = hits.blocked + _regex_spans(work, a, b, hits.gates, rules.exclude_gated)
    spans.sort(key=lambda span: (span[0], -span[1]))
    out: list[_Mention] = []
    last = -1
    for start, end in spans:
        if start < last or (blocked and any(x < end and start < y for x, y in blocked)):
            continue
        targets = rules.meaning(work[start:end])
        if targets:
            fixed = all(status is not None for _, status in targets)
            out.append(_Mention(start, end, targets, fixed))
            last = end
    return out


def _trim(work: str, a: int, b: int) -> tuple[int, int]:
    """work[a:b] without surrounding space."""
    while a < b and work[a].isspace():
        a += 1
    while b > a and work[b - 1].isspace():
        b -= 1
    return a, b


def _apply_triggers(
    work: str, mentions: list[_Mention], triggers: list[_Trigger], rules: Rules
) -> None:
    """Each mention's status from the triggers around it, then along lists of mentions."""
    if triggers:
        for i, mention in enumerate(mentions):
            lo = mentions[i - 1].end if i else 0
            hi = mentions[i + 1].start if i + 1 < len(mentions) else len(work)
            before = [t for t in triggers if t.start >= lo and t.end <= mention.end]
            after = [t for t in triggers if t.start >= mention.end and t.end <= hi]
            _apply_pre(work, mention, before, rules)
            _apply_post(work, mention, after, rules)
    _distribute(work, mentions)


def _triggers(s0: int, s1: int, hits: _Hits, mentions: list[_Mention]) -> list[_Trigger]:
    """Triggers in the sentence, in order, except inside phrases that carry their own status."""
    fixed = [(m.start, m.end) for m in mentions if m.fixed]
    return [
        t
        for t in hits.triggers
        if s0 <= t.start and t.end <= s1 and not any(a <= t.start and t.end <= b for a, b in fixed)
    ]


def _apply_pre(work: str, mention: _Mention, candidates: list[_Trigger], rules: Rules) -> None:
    """The nearest trigger before the mention (or inside it) decides, if within the window."""
    before = [t for t in candidates if t.roles & {"neg_pre", "unc_pre", "pseudo", "term"}]
    if not before:
        return
    mention.pre_seen = True
    nearest = max(before, key=lambda t: (t.end, t.end - t.start))
    roles = nearest.roles
    if "pseudo" in roles or ("term" in roles and not roles & {"neg_pre", "unc_pre"}):
        return
    if nearest.end <= mention.start:
        gap = len(_WORD.findall(work, nearest.end, mention.start))
        if gap > rules.window_pre:
            return
    mention.pre = ("uncertain" if "unc_pre" in roles else "negative", nearest)


def _apply_post(work: str, mention: _Mention, candidates: list[_Trigger], rules: Rules) -> None:
    """The nearest post-trigger after the mention decides, unless a terminator comes first."""
    after = [t for t in candidates if t.roles & {"neg_post", "unc_post", "term"}]
    if not after:
        return
    nearest = min(after, key=lambda t: (t.start, -(t.end - t.start)))
    roles = nearest.roles
    if not roles & {"neg_post", "unc_post"}:
        return
    if len(_WORD.findall(work, mention.end, nearest.start)) > rules.window_post:
        return
    mention.post = ("uncertain" if "unc_post" in roles else "negative", nearest)


def _distribute(work: str, mentions: list[_Mention]) -> None:
    """Carry a trigger along a list: "no X, Y or Z" (forward), "X and Y have resolved" (back).

    A trigger between two mentions ("A versus B") is about those two: it is not carried back
    to the mentions before them ("opacity, atelectasis versus pneumonia").
    """
    for prev, cur in itertools.pairwise(mentions):
        carry = cur.pre is None and not cur.pre_seen and prev.pre and not prev.fixed
        if carry and _GLUE.fullmatch(work, prev.end, cur.start):
            cur.pre = prev.pre
    for k in range(len(mentions) - 2, -1, -1):
        cur, nxt = mentions[k], mentions[k + 1]
        if cur.post is not None or nxt.post is None or nxt.fixed:
            continue
        after = mentions[k + 2] if k + 2 < len(mentions) else None
        if after is not None and after.pre is not None and after.pre[1] is nxt.post[1]:
            continue
        if _GLUE.fullmatch(work, cur.end, nxt.start):
            cur.post = nxt.post


def _status(mention: _Mention) -> tuple[str, str | None]:
    """Uncertainty wins over negation; no trigger means positive."""
    found = [x for x in (mention.pre, mention.post) if x is not None]
    for wanted in ("uncertain", "negative"):
        for status, trigger in found:
            if status == wanted:
                return status, trigger.text
    return "positive", None


def _nearest(regions: list[tuple[int, int, str]], mention: _Mention) -> str | None:
    """The region hint closest to the mention (inside it counts as closest); first on ties."""
    best, best_gap = None, None
    for a, b, name in regions:
        gap = max(a - mention.end, mention.start - b, 0)
        if best_gap is None or gap < best_gap:
            best, best_gap = name, gap
    return best
