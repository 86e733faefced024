"""Fake people, places and identifiers for the synthetic cohort.

The cohort injects patient identifiers (PHI) on purpose, so that de-identification can later be
proven on it. The identifiers must therefore look like the real thing in all its untidiness:
names from many origins, with apostrophes ("O'Brien"), hyphens ("Smith-Jones"), particles
("van der Berg") and family names that are also ordinary words ("Baker", "Hope", "White"); MRNs and
accession numbers in several site-specific formats; phone numbers written four ways.

Nothing here is real. Phone numbers use area code 555 with an exchange of 010-019, a combination no
real line can have (no exchange starts with 0 in the North American plan); e-mail domains are
subdomains of the reserved ``example.org``/``example.com``/``example.net``; hospital and city
names are invented or generic.

Every function takes a :class:`numpy.random.Generator` and draws only from it, so the output is
fixed by the generator's state. The word lists live in ``data/identity.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

_DATA = json.loads(
    resources.files("medtune.synth").joinpath("data/identity.json").read_text(encoding="utf-8")
)

GIVEN_NAMES: dict[str, tuple[str, ...]] = {
    sex: tuple(names) for sex, names in _DATA["given_names"].items()
}
FAMILY_NAMES: tuple[str, ...] = tuple(_DATA["family_names"])
STREET_NAMES: tuple[str, ...] = tuple(_DATA["street_names"])
STREET_SUFFIXES: tuple[str, ...] = tuple(_DATA["street_suffixes"])
CITIES: tuple[str, ...] = tuple(_DATA["cities"])
STATES: tuple[str, ...] = tuple(_DATA["states"])
INSTITUTION_STEMS: tuple[str, ...] = tuple(_DATA["institution_stems"])

# Kinds of hospital; combined with a stem to name a site (see make_institution).
INSTITUTION_TYPES = (
    "Regional Hospital",
    "University Medical Center",
    "General Hospital",
    "Community Hospital",
    "Medical Center",
    "Memorial Hospital",
    "University Hospital",
    "Regional Medical Center",
    "Health Center",
    "Hospital",
)
DEPARTMENTS = (
    "Department of Radiology",
    "Diagnostic Imaging",
    "Medical Imaging",
    "Radiology Department",
    "Imaging Services",
    "Department of Diagnostic Radiology",
)
UNITS = ("Apt {n}", "Apt {n}{letter}", "Unit {n}", "#{n}", "Suite {n}")

# Phone layouts; {x} is the last digit of the exchange, {line} the four-digit line number.
PHONE_FORMATS = (
    "(555) 01{x}-{line}",
    "555-01{x}-{line}",
    "555.01{x}.{line}",
    "+1 555 01{x} {line}",
)
# Letters used in identifiers: no I or O, which sites avoid as they read as 1 and 0.
_ID_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
# Domains reserved for documentation (RFC 2606): they can never reach anyone.
PERSONAL_EMAIL_DOMAINS = ("example.com", "mail.example.net", "example.org", "inbox.example.com")


def _pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    """One item, uniformly; a plain ``str`` (``rng.choice`` would give ``numpy.str_``)."""
    return items[int(rng.integers(len(items)))]


def _digits(rng: np.random.Generator, count: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=count))


def _letter(rng: np.random.Generator) -> str:
    return _ID_LETTERS[int(rng.integers(len(_ID_LETTERS)))]


# ---------------------------------------------------------------------------------------------
# People.


@dataclass(frozen=True)
class Person:
    """A person's name, split as DICOM's person-name (PN) value splits it."""

    family: str
    given: str
    middle: str | None  # a full middle name or a single initial
    sex: str  # "M" | "F"
    prefix: str | None = None  # "Dr." for physicians

    @property
    def middle_initial(self) -> str | None:
        """The middle initial ("A" for "Andrew"), or None without a middle name."""
        return self.middle[0] if self.middle else None

    def dicom_pn(self, style: str = "upper") -> str:
        """``DOE^JOHN^A`` ("upper") or ``Doe^John^A`` ("mixed"): family^given^middle^prefix."""
        if style not in ("upper", "mixed"):
            raise ValueError(f"unknown PN style {style!r} (expected 'upper' or 'mixed')")
        parts = [self.family, self.given, self.middle or "", self.prefix or ""]
        while parts and not parts[-1]:  # DICOM forbids trailing empty components
            parts.pop()
        value = "^".join(parts)
        return value.upper() if style == "upper" else value

    def display(self) -> str:
        """``John A. Doe`` or ``Dr. Jane Roe``: how a name is written in prose."""
        initial = f"{self.middle_initial}." if self.middle_initial else None
        return " ".join(p for p in (self.prefix, self.given, initial, self.family) if p)

    def last_first(self) -> str:
        """``Doe, John A.``: how lists and signatures write a name."""
        first = self.given + (f" {self.middle_initial}." if self.middle_initial else "")
        return f"{self.family}, {first}"


def make_person(rng: np.random.Generator, sex: str) -> Person:
    """A person of ``sex`` ("M" or "F"), with a middle name or initial most of the time."""
    if sex not in GIVEN_NAMES:
        raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")
    given = _pick(rng, GIVEN_NAMES[sex])
    family = _pick(rng, FAMILY_NAMES)
    roll = rng.random()
    if roll < 0.55:
        middle: str | None = _letter(rng)
    elif roll < 0.75:
        middle = _pick(rng, GIVEN_NAMES[sex])
    else:
        middle = None
    return Person(family=family, given=given, middle=middle, sex=sex)


def make_physician(rng: np.random.Generator) -> Person:
    """A physician of either sex, titled "Dr."."""
    sex = "F" if rng.random() < 0.5 else "M"
    person = make_person(rng, sex)
    return Person(person.family, person.given, person.middle, sex, prefix="Dr.")


# ---------------------------------------------------------------------------------------------
# Places and contact details.


@dataclass(frozen=True)
class Address:
    street: str  # "12 Oak Street" or "12 Oak Street Apt 4B"
    city: str
    state: str  # two-letter code
    zip_code: str  # five digits, leading zeros kept

    def one_line(self) -> str:
        """``12 Oak Street, Springfield, MA 01234``."""
        return f"{self.street}, {self.city}, {self.state} {self.zip_code}"


@dataclass(frozen=True)
class Institution:
    name: str
    department: str
    address: Address
    phone: str


def make_address(rng: np.random.Generator) -> Address:
    """A US-style street address in a fictional or generic town."""
    number = int(rng.integers(1, 9900))
    street = f"{number} {_pick(rng, STREET_NAMES)} {_pick(rng, STREET_SUFFIXES)}"
    if rng.random() < 0.2:
        unit = _pick(rng, UNITS).format(n=int(rng.integers(1, 40)), letter=_letter(rng))
        street = f"{street} {unit}"
    zip_code = f"{int(rng.integers(1001, 99951)):05d}"
    return Address(street, _pick(rng, CITIES), _pick(rng, STATES), zip_code)


def make_phone(rng: np.random.Generator) -> str:
    """A fictional phone number, ``555-01x-xxxx``, in one of four common layouts."""
    layout = _pick(rng, PHONE_FORMATS)
    return layout.format(x=int(rng.integers(10)), line=_digits(rng, 4))


def _slug(text: str) -> str:
    """Lower-case ASCII letters and digits only: "O'Brien" -> "obrien"."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def institution_domain(institution: Institution) -> str:
    """The site's (reserved, unreachable) e-mail domain: ``stbrigid-rh.example.org``."""
    stem = next(s for s in (*INSTITUTION_STEMS, institution.name) if institution.name.startswith(s))
    kind = institution.name[len(stem) :]
    initials = "".join(word[0] for word in kind.split()).lower()
    return f"{_slug(stem)}-{initials or 'h'}.example.org"


