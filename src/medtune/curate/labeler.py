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

How: each part is cut into sentences, and each sentence is labelled on its own, once: reports
repeat sentences ("No pneumothorax.") far more than they vary, so a sentence seen before costs a
dict lookup (:meth:`Rules.sentences`, bounded). New sentences are lower-cased, their misspellings
fixed (single-edit variants of every vocabulary word of 7+ letters are a dict lookup), and
scanned together by one compiled regex of every finding, trigger and region phrase (a character
trie, so the engine branches on one character rather than trying hundreds of alternatives);
finding patterns written as regexes are tried only where the word they start with is. Report
text is never logged. ``benchmarks/bench_label.py`` measures the speed (target: 2,000 reports/s
on one core).

Not covered: negation across sentences ("Pneumothorax? No."), double negatives, temporal
reasoning beyond pseudo-negations ("previously seen effusion" counts as a mention), and the
meaning of a finding's size or severity.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medtune.errors import MedtuneError

STATUSES = ("positive", "negative", "uncertain", "not_mentioned")
NO_FINDING = "no_finding"
# Findings that do not make a study abnormal for no_finding (the CheXpert convention).
NOT_PATHOLOGY = frozenset({NO_FINDING, "support_devices"})
SHIPPED = ("findings.yaml", "modifiers.yaml")
PHRASE_KINDS = ("mentions", "negative", "uncertain", "positive", "exclude")
FIXED_KINDS = {"negative": "negative", "uncertain": "uncertain", "positive": "positive"}
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_WORD = re.compile(r"\w+")
# Sentence ends: punctuation followed by a space, or a line end. One character class first, so the
# engine scans for it in C; what follows is checked in Python.
# A period after "vs", "dr", "e.g", "i.e" ends no sentence, nor one inside "1.5 cm"; nor does a
# "?" that opens a sentence: it is a query ("? early consolidation").
_SENTENCE_BREAK = re.compile(
    r"[.;!?\n](?:(?<=\n)|(?<!\bvs\.)(?<!\bdr\.)(?<!\be\.g\.)(?<!\bi\.e\.)"
    r"(?<![\n.;:!?]\?)(?<![\n.;:!?] \?)[.;!?]*(?=\s|\Z))"
)
# A structured-report line label ("Heart:", "Lungs and pleura:"): not part of the sentence,
# unless answered in one word: "Pneumothorax: none." (the label names what is absent).
_SUBLABEL = re.compile(r"\s*(?:[-*•]\s*)?[a-z][a-z /&,-]{0,30}:(?=\s|$)")
_ANSWER = re.compile(r"(none|no|negative|absent|nil|not seen|not present|not identified)\W*")
_JOIN = "\x1f"  # between sentences labelled together: no phrase matches across it
_TEXT_START = re.compile(r"\S")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# Mentions that continue a list: "no X, Y, or Z" carries the negation from X to Z.
_GLUE = re.compile(r"\s*,?\s*(?:(?:and/or|and|or|nor)\s+(?:[a-z-]+\s+){0,2})?|\s*/\s*")
_END = r"(?:(?!\w)|(?<!\w))"  # a phrase ends at a word boundary, or in punctuation ("?")
_CACHE_LIMIT = 50_000
# A labelled mention of a sentence, offsets relative to the sentence in the original text:
# (finding, start, end, sentence start, sentence end, status, trigger, region).
_Found = tuple[str, int, int, int, int, str, str | None, str | None]


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


