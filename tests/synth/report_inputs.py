"""Random inputs for the synthetic report writer: shared by its tests and the labeler's."""

from __future__ import annotations

import datetime

import numpy as np

from medtune.config import CHEST_FINDINGS, Anatomy, Finding
from medtune.synth import identity as ident
from medtune.synth.reports import FindingTruth, ReportInput

CHEST_PLACES = {
    Finding.NODULE: (
        "right upper zone",
        "left lower zone",
        "right middle zone",
        "left middle zone",
    ),
    Finding.PLEURAL_EFFUSION: ("right costophrenic angle", "left costophrenic angle"),
    Finding.PNEUMOTHORAX: ("right apex", "left apex", "left upper zone"),
    Finding.CONSOLIDATION: (
        "right lower zone",
        "left lower zone",
        "right middle zone",
        "left apex",
    ),
    Finding.CARDIOMEGALY: ("heart",),
}
SIZES = {
    Finding.NODULE: (4.0, 25.0),
    Finding.PLEURAL_EFFUSION: (5.0, 90.0),
    Finding.PNEUMOTHORAX: (2.0, 45.0),
}
BONES = {
    Anatomy.HAND: ("distal radius", "scaphoid", "fifth metacarpal"),
    Anatomy.KNEE: ("patella", "lateral tibial plateau"),
    Anatomy.PELVIS: ("right femoral neck", "left superior pubic ramus"),
    Anatomy.LUMBAR_SPINE: ("L2 vertebral body", "L1 vertebral body"),
    Anatomy.SKULL: ("right parietal bone", "left temporal bone"),
    Anatomy.FOOT: ("fifth metatarsal", "calcaneus"),
    Anatomy.SHOULDER: ("surgical neck of the humerus", "clavicle"),
}
LIMBS = {Anatomy.HAND, Anatomy.KNEE, Anatomy.FOOT, Anatomy.SHOULDER}
SIDE = {"L": "left", "R": "right"}


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _truth(rng, finding: Finding, anatomy: Anatomy, laterality: str | None) -> FindingTruth:
    if finding is Finding.FRACTURE:
        bone = _pick(rng, BONES[anatomy])
        in_name = next((w for w in bone.split() if w in ("left", "right")), None)
        return FindingTruth(finding, True, bone, SIDE.get(laterality or "") or in_name)
    place = _pick(rng, CHEST_PLACES[finding])
    side = place.split()[0] if place != "heart" else None
    size = float(rng.uniform(*SIZES[finding])) if finding in SIZES else None
    return FindingTruth(finding, True, place, side, size)


def make_input(rng, anatomy: Anatomy | None = None, age: int | None = None) -> ReportInput:
    anatomy = anatomy or list(Anatomy)[int(rng.integers(len(Anatomy)))]
    sex = "F" if rng.random() < 0.5 else "M"
    laterality = ("L" if rng.random() < 0.5 else "R") if anatomy in LIMBS else None
    kinds = CHEST_FINDINGS if anatomy is Anatomy.CHEST else (Finding.FRACTURE,)
    truths = tuple(
        _truth(rng, f, anatomy, laterality) if rng.random() < 0.3 else FindingTruth(f, False)
        for f in kinds
    )
    minutes = int(rng.integers(0, 6_000_000))
    study = datetime.datetime(2012, 1, 1, 6) + datetime.timedelta(minutes=minutes)
    gaps = rng.integers(20, 3000, size=int(rng.integers(0, 4)))
    priors = tuple(sorted({study.date() - datetime.timedelta(days=int(g)) for g in gaps}))
    views = (("PA", "LAT"), ("AP",)) if anatomy is Anatomy.CHEST else (("PA", "OBL", "LAT"),)
    site = int(rng.integers(8))
    return ReportInput(
        anatomy=anatomy,
        views=views[int(rng.integers(len(views)))],
        laterality=laterality,
        study_datetime=study,
        accession=ident.make_accession(rng, site, study.year),
        mrn=ident.make_mrn(rng, site),
        patient=ident.make_person(rng, sex),
        age_years=age if age is not None else int(rng.integers(18, 100)),
        sex=sex,
        patient_address=ident.make_address(rng),
        patient_phone=ident.make_phone(rng),
        findings=truths,
        prior_dates=priors,
        referring=ident.make_physician(rng),
        radiologist=ident.make_physician(rng),
        institution=ident.make_institution(rng, site),
    )
