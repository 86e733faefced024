"""Who the patients are and what was imaged: patients, their studies over the years, the images.

Planning is cheap and decides everything random about a patient from ``SeedSequence([seed,
patient])``, so a patient's plan, and therefore every byte written for it, does not depend on
how many workers run or in which order. Rendering then follows the plan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, replace

import numpy as np

from medtune.config import CHEST_FINDINGS, Anatomy, Finding, SynthConfig
from medtune.synth.anatomy import ANATOMY_RENDERERS
from medtune.synth.anatomy.base import LesionSeed
from medtune.synth.identity import (
    Address,
    Person,
    make_accession,
    make_address,
    make_mrn,
    make_person,
    make_phone,
    make_physician,
)
from medtune.synth.sites import Site

PAIRED = {Anatomy.HAND, Anatomy.KNEE, Anatomy.FOOT, Anatomy.SHOULDER}
# Findings that persist from one study to the next of the same patient (chronic ones).
CHRONIC = {Finding.CARDIOMEGALY: 0.8, Finding.NODULE: 0.7, Finding.PLEURAL_EFFUSION: 0.3}
# Views taken per study, with how often each protocol is used.
PROTOCOLS: dict[Anatomy, tuple[tuple[tuple[str, ...], float], ...]] = {
    Anatomy.CHEST: ((("PA", "LAT"), 0.55), (("PA",), 0.15), (("AP",), 0.30)),
    Anatomy.HAND: ((("PA", "OBL"), 0.6), (("PA",), 0.4)),
    Anatomy.KNEE: ((("AP", "LAT"), 0.8), (("AP",), 0.2)),
    Anatomy.PELVIS: ((("AP",), 1.0),),
    Anatomy.LUMBAR_SPINE: ((("AP", "LAT"), 0.85), (("LAT",), 0.15)),
    Anatomy.SKULL: ((("PA", "LAT"), 0.7), (("PA",), 0.3)),
    Anatomy.FOOT: ((("AP", "OBL"), 0.7), (("AP",), 0.3)),
    Anatomy.SHOULDER: ((("AP",), 1.0),),
}


@dataclass(frozen=True)
class ImagePlan:
    index: int  # within the study
    view: str
    portable: bool  # taken with the site's portable unit
    mirrored: bool  # flipped left-right (the glyph too)
    marker: str | None  # lead marker letter, "L" or "R"; None when missing
    compressed: bool  # written in the site's own syntax rather than explicit VR LE
    dose: float
    render_seed: int


@dataclass(frozen=True)
class StudyPlan:
    index: int  # within the patient
    anatomy: Anatomy
    laterality: str | None
    when: dt.datetime
    accession: str
    findings: tuple[tuple[Finding, LesionSeed], ...]  # the study's true findings
    images: tuple[ImagePlan, ...]
    referring: Person
    radiologist: Person
    operator: Person

    @property
    def finding_map(self) -> dict[Finding, LesionSeed]:
        return dict(self.findings)


@dataclass(frozen=True)
class PatientPlan:
    index: int
    site: int
    person: Person
    mrn: str
    birth_date: dt.date
    address: Address
    phone: str
    body_scale: float
    habitus: float
    bone_density_young: float
    studies: tuple[StudyPlan, ...]

    @property
    def sex(self) -> str:
        return self.person.sex

    def age_at(self, when: dt.date | dt.datetime) -> int:
        day = when.date() if isinstance(when, dt.datetime) else when
        b = self.birth_date
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))

    @property
    def n_images(self) -> int:
        return sum(len(study.images) for study in self.studies)


def plan_patient(config: SynthConfig, sites: list[Site], index: int) -> PatientPlan:
    """Everything random about patient ``index``, from the cohort seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xFA7, index]))
    weights = np.array([site.weight for site in sites])
    site = sites[int(rng.choice(len(sites), p=weights / weights.sum()))]
    if index < len(sites):  # every site gets a patient, however small the cohort
        site = sites[index]
    sex = "M" if rng.random() < 0.5 else "F"
    person = make_person(rng, sex)
    dates = _study_dates(config, rng)
    # Adults, skewed old as radiology populations are; a few over 89 (grouped by de-id later).
    age_first = float(np.clip(rng.gamma(6.0, 9.5), 18, 99))
    birth = dates[0].date() - dt.timedelta(days=int(age_first * 365.25 + rng.integers(0, 365)))
    body_scale = (1.0 if sex == "M" else 0.92) * float(np.exp(rng.normal(0, 0.05)))
    patient = PatientPlan(
        index=index,
        site=site.index,
        person=person,
        mrn=make_mrn(rng, site.id_style, serial=index),
        birth_date=birth,
        address=make_address(rng),
        phone=make_phone(rng),
        body_scale=body_scale,
        habitus=float(np.clip(rng.lognormal(0.0, 0.18), 0.75, 1.6)),
        bone_density_young=float(rng.uniform(0.9, 1.1)),
        studies=(),
    )
    studies = _plan_studies(config, site, patient, dates, rng)
    return replace(patient, studies=tuple(studies))


def bone_density(patient: PatientPlan, age: float) -> float:
    """Bone density falls after 40, faster in women after menopause."""
    loss = 0.006 * max(age - 40, 0) + (0.008 * max(age - 50, 0) if patient.sex == "F" else 0)
    return float(np.clip(patient.bone_density_young * (1 - loss), 0.45, 1.15))