class Rules:
    """Compiled rules: build with :func:`load_rules`; read-only and safe to share."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.findings: tuple[str, ...] = tuple(raw["findings"])
        self._compile_mentions(raw["findings"])
        self._compile_triggers(raw)
        self._compile_regions(raw["regions"])
        self._compile_sections(raw["sections"])
        self.window_pre = int(raw["window"].get("pre", 6))
        self.window_post = int(raw["window"].get("post", 4))
        vocabulary = self._vocabulary | self._trigger_words | self._region_words
        self.typos = _typo_table(vocabulary, raw["typos"], int(raw["min_typo_length"]))
        shortest = min((len(k) for k in self.typos), default=0)
        self.typo_word = re.compile(rf"[a-z]{{{max(shortest, 1)},}}")
        self.typo_keys = frozenset(self.typos)
        self._compile_scan()
        self._sentences: dict[str, tuple[_Found, ...]] = {}

    def _compile_scan(self) -> None:
        """One trie scan per report part for finding, exclusion, trigger and region phrases
        and the start words of user regexes: one pass of the regex engine instead of five."""
        literal, excluded, hints = set(self._literal), self._exclude_lit, self._hints
        gates = {g for x in self.mention_regexes + self.exclude_regexes for g in x.gates or ()}
        phrases = literal | excluded | set(self._roles) | hints
        self.scan = _Scan(phrases, prefixes=gates)
        self.hit_info: dict[str, _Hit] = {}
        for phrase in phrases | gates:
            self.hit_info[phrase] = _Hit(
                mention=phrase in literal,
                exclude=phrase in excluded,
                roles=self._roles.get(phrase, frozenset()),
                region=phrase in hints,
                gates=frozenset(g for g in gates if phrase.startswith(g)),
            )

    def _compile_mentions(self, findings: dict[str, dict[str, list[str]]]) -> None:
        """One regex over every finding phrase; what each phrase means is looked up per match."""
        literal: dict[str, set[tuple[str, str | None]]] = {}
        regexes: dict[str, set[tuple[str, str | None]]] = {}
        exclude_lit: set[str] = set()
        exclude_re: set[str] = set()
        for name, spec in findings.items():
            for kind in PHRASE_KINDS:
                for phrase in spec.get(kind, []):
                    if kind == "exclude":
                        _split(phrase, exclude_lit, exclude_re)
                        continue
                    target = (name, FIXED_KINDS.get(kind))
                    if phrase.startswith("re:"):
                        regexes.setdefault(phrase[3:], set()).add(target)
                        continue
                    forms = _plurals(_squash(phrase)) if kind == "mentions" else [_squash(phrase)]
                    for form in forms:
                        literal.setdefault(form, set()).add(target)
        self._literal = {k: frozenset(v) for k, v in literal.items()}
        self._regexes = [(re.compile(p), frozenset(t)) for p, t in regexes.items()]
        self.mention_regexes = [_Gated(p) for p in regexes]
        self._exclude_lit = exclude_lit
        self.exclude_regexes = [_Gated(p) for p in exclude_re]
        self.mention_gated = _GatedSet(self.mention_regexes)
        self.exclude_gated = _GatedSet(self.exclude_regexes)
        self._meaning: dict[str, tuple[tuple[str, str | None], ...]] = {}
        words = {w for phrase in literal for w in _WORD.findall(phrase)}
        for pattern in regexes:
            words.update(re.findall(r"[a-z]{7,}", pattern))
        self._vocabulary = words

    def _compile_triggers(self, raw: dict[str, Any]) -> None:
        """One trie regex over every trigger; a phrase may have several roles ("versus")."""
        roles: dict[str, set[str]] = {}
        groups = {
            "neg_pre": raw["negation"]["pre"],
            "neg_post": raw["negation"]["post"],
            "unc_pre": raw["uncertainty"]["pre"],
            "unc_post": raw["uncertainty"]["post"],
            "pseudo": raw["pseudo_negation"],
            "term": raw["terminators"],
        }
        for role, phrases in groups.items():
            for phrase in phrases:
                roles.setdefault(_squash(phrase), set()).add(role)
        self._roles = {k: frozenset(v) for k, v in roles.items()}
        self._trigger_words = {w for phrase in roles for w in _WORD.findall(phrase)}

    def _compile_regions(self, regions: dict[str, Any]) -> None:
        """One trie of every hint: sides, sites, "side site" pairs and abbreviations."""
        sides = [_squash(x) for x in regions["sides"]]
        sites = [_squash(x) for x in regions["sites"]]
        self._abbr = {k.lower(): v for k, v in regions["abbreviations"].items()}
        self._letters = {k.lower(): (k, v) for k, v in regions["letters"].items()}
        hints = {*sides, *sites, *self._abbr, *self._letters}
        self._region_words = {w for hint in [*sides, *sites] for w in _WORD.findall(hint)}
        hints |= {f"{side} {site}" for side in sides for site in sites}
        self._hints = hints

    def _compile_sections(self, sections: dict[str, list[str]]) -> None:
        keep = {_squash(s) for s in sections["keep"]}
        skip = {_squash(s) for s in sections["skip"]}
        # A header starts a line, or follows a sentence end when it has a colon: a report
        # whose line breaks were lost in an export ("... r/o pneumonia. FINDINGS: ...").
        # One character class first, so the engine scans for it in C.
        self.header_re = re.compile(
            rf"[\n.;](?:(?<=\n)(?P<line>)[ \t]*(?:\d+[.)][ \t]*)?|(?<=[.;])[ \t]+)"
            rf"(?:(?P<keep>{_trie(keep)})|{_trie(skip - keep)})"
            r"(?:[ \t]*(?:/|&|and)[ \t]*[a-z]+(?:[ \t]+[a-z]+)?)?[ \t]*(?::|(?(line)$|(?!)))",
            re.M,
        )

    def meaning(self, phrase: str) -> tuple[tuple[str, str | None], ...]:
        """(finding, fixed status or None) for a matched phrase: every pattern that matches it.

        A phrase may match several patterns ("no acute osseous abnormality" is a negative
        fracture and a no_finding statement); the regex engine reports only one, so the others
        are found here, once per distinct phrase.
        """
        found = self._meaning.get(phrase)
        if found is not None:
            return found
        key = _squash(phrase)
        found = self._meaning.get(key)
        if found is None:
            targets = set(self._literal.get(key, ()))
            for regex, meaning in self._regexes:
                if regex.fullmatch(key):
                    targets |= meaning
            found = tuple(sorted(targets, key=lambda t: (t[0], t[1] or "")))
            if len(self._meaning) > _CACHE_LIMIT:  # bounded: reports vary without end
                self._meaning.clear()
            self._meaning[key] = found
        self._meaning[phrase] = found
        return found

    def sentences(self, texts: list[str]) -> list[tuple[_Found, ...]]:
        """The labelled mentions of each sentence of a report (``texts``, as written).

        Remembered: reports repeat sentences ("No pneumothorax.", "The lungs are clear.") far
        more than they vary, and a sentence is labelled the same wherever it appears. The new
        ones are labelled together, in one scan.
        """
        memo = self._sentences
        new = list(dict.fromkeys(t for t in texts if t not in memo))
        if not new:
            return [memo[t] for t in texts]
        fresh = dict(zip(new, _label_sentences(new, self), strict=True))
        out = [fresh[t] if t in fresh else memo[t] for t in texts]
        if len(memo) + len(fresh) > _CACHE_LIMIT:  # bounded: reports vary without end
            memo.clear()
        memo.update(fresh)
        return out

    def clear_cache(self) -> None:
        """Forget the sentences labelled so far (to time labelling from cold)."""
        self._sentences.clear()
        self._meaning.clear()

    def region_name(self, hint: str, original: str) -> str | None:
        """The hint a region match stands for; "L"/"R" only count when written in capitals."""
        key = _squash(hint)
        if key in self._letters:
            letter, side = self._letters[key]
            return side if original == letter else None
        return self._abbr.get(key, key)


# ---------------------------------------------------------------------------------------------
# Loading and merging rule files.


def load_rules(extra: list[Path] | None = None) -> Rules:
    """The shipped rules, then each of ``extra`` (same format) added to them, compiled.

    A malformed file raises :class:`MedtuneError` naming the file and the problem.
    """
    if not extra:
        return _default_rules()
    raw = _empty()
    for name, text in _shipped():
        _merge(raw, _parse(text, f"medtune/curate/rules/{name}"), f"medtune/curate/rules/{name}")
    for path in extra:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MedtuneError(f"{path}: cannot read rules file ({exc.strerror})") from None
        _merge(raw, _parse(text, str(path)), str(path))
    return _compiled(raw, str(extra[-1]))


@cache
def _default_rules() -> Rules:
    raw = _empty()
    for name, text in _shipped():
        _merge(raw, _parse(text, f"medtune/curate/rules/{name}"), f"medtune/curate/rules/{name}")
    return _compiled(raw, "medtune/curate/rules")


def _compiled(raw: dict[str, Any], source: str) -> Rules:
    try:
        return Rules(raw)
    except re.error as exc:  # two valid patterns can still fail together only by size
        raise MedtuneError(f"{source}: rules do not compile ({exc})") from None


def _shipped() -> Iterator[tuple[str, str]]:
    folder = resources.files("medtune.curate").joinpath("rules")
    for name in SHIPPED:
        yield name, folder.joinpath(name).read_text(encoding="utf-8")


def _empty() -> dict[str, Any]:
    return {
        "findings": {},
        "negation": {"pre": [], "post": []},
        "uncertainty": {"pre": [], "post": []},
        "pseudo_negation": [],
        "terminators": [],
        "window": {},
        "min_typo_length": 7,
        "typos": {},
        "regions": {"sides": [], "sites": [], "abbreviations": {}, "letters": {}},
        "sections": {"keep": [], "skip": []},
    }


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MedtuneError(f"{source}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MedtuneError(f"{source}: expected a mapping of rule sections at the top level")
    return data


def _merge(raw: dict[str, Any], data: dict[str, Any], source: str) -> None:
    """Add one file's rules to ``raw``, checking its shape as it goes."""
    for key, value in data.items():
        if key not in raw:
            known = ", ".join(raw)
            raise MedtuneError(f"{source}: unknown section {key!r} (expected one of {known})")
        where = f"{source}: {key}"
        if key == "findings":
            _merge_findings(raw["findings"], value, where)
        elif key in ("negation", "uncertainty"):
            for part, phrases in _mapping(value, where, ("pre", "post")).items():
                raw[key][part] += _phrases(phrases, f"{where}.{part}")
        elif key in ("pseudo_negation", "terminators"):
            raw[key] += _phrases(value, where)
        elif key == "window":
            for part, n in _mapping(value, where, ("pre", "post")).items():
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise MedtuneError(f"{where}.{part}: expected a whole number of words")
                raw[key][part] = n
        elif key == "min_typo_length":
            if not isinstance(value, int) or isinstance(value, bool) or value < 4:
                raise MedtuneError(f"{where}: expected a whole number, 4 or more")
            raw[key] = value
        elif key == "typos":
            raw[key].update(_words(value, where))
        elif key == "regions":
            parts = ("sides", "sites", "abbreviations", "letters")
            for part, items in _mapping(value, where, parts).items():
                if part in ("abbreviations", "letters"):
                    raw[key][part].update(_words(items, f"{where}.{part}", lower=False))
                else:
                    raw[key][part] += _phrases(items, f"{where}.{part}")
        else:  # sections
            for part, names in _mapping(value, where, ("keep", "skip")).items():
                raw[key][part] += _phrases(names, f"{where}.{part}")


