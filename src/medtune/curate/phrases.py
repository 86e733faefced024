"""Finding phrases in report text fast: the regexes the labeler's rules compile to.

Every finding, trigger and region phrase is looked for by one compiled regex, a character trie,
so the engine branches on one character rather than trying hundreds of alternatives
(:func:`_trie`, :class:`_Scan`). Finding patterns written as regexes are tried only where the
word they start with is (:class:`_Gated`; the start words are read from the pattern by
:func:`_leading_words`). Misspellings are fixed by a table of the single-edit variants of every
vocabulary word of 7+ letters, so each costs a dict lookup (:func:`_typo_table`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\w+")
_END = r"(?:(?!\w)|(?<!\w))"  # a phrase ends at a word boundary, or in punctuation ("?")


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


def _starts_word(work: str, pos: int) -> bool:
    """A phrase starts at a word boundary (checked here: a leading lookbehind is slow in re)."""
    return pos == 0 or not (
        work[pos].isalnum() and (work[pos - 1].isalnum() or work[pos - 1] == "_")
    )


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
