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
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from medtune.deid.identifiers import Identifiers

MIN_LENGTH = 4  # shorter values (sex "M", "ANON", a 3-digit id) match too much by chance
MIN_DIGITS = 6  # a number alone ("1000", an exposure index) is no identifier below this
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Hit:
    kind: str  # names, ids, dates, places, contacts
    where: str  # "(0010,0010)", "private (0019,1021)", "report text", "catalog column site"


@dataclass(frozen=True)
class Needles:
    """Normalised forms of the identifiers, ready to match."""

    by_kind: dict[str, frozenset[str]]

    @classmethod
    def of(cls, known: Identifiers) -> Needles:
        by_kind: dict[str, set[str]] = {
            k: set() for k in ("names", "ids", "dates", "places", "contacts")
        }
        for value in known.names:
            by_kind["names"].update(_name_forms(value))
        for kind in ("ids", "places", "contacts"):
            for value in getattr(known, kind):
                norm = normalise(value)
                if _useful(norm):
                    by_kind[kind].add(norm)
        for day in known.dates:
            by_kind["dates"].update(date_forms(day))
        return cls({k: frozenset(v) for k, v in by_kind.items()})

    def find(self, text: str) -> list[str]:
        """Kinds of identifier found in ``text`` (each kind once)."""
        if not text:
            return []
        norm = normalise(text)
        squashed = norm.replace(" ", "")
        kinds = []
        for kind, values in self.by_kind.items():
            for value in values:
                # Dates and ids are matched with separators removed ("2020-01-02" = "20200102").
                haystack = squashed if kind in ("dates", "ids", "contacts") else f" {norm} "
                needle = (
                    value.replace(" ", "") if kind in ("dates", "ids", "contacts") else f" {value} "
                )
                if needle.strip() and needle in haystack:
                    kinds.append(kind)
                    break
        return kinds


def normalise(text: str) -> str:
    """Lower case, every run of punctuation, ^ and space collapsed to one space."""
    return _NON_ALNUM.sub(" ", str(text).lower()).strip()


def date_forms(day: dt.date) -> set[str]:
    """Normalised spellings of a date: 20200102, 2020 01 02, 02 01 2020, 01 02 2020."""
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    return {f"{y}{m}{d}", f"{y} {m} {d}", f"{d} {m} {y}", f"{m} {d} {y}"}


def _name_forms(value: str) -> set[str]:
    """The whole name and each component long enough to be specific (DICOM PN has ^ parts)."""
    norm = normalise(value)
    forms = {norm} if _useful(norm) else set()
    for part in norm.split(" "):
        if len(part) >= MIN_LENGTH and not part.isdigit():
            forms.add(part)
    return forms


def _useful(norm: str) -> bool:
    squashed = norm.replace(" ", "")
    return len(squashed) >= (MIN_DIGITS if squashed.isdigit() else MIN_LENGTH)


def scan_dataset(ds: Dataset, known: Identifiers | Needles) -> list[Hit]:
    """Every element of ``ds`` (file meta, private, nested sequences) that holds an identifier."""
    needles = known if isinstance(known, Needles) else Needles.of(known)
    hits: list[Hit] = []
    datasets: list[Dataset] = [ds]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        datasets.append(meta)
    while datasets:
        current = datasets.pop()
        for element in current:
            if element.VR == "SQ":
                datasets.extend(element.value)
                continue
            if element.tag == 0x7FE00010 or element.VR in (
                "OB",
                "OW",
                "OF",
                "OD",
                "OL",
                "OV",
                "UN",
            ):
                continue  # pixel and binary data: the OCR check looks at pixels
            if element.VR == "UI":
                continue  # UIDs are replaced wholesale (Annex E "U"); their digits match by chance
            for kind in needles.find(_element_text(element.value)):
                where = f"({element.tag.group:04X},{element.tag.element:04X})"
                hits.append(Hit(kind, ("private " if element.tag.is_private else "") + where))
    return hits


def scan_texts(texts: Iterable[tuple[str, str]], known: Identifiers | Needles) -> list[Hit]:
    """Scan (where, text) pairs: report texts, catalog columns, log lines."""
    needles = known if isinstance(known, Needles) else Needles.of(known)
    return [Hit(kind, where) for where, text in texts for kind in needles.find(text)]


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