def _merge_findings(findings: dict[str, dict[str, list[str]]], value: Any, where: str) -> None:
    for name, spec in _mapping(value, where, None).items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise MedtuneError(f"{where}: finding name {name!r} must be snake_case")
        spec = {} if spec is None else spec
        entry = findings.setdefault(name, {})
        for kind, phrases in _mapping(spec, f"{where}.{name}", PHRASE_KINDS).items():
            checked = _phrases(phrases, f"{where}.{name}.{kind}")
            for phrase in checked:
                if phrase.startswith("re:"):
                    _check_regex(phrase[3:], f"{where}.{name}.{kind}")
            entry.setdefault(kind, [])
            entry[kind] += checked


def _mapping(value: Any, where: str, keys: Iterable[str] | None) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise MedtuneError(f"{where}: expected a mapping")
    if keys is not None:
        allowed = tuple(keys)
        for key in value:
            if key not in allowed:
                raise MedtuneError(f"{where}: unknown key {key!r} (expected {', '.join(allowed)})")
    return value


def _phrases(value: Any, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list):
        raise MedtuneError(f"{where}: expected a list of phrases")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise MedtuneError(f"{where}: {item!r} is not a phrase")
        out.append(item if item.startswith("re:") else item.strip().lower())
    return out


def _words(value: Any, where: str, lower: bool = True) -> dict[str, str]:
    pairs = _mapping(value, where, None)
    for k, v in pairs.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k.strip():
            raise MedtuneError(f"{where}: {k!r}: {v!r} is not a word and its meaning")
    return {(k.lower() if lower else k): v.lower() for k, v in pairs.items()}


