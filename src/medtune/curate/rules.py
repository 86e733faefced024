"""The report labeler's rules: YAML files in, one compiled :class:`Rules` out.

The rules are data, not code: each finding of the vocabulary and its words
(``rules/findings.yaml``); the negation, uncertainty and pseudo-negation triggers, region hints,
typos and the report sections to read (``rules/modifiers.yaml``). Users add findings, synonyms
and triggers in YAML files of the same shape (:func:`load_rules`); each file's shape is checked
as it is merged, and a malformed one raises an error naming the file and the problem. Compiling
builds the phrase scan and the typo table once (:mod:`medtune.curate.phrases`), so that
labelling (:mod:`medtune.curate.labeler`) only looks things up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medtune.curate.phrases import (
    _WORD,
    _Gated,
    _GatedSet,
    _Hit,
    _plurals,
    _Scan,
    _split,
    _squash,
    _trie,
    _typo_table,
)
from medtune.errors import MedtuneError

SHIPPED = ("findings.yaml", "modifiers.yaml")
PHRASE_KINDS = ("mentions", "negative", "uncertain", "positive", "exclude")
FIXED_KINDS = {"negative": "negative", "uncertain": "uncertain", "positive": "positive"}
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_CACHE_LIMIT = 50_000
# A labelled mention of a sentence, offsets relative to the sentence in the original text:
# (finding, start, end, sentence start, sentence end, status, trigger, region).
_Found = tuple[str, int, int, int, int, str, str | None, str | None]


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
        # The sentences labelled with these rules (filled by sentences._labelled_sentences):
        # how a sentence reads depends on the rules, so its memory lives with them.
        self.sentence_memo: dict[str, tuple[_Found, ...]] = {}

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

    def clear_cache(self) -> None:
        """Forget the sentences labelled so far (to time labelling from cold)."""
        self.sentence_memo.clear()
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
