"""Radiology reports: the text says what ``status`` says, and every identifier is in ``phi``.

Most tests read one corpus of several hundred reports over random inputs, with independent,
simple readings of the text (keyword, negation and hedge cues; identifier searches) that would
catch a template saying something other than what the report claims it says.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter

import numpy as np
import pytest

from medtune.config import CHEST_FINDINGS, Anatomy, Finding
from medtune.synth import identity as ident
from medtune.synth.reports import (
    DATE_FORMATS,
    PHI_KINDS,
    Report,
    ReportInput,
    format_date,
    write_report,
)
from tests.synth.report_inputs import make_input

# ---------------------------------------------------------------------------------------------
# Random inputs, shaped like the renderer's ground truth.

MONTHS = "January February March April May June July August September October November December"
MONTHS = MONTHS.split()


@pytest.fixture(scope="module")
def corpus() -> list[tuple[ReportInput, Report]]:
    rng = np.random.default_rng(2024)
    out = []
    for i in range(500):
        anatomy = Anatomy.CHEST if i % 2 else None  # chest-heavy, as its findings are many
        inp = make_input(rng, anatomy)
        out.append((inp, write_report(inp, rng)))
    return out


# ---------------------------------------------------------------------------------------------
# Reading the text.

KEYWORD = {  # words every sentence about a *described* finding uses
    Finding.NODULE: r"nodul",
    Finding.PLEURAL_EFFUSION: r"effusion",
    Finding.PNEUMOTHORAX: r"pneumothorax|\bPTX\b",
    Finding.CONSOLIDATION: r"consolidation",
    Finding.CARDIOMEGALY: r"cardiomegaly|heart|cardiac",
    Finding.FRACTURE: r"fracture|\bfx\b",
}
MENTION = {  # any wording that speaks of the finding, including implied negatives
    Finding.NODULE: r"nodul",
    Finding.PLEURAL_EFFUSION: r"effusion|costophrenic",
    Finding.PNEUMOTHORAX: r"pneumothora|\bPTX\b",
    Finding.CONSOLIDATION: r"consolidat|airspace|lungs are clear",
    Finding.CARDIOMEGALY: r"cardiomegaly|heart|cardiac|cardiomediastinal",
    Finding.FRACTURE: r"fractur|\bfx\b|osseous|heights are maintained|bones are intact",
}
NEGATION = r"\b(no|not|without|negative|normal|clear|sharp|intact|maintained)\b"
NEGATION_BEFORE = r"\b(no|not|without|negative)\b"
HEDGE = r"\b(possible|possibly|questionable|cannot|may|borderline|equivocal|versus)\b"
OPPOSITE = {
    "right": (r"\bleft\b", r"\bL\b|\bL[UL]L\b"),
    "left": (r"\bright\b", r"\bR\b|\bR[UML]L\b"),
}


def body_sentences(text: str) -> list[str]:
    """Sentences of FINDINGS, IMPRESSION and the sign-off (nothing before FINDINGS)."""
    start = re.search(r"^(FINDINGS|Findings):", text, re.M)
    assert start, text
    return [s for s in re.split(r"(?<=[.;?])\s+|\n", text[start.end() :]) if s.strip()]


def about(finding: Finding, sentences: list[str], table=KEYWORD) -> list[str]:
    return [s for s in sentences if re.search(table[finding], s, re.I)]


def occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    """Spans of ``needle`` in ``text`` (plain search: compiling a regex per value is slow)."""
    spans, start = [], text.find(needle)
    while start >= 0:
        spans.append((start, start + len(needle)))
        start = text.find(needle, start + 1)
    return spans


def phi_spans(report: Report) -> list[tuple[int, int]]:
    return [span for item in report.phi for span in occurrences(report.text, item.value)]


def covered(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


def uncovered(report: Report, pattern: str, flags: int = 0) -> list[str]:
    """Occurrences of ``pattern`` in the text that no recorded identifier covers."""
    spans = phi_spans(report)
    return [
        m.group() for m in re.finditer(pattern, report.text, flags) if not covered(m.span(), spans)
    ]


def uncovered_words(report: Report, words: set[str]) -> list[str]:
    """Case-blind occurrences of ``words``, not inside a longer word, that no identifier covers."""
    text, spans = report.text.lower(), phi_spans(report)
    leaks = []
    for word in words:
        for a, b in occurrences(text, word.lower()):
            whole = not text[a - 1 : a].isalnum() and not text[b : b + 1].isalnum()
            if whole and not covered((a, b), spans):
                leaks.append(report.text[a:b])
    return leaks


PARTICLES = {"van", "der", "den", "de", "la", "del", "los", "von", "ter", "al", "el", "abu"}


def name_parts(person: ident.Person) -> set[str]:
    """The name, and its parts a de-identifier must also find ("Smith" of "Smith-Jones")."""
    parts = {person.family, person.given}
    parts |= {p for p in re.split(r"[- ]", person.family) if len(p) >= 3}
    if person.middle and len(person.middle) > 1:
        parts.add(person.middle)
    return parts - PARTICLES


def date_spellings(day: datetime.date) -> set[str]:
    """Many ways to write a date, more than the module uses: a leak in any is caught."""
    month = MONTHS[day.month - 1]
    return {format_date(day, layout) for layout in DATE_FORMATS} | {
        f"{day:%Y%m%d}",
        f"{day.month}/{day.day}/{day.year % 100:02d}",
        f"{day:%m/%d/%y}",
        f"{day:%d.%m.%Y}",
        f"{day.day} {month} {day.year}",
        f"{month[:3]} {day.day}, {day.year}",
    }


# ---------------------------------------------------------------------------------------------
# Determinism and shape.


def test_same_seed_same_report() -> None:
    def one(seed: int) -> Report:
        rng = np.random.default_rng(seed)
        return write_report(make_input(rng, Anatomy.CHEST), rng)

    assert one(5) == one(5)
    assert one(5).text != one(6).text


def test_every_report_has_findings_impression_and_sign_off(corpus) -> None:
    for inp, report in corpus:
        assert re.search(r"^(FINDINGS|Findings):", report.text, re.M)
        assert re.search(r"^(IMPRESSION|Impression|CONCLUSION|Conclusion):", report.text, re.M)
        assert set(report.status) == {t.finding for t in inp.findings}
        rad = inp.radiologist
        signers = [p.value for p in report.phi if p.kind == "physician_name"]
        assert any(rad.family in s or rad.family.upper() in s for s in signers), report.text


def test_layouts_and_headers_vary(corpus) -> None:
    labels = Counter(
        m.group(1) for _, r in corpus for m in re.finditer(r"^([A-Za-z ]+):", r.text, re.M)
    )
    for label in ("EXAMINATION", "EXAM", "INDICATION", "CLINICAL HISTORY", "COMPARISON"):
        assert labels[label] > 5, label
    for label in ("TECHNIQUE", "FINDINGS", "IMPRESSION", "CONCLUSION", "Findings"):
        assert labels[label] > 5, label
    assert sum(r.text.startswith(("EXAM", "Exam", "PROCEDURE", "STUDY")) for _, r in corpus) > 50
    assert any(re.search(r"^1\. ", r.text, re.M) for _, r in corpus)  # numbered impressions


# ---------------------------------------------------------------------------------------------
# Identifiers.


def test_every_phi_value_is_in_the_text_and_well_kinded(corpus) -> None:
    for _, report in corpus:
        for item in report.phi:
            assert item.kind in PHI_KINDS
            assert item.value and item.value in report.text, (item, report.text)
        assert len(set(report.phi)) == len(report.phi)


def test_identifiers_never_appear_unrecorded(corpus) -> None:
    for inp, report in corpus:
        people = (inp.patient, inp.referring, inp.radiologist)
        words = {part for person in people for part in name_parts(person)}
        words |= {inp.mrn, inp.accession, inp.patient_phone, inp.patient_address.street}
        words |= {inp.institution.name, inp.institution.phone}
        for day in (inp.study_datetime.date(), *inp.prior_dates):
            words |= date_spellings(day)
        leaks = uncovered_words(report, words)
        assert not leaks, (leaks, report.text)


def test_identifiers_are_used_often_enough(corpus) -> None:
    kinds = Counter(p.kind for _, r in corpus for p in r.phi)
    for kind in PHI_KINDS:
        if kind != "age_over_89":
            assert kinds[kind] >= 10, (kind, kinds)
    names = {p.value for _, r in corpus for p in r.phi if p.kind == "patient_name"}
    in_history = [r for _, r in corpus if any(f"{n} seen in ED" in r.text for n in names)]
    assert in_history, "patient names never appear in the indication"


def test_no_name_from_the_lists_appears_outside_identifiers(corpus) -> None:
    """Template words must not double as names ("Hope", "White"), or the truth gets ambiguous."""
    names = {*ident.FAMILY_NAMES, *ident.GIVEN_NAMES["M"], *ident.GIVEN_NAMES["F"]}
    tokens = {t.lower() for n in names for t in re.split(r"[- ]", n) if len(t) >= 2}
    tokens -= PARTICLES
    for _, report in corpus:
        spans = phi_spans(report)
        for m in re.finditer(r"[A-Za-z']+", report.text):
            if m.group().lower() in tokens:
                assert covered(m.span(), spans), (m.group(), report.text)


def test_dates_are_the_study_or_its_priors(corpus) -> None:
    for inp, report in corpus:
        days = [inp.study_datetime.date(), *inp.prior_dates]
        allowed = {format_date(d, f) for d in days for f in DATE_FORMATS}
        later = [inp.study_datetime.date() + datetime.timedelta(days=k) for k in range(3)]
        stamps = {format_date(d, f) for d in later for f in DATE_FORMATS}
        for item in report.phi:
            if item.kind == "date":
                assert item.value in allowed, (item, report.text)
            if item.kind == "datetime":  # signed or called in after the study
                assert any(item.value.startswith(s) for s in stamps), (item, report.text)


def test_comparison_lists_prior_dates_or_none(corpus) -> None:
    listed = 0
    for inp, report in corpus:
        match = re.search(r"^(COMPARISON|Comparison):\s*(.*)$", report.text, re.M)
        if not match:
            continue
        line = match.group(2) or report.text[match.end() :].split("\n", 2)[1]
        if not inp.prior_dates:
            assert re.match(r"(None|No prior)", line), line
        elif not line.startswith(("None", "No prior")):
            assert any(d in line for p in inp.prior_dates for d in date_spellings(p)), line
            listed += 1
    assert listed > 100


def test_ages_over_89_are_identifiers() -> None:
    rng = np.random.default_rng(11)
    seen = 0
    for age in [93, 95, 99, 90, 67, 89] * 20:
        report = write_report(make_input(rng, age=age), rng)
        ages = [p.value for p in report.phi if p.kind == "age_over_89"]
        if age > 89:
            assert not uncovered(report, rf"(?<!\d){age}(?!\d)"), report.text
            assert all(str(age) in a for a in ages)
            seen += bool(ages)
        else:
            assert not ages
    assert seen > 10


def test_phones_are_fictional(corpus) -> None:
    phone = re.compile(r"^(\(555\) 01\d-\d{4}|555-01\d-\d{4}|555\.01\d\.\d{4}|\+1 555 01\d \d{4})$")
    for _, report in corpus:
        assert all(phone.match(p.value) for p in report.phi if p.kind == "phone")


# ---------------------------------------------------------------------------------------------
# Findings: the text says what the status says.


def test_status_is_what_the_text_says(corpus) -> None:
    for _, report in corpus:
        sentences = body_sentences(report.text)
        for finding, status in report.status.items():
            told = about(finding, sentences, MENTION)
            context = (finding, status, told, report.text)
            if status == "not_mentioned":
                assert not told, context
            elif status == "negative":
                assert told and all(re.search(NEGATION, s, re.I) for s in told), context
            elif status == "uncertain":
                assert told and all(re.search(HEDGE, s, re.I) for s in told), context
            else:
                described = about(finding, sentences)
                assert described, context
                for s in described:
                    word = re.search(KEYWORD[finding], s, re.I)
                    assert not re.search(NEGATION_BEFORE, s[: word.start()], re.I), context
                    assert not re.search(HEDGE, s, re.I), context


def test_no_global_statement_contradicts_a_finding(corpus) -> None:
    """ "The lungs are clear" and "normal chest" only where nothing in them is described."""
    clear = 0
    for _, report in corpus:
        lung = {report.status.get(f) for f in (Finding.NODULE, Finding.CONSOLIDATION)}
        abnormal = {s for s in report.status.values()} & {"positive", "uncertain"}
        if re.search(r"lungs are clear", report.text, re.I):
            assert not lung & {"positive", "uncertain"}, report.text
            clear += 1
        if re.search(r"normal chest|no acute cardiopulmonary", report.text, re.I):
            assert not abnormal, report.text
        if re.search(r"no acute (fracture|osseous)", report.text, re.I):
            assert report.status.get(Finding.FRACTURE) in (None, "negative"), report.text
    assert clear > 20


def test_sides_and_places_agree_with_the_truth(corpus) -> None:
    levels = {
        "upper zone": r"upper|RUL|LUL|apex|apical",
        "middle zone": r"middle|midlung|lingula|RML",
        "lower zone": r"lower|base|basilar|RLL|LLL",
        "apex": r"apex|apical|upper|RUL|LUL",
    }
    checked = Counter()
    for inp, report in corpus:
        sentences = body_sentences(report.text)
        for truth in inp.findings:
            if not truth.present or report.status[truth.finding] != "positive":
                continue
            told = about(truth.finding, sentences)
            if truth.side:
                words, abbreviations = OPPOSITE[truth.side]
                assert not any(re.search(words, s, re.I) for s in told), (truth, told)
                assert not any(re.search(abbreviations, s) for s in told), (truth, told)
                if truth.finding is not Finding.FRACTURE:  # limbs: the exam names the side
                    assert any(re.search(rf"\b{truth.side}\b", s, re.I) for s in told)
            level = next((k for k in levels if k in (truth.location or "")), None)
            if truth.finding in (Finding.NODULE, Finding.CONSOLIDATION) and level:
                assert any(re.search(levels[level], s) for s in told), (truth, told)
            if truth.finding is Finding.FRACTURE:
                bone = [
                    w for w in truth.location.split() if w not in ("left", "right", "of", "the")
                ]
                assert any(all(w in s for w in bone) for s in told), (truth, told)
            checked[truth.finding] += 1
    assert min(checked.values()) >= 15, checked


def test_nodule_sizes_are_reported(corpus) -> None:
    seen = 0
    for inp, report in corpus:
        for truth in inp.findings:
            if truth.finding is Finding.NODULE and report.status[truth.finding] == "positive":
                mm, cm = f"{truth.size_mm:.0f} mm", f"{truth.size_mm / 10:.1f} cm"
                assert mm in report.text or cm in report.text, (truth, report.text)
                seen += 1
        assert not re.search(r"\b[Aa] (8|11|18|8\d)\b", report.text), report.text  # "an 8 mm"
    assert seen >= 15


def test_status_distribution(corpus) -> None:
    present, absent = Counter(), Counter()
    absent_by = {f: Counter() for f in Finding}
    for inp, report in corpus:
        for truth in inp.findings:
            status = report.status[truth.finding]
            (present if truth.present else absent)[status] += 1
            if not truth.present:
                absent_by[truth.finding][status] += 1
    assert set(present) <= {"positive", "uncertain"}
    assert 0.80 < present["positive"] / sum(present.values()) < 0.97, present
    assert absent["positive"] == 0, absent
    assert 0.005 < absent["uncertain"] / sum(absent.values()) < 0.07, absent
    effusion, nodule = absent_by[Finding.PLEURAL_EFFUSION], absent_by[Finding.NODULE]
    assert effusion["negative"] / sum(effusion.values()) > 0.6, effusion
    assert nodule["not_mentioned"] / sum(nodule.values()) > 0.5, nodule
    assert absent_by[Finding.FRACTURE]["negative"] / sum(absent_by[Finding.FRACTURE].values()) > 0.7


def test_phrasing_varies(corpus) -> None:
    sentences = Counter(s for _, r in corpus for s in body_sentences(r.text))
    assert len(sentences) > 1000
    for finding in (*CHEST_FINDINGS, Finding.FRACTURE):
        for status, least in (("positive", 4), ("negative", 4), ("uncertain", 2)):
            said = set()
            for _, report in corpus:
                if report.status.get(finding) == status:
                    said |= set(about(finding, body_sentences(report.text), MENTION))
            # Sizes and places vary too: count shapes, with digits and sides blanked.
            shapes = {re.sub(r"\d+|left|right|\b[LR]\b", "#", s) for s in said}
            assert len(shapes) >= least, (finding, status, shapes)


def test_negation_scope_in_mixed_sentences(corpus) -> None:
    """ "No effusion. Small right pneumothorax." and "X without Y" keep X positive."""
    mixed = 0
    for _, report in corpus:
        for s in body_sentences(report.text):
            positive, _, negated = s.partition(" without ")
            found = [f for f in KEYWORD if re.search(KEYWORD[f], positive, re.I)]
            if negated and found and not re.search(NEGATION_BEFORE, positive, re.I):
                assert all(report.status[f] == "positive" for f in found), s
                mixed += 1
    assert mixed >= 5
