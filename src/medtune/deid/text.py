"""Report text de-identification: identifiers out, clinical content in.

:func:`scrub_report` replaces names, IDs, phone numbers, e-mail addresses, URLs, IP addresses,
street addresses, ZIP codes, institutions and ages over 89 with bracketed tags ("[NAME]",
"[ID]"...), and writes every date it recognises moved by the caller's per-patient shift, in ISO
form (or "[DATE]" without a shift), so report dates stay consistent with the images' dates.
Findings, laterality, sizes, vertebral levels and comparisons are left as they are.

How: detectors each propose spans of text; where two overlap the stronger detector wins (values
known for this very patient first, then e-mail/URL/IP, dates, labelled IDs, phones, addresses,
institutions, names, ages, and last any long digit run), and neighbouring pieces of one name or
one address become one tag. Names are found three ways: every part of the names known from the
row (case-insensitive, any layout: "DOE^JOHN", "John Doe", "Doe, J."), names after a title or a
cue ("Dr.", "signed by", "discussed with", "Patient:"), and names before a credential ("Jane
Roe, MD"). A known name part that is also an ordinary word ("White", "Small") is removed only
where it reads as a name, and one followed by "fracture", "disease", "sign"... only next to the
rest of the name, so "Small left effusion" and "Jones fracture" keep their words.

Speed: every pattern is compiled once, and the report's words are read once; the detectors keyed
on words ("MRN", "Dr", "signed", month names) run only at those words, and the others begin with
a character class so the regex engine skips ahead (a leading lookbehind would make it try every
position: those are checked in Python). A dense 1 kB report takes about 1 ms on a loaded 2-core
CI machine; the synthetic cohort's reports (0.5 kB) about 0.8 ms each.

Not covered: a person's name with no known value, title, cue or credential near it; a city
without a street or ZIP code ("Rochester, MN"); bare years ("in 2015": HIPAA Safe Harbor allows
years); day and month in digits without a year ("03/14", too close to ratios); a date glued to
letters ("05MAR2021") goes as an "[ID]", unshifted.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from medtune.deid.identifiers import Identifiers
from medtune.deid.pseudonyms import Pseudonymizer
from medtune.errors import MedtuneError
from medtune.io.reports import (
    DEFAULT_ID_COLUMN,
    DEFAULT_PATIENT_COLUMN,
    DEFAULT_TEXT_COLUMN,
    RejectedRow,
    ReportRecord,
    identifying_kind,
    read_reports,
)
from medtune.workspace import atomic_path

Shift = Callable[[dt.date], dt.date]

TAGS = {
    "name": "[NAME]",
    "id": "[ID]",
    "date": "[DATE]",
    "phone": "[PHONE]",
    "email": "[EMAIL]",
    "url": "[URL]",
    "ip": "[IP]",
    "address": "[ADDRESS]",
    "zip": "[ZIP]",
    "institution": "[INSTITUTION]",
    "age": "[AGE 90+]",
}


@dataclass(frozen=True)
class ScrubbedReport:
    text: str
    counts: dict[str, int]  # values replaced, by kind (keys of TAGS)


# ---------------------------------------------------------------------------------------------
# Word lists (data/text_vocabulary.json, data/text_common_words.txt).


def _data(name: str) -> str:
    return resources.files("medtune.deid").joinpath("data", name).read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, frozenset[str]]:
    sections: dict[str, set[str]] = {}
    current = sections.setdefault("", set())
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().lower()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], set())
        elif line:
            current.add(line)
    return {k: frozenset(v) for k, v in sections.items()}


_VOCAB = json.loads(_data("text_vocabulary.json"))
_WORDS = _sections(_data("text_common_words.txt"))
COMMON_WORDS = frozenset().union(*_WORDS.values())
_STOP_AFTER_TITLE = _WORDS["function"] | _WORDS["report"]  # ends "Dr. Jane Roe ..."
_STOP_AFTER_CUE = _STOP_AFTER_TITLE | _WORDS["clinical"]  # ends "discussed with Jane ..."
MONTHS: dict[str, int] = _VOCAB["months"]
_PARTICLES = frozenset(_VOCAB["name_particles"])
_CREDENTIALS = frozenset(c.replace(".", "") for c in _VOCAB["credentials"])
_TITLES = frozenset(_VOCAB["titles"])  # "Dr", "Prof", and "med." of "Dr. med."
_CONNECTORS = frozenset(_VOCAB["institution_connectors"])
_THING_WORDS = frozenset(_VOCAB["thing_names"])  # "Exam Name:" names no person
_NOT_NAME_LEAD = _WORDS["report"] | _TITLES | {"the", "and", "by", "with", "to", "from", "per"}


def _alternation(words: Iterable[str]) -> str:
    """A regex alternation of ``words``, longest first, a space matching any run of blanks."""
    items = sorted(set(words), key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"[ \t]+") for w in items)


# ---------------------------------------------------------------------------------------------
# Patterns. A pattern in a _TRIGGERED table runs only at its trigger words (with .match); the
# others scan the text and begin with a character class.

R_KNOWN, R_CONTACT, R_DATE, R_LABEL, R_PHONE = 0, 1, 2, 3, 4
R_ADDRESS, R_INSTITUTION, R_NAME, R_AGE, R_DIGITS = 5, 6, 7, 8, 9

_UP = "A-ZÀ-ÖØ-Þ"  # upper-case letters a regex class can name; Python checks the rest
_CAP_WORD = rf"[{_UP}][\w'’.\-]*"
_YEAR4 = r"(?:19|20)\d{2}"

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?i)(?:(?:https?|s?ftp)://|www\.)[^\s<>\"'\]]+")
_TLDS = ("com", "org", "net", "edu", "gov", "info", "health")
_DOMAIN = re.compile(rf"[a-z0-9](?:[a-z0-9-]*\.)+(?:{'|'.join(_TLDS)})(?:/[^\s<>\"'\]]*)?(?![\w-])")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d{1,5})?(?!\w|\.\d)")  # octets: Python
_IPV6 = re.compile(r"(?i)[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){3,7}(?![\w:])|::1\b")
_IPV6_HINT = re.compile(r"::|\d:[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}:[0-9a-fA-F]")
_UID = re.compile(r"[012](?:\.(?:0|[1-9]\d*)){4,}(?!\w|\.\d)")

# Dates that scan: each starts with a digit. Groups: y, m, d, or a/b (day and month in an order
# to decide), mon (a month word), t (time of a DICOM DT).
_DATES = [
    # 2021-03-14, 2021/03/14, 2021.03.14 (a time may follow: 2021-03-14T10:22)
    re.compile(rf"(?P<y>{_YEAR4})(?P<s>[-/.])(?P<m>\d{{1,2}})(?P=s)(?P<d>\d{{1,2}})(?!\d|[-/.]\d)"),
    # 03/14/2021, 14.03.2021, 3-14-21
    re.compile(
        rf"(?P<a>\d{{1,2}})(?P<s>[-/.])(?P<b>\d{{1,2}})(?P=s)(?P<y>{_YEAR4}|\d{{2}})"
        r"(?![\w\-/]|\.\d)"
    ),
    # DICOM DA/DT: 20210314, 202103141022, 20210314102233
    re.compile(
        rf"(?P<y>{_YEAR4})(?P<m>0[1-9]|1[0-2])(?P<d>0[1-9]|[12]\d|3[01])"
        r"(?P<t>(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d)?)?(?!\w|\.\d)"
    ),
    # 03/2021, 03.2021 and 2021-03: a month (the month's value is checked in Python; "3.2021"
    # may be a decimal)
    re.compile(rf"(?P<m>\d{{1,2}})/(?P<y>{_YEAR4})(?![\w/]|\.\d)"),
    re.compile(rf"(?P<m>0[1-9]|1[0-2])\.(?P<y>{_YEAR4})(?![\w/]|\.\d)"),
    re.compile(rf"(?P<y>{_YEAR4})-(?P<m>0[1-9]|1[0-2])(?![\w\-/]|\.\d)"),
]
# Dates with a month name, read around each month word: "14-Mar-2021", "4 March 2021", "14. März
# 2021", "4th of March, 2021", "March 14, 2021", "March 2021"; "14 March" and "March 14" have no
# year to shift and become "[DATE]".
_DAY_BEFORE = re.compile(
    r"(?<![\w.])(?P<d>\d{1,2})(?:st|nd|rd|th|er|\.)?(?:[ \t]*[-/ ][ \t]*|[ \t]+of[ \t]+|)\Z", re.I
)
_YEAR_AFTER_DAY = re.compile(rf"\.?(?:[ \t]*[-/,][ \t]*|[ \t]+)(?P<y>{_YEAR4}|'?\d{{2}})(?!\w)")
_DAY_YEAR_AFTER = re.compile(
    rf"\.?[ \t]+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?[ \t]+(?P<y>{_YEAR4})(?!\w)", re.I
)
_YEAR_AFTER = re.compile(rf"\.?,?[ \t]+(?P<y>{_YEAR4})(?!\w)")
_DAY_AFTER = re.compile(
    r"\.?[ \t]+(?P<d>\d{1,2})(?:st|nd|rd|th)?(?!\w|\.\d|[ \t]*,?[ \t]*\d)", re.I
)
_NO_YEAR_AFTER = re.compile(r"(?![ \t]*[,.]?[ \t]*'?\d)")

_PHONE = re.compile(
    r"""(?:
        (?:\+\d{1,3}[ \t.\-/]?|00\d{1,3}[ \t.\-/])(?:\(0\)[ \t]?)?\(?\d{1,5}\)?
        (?:[ \t.\-/]?\d{2,5}){1,4}
      | (?:1[ \t.\-])?\(?\d{3}\)?[ \t.\-]?\d{3}[ \t.\-]\d{4}
      | 0\d{1,5}[ \t]?[/\-][ \t]?\d{3,10}(?:[ \t\-]\d{2,6}){0,2}
      | 0\d{2,4}[ \t]\d{3,4}[ \t]\d{3,4} | 0\d{2,5}[ \t]\d{5,8}
    )(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?(?![\w\-/]|\.\d)""",
    re.X | re.I,
)

# Seven or more digits in a phone's layout; _PHONE then reads the exact extent. (_PHONE itself
# cannot start with a character class, so scanning a whole report with it costs four times as
# much.)
_PHONE_HINT = re.compile(r"\d[\d \t().\-/]{5,}\d")

_STREET_BEFORE = re.compile(  # before "Street", "Ave": "12 Oak ", "1450 N. Lakeshore "
    rf"\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?[ \t]+(?:(?:[NSEW]\.?|North|South|East|West)[ \t]+)?"
    rf"(?:[{_UP}0-9][\w'’\-]*[ \t]+){{0,3}}\Z"
)
_STREET_UNIT = re.compile(  # after it: ", Apt 4B", " #29"
    r"\.?(?:,?[ \t]+(?i:apt|apartment|unit|suite|ste|fl|floor|room|rm|\#)\.?[ \t]*\#?[ \t]*"
    r"[\w\-]{1,6})?"
)
_HOUSE_NUMBER = re.compile(  # after "Hauptstraße", "Ismaninger Str.", "Keizersgracht"
    r"\.?[ \t]+\d{1,4}[a-z]?(?:[ \t]*[-/][ \t]*\d{1,4}[a-z]?)?(?!\w)"
)
_STREET_AFTER_PREFIX = re.compile(  # at "rue", "via", "calle": "rue de la Paix 12"
    rf"\w+\.?[ \t]+(?:(?:de|du|des|la|le|l'|d'|del|della|di|dei|dos|da)[ \t]*)*[{_UP}][\w'’\-]*"
    rf"(?:[ \t]+[{_UP}][\w'’\-]*){{0,3}}(?:,?[ \t]+\d{{1,4}}[a-z]?(?!\w))?"
)
_NUMBER_BEFORE = re.compile(r"\d{1,4}(?:[ \t]?(?:bis|ter))?,?[ \t]+\Z")
_POSTCODE_CITY = re.compile(
    rf",?[ \t]+(?:[A-Z]{{1,2}}-)?\d{{4,5}}[ \t]+{_CAP_WORD}(?:[ \t\-]{_CAP_WORD})?"
)
_POSTAL = re.compile(  # "MA 01234" (a US state: checked in Python), "EH6 5DT"
    r"[A-Z]{1,2}(?:[ \t]+\d{5}(?:-\d{4})?|\d[A-Z\d]?[ \t]?\d[A-Z]{2})(?![\w\-])"
)
_US_STATES = frozenset(_VOCAB["us_states"])
_CITY_BEFORE = re.compile(rf"(?:{_CAP_WORD}[ \t]){{0,2}}{_CAP_WORD},?[ \t]+\Z")
_PO_BOX = re.compile(r"(?i)P\.?[ \t]?O\.?[ \t]*Box[ \t]+\d+")

_INST_KEYWORD = re.compile(rf"(?i)(?:{_alternation(_VOCAB['institution_words'])})\b")
_INST_COMPOUND = re.compile(
    rf"[{_UP}][\w\-]*(?i:{_alternation(_VOCAB['institution_compound_suffixes'])})\b"
)
_INST_RIGHT = re.compile(  # one blank between words: two or more are a column gap
    rf"(?:[ \t](?:(?:{_alternation(_CONNECTORS)})[ \t])*(?:St\.|[{_UP}][\w'’\-]*)){{1,4}}"
)

# Names.
_TITLE = re.compile(
    r"(?<![\w.])(?:(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Doctor|Herr|Frau|Mme|Mlle|Dott|Dra)\.?|"
    r"(?:DR|MR|MRS|MS|PROF|Pr)\.|(?P<lower>dr\.?|prof\.))"
    r"(?:[ \t]*(?:med|rer\.[ \t]*nat|univ|dent)\.)*(?:[ \t]+|(?<=\.)(?=[A-Z]))"
)
_NAME_CUE = re.compile(
    r"""(?ix)(?:
        (?:signed|dictated|read|reviewed|interpreted|transcribed|verified|approved|finali[sz]ed
        |authenticated|performed|ordered|referred|requested|authored|seen|examined|attested)
        \b[^\n]{0,40}?\bby
      | (?:discussed|reviewed|consulted|conferred)[ \t]+with | d/w | spoke[ \t]+(?:with|to)
      | spoken[ \t]+(?:with|to)
      | called[ \t]+(?:to|in[ \t]+to) | call | communicated[ \t]+(?:to|with) | reported[ \t]+to
      | relayed[ \t]+to | conveyed[ \t]+to | notified | paged | informed | identified[ \t]+as
      | attn | befundet[ \t]+von | gez
    )\b:?"""
)
_WEAK_CUE = re.compile(r"(?i)(?:patient|pt\.?)[ \t]+(?=[A-Z])")  # "Patient John Doe was seen"
_NAME_LABEL = re.compile(
    r"""(?ix)(?:
        cc | attending | resident | fellow | radiologist | consultant | technologist | tech
      | transcriptionist | author | signer | signed | electronically[ \t]+signed
      | (?:referring|ordering|requesting|treating|admitting)(?:[ \t]+(?:physician|doctor|provider|
        md|dr|clinician|consultant))? | physician | provider | patient(?:'s)?[ \t]+name
      | patient | pt | name | nom | nombre | paziente | paciente | patiente | patient\(?in\)?
      | arzt | ärztin | médecin | überweiser | zuweiser
    )[ \t]*:"""
)
_CREDENTIAL_AT = re.compile(
    r"(?:M\.?D\b\.?|D\.O\.|Ph\.?D\b\.?|MBBS|MBChB|FRCR|FRCPC|FRANZCR|DABR|(?P<weak>DO|NP|RN|PA-C)\b)"
)
_NAME_BEFORE = re.compile(
    rf"(?P<n>(?:[{_UP}][^\W\d_]*(?:['’\-][^\W\d_]+)*\.?,?[ \t]){{0,3}}[{_UP}][^\W\d_]*"
    r"(?:['’\-][^\W\d_]+)*),?[ \t]+\Z"
)
_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?")
_CREDENTIAL_AHEAD = re.compile(
    r"(?i)(?:m\.?d|d\.o|ph\.?d|mbbs|mbchb|frcr|frcpc|frcp|mrcp|franzcr|facr|dabr|rn|np|pa-c|"
    r"rt|msc|bsc|mph|jr|sr|ii|iii|iv)\b\.?"
)
# DICOM person names, read around their first caret: DOE^JOHN^A^DR, VAN DER BERG^JAN
_PN_FAMILY = re.compile(
    rf"(?i:(?:(?:{_alternation(_PARTICLES)})[ \t]+)*)[^\W\d_][^\W\d_'’.\-]*(?:['’\-][^\W\d_]+)*\Z"
)
_PN_REST = re.compile(
    r"\^[^\W\d_][\w'’.\-]*(?:[ \t][^\W\d_][\w'’.\-]*)?"
    r"(?:\^(?:[^\W\d_][\w'’.\-]*(?:[ \t][^\W\d_][\w'’.\-]*)?)?)*"
)
_NAME_GAP = re.compile(
    rf"[ \t]*[,^\-]?[ \t]*(?:(?:[{_UP}]\.?|(?i:{_alternation(_PARTICLES)}))(?:[ \t]+|\^|\.))*"
)
_NEXT_WORD = re.compile(r"(?:['’]s)?[ \t]+([^\W\d_]+)")
_EPONYM_NOUNS = frozenset(_VOCAB["eponym_nouns"])
_KNOWN_INITIAL = re.compile(r"(?<![\w.])([A-Z])\.[ \t]*\Z")
_NAME_PREFIX = re.compile(rf"(?:(?<![\w.])(?:[A-Z]\.|(?i:{_alternation(_PARTICLES)}))[ \t]*)+\Z")
_INITIAL_AFTER = re.compile(r"[ \t]+([A-Z])(?=\.?(?!\w))")
_LAST_COMMA_FIRST = re.compile(rf"[{_UP}][^\W\d_]+,[ \t]+[{_UP}][^\W\d_]")
_TITLE_BEFORE = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?|\^)[ \t]*\Z")

# Labelled values: tried at their label's first word.
_PHONE_LABEL = re.compile(
    r"(?i)(?:tel(?:ephone)?|phone|ph|fax|telefax|mobile|mob|cell|pager|beeper|bleep|"
    r"call[ \t]*back(?:[ \t]+(?:number|no\.?|\#))?|contact(?:[ \t]+(?:number|no\.?|\#))|"
    r"tél(?:éphone)?|telefon|handy)\.?[ \t]*(?:no\.?|number|\#)?[ \t]*[:#]?[ \t]*"
    r"(?P<v>\+?\(?\d[\d \t().\-/]{2,}\d)"
)
_ID_LABEL = re.compile(
    r"""(?ix)(?:
        mrn | mr[ \t]?(?:\#|no\.?|number) | med(?:ical)?\.?[ \t]*rec(?:ord)?\.?[ \t]*(?:\#|no\.?|
        number|nr\.?)? | patient[ \t]*(?:id|\#|no\.?|number|nr\.?) | pat\.?[ \t-]?(?:id|nr\.?)
        | hosp(?:ital)?[ \t]*(?:\#|no\.?|number) | acc(?:ession)?\.?[ \t]*(?:\#|no\.?|number|nr\.?)
        | accession | accn | order[ \t]*(?:\#|no\.?|number|id) | requisition[ \t]*(?:\#|no\.?)?
        | visit[ \t]*(?:\#|no\.?|number|id) | encounter[ \t]*(?:\#|no\.?|number|id)?
        | account[ \t]*(?:\#|no\.?|number)? | acct[ \t]*\#? | case[ \t]*(?:\#|no\.?|number|id)
        | study[ \t]*(?:id|\#|no\.?) | exam[ \t]*(?:id|\#|no\.?) | ssn | social[ \t]+security
        (?:[ \t]+(?:number|no\.?))? | nhs[ \t]*(?:no\.?|number|\#)? | insurance[ \t]*(?:\#|no\.?|
        number|id) | member[ \t]*(?:id|\#) | fall(?:nummer|[ \t-]?nr\.?) | auftrags(?:nummer|
        [ \t-]?nr\.?) | patientennummer | record[ \t]*(?:\#|no\.?|number) | serial[ \t]*(?:\#|no\.?|
        number)? | s/n | (?:id|fin|pid|csn|ipp|nip|nda)(?=[ \t]*[:\#])
    )[ \t]*[:\#=]?[ \t]*(?P<v>\#?[A-Z0-9](?:[A-Z0-9\-/.]*[A-Z0-9])?(?:[ ]\d{3,}(?![\w.]))*)"""
)
_ZIP_LABEL = re.compile(
    r"(?i)(?:zip(?:[ \t]*code)?|postal[ \t]*code|post[ \t]*code|postcode|plz|code[ \t]+postal)"
    r"[ \t]*[:#]?[ \t]*(?P<v>[A-Z0-9]{2,5}(?:[ \t-][A-Z0-9]{3,4})?)\b"
)

# Ages over 89: "aged 95" at its word; "92-year-old", "95 y/o", "93F" from the number.
_AGE_WORD = re.compile(
    r"(?i)(?:aged?|age[ \t]*:|âge|alter[ \t]*:?|anni|edad[ \t]*:?|età[ \t]*:?)[ \t]*"
    r"(?P<n>9\d|1[0-3]\d)(?:[ \t]*(?:years?|yrs?|y/?o|y\.o\.?|ans|jahre|años|anni))?(?![\w/]|\.\d)"
)
_AGE = re.compile(
    r"(?P<n>9\d|1[0-3]\d)(?:"
    r"(?i:[ \t]*-?[ \t]*(?:years?|yrs?|yr)[ \t]*-?[ \t]*old\b)"
    r"|(?i:[ \t]*-?[ \t]*(?:yo|y/o|y\.o\.?|yrs?|years?|jährige[rn]?|j\.|jahre?|ans|años|anni|"
    r"jaar)(?![\w/]))"
    r"|[ \t]?(?P<sex>[MFW])(?=[ \t]+[a-z]|[,;:)]|$))",
    re.M,
)
_TEMPERATURE = re.compile(r"(?i)(?:temp\w*|fever|febrile|t|°)\W{0,3}\Z")
# A token of letters and digits, joined by "-" or "/", with at least four digits.
_ID_TOKEN = re.compile(
    r"(?<![\w\-/.#])\#?(?=(?:[A-Za-z\-/]*\d){4})[A-Za-z0-9]+(?:[\-/][A-Za-z0-9]+)*"
    r"(?![\w\-]|[./]\d)"
)
_RATIO = re.compile(r"\d{1,3}(?:[-/]\d{1,3})+")
_UNIT_AHEAD = re.compile(
    r"[ \t]*(?:units?|iu|mg|mcg|µg|ml|cc|mgy|msv|gy|cgy|kv|kvp|mas|ma|ms|hu|cm|mm|m|kg|g|%|x|"
    r"bpm|mmhg|cells)\b",
    re.I,
)

# Trigger words: a pattern runs at the words of its set (or, for the scanning ones, only when
# one of them is in the report).
_TRIGGERS = {name: frozenset(words) for name, words in _VOCAB["triggers"].items()}
_TRIGGERED = {
    "cue": (_NAME_CUE, _TRIGGERS["cue"]),
    "weak": (_WEAK_CUE, _TRIGGERS["weak"]),
    "label": (_NAME_LABEL, _TRIGGERS["label"]),
    "title": (_TITLE, _TITLES),
    "phone": (_PHONE_LABEL, _TRIGGERS["phone"]),
    "id": (_ID_LABEL, _TRIGGERS["id"]),
    "zip": (_ZIP_LABEL, _TRIGGERS["zip"]),
    "age": (_AGE_WORD, _TRIGGERS["age"]),
    "credential": (_CREDENTIAL_AT, _TRIGGERS["credential"]),
    "street": (_STREET_AFTER_PREFIX, frozenset(_VOCAB["street_prefixes"])),
    "institution": (_INST_KEYWORD, frozenset(w.split()[0] for w in _VOCAB["institution_words"])),
    "box": (_PO_BOX, frozenset({"p", "po"})),
}
_STREET_SUFFIXES = frozenset(_VOCAB["street_suffixes"])
_STREET_COMPOUND_SUFFIXES = tuple(_VOCAB["street_compound_suffixes"])
_INST_COMPOUND_SUFFIXES = tuple(_VOCAB["institution_compound_suffixes"])
_INST_WORDS = frozenset(_VOCAB["institution_words"])

# ---------------------------------------------------------------------------------------------
# The report and its spans.


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str  # a key of TAGS
    rank: int
    text: str | None = None  # replacement when not the kind's tag (shifted dates, ages)


@dataclass
class _Doc:
    """A report read once: its text, lower-cased text and words with their offsets."""

    text: str
    lower: str
    words: list[tuple[int, str]]  # (offset, lower-case word)
    offsets: list[int]  # of the words
    where: dict[str, list[int]]  # lower-case word -> its offsets

    @classmethod
    def read(cls, text: str) -> _Doc:
        lower = text.lower()
        words = [(m.start(), m.group()) for m in _WORD.finditer(lower)]
        where: dict[str, list[int]] = {}
        for offset, word in words:
            where.setdefault(word, []).append(offset)
        return cls(text, lower, words, [o for o, _ in words], where)

    @property
    def vocab(self) -> Iterable[str]:
        return self.where.keys()

    def at(self, trigger: str) -> Iterator[re.Match[str]]:
        """Matches of the triggered pattern ``trigger`` at each of its words, in text order."""
        pattern, vocab = _TRIGGERED[trigger]
        offsets = sorted(o for w in vocab & self.where.keys() for o in self.where[w])
        for offset in offsets:
            if m := pattern.match(self.text, offset):
                yield m

    def free(self, start: int, others: str = ".") -> bool:
        """Whether the character before ``start`` is neither a word character nor one of
        ``others``: the lookbehind of a scanning pattern."""
        if start == 0:
            return True
        before = self.text[start - 1]
        return not (before.isalnum() or before == "_" or before in others)


def scrub_report(
    text: str,
    known: Identifiers | None = None,
    shift: Shift | None = None,
    *,
    day_first: bool = False,
) -> ScrubbedReport:
    """``text`` with identifiers replaced by tags and dates moved by ``shift``.

    ``known`` holds the values known for this report's patient and study (from its RIS row or
    DICOM header): they are removed in any spelling, on top of what the patterns find.
    ``day_first`` reads ambiguous numeric dates such as 03/04/2021 as 3 April (European) rather
    than March 4.

    >>> scrub_report("Seen by Dr. Roe on 03/14/2021.", None, lambda d: d.replace(year=2019)).text
    'Seen by Dr. [NAME] on 2019-03-14.'
    """
    doc = _Doc.read(text)
    terms = _known_terms(known) if known else None
    dates = frozenset(known.dates) if known else frozenset()
    spans = _contact_spans(doc)
    spans += _date_spans(doc, shift, dates, day_first)
    spans += _label_spans(doc)
    spans += _address_spans(doc)
    spans += _institution_spans(doc)
    spans += _name_spans(doc, terms)
    spans += _age_spans(doc)
    spans += _digit_spans(doc)
    if terms:
        spans += _known_spans(doc, terms)
    return _render(text, spans)


def _render(text: str, spans: list[_Span]) -> ScrubbedReport:
    """Resolve overlaps (stronger rank, then longer, wins), merge the pieces of one name or
    address, and write the result."""
    starts: list[int] = []  # of the taken pieces, sorted; pieces never overlap
    taken: list[tuple[int, int, _Span]] = []
    for span in sorted(spans, key=lambda s: (s.rank, s.start - s.end, s.start)):
        index = bisect.bisect_right(starts, span.start)
        lo = index - 1 if index and taken[index - 1][1] > span.start else index
        hi = index
        while hi < len(taken) and taken[hi][0] < span.end:
            hi += 1
        pieces, cursor = [], span.start
        for start, end, _ in taken[lo:hi]:
            if start > cursor:
                pieces.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < span.end:
            pieces.append((cursor, span.end))
        if pieces != [(span.start, span.end)] and span.kind not in _DIVISIBLE:
            continue  # what is left of "2021-03-05T14" once the date is out is no ID
        for a, b in pieces:
            if text[a:b].strip(" \t,.;:"):
                piece = (
                    span if (a, b) == (span.start, span.end) else _Span(a, b, span.kind, span.rank)
                )
                at = bisect.bisect_right(starts, a)
                starts.insert(at, a)
                taken.insert(at, (a, b, piece))
    merged: list[tuple[int, int, _Span]] = []
    for start, end, span in taken:
        if merged:
            p_start, p_end, prev = merged[-1]
            if prev.kind == span.kind and _joins(span.kind, text[p_end:start]):
                kept = (
                    prev
                    if prev.text is None and span.text is None
                    else _Span(p_start, end, span.kind, span.rank)
                )
                merged[-1] = (p_start, end, kept)
                continue
        merged.append((start, end, span))
    out, counts, pos = [], Counter(), 0
    for start, end, span in merged:
        out.append(text[pos:start])
        out.append(span.text if span.text is not None else TAGS[span.kind])
        counts[span.kind] += 1
        pos = end
    out.append(text[pos:])
    return ScrubbedReport("".join(out), dict(counts))


_DIVISIBLE = frozenset({"name", "address", "institution"})  # kinds whose parts still identify


def _joins(kind: str, gap: str) -> bool:
    """Whether two pieces of one kind separated by ``gap`` are one value."""
    if kind == "name":
        return len(gap) <= 12 and _NAME_GAP.fullmatch(gap) is not None
    if kind in ("address", "institution"):
        return len(gap) <= 3 and gap.strip(" \t,-") == ""
    return gap == ""


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


# ---------------------------------------------------------------------------------------------
# Values known for this patient and study.


@dataclass(frozen=True)
class _KnownTerms:
    name_parts: frozenset[str]  # lower-case words of the known names
    initials: frozenset[str]  # their first letters, upper case
    ids: tuple[tuple[str, ...], ...]  # per ID, lower-case: as given, letters and digits only...
    literals: tuple[tuple[re.Pattern[str], str], ...]  # (pattern, kind): places, contacts


def _known_terms(known: Identifiers) -> _KnownTerms | None:
    if not len(known):
        return None
    return _compile_known(
        frozenset(known.names),
        frozenset(known.ids),
        frozenset(known.places),
        frozenset(known.contacts),
    )


@lru_cache(maxsize=1024)
def _compile_known(
    names: frozenset[str], ids: frozenset[str], places: frozenset[str], contacts: frozenset[str]
) -> _KnownTerms:
    parts: set[str] = set()
    initials: set[str] = set()
    for name in names:
        for component in re.split(r"[\^,]", name):
            words = _WORD.findall(component.replace("-", " "))
            for index, word in enumerate(words):
                lower = word.lower()
                # "van" of "van der Berg" is no name alone; "Das" of "Jian Das" and "LE^MINH" are.
                particle = lower in _PARTICLES and index < len(words) - 1
                if particle or lower in _TITLES | _CREDENTIALS:
                    continue
                initials.add(word[0].upper())
                if len(word) >= 2:
                    parts.add(lower)
    # An ID with or without its separators ("A-0075-3365" = "A00753365") and without the leading
    # zeros a spreadsheet may have dropped; below 4 characters it would hit "12 mm".
    id_forms: set[tuple[str, ...]] = set()
    for value in ids:
        alnum = re.sub(r"[\W_]", "", value).lower()
        forms = (value.strip().lower(), alnum, alnum.lstrip("0"))
        id_forms.add(tuple(sorted({v for v in forms if len(v) >= 4}, key=len, reverse=True)))
    literals = [(p, k) for v in places for p, k in _place_patterns(v)]
    literals += [pk for v in contacts if (pk := _contact_pattern(v))]
    return _KnownTerms(
        frozenset(parts),
        frozenset(initials),
        tuple(forms for forms in id_forms if forms),
        tuple(literals),
    )


@cache
def _place_patterns(value: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """An institution or address, and its comma-separated parts that are specific enough."""
    parts = [value] + [p for p in value.split(",") if len(p.strip()) >= 5]
    kind = "address" if re.search(r"\d", value) else "institution"  # a town of an address too
    out = []
    for part in dict.fromkeys(p.strip() for p in parts):
        if part.lower() in COMMON_WORDS or not re.search(r"[^\W\d_]{2}|\d{4}", part):
            continue
        body = r"\s+".join(map(re.escape, part.split()))
        out.append((re.compile(rf"(?i)(?<![\w])(?:{body})(?![\w])"), kind))
    return tuple(out)


@cache
def _contact_pattern(value: str) -> tuple[re.Pattern[str], str] | None:
    digits = re.sub(r"\D", "", value)
    if "@" in value:
        return re.compile(re.escape(value), re.I), "email"
    if "://" in value or value.lower().startswith("www."):
        return re.compile(re.escape(value), re.I), "url"
    if len(digits) >= 7 and re.fullmatch(r"[\d\s().+\-/]+", value):
        body = r"[\s().\-/]{0,3}".join(digits)
        return re.compile(rf"(?<![\d])\+?{body}(?![\d])"), "phone"
    return None


def _known_spans(doc: _Doc, terms: _KnownTerms) -> list[_Span]:
    spans = [
        _Span(m.start(), m.end(), kind, R_KNOWN)
        for pattern, kind in terms.literals
        for m in pattern.finditer(doc.text)
    ]
    lower, missing = doc.lower, []
    for forms in terms.ids:  # as written: plain string search
        hits = set()
        for value in forms:
            at = lower.find(value)
            while at >= 0:
                stop = at + len(value)
                if doc.free(at, "") and not (stop < len(lower) and lower[stop].isalnum()):
                    spans.append(_Span(at, stop, "id", R_KNOWN))
                    hits.add(stop)
                at = lower.find(value, at + 1)
        tail = forms[-1][-4:]
        if lower.count(tail) > len(hits):  # perhaps written with other separators too
            missing += [v for v in forms if v.isalnum()]
    if missing:
        spans += _known_id_spans(doc.text, tuple(missing))
    return spans


def _known_id_spans(text: str, ids: tuple[str, ...]) -> list[_Span]:
    """Known IDs written with or without separators: the text's letter-and-digit runs are
    joined where one blank, "-", "." or "/" parts them, and each ID is looked up in that string;
    a hit must start and end where runs do ("0012345" is not inside "A00123456"). Plain string
    search: every report brings a new accession number, and compiling a pattern for each would
    cost more than the whole scrub."""
    parts: list[str] = []
    keys: list[int] = []  # where each run starts in the joined string
    offsets: list[int] = []  # and in the text
    starts, ends = set(), set()
    size, last_end = 0, None
    for m in _ALNUM_RUN.finditer(text):
        if last_end is not None and not (m.start() - last_end == 1 and text[last_end] in " \t-./"):
            parts.append("|")
            size += 1
        starts.add(size)
        keys.append(size)
        offsets.append(m.start())
        parts.append(m.group().lower())
        size += len(m.group())
        ends.add(size)
        last_end = m.end()
    flat = "".join(parts)

    def to_text(index: int) -> int:
        run = bisect.bisect_right(keys, index) - 1
        return offsets[run] + index - keys[run]

    spans = []
    for value in ids:
        at = flat.find(value)
        while at >= 0:
            stop = at + len(value)
            if at in starts and stop in ends:
                spans.append(_Span(to_text(at), to_text(stop - 1) + 1, "id", R_KNOWN))
            at = flat.find(value, at + 1)
    return spans


# ---------------------------------------------------------------------------------------------
# Contacts and dates.


def _contact_spans(doc: _Doc) -> list[_Span]:
    text, spans = doc.text, []
    if "@" in text:
        spans += [
            _Span(m.start(), m.end(), "email", R_CONTACT)
            for m in _EMAIL.finditer(text)
            if doc.free(m.start(), ".+-")
        ]
    urls = []
    if "://" in text or "www." in doc.lower:
        urls += [m for m in _URL.finditer(text) if doc.free(m.start(), "")]
    if any(f".{tld}" in text for tld in _TLDS):
        urls += [m for m in _DOMAIN.finditer(text) if doc.free(m.start(), "@.-")]
    for m in urls:
        spans.append(
            _Span(m.start(), m.start() + len(m.group().rstrip(".,;:!?)")), "url", R_CONTACT)
        )
    if "." in text:
        spans += [
            _Span(m.start(), m.end(), "id", R_CONTACT)
            for m in _UID.finditer(text)
            if doc.free(m.start())
        ]
        spans += [
            _Span(m.start(), m.end(), "ip", R_CONTACT)
            for m in _IPV4.finditer(text)
            if doc.free(m.start()) and max(map(int, m.group().split(":")[0].split("."))) <= 255
        ]
    if _IPV6_HINT.search(text):
        spans += [
            _Span(m.start(), m.end(), "ip", R_CONTACT)
            for m in _IPV6.finditer(text)
            if doc.free(m.start(), ":")
        ]
    return spans


def _year(text: str) -> int:
    digits = text.lstrip("'")
    if len(digits) != 2:
        return int(digits)
    # Reports are written about the past: "21" is 2021 until that would be in the future.
    return 2000 + int(digits) if 2000 + int(digits) <= dt.date.today().year else 1900 + int(digits)


def _read_date(
    groups: dict[str, str | None], known: frozenset[dt.date], day_first: bool
) -> dt.date | None:
    """The date a match names, or None (no such day, or not a month word)."""
    try:
        year = _year(groups["y"] or "")
        if groups.get("a"):  # numeric day and month, order to be decided
            a, b = int(groups["a"] or 0), int(groups["b"] or 0)
            candidates = [d for d in (_valid(year, a, b), _valid(year, b, a)) if d]
            if len(candidates) == 2 and candidates[0] != candidates[1]:
                hits = [c for c in candidates if c in known]
                if len(hits) == 1:  # the row's own dates settle 03/04 vs 04/03
                    return hits[0]
                return candidates[1] if (groups["s"] == "." or day_first) else candidates[0]
            return candidates[0] if candidates else None
        month = (
            MONTHS[(groups["mon"] or "").lower()] if groups.get("mon") else int(groups["m"] or 0)
        )
        return dt.date(year, month, int(groups.get("d") or 15))
    except (ValueError, KeyError):
        return None


def _valid(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _date_span(
    start: int,
    end: int,
    groups: dict[str, str | None],
    shift: Shift | None,
    known: frozenset[dt.date],
    day_first: bool,
) -> _Span | None:
    """The span of one date found at ``start:end``, from its parts in ``groups``."""
    if groups.get("y") is None:  # day and month only: no year to shift
        return _Span(start, end, "date", R_DATE)
    date = _read_date(groups, known, day_first)
    if date is None or not 1900 <= date.year <= 2099:
        return None
    out = None
    if shift and groups.get("d") is None and groups.get("a") is None:
        moved = shift(date)  # a month: its middle moves as the month does
        out = f"{moved.year:04d}-{moved.month:02d}"
    elif shift:
        out = shift(date).isoformat()
        if time := groups.get("t"):
            out += "T" + ":".join(time[i : i + 2] for i in range(0, len(time), 2))
    return _Span(start, end, "date", R_DATE, out)


def find_dates(text: str, day_first: bool = False) -> list[dt.date]:
    """Every whole date (day, month and year) :func:`scrub_report` recognises in ``text``.

    >>> find_dates("seen 03/14/2021 and 2 Feb 2020")
    [datetime.date(2021, 3, 14), datetime.date(2020, 2, 2)]
    """
    spans = _date_spans(_Doc.read(text), lambda d: d, frozenset(), day_first)
    dates = []
    for span in sorted(spans, key=lambda s: s.start):
        if span.text and len(span.text) >= 10:
            dates.append(dt.date.fromisoformat(span.text[:10]))
    return dates


def _date_spans(
    doc: _Doc, shift: Shift | None, known: frozenset[dt.date], day_first: bool
) -> list[_Span]:
    text, spans = doc.text, []
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if doc.free(m.start(), ".-/") and (
                span := _date_span(m.start(), m.end(), m.groupdict(), shift, known, day_first)
            ):
                spans.append(span)
    for offset, word in doc.words:
        if word in MONTHS and doc.free(offset):
            found = _month_date(text, offset, offset + len(word))
            if found and (span := _date_span(*found, shift, known, day_first)):
                spans.append(span)
    return spans


def _month_date(text: str, start: int, end: int) -> tuple[int, int, dict[str, str | None]] | None:
    """The date around the month word at ``start:end``: (start, end, parts) or None."""
    parts: dict[str, str | None] = {"mon": text[start:end]}
    day = _DAY_BEFORE.search(text, max(0, start - 14), start)
    if day and (year := _YEAR_AFTER_DAY.match(text, end)):
        return day.start(), year.end(), parts | {"d": day["d"], "y": year["y"]}
    if m := _DAY_YEAR_AFTER.match(text, end):
        return start, m.end(), parts | {"d": m["d"], "y": m["y"]}
    if m := _YEAR_AFTER.match(text, end):
        return start, m.end(), parts | {"y": m["y"]}
    if not text[start].isupper():
        return None  # "may 2" without a year: a verb and a number
    if day and _NO_YEAR_AFTER.match(text, end):
        return day.start(), end, parts | {"d": day["d"], "y": None}
    if m := _DAY_AFTER.match(text, end):
        return start, m.end(), parts | {"d": m["d"], "y": None}
    return None


# ---------------------------------------------------------------------------------------------
# Labelled values, phones, addresses, institutions.


def _label_spans(doc: _Doc) -> list[_Span]:
    spans = []
    for m in doc.at("id"):
        value = m.group("v")
        if any(c.isdigit() for c in value) and len(value.strip("#")) >= 3:
            spans.append(_Span(m.start("v"), m.end("v"), "id", R_LABEL))
    for m in doc.at("zip"):
        if any(c.isdigit() for c in m.group("v")):
            spans.append(_Span(m.start("v"), m.end("v"), "zip", R_LABEL))
    for m in doc.at("phone"):
        value = m.group("v").rstrip(" \t-/(")
        if sum(c.isdigit() for c in value) >= 4:
            spans.append(_Span(m.start("v"), m.start("v") + len(value), "phone", R_LABEL))
    text, last = doc.text, -1
    for hint in _PHONE_HINT.finditer(text):
        if sum(c.isdigit() for c in hint.group()) < 7:
            continue
        pos = max(last, hint.start() - 6)
        while pos < hint.end():  # the phone starts in or just before the hint
            m = _PHONE.match(text, pos) if text[pos] in "+(0123456789" else None
            if m and doc.free(pos, "+-/.") and 7 <= sum(c.isdigit() for c in m.group()) <= 15:
                spans.append(_Span(pos, m.end(), "phone", R_PHONE))
                pos = last = m.end()
            else:
                pos += 1
    return spans


def _address_spans(doc: _Doc) -> list[_Span]:
    text = doc.text
    found: list[tuple[int, int]] = []
    for suffix in _STREET_SUFFIXES & doc.where.keys():
        for offset in doc.where[suffix]:
            if not text[offset].isupper():
                continue
            number = _STREET_BEFORE.search(text, max(0, offset - 50), offset)
            while number and not doc.free(number.start()):  # "6XE. 1600 ..." starts at "1600"
                number = _STREET_BEFORE.search(text, number.start() + 1, offset)
            if number:
                unit = _STREET_UNIT.match(text, offset + len(suffix))
                found.append((number.start(), unit.end() if unit else offset + len(suffix)))
    previous = None
    for offset, word in doc.words:  # "Hauptstraße 5", "Ismaninger Str. 22"
        if word.endswith(_STREET_COMPOUND_SUFFIXES) and (
            number := _HOUSE_NUMBER.match(text, offset + len(word))
        ):
            start = (
                previous if word in _STREET_COMPOUND_SUFFIXES and previous is not None else offset
            )
            if text[start].isupper():
                found.append((start, number.end()))
        previous = offset
    for m in doc.at("street"):  # "rue de la Paix 12", "12 rue de la Paix"
        before = _NUMBER_BEFORE.search(text, max(0, m.start() - 12), m.start())
        start = before.start() if before else m.start()
        if re.search(r"\d", text[start : m.end()]):  # "via the catheter": no number, no street
            found.append((start, m.end()))
    spans = []
    for start, end in found:
        if tail := _POSTCODE_CITY.match(text, end):  # ", 81675 München"
            end = tail.end()
        spans.append(_Span(start, end, "address", R_ADDRESS))
    if re.search(r"\d", text):
        for m in _POSTAL.finditer(text):
            us = m.group()[2:3] in (" ", "\t")
            if doc.free(m.start()) and (not us or m.group()[:2] in _US_STATES):
                city = _CITY_BEFORE.search(text, max(0, m.start() - 60), m.start())
                start = city.start() if city else m.start()
                spans.append(_Span(start, m.end(), "address", R_ADDRESS))
    spans += [_Span(m.start(), m.end(), "address", R_ADDRESS) for m in doc.at("box")]
    return spans


def _institution_spans(doc: _Doc) -> list[_Span]:
    """ "Mercy General Hospital", "Hôpital Saint-Louis", "Klinikum rechts der Isar"."""
    text, spans = doc.text, []
    for m in doc.at("institution"):
        if not m.group()[0].isupper():
            continue  # "admitted to hospital": a kind of place, not a name
        start = _name_words_before(doc, m.start())
        end = m.end()
        right = _INST_RIGHT.match(text, m.end())
        if right and (start == m.start() or right.group().split()[0].lower() in _CONNECTORS):
            for word in _WORD.finditer(text, m.end(), right.end()):
                if word.group().lower() in _STOP_AFTER_CUE - _CONNECTORS:
                    break  # "Hospital No: 123"
                if word.group()[0].isupper():
                    end = word.end()
        if (start, end) != (m.start(), m.end()):
            spans.append(_Span(start, end, "institution", R_INSTITUTION))
    if any(s in doc.lower for s in _INST_COMPOUND_SUFFIXES):
        for m in _INST_COMPOUND.finditer(text):
            if not doc.free(m.start()) or m.group().lower() in _INST_WORDS:
                continue  # "Hospital" ends in "spital"; the keyword pass has it
            right = _INST_RIGHT.match(text, m.end())
            spans.append(
                _Span(m.start(), right.end() if right else m.end(), "institution", R_INSTITUTION)
            )
    return spans


def _name_words_before(doc: _Doc, pos: int) -> int:
    """Where the capitalised words just before ``pos`` start ("St. Brigid Regional" before
    "Hospital"): up to five on the same line, one blank apart, with connectors ("of", "and")
    inside; ordinary words at their head ("From", "The") are left out."""
    text, index = doc.text, bisect.bisect_left(doc.offsets, pos)
    taken: list[tuple[int, str]] = []
    following = pos
    for offset, word in reversed(doc.words[max(0, index - 8) : index]):
        gap = text[offset + len(word) : following]
        if not (gap in (" ", "\t", "-", " & ") or (gap == ". " and word in ("st", "mt"))):
            break
        if not (text[offset].isupper() or word in _CONNECTORS) or len(taken) == 5:
            break
        taken.append((offset, word))
        following = offset
    while taken and (taken[-1][1] in _STOP_AFTER_CUE or taken[-1][1] in _CONNECTORS):
        taken.pop()  # the head: "From Mercy Hospital", "The Royal Infirmary"
    return taken[-1][0] if taken else pos


# ---------------------------------------------------------------------------------------------
# Names.


def _name_spans(doc: _Doc, terms: _KnownTerms | None) -> list[_Span]:
    text, spans = doc.text, []
    caret = text.find("^")
    while caret >= 0:
        family = _PN_FAMILY.search(text, max(0, caret - 40), caret)
        rest = _PN_REST.match(text, caret)
        if family and rest and doc.free(family.start(), "^"):
            spans.append(_Span(family.start(), rest.end(), "name", R_NAME))
        caret = text.find("^", rest.end() if rest else caret + 1)
    if terms:
        spans += _known_name_spans(doc, terms)
    for m in doc.at("title"):
        end = _name_run(
            text, m.end(), _STOP_AFTER_TITLE, first_free=True, lower=m.group("lower") is not None
        )
        if end:
            spans.append(_Span(m.end(), end, "name", R_NAME))
    for trigger, stop in (
        ("cue", _STOP_AFTER_CUE),
        ("label", _STOP_AFTER_TITLE),
        ("weak", _STOP_AFTER_CUE),
    ):
        for m in doc.at(trigger):
            if trigger == "label" and _names_a_thing(doc, m):
                continue
            start = _skip_blanks(text, m.end())
            if trigger == "label" and text.startswith("\n", start):
                start = _skip_blanks(text, start + 1)  # "Signed:\nJane Roe"
            if title := _TITLE.match(text, start):
                start = title.end()
            # Without a colon, "Patient" names someone only with two name words: "Patient John
            # Doe", not "Patient Information".
            # "Referring Physician: Ward, Jacqueline H.": after a label, "Last, First" is a name
            # even when the surname is also a word (Ward, Hall, Field).
            last_first = trigger == "label" and _LAST_COMMA_FIRST.match(text, start) is not None
            end = _name_run(text, start, stop, first_free=last_first,
                            min_words=2 if trigger == "weak" else 1)  # fmt: skip
            if end:
                spans.append(_Span(start, end, "name", R_NAME))
    for m in doc.at("credential"):  # "Jane Roe, MD", "Roe, Jane MD"
        line_start = max(text.rfind("\n", 0, m.start()) + 1, m.start() - 60)
        before = _NAME_BEFORE.search(text, line_start, m.start())
        if not before or (m.group("weak") and "," not in before.group()[-3:]):
            continue  # "DO", "NP", "RN" are credentials only after a comma
        words = list(_NAME_TOKEN.finditer(text, before.start("n"), before.end("n")))
        while words and words[0].group().rstrip(".").lower() in _NOT_NAME_LEAD:
            words.pop(0)  # "Signed John Roe, MD", "Radiologist Jane Roe MD"
        if words:
            spans.append(_Span(words[0].start(), before.end("n"), "name", R_NAME))
    return spans


def _names_a_thing(doc: _Doc, label: re.Match[str]) -> bool:
    """ "Exam Name:", "Procedure Name:": the name of no person."""
    if not label.group().lower().startswith("name"):
        return False
    index = bisect.bisect_left(doc.offsets, label.start())
    return index > 0 and doc.words[index - 1][1] in _THING_WORDS


def _name_run(
    text: str,
    pos: int,
    stop: frozenset[str],
    first_free: bool = False,
    lower: bool = False,
    min_words: int = 1,
) -> int | None:
    """Where a person's name starting at ``pos`` ends, or None when there is none there.

    A name is up to four capitalised words, with initials, particles ("van der"), hyphens and
    one comma ("Roe, Jane"); it ends at a lower-case word, a word of ``stop``, a credential
    ("MD"), a digit, a line end or two blanks (a column gap). ``first_free`` (after a title):
    the first word may be any ("Dr. Will Roe", "Dr. LI"); ``lower``: after a lower-case title
    ("dr roe") one lower-case word is a name.
    """
    end, words, comma, i = None, 0, False, pos
    while words < 4:
        if words and _CREDENTIAL_AHEAD.match(text, i):
            break
        m = _NAME_TOKEN.match(text, i)
        if not m:
            break
        token = m.group().rstrip(".")
        low = token.lower()
        if low in _TITLES and not words:
            i = _skip_blanks(text, m.end())
            continue
        if len(token) == 1 and token.isupper():
            if words:
                end = m.start() + 1  # an initial inside a name
        elif low in _PARTICLES and _name_follows(text, m.end()):
            pass  # "van der Berg": part of the name when a name word follows
        elif token[0].isupper():
            if low in stop and not (first_free and not words):
                break
            if (
                len(token) <= 3
                and token.isupper()
                and not (first_free and not words)
                and not text.startswith((",", "^"), m.end())
            ):
                break  # "d/w ED attending", "cc: GP": an abbreviation, not a name
            words += 1
            end = m.start() + len(token)
            if m.group().endswith(".") and low not in _TITLES:
                break  # "Dr. Roe. Call results...": a full stop ends the name
        elif lower and not words and low not in _STOP_AFTER_CUE:
            words += 1
            end = m.start() + len(token)
        else:
            break
        j = m.end()
        if text.startswith(",", j) and not comma and words == 1:
            comma = True
            j += 1
        column_gap = text.startswith("  ", j) or not text.startswith((" ", "\t"), j)
        if column_gap and not (text[j - 1] == "." and text[j : j + 1].isupper()):  # "J.Roe"
            break
        i = _skip_blanks(text, j)
    return end if words >= min_words else None


def _name_follows(text: str, pos: int) -> bool:
    nxt = _NAME_TOKEN.match(text, pos + 1) if text.startswith((" ", "\t"), pos) else None
    return nxt is not None and (nxt.group()[0].isupper() or nxt.group().lower() in _PARTICLES)


def _known_name_spans(doc: _Doc, terms: _KnownTerms) -> list[_Span]:
    """Words of the known names; one that is also an ordinary word only next to another name
    word, after a title, or after the initial of a known name ("J. White")."""
    text = doc.text
    if doc.vocab.isdisjoint(terms.name_parts):
        return []
    found = [(o, o + len(w), w in COMMON_WORDS) for o, w in doc.words if w in terms.name_parts]
    spans = []
    for index, (a, b, common) in enumerate(found):
        if b - a <= 3 and not text[a].isupper():
            continue  # "Li", "Ma" as names; "li", "mA" as words
        # "Jones fracture", "Baker's cyst", "Paget disease": an eponym, unless the name goes on.
        eponym = (m := _NEXT_WORD.match(text, b)) and m.group(1).lower() in _EPONYM_NOUNS
        if common or eponym:
            if not text[a].isupper():
                continue
            gaps = [text[found[index - 1][1] : a]] if index else []
            if index + 1 < len(found):
                gaps.append(text[b : found[index + 1][0]])
            near = any(len(g) <= 12 and _NAME_GAP.fullmatch(g) for g in gaps)
            before = text[max(0, a - 12) : a]
            initial = _KNOWN_INITIAL.search(before)
            if not (
                near
                or _TITLE_BEFORE.search(before)
                or (initial and initial.group(1) in terms.initials)
            ):
                continue
        # "A. K. van der Berg", "Doe, John A.": initials of the known names and particles go
        # with the name.
        start, end = a, b
        prefix = _NAME_PREFIX.search(text, max(0, a - 24), a)
        if prefix and set(re.findall(r"[A-Z](?=\.)", prefix.group())) <= terms.initials:
            start = prefix.start()
        if (suffix := _INITIAL_AFTER.match(text, b)) and suffix.group(1) in terms.initials:
            end = suffix.end()
        spans.append(_Span(start, end, "name", R_NAME))
    return spans


# ---------------------------------------------------------------------------------------------
# Ages and long digit runs.


def _age_spans(doc: _Doc) -> list[_Span]:
    text = doc.text
    spans = [_Span(m.start(), m.end(), "age", R_AGE) for m in doc.at("age")]
    for m in _AGE.finditer(text):
        if not doc.free(m.start(), ".,/-"):
            continue
        if m.group("sex") is None:
            spans.append(_Span(m.start(), m.end(), "age", R_AGE))
        elif not _TEMPERATURE.search(text, max(0, m.start() - 16), m.start()):
            # "93F with cough": keep the sex; "temp 101F" is a fever.
            spans.append(_Span(m.start(), m.end("n"), "age", R_AGE, TAGS["age"] + " "))
    return spans


def _digit_spans(doc: _Doc) -> list[_Span]:
    """IDs with no label: a token ("RAD2019001234", "A-0075-3365") with five or more digits,
    or four and a letter, that is no measurement ("12000 IU")."""
    spans = []
    for m in _ID_TOKEN.finditer(doc.text):
        token = m.group()
        if _RATIO.fullmatch(token):
            continue  # "120/80", "12-15": a ratio or a range
        long_enough = sum(map(str.isdigit, token)) >= 5 or (
            len(token) >= 6 and any(c.isalpha() for c in token)
        )
        if long_enough and not _UNIT_AHEAD.match(doc.text, m.end()):
            spans.append(_Span(m.start(), m.end(), "id", R_DIGITS))
    return spans


# ---------------------------------------------------------------------------------------------
# Whole files.


@dataclass
class ReportFileSummary:
    rows: int = 0  # input rows: written + rejected
    written: int = 0
    rejected: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # values replaced, by kind
    rejects_path: Path | None = None  # "file:line: reason", one a line


def deidentify_report_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    text_column: str | None = None,
    id_column: str | None = None,
    patient_column: str | None = None,
    pseudo: Pseudonymizer | None = None,
    keep_columns: Iterable[str] | None = None,
    *,
    day_first: bool = False,
) -> ReportFileSummary:
    """De-identify a report export into ``out`` (CSV, or JSON Lines for .jsonl/.ndjson).

    The id becomes the study pseudonym and the patient the patient pseudonym, the ones the
    image pipeline gives the same study and patient; dates move by the patient's shift, as in
    the images (without a patient they become "[DATE]"). Identifying columns are dropped; the
    others (or ``keep_columns``) are kept and scrubbed like the text. Rows that cannot be read
    or scrubbed are listed by ``file:line`` and reason in ``OUT.rejected.txt`` beside ``out``:
    every input row is either written or listed there.
    """
    if pseudo is None:
        raise MedtuneError("deidentify_report_file needs a Pseudonymizer (the pseudonym key)")
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise MedtuneError(f"{out}: write reports to a .csv, .tsv or .jsonl file")
    names = (
        id_column or DEFAULT_ID_COLUMN,
        patient_column or DEFAULT_PATIENT_COLUMN,
        text_column or DEFAULT_TEXT_COLUMN,
    )
    keep = None if keep_columns is None else set(keep_columns)
    summary = ReportFileSummary(rejects_path=out_path.with_suffix(".rejected.txt"))
    counts: Counter[str] = Counter()
    rejects: list[str] = []
    items = read_reports(path, text_column, id_column, patient_column)
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer: csv.DictWriter[str] | None = None
        for item in items:
            summary.rows += 1
            if isinstance(item, RejectedRow):
                rejects.append(f"{item.source}: {item.reason}")
                continue
            try:
                row, found = _deidentified_row(item, pseudo, keep, names, day_first)
            except Exception as err:  # one bad row never stops the file
                rejects.append(f"{item.source}: could not be de-identified ({type(err).__name__})")
                continue
            if suffix in (".jsonl", ".ndjson"):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                if writer is None:  # the first row fixes the columns (a patient one always)
                    columns = list(row)
                    if names[1] not in row:
                        columns.insert(1, names[1])
                    writer = csv.DictWriter(
                        fh, columns, delimiter="\t" if suffix == ".tsv" else ",",
                        extrasaction="ignore", restval="",
                    )  # fmt: skip
                    writer.writeheader()
                writer.writerow(row)
            counts.update(found)
            summary.written += 1
    assert summary.rejects_path is not None
    with atomic_path(summary.rejects_path) as tmp:
        tmp.write_text("".join(line + "\n" for line in rejects), encoding="utf-8")
    summary.rejected = len(rejects)
    summary.counts = dict(counts)
    return summary


def _deidentified_row(
    record: ReportRecord,
    pseudo: Pseudonymizer,
    keep: set[str] | None,
    names: tuple[str, str, str],
    day_first: bool,
) -> tuple[dict[str, str], Counter[str]]:
    """One output row (pseudonyms, the kept columns scrubbed, the scrubbed text last) and the
    count of values it replaced."""
    id_name, patient_name, text_name = names
    patient = pseudo.patient(record.patient) if record.patient else None
    # The image pipeline keys the shift on the patient's pseudonym (deid/pseudonyms.py).
    shift = (lambda day: pseudo.shift_date(patient, day)) if patient else None
    row = {id_name: pseudo.study(record.id)}
    if patient:
        row[patient_name] = patient
    counts: Counter[str] = Counter()
    for column, value in record.fields.items():
        if column in keep if keep is not None else identifying_kind(column) is None:
            cleaned = scrub_report(value, record.identifiers, shift, day_first=day_first)
            counts.update(cleaned.counts)
            row[column] = cleaned.text
    scrubbed = scrub_report(record.text, record.identifiers, shift, day_first=day_first)
    counts.update(scrubbed.counts)
    row[text_name] = scrubbed.text
    return row, counts
