"""The leak scan: look for every identifying value seen in the inputs in everything written.

It fails closed: a hit quarantines the item (or fails the run's final check), whatever the
reason the value survived. Matching is deliberately loose (case, spacing, punctuation, the
DICOM name separator ^ and the date spellings people use), because a de-identifier that misses
"Doe, John" after removing "DOE^JOHN" has leaked. Hits report the kind of value and where it was
found, never the value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from medtune.deid.identifiers import Identifiers

MIN_LENGTH = 4  # shorter values (sex "M", "ANON", a 3-digit id) match too much by chance
MIN_DIGITS = 6  # a number alone ("1000", an exposure index) is no identifier below this
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Hit:
    kind: str  # names, ids, dates, places, contacts
    where: str  # "(0010,0010)", "private (0019,1021)", "report text", "catalog column site"


_SQUASHED = ("dates", "ids", "contacts")  # matched with separators removed: 2020-01-02 = 20200102
# Written dates and times, left out when looking for ids: squashed, "2012-03-15 21:26:12" holds
# the digits of any id that looks like a date (accession 2012031521). An id written with
# separators the same way is still found as a date of the patient when it is one.
_DATE_TIME = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?\b"
    r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b|\b\d{1,2}:\d{2}(?::\d{2})?\b"
)


def _word_runs(tokens: list[str], longest: int) -> Iterable[list[str]]:
    """Every run of 1 to ``longest`` consecutive tokens."""
    for i in range(len(tokens)):
        for n in range(1, min(longest, len(tokens) - i) + 1):
            yield tokens[i : i + n]


@dataclass(frozen=True)
class Needles:
    """Normalised forms of the identifiers, ready to match."""

    by_kind: dict[str, frozenset[str]]

    @classmethod
    def of(cls, known: Identifiers) -> Needles:
        kinds = ("names", "name_parts", "ids", "dates", "places", "contacts")
        by_kind: dict[str, set[str]] = {k: set() for k in kinds}
        for value in known.names:
            whole, parts = _name_forms(value)
            by_kind["names"].update(whole)
            by_kind["name_parts"].update(parts)
        for kind in ("ids", "places", "contacts"):
            for value in getattr(known, kind):
                norm = normalise(value)
                if _useful(norm):
                    by_kind[kind].add(norm)
        for day in known.dates:
            by_kind["dates"].update(date_forms(day))
        return cls({k: frozenset(v) for k, v in by_kind.items()})

    def find(self, text: str, coded: bool = False) -> list[str]:
        """Kinds of identifier found in ``text``, each once. ``coded``: a code string (VR CS,
        defined terms such as PERFUSION), where one part of a name is no evidence."""
        if not text:
            return []
        norm = normalise(text)
        spaced, squashed = f" {norm} ", norm.replace(" ", "")
        squashed_ids = normalise(_DATE_TIME.sub(" ", text)).replace(" ", "")
        kinds: list[str] = []
        for kind, values in self.by_kind.items():
            if kind == "name_parts" and coded:
                continue
            found = kind if kind != "name_parts" else "names"
            if found in kinds:
                continue
            for value in values:
                if kind in _SQUASHED:
                    hit = value.replace(" ", "") in (squashed_ids if kind == "ids" else squashed)
                else:
                    hit = f" {value} " in spaced
                if hit:
                    kinds.append(found)
                    break
        return kinds

    def find_words(self, text: str, longest: int = 8) -> list[str]:
        """Like :meth:`find`, for large needle sets: looks up runs of up to ``longest`` whole
        words in hash sets instead of searching for every needle. Misses only an identifier
        glued to other letters or digits ("xMRN123"), which :meth:`find` catches."""
        spaced_sets = {k: self.by_kind[k] for k in ("names", "name_parts", "places")}
        squashed_sets = {k: self._squashed(k) for k in _SQUASHED if k != "ids"}
        kinds: list[str] = []
        for gram in _word_runs(normalise(text).split(), longest):
            spaced, squashed = " ".join(gram), "".join(gram)
            for kind, values in spaced_sets.items():
                found = "names" if kind == "name_parts" else kind
                if found not in kinds and spaced in values:
                    kinds.append(found)
            for kind, values in squashed_sets.items():
                if kind not in kinds and squashed in values:
                    kinds.append(kind)
        ids = self._squashed("ids")  # looked for with written dates and times left out
        for gram in _word_runs(normalise(_DATE_TIME.sub(" ", text)).split(), longest):
            if "".join(gram) in ids:
                kinds.append("ids")
                break
        return kinds

    def _squashed(self, kind: str) -> frozenset[str]:
        return frozenset(v.replace(" ", "") for v in self.by_kind[kind])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kind.values())


def normalise(text: str) -> str:
    """Lower case, every run of punctuation, ^ and space collapsed to one space."""
    return _NON_ALNUM.sub(" ", str(text).lower()).strip()


def date_forms(day: dt.date) -> set[str]:
    """Normalised spellings of a date: 20200102, 2020 01 02, 02 01 2020, 01 02 2020."""
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    return {f"{y}{m}{d}", f"{y} {m} {d}", f"{d} {m} {y}", f"{m} {d} {y}"}


def _name_forms(value: str) -> tuple[set[str], set[str]]:
    """The whole name, and each component long enough to be specific (PN has ^ parts)."""
    norm = normalise(value)
    whole = {norm} if _useful(norm) else set()
    parts = {p for p in norm.split(" ") if len(p) >= MIN_LENGTH and not p.isdigit()}
    return whole, parts - whole


def _useful(norm: str) -> bool:
    squashed = norm.replace(" ", "")
    return len(squashed) >= (MIN_DIGITS if squashed.isdigit() else MIN_LENGTH)


# Written by the de-identifier itself (method and option names): not from the input.
_OWN_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064})


def scan_dataset(
    ds: Dataset, known: Identifiers | Needles, kept: Mapping[int, object] | None = None
) -> list[Hit]:
    """Every element of ``ds`` (file meta, private, nested sequences) that holds an identifier.

    ``kept``: top-level tags the profile keeps by design (action K, or not in Annex E), with
    their original elements (raw as read, or parsed). Such an element, unchanged, is not a
    leak even if its value equals an identifier elsewhere (a manufacturer that is also the
    institution's name); any other element is scanned, so a value the profile should have
    removed is always caught.
    """
    needles = known if isinstance(known, Needles) else Needles.of(known)
    kept = kept or {}
    hits: list[Hit] = []
    for tag in list(ds.keys()):  # tags: iterating a Dataset would parse every element
        if tag in _OWN_TAGS:
            continue
        element = ds.get_item(tag)  # raw elements stay raw: converting is most of the cost
        original = kept.get(tag)
        if element is None or element is original:
            continue  # kept by design and untouched since it was read
        if isinstance(element, RawDataElement):
            element = ds[tag]
        found = _scan_element(element, needles)
        unchanged = (
            found
            and original is not None
            and element.VR != "SQ"
            and element.value == _value(original, ds)
        )
        if unchanged:
            continue  # kept by design, and as it was
        hits.extend(found)
    meta = getattr(ds, "file_meta", None)
    for element in meta or ():
        hits.extend(_scan_element(element, needles))
    return hits


def _value(element: object, ds: Dataset) -> object:
    """An element's value; a raw (unparsed) element as read is converted first."""
    if isinstance(element, RawDataElement):
        return convert_raw_data_element(element, ds=ds).value
    return element.value  # type: ignore[attr-defined]


_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV"})


def _scan_element(element: DataElement, needles: Needles) -> list[Hit]:
    """Hits in one element, recursing into sequence items."""
    if element.VR == "SQ":
        return [hit for item in element.value for child in item
                for hit in _scan_element(child, needles)]  # fmt: skip
    if element.tag == 0x7FE00010 or element.VR in _BINARY_VRS:
        return []  # pixel and binary data: the OCR check looks at pixels
    if element.VR == "UI":
        return []  # UIDs are replaced wholesale (Annex E "U"); their digits match by chance
    # UN (unknown VR) is scanned as text: vendors hide names in it.
    kinds = needles.find(_element_text(element.value), coded=element.VR == "CS")
    if not kinds:
        return []
    where = f"({element.tag.group:04X},{element.tag.element:04X})"
    where = ("private " if element.tag.is_private else "") + where
    return [Hit(kind, where) for kind in kinds]


def scan_texts(texts: Iterable[tuple[str, str]], known: Identifiers | Needles) -> list[Hit]:
    """Scan (where, text) pairs: report texts, catalog columns, log lines. With thousands of
    identifiers (a whole cohort's) words are looked up rather than every needle searched."""
    needles = known if isinstance(known, Needles) else Needles.of(known)
    find = needles.find if len(needles) < 200 else needles.find_words
    return [Hit(kind, where) for where, text in texts for kind in find(text)]


def describe(hits: list[Hit]) -> str:
    """A one-line summary by kind: 'names x2, dates x1'."""
    counts: dict[str, int] = {}
    for hit in hits:
        counts[hit.kind] = counts.get(hit.kind, 0) + 1
    return ", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items()))


def _element_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("latin-1", "replace")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return " | ".join(str(v) for v in value)  # type: ignore[union-attr]
    return str(value)