def make_email(rng: np.random.Generator, person: Person, institution: Institution | None) -> str:
    """An address at the institution's domain, or a personal one when ``institution`` is None."""
    given, family = _slug(person.given), _slug(person.family)
    year = int(rng.integers(50, 100))
    local = _pick(
        rng,
        (
            f"{given}.{family}",
            f"{given[0]}{family}",
            f"{given[0]}.{family}",
            f"{family}.{given}",
            f"{given}{family}{year}",
            f"{given}_{family}",
        ),
    )
    domain = institution_domain(institution) if institution else _pick(rng, PERSONAL_EMAIL_DOMAINS)
    return f"{local}@{domain}"


# ---------------------------------------------------------------------------------------------
# Identifiers. Each site keeps one format (its style index), as real RIS/PACS installations do.


def _scramble(serial: int, width: int) -> int:
    """A bijection of [0, 10**width): distinct serials give distinct, random-looking numbers.

    x -> (a x + b) mod 10^w is a permutation whenever a is coprime with 10, and so is reversing
    the w digits; affine, reverse, affine mixes neighbouring serials so they look random.
    """
    modulus = 10**width
    y = (serial * 6_180_339_887 + 2_718_281_828) % modulus
    y = int(f"{y:0{width}d}"[::-1])
    return (y * 4_142_135_623 + 1_732_050_807) % modulus