def _study_dates(config: SynthConfig, rng: np.random.Generator) -> list[dt.datetime]:
    start = dt.datetime(config.first_year, 1, 1)
    end = dt.datetime(config.last_year, 12, 31, 23, 59)
    span_days = (end - start).days
    n = 1 + min(int(rng.geometric(0.55)) - 1, config.max_studies_per_patient - 1)
    first = start + dt.timedelta(days=float(rng.uniform(0, span_days * 0.7)))
    dates = [first]
    for _ in range(n - 1):
        gap = dt.timedelta(days=float(rng.exponential(400)) + 7)
        if dates[-1] + gap > end:
            break
        dates.append(dates[-1] + gap)
    # Working hours mostly, some nights (portable films); whole seconds as DICOM TM holds them.
    return [
        d.replace(hour=int(rng.choice([8, 9, 10, 11, 13, 14, 15, 16, 17, 22, 2])),
                  minute=int(rng.integers(0, 60)), second=int(rng.integers(0, 60)),
                  microsecond=0)
        for d in dates
    ]  # fmt: skip


def _plan_studies(
    config: SynthConfig,
    site: Site,
    patient: PatientPlan,
    dates: list[dt.datetime],
    rng: np.random.Generator,
) -> list[StudyPlan]:
    mix = {a: w for a, w in config.anatomy_mix.items() if a in config.anatomies}
    if not mix or sum(mix.values()) <= 0:
        mix = {a: 1.0 for a in config.anatomies}
    names = list(mix)
    p = np.array([mix[a] for a in names], float)
    studies: list[StudyPlan] = []
    for k, when in enumerate(dates):
        if studies and rng.random() < 0.5:  # follow-up of an earlier study's anatomy
            anatomy = studies[int(rng.integers(len(studies)))].anatomy
        else:
            anatomy = names[int(rng.choice(len(names), p=p / p.sum()))]
        age = patient.age_at(when)
        findings = _findings(config, site, anatomy, age, studies, rng)
        studies.append(_study(config, site, patient, k, anatomy, when, findings, rng))
    return studies


def _findings(
    config: SynthConfig,
    site: Site,
    anatomy: Anatomy,
    age: int,
    earlier: list[StudyPlan],
    rng: np.random.Generator,
) -> dict[Finding, LesionSeed]:
    possible = ANATOMY_RENDERERS[anatomy].findings
    previous = next((s.finding_map for s in reversed(earlier) if s.anatomy == anatomy), {})
    chosen: dict[Finding, LesionSeed] = {}
    for finding in sorted(possible, key=lambda f: f.value):
        seed = LesionSeed(tuple(float(u) for u in rng.random(8)))
        if finding in previous and rng.random() < CHRONIC.get(finding, 0.0):
            chosen[finding] = previous[finding]  # same lesion, same place, years later
            continue
        prevalence = config.prevalence.of(finding) * site.prevalence_factor[finding]
        if finding in CHEST_FINDINGS and finding != Finding.PNEUMOTHORAX:
            prevalence *= 0.5 + age / 70  # chronic cardiopulmonary disease rises with age
        if rng.random() < min(prevalence, 0.95):
            chosen[finding] = seed
    return chosen


def _study(
    config: SynthConfig,
    site: Site,
    patient: PatientPlan,
    index: int,
    anatomy: Anatomy,
    when: dt.datetime,
    findings: dict[Finding, LesionSeed],
    rng: np.random.Generator,
) -> StudyPlan:
    supported = ANATOMY_RENDERERS[anatomy].views
    protocols = [(v, w) for v, w in PROTOCOLS[anatomy] if all(x in supported for x in v)]
    if not protocols:
        protocols = [((supported[0],), 1.0)]
    weights = np.array([w for _, w in protocols])
    sick = bool(findings.keys() & {Finding.PLEURAL_EFFUSION, Finding.CARDIOMEGALY})
    if anatomy == Anatomy.CHEST and sick:  # inpatients get bedside films more often
        weights = weights * np.array([2.0 if v == ("AP",) else 1.0 for v, _ in protocols])
    views = protocols[int(rng.choice(len(protocols), p=weights / weights.sum()))][0]
    laterality = ("L" if rng.random() < 0.5 else "R") if anatomy in PAIRED else None
    images = []
    for i, view in enumerate(views):
        marker = None
        if rng.random() >= config.marker_missing_rate:
            marker = laterality or ("L" if rng.random() < 0.65 else "R")
        images.append(
            ImagePlan(
                index=i,
                view=view,
                portable=view == "AP" and anatomy == Anatomy.CHEST,
                mirrored=bool(rng.random() < config.mirror_rate),
                marker=marker,
                compressed=bool(rng.random() < config.compressed_fraction),
                dose=float(np.exp(rng.normal(0, 0.25))),
                render_seed=int(rng.integers(0, 2**63 - 1)),
            )
        )
    return StudyPlan(
        index=index,
        anatomy=anatomy,
        laterality=laterality,
        when=when,
        # Unique per study: patient index and study number, scrambled into the site's format.
        accession=make_accession(rng, site.id_style, when.year, serial=patient.index * 64 + index),
        findings=tuple(sorted(findings.items(), key=lambda kv: kv[0].value)),
        images=tuple(images),
        referring=make_physician(rng),
        radiologist=make_physician(rng),
        operator=make_person(rng, "F" if rng.random() < 0.6 else "M"),
    )


def deterministic_uid(*parts: object) -> str:
    """A 2.25 UID (UUID-derived form, PS3.5 B.2) from a hash of ``parts``: same input, same UID."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))
