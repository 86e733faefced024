"""Identifying values known for one patient or study, gathered from its inputs.

The header reader fills one of these from the DICOM attributes Annex E lists as identifying and
from the RIS row of the study; the report scrubber, the burned-in text check and the leak scan
then look for exactly these values (in any common spelling) on top of their generic patterns.
The values themselves never leave the process: logs and errors name only their kind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class Identifiers:
    """Values to remove, by kind. Add with :meth:`add`; duplicates and blanks are ignored."""

    names: set[str] = field(default_factory=set)  # persons, as found: "DOE^JOHN", "John Doe"
    ids: set[str] = field(default_factory=set)  # MRN, accession, other IDs, serial numbers
    dates: set[dt.date] = field(default_factory=set)  # birth and study dates
    places: set[str] = field(default_factory=set)  # institutions, addresses, station names
    contacts: set[str] = field(default_factory=set)  # phone numbers, e-mail addresses, URLs

    def add(self, kind: str, value: object) -> None:
        """Add ``value`` under ``kind`` ("names", "ids", "dates", "places" or "contacts")."""
        if value is None:
            return
        if kind == "dates":
            if isinstance(value, dt.datetime):
                value = value.date()
            if isinstance(value, dt.date):
                self.dates.add(value)
            return
        text = str(value).strip()
        if text:
            getattr(self, kind).add(text)

    def merge(self, other: Identifiers) -> Identifiers:
        """A new set holding the values of both."""
        return Identifiers(
            self.names | other.names,
            self.ids | other.ids,
            self.dates | other.dates,
            self.places | other.places,
            self.contacts | other.contacts,
        )

    def __len__(self) -> int:
        return sum(len(v) for v in (self.names, self.ids, self.dates, self.places, self.contacts))