def _check_regex(pattern: str, where: str) -> None:
    """Patterns run on lower-cased text, inside the labeler's own named groups."""
    if "(?P<" in pattern:
        raise MedtuneError(f"{where}: {pattern!r}: named groups are not allowed")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise MedtuneError(f"{where}: {pattern!r} is not a valid regex ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Building the regexes.


def _squash(phrase: str) -> str:
    """A phrase as a lookup key: lower case, single spaces."""
    return " ".join(phrase.lower().split())


def _split(phrase: str, literal: set[str], regexes: set[str]) -> None:
    if phrase.startswith("re:"):
        regexes.add(phrase[3:])
    else:
        literal.add(_squash(phrase))


def _plurals(phrase: str) -> list[str]:
    """The phrase and its regular plurals; irregular ones ("pneumothoraces") are listed."""
    out = [phrase, phrase + "s"]
    if phrase.endswith(("s", "x", "sh", "ch")):
        out.append(phrase + "es")
    return out


def _trie(phrases: Iterable[str], prefixes: Iterable[str] = ()) -> str:
    """A regex matching any of ``phrases`` (whole words) or ``prefixes`` (may end mid-word),
    longest first, branching one character at a time.

    Hundreds of alternatives tried one after another at every position of the text would be
    the labeler's whole cost; a trie tries at most one branch per character.
    """
    root: dict[str, Any] = {}
    for phrase, marker in [(p, "") for p in phrases] + [(p, "\0") for p in prefixes]:
        node = root
        for char in phrase:
            node = node.setdefault(char, {})
        node[marker] = {}
    return _emit(root) or "(?!)"


def _emit(node: dict[str, Any]) -> str:
    branches = [_char(c) + _emit(node[c]) for c in sorted(k for k in node if k not in ("", "\0"))]
    stop = "" if "\0" in node else (_END if "" in node else None)
    if stop is None:
        return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    if not branches:
        return stop
    # Longer phrases first; stopping here is the last alternative.
    return f"(?:{'|'.join(branches)}|{stop})"


def _char(char: str) -> str:
    return r"\s+" if char == " " else re.escape(char)


class _Scan:
    """Finds any of a set of literal phrases, starting only where a word starts.

    Python's regex engine tries a pattern at every position unless the pattern starts with a
    character class it can scan for in C. Phrases that start with a letter are therefore looked
    for after a non-word character ("[^\\w]phrase"), which skips the inside of every word; the
    report text starts with a newline so its first word has one too. Phrases that start with
    punctuation ("?") get a scan of their own. ``prefixes`` may end inside a word.
    """

    def __init__(self, phrases: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        phrases, prefixes = set(phrases), set(prefixes)
        word = {p for p in phrases | prefixes if _WORD.match(p)}
        other = (phrases | prefixes) - word
        self._word = (
            re.compile(rf"[^\w]({_trie(word & phrases, word & prefixes)})") if word else None
        )
        self._other = re.compile(_trie(other & phrases, other & prefixes)) if other else None

    def spans(self, work: str, a: int, b: int) -> list[tuple[int, int]]:
        out = [m.span(1) for m in self._word.finditer(work, max(a - 1, 0), b)] if self._word else []
        if self._other:
            out += [m.span() for m in self._other.finditer(work, a, b)]
        return out


@dataclass(frozen=True)
class _Hit:
    """What a phrase found by the scan is: any of these at once ("no" is a trigger and the
    start word of "no acute ... abnormality")."""

    mention: bool
    exclude: bool
    roles: frozenset[str]
    region: bool
    gates: frozenset[str]


class _Gated:
    """A user regex, tried only where one of the words it must start with is.

    Most patterns start with one of a few words ("heart", "cardiac"), found for all patterns at
    once by the phrase scan; a pattern whose start cannot be read runs over the whole text.
    """

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(f"(?:{pattern}){_END}")
        words = _leading_words(pattern)
        self.gates = frozenset(_squash(w) for w in words) if words else None

    def spans(self, work: str, a: int, b: int) -> list[tuple[int, int]]:
        return [m.span() for m in self.regex.finditer(work, a, b) if _starts_word(work, m.start())]


class _GatedSet:
    """Regexes by their start words, and those without, for :func:`_regex_spans`."""

    def __init__(self, regexes: list[_Gated]) -> None:
        self.always = [r for r in regexes if r.gates is None]
        self.by_gate: dict[str, list[_Gated]] = {}
        for regex in regexes:
            for gate in regex.gates or ():
                self.by_gate.setdefault(gate, []).append(regex)


def _regex_spans(
    work: str, a: int, b: int, at: list[tuple[int, frozenset[str]]], regexes: _GatedSet
) -> list[tuple[int, int]]:
    """Matches of ``regexes`` in work[a:b]: each tried where the scan found its start word
    (``at``: position, words), those without one over everything."""
    out = [span for regex in regexes.always for span in regex.spans(work, a, b)]
    for pos, gates in at:
        tried: set[int] = set()
        for gate in gates:
            for regex in regexes.by_gate.get(gate, ()):
                if id(regex) not in tried:
                    tried.add(id(regex))
                    m = regex.regex.match(work, pos, b)
                    if m:
                        out.append(m.span())
    return out


def _leading_words(pattern: str) -> tuple[str, ...] | None:
    """The literal text every match of ``pattern`` starts with, per alternative, if readable.

    Reads the plain shapes rule files use: literal words, escaped punctuation, and groups of
    alternatives at the start ("(?:heart|cardiac\\s+size)\\s+..." gives "cardiac", "heart").
    Anything else at the start (a class, a quantifier, a lookaround, flags) gives None: the
    pattern then always runs, which is slower but never wrong.
    """
    found = _first_literals(pattern, 0, len(pattern))
    return tuple(sorted(found)) if found else None


def _first_literals(pattern: str, a: int, b: int) -> set[str] | None:
    """Union of the literal starts of the alternatives of pattern[a:b]; None if one has none."""
    out: set[str] = set()
    depth = 0
    i = start = a
    while i <= b:
        if i == b or (pattern[i] == "|" and depth == 0):
            found = _literal_start(pattern, start, i)
            if not found:
                return None
            out |= found
            start = i + 1
        elif pattern[i] in "()":
            depth += 1 if pattern[i] == "(" else -1
        i = _next_atom(pattern, i) if i < b else i + 1
    return out


def _literal_start(pattern: str, a: int, b: int) -> set[str] | None:
    """The literal text one alternative, pattern[a:b], starts with."""
    if pattern.startswith("(", a):
        inner = a + 3 if pattern.startswith("(?:", a) else a + 1
        if pattern.startswith("(?", a) and inner == a + 1:
            return None  # a lookaround, flags or a named group
        close = _closing(pattern, a, b)
        if close is None or pattern[close + 1 : close + 2] in ("*", "+", "?", "{"):
            return None  # an optional or repeated group may not be there at all
        return _first_literals(pattern, inner, close)
    chars = []
    i = a
    while i < b:
        char, after = pattern[i], i + 1
        if char == "\\":
            if i + 1 >= b or pattern[i + 1].isalnum():
                break  # \\s, \\w, \\b, \\d: classes and anchors, not literal text
            char, after = pattern[i + 1], i + 2
        elif char in ".^$*+?{}[]|()":
            break
        if pattern[after : after + 1] in ("*", "+", "?", "{"):
            break  # "lungs?" starts with "lung"
        chars.append(char)
        i = after
    return {"".join(chars)} if chars else None


def _next_atom(pattern: str, i: int) -> int:
    """The index after the escape or character class at ``i`` (or after the character)."""
    if pattern[i] == "\\":
        return i + 2
    if pattern[i] != "[":
        return i + 1
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):  # a "]" first in a class is a literal
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _closing(pattern: str, a: int, b: int) -> int | None:
    """The index of the parenthesis closing the one at ``a``."""
    depth, i = 0, a
    while i < b:
        if pattern[i] in "()":
            depth += 1 if pattern[i] == "(" else -1
            if depth == 0:
                return i
        i = _next_atom(pattern, i)
    return None


def _typo_table(vocabulary: set[str], explicit: dict[str, str], min_length: int) -> dict[str, str]:
    """Misspelling -> word, for every single-edit variant of vocabulary words this long.

    A variant that is itself a vocabulary word, or that two words share, is left out: reading
    "possibly" as "possible" or guessing between two words would change what a report says.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    table: dict[str, str] = {}
    ambiguous: set[str] = set()
    for word in vocabulary:
        if len(word) < min_length or not word.isalpha():
            continue
        for variant in _edits(word, letters):
            if variant in vocabulary or variant in ambiguous:
                continue
            if table.setdefault(variant, word) != word:
                ambiguous.add(variant)
                del table[variant]
    table.update({k: v for k, v in explicit.items() if k not in vocabulary})
    return table


def _edits(word: str, letters: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits for c in letters}
    return (deletes | swaps | replaces | inserts) - {word}


# ---------------------------------------------------------------------------------------------
# Labelling.


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
        # A leading newline: every word then follows a non-word character (see _Scan).
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


_NOT_MENTIONED = Label("not_mentioned", ())
# Aggregation, the CheXpert labeler's rule: positive if any mention is, else uncertain, else
# negative.
_RANK = {"positive": 3, "uncertain": 2, "negative": 1}
_BY_RANK = ("not_mentioned", "negative", "uncertain", "positive")


def label_report(text: str, rules: Rules) -> dict[str, Label]:
    """One :class:`Label` per finding of ``rules.findings`` for the report ``text``.

    The report is cut into the sections worth reading and those into sentences; each sentence
    is labelled on its own (:meth:`Rules.sentences`) and its mentions are added up per finding.
    """
    work = "\n" + _lower(text)  # work offset = text offset + 1, as in _Text
    spans = []
    for a, b in _read_ranges(work, rules):
        ends = [m.end() for m in _SENTENCE_BREAK.finditer(work, a, b)]
        ends.append(b)
        spans += zip([a - 1, *[e - 1 for e in ends[:-1]]], [e - 1 for e in ends], strict=True)
    found: dict[str, list[Evidence]] = {}
    best: dict[str, int] = {}  # finding -> rank of its strongest status so far
    labelled = rules.sentences([text[a:b] for a, b in spans])
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


def _starts_word(work: str, pos: int) -> bool:
    """A phrase starts at a word boundary (checked here: a leading lookbehind is slow in re)."""
    return pos == 0 or not (
        work[pos].isalnum() and (work[pos - 1].isalnum() or work[pos - 1] == "_")
    )


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
