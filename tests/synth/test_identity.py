"""Fake people, places and identifiers: deterministic, varied, and in the promised formats."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medtune.synth import identity as ident
from medtune.synth.identity import Person

PHONE = re.compile(r"^(\(555\) 01\d-\d{4}|555-01\d-\d{4}|555\.01\d\.\d{4}|\+1 555 01\d \d{4})$")
MRN_PATTERNS = (
    r"0\d{6}",  # 7 digits, leading zero
    r"[A-Z]\d{7}",
    r"[A-Z]-\d{4}-\d{4}",
    r"0\d{7}",  # 8 digits, leading zero
    r"[A-Z]{2}\d{6}",
    r"[1-9]\d{9}",
)
ACCESSION_PATTERNS = (
    r"RAD{year}\d{{7}}",
    r"{year}-XR-\d{{6}}",
    r"A\d{{8}}",
    r"XR{yy}-\d{{6}}",
    r"{yy}\d{{8}}",
)


def _everything(seed: int) -> list[object]:
    rng = np.random.default_rng(seed)
    person = ident.make_person(rng, "F")
    institution = ident.make_institution(rng, 3)
    return [
        person,
        ident.make_person(rng, "M"),
        ident.make_physician(rng),
        ident.make_address(rng),
        ident.make_phone(rng),
        [ident.make_mrn(rng, s) for s in range(6)],
        [ident.make_accession(rng, s, 2019) for s in range(5)],
        institution,
        ident.make_email(rng, person, institution),
        ident.make_email(rng, person, None),
    ]


def test_same_seed_same_output_and_other_seed_other_output() -> None:
    assert _everything(7) == _everything(7)
    assert _everything(7) != _everything(8)


def test_word_lists_are_large_diverse_and_clean() -> None:
    for sex in ("M", "F"):
        assert len(ident.GIVEN_NAMES[sex]) >= 180
        assert len(set(ident.GIVEN_NAMES[sex])) == len(ident.GIVEN_NAMES[sex])
    family = ident.FAMILY_NAMES
    assert len(family) >= 280 and len(set(family)) == len(family)
    assert any("'" in f for f in family) and any("-" in f for f in family)
    assert any(f.split()[0].islower() for f in family if " " in f)  # "van der Berg"
    assert {"Baker", "Hope", "White"} <= set(family)
    every = [*family, *ident.GIVEN_NAMES["M"], *ident.GIVEN_NAMES["F"], *ident.CITIES]
    # The DICOM default character repertoire is ASCII.
    assert all(name.isascii() and name.strip() == name for name in every)
    assert len(ident.STATES) == 50 and all(re.fullmatch(r"[A-Z]{2}", s) for s in ident.STATES)


def test_person_name_forms() -> None:
    john = Person(family="Doe", given="John", middle="A", sex="M")
    assert john.dicom_pn() == "DOE^JOHN^A"
    assert john.dicom_pn("mixed") == "Doe^John^A"
    assert john.display() == "John A. Doe"
    assert john.last_first() == "Doe, John A."
    jane = Person(family="Roe", given="Jane", middle=None, sex="F", prefix="Dr.")
    assert jane.display() == "Dr. Jane Roe"
    assert jane.last_first() == "Roe, Jane"
    assert jane.dicom_pn() == "ROE^JANE^^DR."
    assert Person("van der Berg", "Anna", "Maria", "F").display() == "Anna M. van der Berg"
    assert Person("O'Brien", "Liam", None, "M").dicom_pn() == "O'BRIEN^LIAM"
    with pytest.raises(ValueError):
        john.dicom_pn("lower")


def test_generated_people_have_no_trailing_carets_and_use_their_sex() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        sex = "M" if rng.random() < 0.5 else "F"
        person = ident.make_person(rng, sex)
        assert person.given in ident.GIVEN_NAMES[sex] and person.prefix is None
        for style in ("upper", "mixed"):
            pn = person.dicom_pn(style)
            assert not pn.endswith("^") and pn.count("^") <= 3
        assert person.dicom_pn() == person.dicom_pn("mixed").upper()
    with pytest.raises(ValueError):
        ident.make_person(rng, "X")


def test_physicians_are_doctors_of_both_sexes() -> None:
    rng = np.random.default_rng(2)
    doctors = [ident.make_physician(rng) for _ in range(100)]
    assert all(d.prefix == "Dr." and d.display().startswith("Dr. ") for d in doctors)
    assert {d.sex for d in doctors} == {"M", "F"}


def test_phone_numbers_are_fictional_in_every_layout() -> None:
    rng = np.random.default_rng(3)
    phones = [ident.make_phone(rng) for _ in range(2000)]
    assert all(PHONE.match(p) for p in phones), [p for p in phones if not PHONE.match(p)][:5]
    assert {p[0] for p in phones} == {"(", "5", "+"}
    assert any("." in p for p in phones)
    assert len(set(phones)) > 1900


@pytest.mark.parametrize("style", range(len(MRN_PATTERNS)))
def test_mrn_formats_per_style(style: int) -> None:
    rng = np.random.default_rng(style)
    values = [ident.make_mrn(rng, style) for _ in range(300)]
    assert all(re.fullmatch(MRN_PATTERNS[style], v) for v in values), values[:5]
    assert len(set(values)) > 290
    # Style indices wrap around, so any site index is a valid style.
    wrapped = ident.make_mrn(np.random.default_rng(0), style + len(MRN_PATTERNS))
    assert re.fullmatch(MRN_PATTERNS[style], wrapped)


@pytest.mark.parametrize("style", range(len(MRN_PATTERNS)))
def test_serials_make_unique_ids_in_the_same_format(style: int) -> None:
    # Far more patients than random digits could keep apart, and past style 0's padded range.
    rng = np.random.default_rng(style)
    mrns = [ident.make_mrn(rng, style, serial=i) for i in range(120_000)]
    assert len(set(mrns)) == len(mrns)
    assert all(re.fullmatch(MRN_PATTERNS[style], v) for v in mrns[:99_000:97])
    if style < len(ACCESSION_PATTERNS):
        pattern = ACCESSION_PATTERNS[style].format(year=2020, yy="20")
        accessions = [ident.make_accession(rng, style, 2020, serial=i) for i in range(120_000)]
        assert len(set(accessions)) == len(accessions)
        assert all(re.fullmatch(pattern, v) for v in accessions[::997])


def test_mrn_styles_are_distinguishable() -> None:
    rng = np.random.default_rng(4)
    for style in range(len(MRN_PATTERNS)):
        value = ident.make_mrn(rng, style)
        others = [p for i, p in enumerate(MRN_PATTERNS) if i != style]
        assert not any(re.fullmatch(p, value) for p in others)


@pytest.mark.parametrize("style", range(len(ACCESSION_PATTERNS)))
def test_accession_formats_embed_the_year(style: int) -> None:
    rng = np.random.default_rng(10 + style)
    for year in (2012, 2019, 2024):
        pattern = ACCESSION_PATTERNS[style].format(year=year, yy=f"{year % 100:02d}")
        values = [ident.make_accession(rng, style, year) for _ in range(100)]
        assert all(re.fullmatch(pattern, v) for v in values), values[:3]
        assert len(set(values)) > 95


def test_institutions_unique_fixed_by_index_and_fictional() -> None:
    names = [ident.make_institution(np.random.default_rng(i), i).name for i in range(64)]
    assert len(set(names)) == 64
    # The name depends on the index alone: every worker names a site the same way.
    again = ident.make_institution(np.random.default_rng(999), 5)
    assert again.name == names[5]
    assert all(
        PHONE.match(ident.make_institution(np.random.default_rng(i), i).phone) for i in range(64)
    )
    with pytest.raises(ValueError):
        ident.institution_name(-1)


def test_addresses() -> None:
    rng = np.random.default_rng(5)
    line = re.compile(
        r"^\d{1,4} [A-Za-z]+ [A-Za-z]+( (Apt|Unit|Suite) ?\w+| #\d+)?, [A-Za-z ]+, [A-Z]{2} \d{5}$"
    )
    addresses = [ident.make_address(rng) for _ in range(500)]
    for address in addresses:
        assert line.match(address.one_line()), address.one_line()
        assert address.state in ident.STATES and address.one_line().endswith(address.zip_code)
    assert any(a.zip_code.startswith("0") for a in addresses)  # leading zeros kept
    assert any(" Apt " in a.street or "#" in a.street for a in addresses)


def test_emails_are_valid_and_unreachable() -> None:
    rng = np.random.default_rng(6)
    institution = ident.make_institution(rng, 0)
    odd = Person("O'Brien-van der Berg", "Mary-Kate", None, "F")
    for _ in range(200):
        person = ident.make_person(rng, "F")
        for who in (person, odd):
            work = ident.make_email(rng, who, institution)
            home = ident.make_email(rng, who, None)
            for email in (work, home):
                assert re.fullmatch(
                    r"[a-z0-9._]+@[a-z0-9.-]+\.example\.(org|com|net)|"
                    r"[a-z0-9._]+@example\.(org|com|net)",
                    email,
                ), email
            assert work.endswith("@" + ident.institution_domain(institution))
    assert ident.institution_domain(institution) == "stbrigid-rh.example.org"