def _num(rng: np.random.Generator, width: int, serial: int | None) -> str:
    """``width`` digits: random, or the scrambled ``serial`` (unique) when one is given."""
    if serial is None:
        return _digits(rng, width)
    return f"{_scramble(serial, width):0{width}d}"


def _head(rng: np.random.Generator, serial: int | None, width: int, place: int = 0) -> str:
    """A letter: random, or the serial's overflow past ``width`` digits (keeps IDs unique)."""
    if serial is None:
        return _letter(rng)
    return _ID_LETTERS[(serial // 10**width // len(_ID_LETTERS) ** place) % len(_ID_LETTERS)]


def _mrn_zero_padded(rng: np.random.Generator, width: int, serial: int | None) -> str:
    # Small numbers in a fixed-width field: the leading zeros that spreadsheets like to drop.
    if serial is not None:
        capacity = 10 ** (width - 2)
        if serial < capacity:
            return f"{1 + _scramble(serial, width - 2):0{width}d}"
        # Past the padded range: longer numbers, disjoint from the padded ones, still unique.
        return str(capacity + 1 + _scramble(serial - capacity, width))
    return f"{int(rng.integers(1, 10 ** (width - 2))):0{width}d}"


# Each style: (rng, serial) -> MRN. With a serial, distinct serials give distinct MRNs up to
# the style's capacity (at least 10^5 patients; most styles 10^7 or more).
MRN_STYLES = (
    lambda rng, n: _mrn_zero_padded(rng, 7, n),  # "0012345"
    lambda rng, n: _head(rng, n, 7) + _num(rng, 7, n),  # "A1234567"
    lambda rng, n: f"{_head(rng, n, 8)}-{_num(rng, 8, n)[:4]}-{_num(rng, 8, n)[4:]}",  # H-2039-4412
    lambda rng, n: _mrn_zero_padded(rng, 8, n),  # "00482913"
    lambda rng, n: _head(rng, n, 6, 1) + _head(rng, n, 6) + _num(rng, 6, n),  # "KX492013"
    lambda rng, n: str(10**9 + int(_num(rng, 9, n))),  # "1004829137"
)

ACCESSION_STYLES = (
    lambda rng, year, n: f"RAD{year}{_num(rng, 7, n)}",  # "RAD20190012345"
    lambda rng, year, n: f"{year}-XR-{_num(rng, 6, n)}",  # "2019-XR-004512"
    lambda rng, year, n: f"A{_num(rng, 8, n)}",  # "A12345678"
    lambda rng, year, n: f"XR{year % 100:02d}-{_num(rng, 6, n)}",  # "XR19-045123"
    lambda rng, year, n: f"{year % 100:02d}{_num(rng, 8, n)}",  # "1900482913"
)


def make_mrn(rng: np.random.Generator, style: int, serial: int | None = None) -> str:
    """A medical record number in the format of ``style`` (any int; taken modulo the count).

    Give ``serial`` (such as the patient's index) to make it unique: two patients of one site
    must never share an MRN, or every later stage would merge them.
    """
    return MRN_STYLES[style % len(MRN_STYLES)](rng, serial)


def make_accession(
    rng: np.random.Generator, style: int, year: int, serial: int | None = None
) -> str:
    """An accession number in the format of ``style``; some formats embed the study ``year``.

    Give ``serial`` (unique per study) to make it unique: reports are joined to images by it.
    """
    return ACCESSION_STYLES[style % len(ACCESSION_STYLES)](rng, year, serial)


def institution_name(index: int) -> str:
    """The name of site ``index``: a function of the index alone, unique for the first 64+ sites.

    The stem cycles through the list and the kind of hospital through its own list, so the first
    ``len(INSTITUTION_STEMS)`` indices all get distinct stems.
    """
    if index < 0:
        raise ValueError(f"institution index must be >= 0, got {index}")
    stem = INSTITUTION_STEMS[index % len(INSTITUTION_STEMS)]
    # Stride 3 (coprime with the 10 types) so neighbouring sites differ in kind too.
    rounds = index // len(INSTITUTION_STEMS)
    kind = INSTITUTION_TYPES[(3 * index + rounds) % len(INSTITUTION_TYPES)]
    return f"{stem} {kind}"


def make_institution(rng: np.random.Generator, index: int) -> Institution:
    """Site ``index``: its fixed name, and a department, address and phone drawn from ``rng``."""
    return Institution(
        name=institution_name(index),
        department=_pick(rng, DEPARTMENTS),
        address=make_address(rng),
        phone=make_phone(rng),
    )
