"""Radiology reports written from the ground truth of a synthetic study.

Each report reads like a RIS export: an optional header block, then EXAMINATION, INDICATION,
COMPARISON, TECHNIQUE, FINDINGS and IMPRESSION sections, then a sign-off, in layouts and wordings
that vary from call to call. Two things are known exactly about every report, and returned with it:

* ``status``: what the FINDINGS and IMPRESSION sections say about each finding ("positive",
  "negative", "uncertain" or "not_mentioned"). It is decided first, and the sentences are then
  written to say exactly that, so a report labeler can be scored against it. A present finding is
  usually reported positive and sometimes hedged; an absent one is negated explicitly, left out,
  or (rarely) hedged, but never reported positive. The INDICATION only asks clinical questions
  ("r/o pneumonia", "f/u nodule") and is not part of the status.
* ``phi``: every identifying value placed anywhere in the text, exactly as written (names in each
  form used, dates in each format used, MRN, accession, phones, addresses and their ZIP codes,
  e-mails, the institution, ages over 89), so that de-identification can be scored against it.

All identifying values enter the text through :meth:`_Doc.fill`, which records the ones a template
actually uses; finding sentences never contain identifiers, which keeps the two concerns apart.
"""

from __future__ import annotations

import datetime
import re
import string
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from medtune.config import Anatomy, Finding
from medtune.synth.identity import Address, Institution, Person, make_email, make_phone

# ---------------------------------------------------------------------------------------------
# Interface.


@dataclass(frozen=True)
class FindingTruth:
    """What the renderer drew for one finding (or that it drew nothing)."""

    finding: Finding
    present: bool
    location: str | None = None  # "right upper zone", "left apex", "heart", "distal radius"...
    side: str | None = None  # patient side, "left" / "right", where it has one
    size_mm: float | None = None  # nodule diameter, effusion height, pneumothorax rim width


@dataclass(frozen=True)
class ReportInput:
    anatomy: Anatomy
    views: tuple[str, ...]  # ("PA", "LAT"), ("AP",), ("PA", "OBL")
    laterality: str | None  # "L"/"R" for hand, knee, foot, shoulder; None otherwise
    study_datetime: datetime.datetime
    accession: str
    mrn: str
    patient: Person
    age_years: int
    sex: str
    patient_address: Address
    patient_phone: str
    findings: tuple[FindingTruth, ...]  # every finding the anatomy can show
    prior_dates: tuple[datetime.date, ...]  # earlier studies of this anatomy, oldest first
    referring: Person
    radiologist: Person
    institution: Institution


@dataclass(frozen=True)
class InjectedPHI:
    value: str  # exactly as it appears in the text
    kind: str  # see PHI_KINDS


@dataclass(frozen=True)
class Report:
    text: str
    status: dict[Finding, str]  # per finding of the input: what FINDINGS/IMPRESSION say
    phi: tuple[InjectedPHI, ...]  # every identifying value placed in the text
    signed: datetime.datetime  # when the radiologist signed it (as the sign-off says)


PHI_KINDS = (
    "patient_name",
    "physician_name",
    "date",
    "datetime",
    "mrn",
    "accession",
    "phone",
    "address",
    "zip",
    "email",
    "institution",
    "age_over_89",
)
STATUSES = ("positive", "negative", "uncertain", "not_mentioned")

# ---------------------------------------------------------------------------------------------
# How often each status is chosen. Real reports negate the findings a reader looks for on every
# film (effusion, pneumothorax, heart size, consolidation, fracture) and rarely write "no nodule".

PRESENT_UNCERTAIN = 0.10  # a present finding hedged ("possible", "cannot exclude")
ABSENT_UNCERTAIN = 0.03  # an absent finding hedged anyway (the false-alarm reader)
EXPLICIT_NEGATIVE = {
    Finding.NODULE: 0.30,
    Finding.PLEURAL_EFFUSION: 0.80,
    Finding.CARDIOMEGALY: 0.80,
    Finding.PNEUMOTHORAX: 0.75,
    Finding.CONSOLIDATION: 0.85,
    Finding.FRACTURE: 0.85,
}

# ---------------------------------------------------------------------------------------------
# Phrasing: what each finding sounds like in FINDINGS and IMPRESSION, per status.
# Slots: {side} right/left, {S} R/L, {zone} "right upper zone", {lobe} "right upper lobe",
# {lobe_abbr} RUL, {region} "right base", {size} "8 mm", {rim} "12 mm", {degree} small/moderate,
# {apical} "apical " or "", {bone} "distal radius" (perhaps with its side), {kind} and {a_kind}
# "nondisplaced" / "a nondisplaced". A template is only used when every slot it names is known.
# Every positive FINDINGS sentence names the finding ("nodule", "effusion", "pneumothorax"/"PTX",
# "consolidation", "fracture") and, on the chest, the full side word.

FINDING_SENTENCES: dict[Finding, dict[str, tuple[str, ...]]] = {
    Finding.NODULE: {
        "positive": (
            "There is {a_size} nodule in the {zone}.",
            "{a_size} rounded nodule projects over the {zone}.",
            "{size} pulmonary nodule in the {lobe}.",
            "Well-circumscribed {size} nodule in the {region}.",
            "Solitary {size} noncalcified nodule projecting over the {zone}.",
            "There is {a_size} nodule in the {lobe}. Recommend CT chest for further evaluation.",
        ),
        "uncertain": (
            "Possible small nodule projecting over the {zone}.",
            "Questionable nodular density in the {region}, possibly a nipple shadow.",
            "Ill-defined density in the {zone} may represent a small nodule.",
            "Cannot exclude a small nodule in the {lobe}.",
        ),
        "negative": (
            "No suspicious pulmonary nodule.",
            "No pulmonary nodules or masses.",
            "No discrete nodule is seen.",
            "No focal pulmonary nodule.",
        ),
    },
    Finding.PLEURAL_EFFUSION: {
        "positive": (
            "{degree} {side} pleural effusion.",
            "There is a {degree} {side} pleural effusion.",
            "{degree} {side} effusion with blunting of the {side} costophrenic angle.",
            "Blunting of the {side} costophrenic angle, consistent with a {degree} effusion.",
            "{side} pleural effusion, {degree}.",
            "There is a {degree} {side}-sided pleural effusion.",
        ),
        "uncertain": (
            "Blunting of the {side} costophrenic angle may represent a small effusion or pleural "
            "thickening.",
            "Possible trace {side} pleural effusion.",
            "Questionable small {side} effusion.",
        ),
        "negative": (
            "No pleural effusion.",
            "No effusion.",
            "The costophrenic angles are sharp.",
            "No pleural effusions are seen.",
            "There is no pleural effusion.",
        ),
    },
    Finding.PNEUMOTHORAX: {
        "positive": (
            "{degree} {side} {apical}pneumothorax.",
            "There is a {degree} {side} {apical}pneumothorax.",
            "{side} {apical}pneumothorax with a pleural rim of approximately {rim}.",
            "A visceral pleural line at the {region} indicates a {degree} {side} pneumothorax.",
            "{degree} {side} PTX.",
        ),
        "uncertain": (
            "Questionable tiny {side} {apical}pneumothorax; recommend repeat radiograph.",
            "Possible {side} {apical}pneumothorax versus skin fold.",
            "Cannot exclude a small {side} pneumothorax.",
        ),
        "negative": (
            "No pneumothorax.",
            "No PTX.",
            "There is no pneumothorax.",
            "No evidence of pneumothorax.",
        ),
    },
    Finding.CONSOLIDATION: {
        "positive": (
            "Consolidation in the {lobe}.",
            "There is airspace consolidation in the {lobe}, compatible with pneumonia.",
            "Patchy consolidation at the {region}.",
            "Dense consolidation in the {zone} with air bronchograms.",
            "{lobe} consolidation.",
            "Focal consolidation in the {region}, consistent with pneumonia in the appropriate "
            "clinical setting.",
        ),
        "uncertain": (
            "Hazy opacity at the {region} may represent atelectasis or early consolidation.",
            "Subtle opacity in the {zone}; early consolidation cannot be excluded.",
            "Possible early consolidation in the {lobe}.",
        ),
        "negative": (
            "No focal consolidation.",
            "No focal airspace consolidation.",
            "No focal airspace disease.",
        ),
    },
    Finding.CARDIOMEGALY: {
        "positive": (
            "The heart is enlarged.",
            "Cardiomegaly.",
            "{degree} cardiomegaly.",
            "The cardiac silhouette is enlarged.",
            "Enlarged cardiac silhouette.",
        ),
        "uncertain": (
            "Borderline heart size.",
            "Possible mild cardiomegaly.",
            "The cardiac silhouette may be mildly enlarged, accentuated by technique.",
        ),
        "negative": (
            "Heart size is normal.",
            "Normal heart size.",
            "The cardiac silhouette is within normal limits.",
            "Normal cardiomediastinal silhouette.",
            "The heart is not enlarged.",
        ),
    },
    Finding.FRACTURE: {
        "positive": (
            "There is {a_kind} fracture of the {bone}.",
            "{kind} fracture through the {bone}.",
            "{a_kind} fracture involving the {bone} is noted.",
            "Cortical break with a lucent fracture line in the {bone}.",
            "There is a fracture of the {bone}, {kind}.",
        ),
        "uncertain": (
            "Cannot exclude a subtle nondisplaced fracture of the {bone}.",
            "Questionable lucency at the {bone}, possibly a nondisplaced fracture; recommend "
            "follow-up radiographs in 7-10 days.",
            "Subtle cortical irregularity of the {bone} may represent a fracture.",
            "Possible fracture of the {bone}.",
        ),
        "negative": (
            "No acute fracture or dislocation.",
            "No fracture or dislocation is identified.",
            "No acute osseous abnormality.",
            "There is no evidence of acute fracture.",
            "Bones are intact without fracture.",
            "No fracture.",
        ),
    },
}

# "The lungs are clear" negates consolidation; it is only written when no nodule is described.
CLEAR_LUNGS = ("The lungs are clear.", "Lungs are clear.", "The lungs are clear bilaterally.")
# Spine reports also negate fractures by the vertebral heights.
SPINE_FRACTURE_NEGATIVES = (
    "Vertebral body heights are maintained without evidence of fracture.",
    "Vertebral body heights and alignment are maintained. No acute fracture.",
)

IMPRESSION_SENTENCES: dict[Finding, dict[str, tuple[str, ...]]] = {
    Finding.NODULE: {
        "positive": (
            "{size} {lobe_abbr} nodule. Recommend chest CT for further characterization.",
            "{size} nodule in the {zone}; CT recommended.",
            "Pulmonary nodule in the {lobe} ({size}).",
        ),
        "uncertain": ("Possible {zone} nodule; consider CT.", "Questionable nodule, {region}."),
        "negative": ("No pulmonary nodule.",),
    },
    Finding.PLEURAL_EFFUSION: {
        "positive": ("{degree} {side} pleural effusion.", "{side} effusion.", "{S} effusion."),
        "uncertain": ("Possible small {side} effusion.",),
        "negative": ("No effusion.", "No pleural effusion."),
    },
    Finding.PNEUMOTHORAX: {
        "positive": (
            "{degree} {side} {apical}pneumothorax.",
            "{S} {apical}PTX, {degree}.",
            "{degree} {side} PTX.",
        ),
        "uncertain": ("Possible {side} pneumothorax versus skin fold.",),
        "negative": ("No pneumothorax.", "No PTX."),
    },
    Finding.CONSOLIDATION: {
        "positive": (
            "{lobe_abbr} consolidation, likely pneumonia.",
            "{lobe} consolidation.",
            "Consolidation in the {region}, compatible with pneumonia.",
        ),
        "uncertain": (
            "{region} opacity, atelectasis versus early consolidation.",
            "Possible early {lobe_abbr} consolidation.",
        ),
        "negative": ("No consolidation.", "No focal consolidation."),
    },
    Finding.CARDIOMEGALY: {
        "positive": ("Cardiomegaly.", "{degree} cardiomegaly.", "Enlarged heart."),
        "uncertain": ("Borderline cardiomegaly.",),
        "negative": ("Normal heart size.",),
    },
    Finding.FRACTURE: {
        "positive": (
            "{kind} fracture of the {bone}.",
            "Acute fracture of the {bone}.",
            "Fx of the {bone}.",
        ),
        "uncertain": (
            "Possible nondisplaced fracture of the {bone}; consider follow-up imaging.",
            "Equivocal fracture of the {bone}.",
        ),
        "negative": ("No acute fracture.", "No fracture or dislocation."),
    },
}

_N, _E, _P, _C, _H, _F = (
    Finding.NODULE,
    Finding.PLEURAL_EFFUSION,
    Finding.PNEUMOTHORAX,
    Finding.CONSOLIDATION,
    Finding.CARDIOMEGALY,
    Finding.FRACTURE,
)

# Several negatives in one sentence: the negation covers every finding of the key.
NEGATION_GROUPS: tuple[tuple[frozenset[Finding], tuple[str, ...]], ...] = (
    (
        frozenset({_C, _E, _P}),
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            "No consolidation, effusion, or pneumothorax.",
            "There is no focal consolidation, pleural effusion or pneumothorax.",
        ),
    ),
    (
        frozenset({_E, _P}),
        (
            "No pleural effusion or pneumothorax.",
            "No effusion or PTX.",
            "No pneumothorax or pleural effusion.",
            "The costophrenic angles are sharp and there is no pneumothorax.",
        ),
    ),
    (frozenset({_C, _E}), ("No focal consolidation or pleural effusion.",)),
    (frozenset({_C, _P}), ("No focal consolidation or pneumothorax.",)),
)
CLEAR_LUNGS_GROUP = (
    "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
    "Lungs are clear. No pleural effusion or pneumothorax.",
)
# A positive and a negative in one sentence: the negation must not swallow the positive.
POSITIVE_WITH_NEGATIVE: dict[tuple[Finding, Finding], tuple[str, ...]] = {
    (_E, _P): (
        "{degree} {side} pleural effusion without evidence of pneumothorax.",
        "There is a {degree} {side} pleural effusion; no pneumothorax.",
    ),
    (_P, _E): (
        "{degree} {side} {apical}pneumothorax without pleural effusion.",
        "There is a {degree} {side} {apical}pneumothorax. No pleural effusion.",
    ),
    (_C, _E): (
        "Consolidation in the {lobe} without pleural effusion.",
        "{lobe} consolidation without associated effusion.",
    ),
}

# Whole-impression statements for a study without abnormal findings, and which findings they
# negate: each is only written when those findings are already stated negative.
CHEST_ALL_NORMAL = ("Normal chest radiograph.", "Normal chest.")
CHEST_NO_ACUTE = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary disease.",
)
CHEST_NO_ACUTE_REQUIRES = frozenset({_C, _E, _P, _H})
BONE_NORMAL = (
    "No acute fracture or dislocation.",
    "No acute osseous abnormality.",
    "Negative {sided_part} radiographs.",
    "Normal {sided_part} series.",
)
# Which negatives an otherwise empty impression states first.
IMPRESSION_NEGATIVE_ORDER = (_F, _P, _C, _E, _H, _N)
# When the impression has nothing to say about any finding.
NEUTRAL_IMPRESSION = ("As above.", "See findings above.", "Findings as described above.")

# Sentences that carry no finding at all; they make the report read like a report.
CHEST_FILLERS = {
    "Support devices": ("No lines or tubes.", "No support devices."),
    "Mediastinum": (
        "Mediastinal contours are unremarkable.",
        "The hila are normal.",
        "Pulmonary vasculature is within normal limits.",
    ),
    "Bones": (
        "No acute osseous abnormality.",
        "Visualized osseous structures are intact.",
        "Soft tissues are unremarkable.",
    ),
}
BONE_FILLERS = (
    "Alignment is anatomic.",
    "Joint spaces are preserved.",
    "Soft tissues are unremarkable.",
    "No erosive changes.",
    "No radiopaque foreign body.",
)
INCIDENTALS: dict[Anatomy, tuple[str, ...]] = {
    Anatomy.CHEST: (
        "Degenerative changes of the thoracic spine.",
        "Atherosclerotic calcification of the aortic knob.",
        "Mild thoracic kyphosis.",
        "Surgical clips in the right upper quadrant.",
        "Median sternotomy wires.",
    ),
    Anatomy.HAND: (
        "Mild degenerative change at the first carpometacarpal joint.",
        "Mild osteopenia.",
    ),
    Anatomy.KNEE: (
        "Mild medial compartment joint space narrowing.",
        "Small suprapatellar joint effusion.",
        "No knee joint effusion.",
    ),
    Anatomy.PELVIS: ("Mild degenerative changes of both hips.", "Pelvic phleboliths."),
    Anatomy.LUMBAR_SPINE: (
        "Multilevel degenerative disc disease, most pronounced at L4-L5.",
        "Mild facet arthropathy in the lower lumbar spine.",
    ),
    Anatomy.SKULL: ("The visualized paranasal sinuses are clear.", "Calcified pineal gland."),
    Anatomy.FOOT: ("Small plantar calcaneal spur.", "Mild hallux valgus."),
    Anatomy.SHOULDER: (
        "Mild acromioclavicular joint degenerative change.",
        "Calcific tendinopathy of the supraspinatus.",
    ),
}

# Where a hedged mention of an absent finding is placed (it needs somewhere to be).
CHEST_PLACES = {
    _N: ("right upper zone", "left upper zone", "right lower zone", "left middle zone"),
    _E: ("right costophrenic angle", "left costophrenic angle"),
    _P: ("right apex", "left apex"),
    _C: ("right lower zone", "left lower zone", "right middle zone"),
    _H: ("heart",),
}
FRACTURE_PLACES: dict[Anatomy, tuple[str, ...]] = {
    Anatomy.HAND: ("distal radius", "scaphoid", "fifth metacarpal", "distal ulna"),
    Anatomy.KNEE: ("lateral tibial plateau", "patella", "proximal fibula"),
    Anatomy.PELVIS: ("{side} femoral neck", "{side} superior pubic ramus", "{side} acetabulum"),
    Anatomy.LUMBAR_SPINE: ("L1 vertebral body", "L2 vertebral body", "L4 vertebral body"),
    Anatomy.SKULL: ("{side} parietal bone", "{side} temporal bone", "occipital bone"),
    Anatomy.FOOT: ("fifth metatarsal", "calcaneus", "second metatarsal"),
    Anatomy.SHOULDER: ("surgical neck of the humerus", "greater tuberosity", "clavicle"),
}
# The kind of fracture words by the kind of bone: "compression" only for vertebral bodies,
# "linear" only for the vault; a transverse process or the mandible breaks like any bone.
FRACTURE_KINDS: dict[str | None, tuple[str, ...]] = {
    None: (
        "nondisplaced",
        "minimally displaced",
        "mildly displaced",
        "transverse",
        "oblique",
        "comminuted",
        "acute",
    ),
    "vertebral body": ("compression", "acute compression", "mild compression"),
    "vault": ("linear", "nondisplaced linear"),
}
VAULT_BONES = ("frontal", "parietal", "occipital", "temporal")


def _fracture_kinds(anatomy: Anatomy, bone: str) -> tuple[str, ...]:
    if anatomy is Anatomy.LUMBAR_SPINE and "vertebral body" in bone:
        return FRACTURE_KINDS["vertebral body"]
    if anatomy is Anatomy.SKULL and any(word in bone for word in VAULT_BONES):
        return FRACTURE_KINDS["vault"]
    return FRACTURE_KINDS[None]


# Chest zones in the words radiologists use for them.
_LEVELS = (
    ("upper zone", "upper"),
    ("middle zone", "middle"),
    ("lower zone", "lower"),
    ("apex", "apex"),
    ("costophrenic", "base"),
)
_LOBES = {
    "upper": ("{side} upper lobe", "{S}UL"),
    "apex": ("{side} upper lobe", "{S}UL"),
    "middle": ("{side} middle lobe", "RML"),
    "lower": ("{side} lower lobe", "{S}LL"),
    "base": ("{side} lower lobe", "{S}LL"),
}
_LEFT_MIDDLE_LOBE = ("lingular segment of the left upper lobe", "lingular")  # no left middle lobe
_REGIONS = {
    "upper": "{side} upper lung",
    "apex": "{side} apex",
    "middle": "{side} midlung",
    "lower": "{side} base",
    "base": "{side} base",
}
# Size words from the renderer's measurement: (upper bound in mm, word).
_DEGREES = {
    _E: ((20.0, "small"), (50.0, "moderate"), (float("inf"), "large")),
    _P: ((5.0, "tiny"), (20.0, "small"), (35.0, "moderate"), (float("inf"), "large")),
}

# Misspellings radiologists' dictation really produces, on words that carry no finding or
# negation (so a typo never changes what a sentence says).
TYPOS = {
    "silhouette": "silhouete",
    "mediastinal": "mediastinial",
    "contours": "contuors",
    "unremarkable": "unremarakble",
    "alignment": "alignmnet",
    "visualized": "visualzied",
    "There is": "Tehre is",
    "within": "wihtin",
    "consistent": "consistant",
    "tissues": "tisues",
    "degenerative": "degenrative",
}
TYPO_RATE = 0.12  # reports with one misspelling

# ---------------------------------------------------------------------------------------------
# Phrasing: the rest of the report.

PART = {
    Anatomy.CHEST: "chest",
    Anatomy.HAND: "hand",
    Anatomy.KNEE: "knee",
    Anatomy.PELVIS: "pelvis",
    Anatomy.LUMBAR_SPINE: "lumbar spine",
    Anatomy.SKULL: "skull",
    Anatomy.FOOT: "foot",
    Anatomy.SHOULDER: "shoulder",
}
VIEW_WORDS = {"PA": "PA", "AP": "AP", "LAT": "lateral", "OBL": "oblique", "Y": "scapular Y"}
EXAM_LINES = (
    "XR {PART}{_SIDE} {n} VIEW{S}",
    "{PART}{_SIDE} {VIEWS}",
    "Radiographs of the {sided_part}, {n} view{s}",
    "DX {PART}{_SIDE}, {views}",
    "CR {PART}{_SIDE} {n}V",
)
TECHNIQUES = (
    "{Views} view{s} of the {sided_part}.",
    "{n} view{s} of the {sided_part} {was} obtained.",
    "{Views} radiographs of the {sided_part}.",
)
INDICATIONS: dict[Anatomy, tuple[str, ...]] = {
    Anatomy.CHEST: (
        "Cough and fever for {days} days, r/o pneumonia",
        "SOB",
        "Shortness of breath",
        "Chest pain",
        "Pre-operative evaluation",
        "Fever",
        "CHF exacerbation?",
        "Hypoxia",
        "Dyspnea on exertion",
        "Pleuritic chest pain, r/o PTX",
        "Productive cough",
        "Eval for effusion",
    ),
    Anatomy.HAND: (
        "Fall on outstretched hand",
        "Punched a wall, pain over {side} hand",
        "{side} wrist pain after fall",
        "Swelling of the {side} hand",
        "Crush injury, r/o fx",
    ),
    Anatomy.KNEE: ("Twisting injury, pain", "Knee pain, OA?", "Fall onto {side} knee", "MVC"),
    Anatomy.PELVIS: (
        "Fall, hip pain, unable to bear weight",
        "Hip pain",
        "Ground-level fall, r/o hip fx",
    ),
    Anatomy.LUMBAR_SPINE: (
        "Low back pain",
        "Fall from ladder, back pain",
        "Osteoporosis, acute back pain, r/o compression fx",
    ),
    Anatomy.SKULL: ("Head trauma", "Fall, head injury", "Assault, scalp hematoma"),
    Anatomy.FOOT: (
        "Inversion injury",
        "Pain at base of fifth metatarsal",
        "Dropped object on {side} foot",
    ),
    Anatomy.SHOULDER: (
        "Fall onto {side} shoulder, pain",
        "Shoulder pain, decreased ROM",
        "Dislocation?",
    ),
}
NODULE_FOLLOW_UP = ("f/u nodule", "Follow-up pulmonary nodule", "Known nodule, follow-up")
# Age phrases: (the age, PHI when over 89; the sex that follows it).
AGE_FORMS = (
    ("{age} yo", " {sx}"),
    ("{age} y/o", " {sx}"),
    ("{age}-year-old", " {sex_word}"),
    ("{age}", "{sx}"),
    ("{age} year old", " {sex_word}"),
)
HISTORY_EXTRAS = {
    "patient": ("{patient} seen in ED.", "Patient identified as {patient}."),
    "mrn": ("MRN: {mrn}.", "(MRN {mrn})"),
    "referring": ("Referred by {ref}.", "Ordering provider: {ref}.", "Requested by {ref}."),
    "phone": (
        "Please call {ref} at {phone} with results.",
        "Call results to {phone}.",
        "Contact pt at {pt_phone}.",
    ),
    "address": (
        "Transferred from home at {address}.",
        "Pt lives alone at {address}.",
    ),
    "email": ("Pt requests copy of report to {pt_email}.", "Send results to {ref_email}."),
}
HISTORY_EXTRA_RATES = {
    "patient": 0.12,
    "mrn": 0.08,
    "referring": 0.15,
    "phone": 0.12,
    "address": 0.04,
    "email": 0.04,
}
COMPARISON_NONE = ("None.", "None available.", "No prior studies.", "None on file.")
COMPARISON_PRIORS = (
    "{dates}.",
    "Prior {part} radiographs dated {dates}.",
    "Comparison is made with {dates}.",
    "{Part} radiograph from {dates}.",
)
HEADER_FIELDS = {
    "institution": ("{institution}", "{institution} - {department}"),
    "institution_contact": ("{inst_address}", "{inst_address}  Tel: {inst_phone}"),
    "patient": ("Patient: {patient}", "PATIENT NAME: {patient}", "Name: {patient}"),
    "mrn": ("MRN: {mrn}", "Med Rec #: {mrn}", "Patient ID: {mrn}", "MR#: {mrn}"),
    "accession": ("Accession: {acc}", "Acc #: {acc}", "ACCESSION NO: {acc}"),
    "date": ("Exam Date: {study_dt}", "Date of Service: {study_date}", "DOS: {study_date}"),
    "referring": ("Referring Physician: {ref}", "Ordering MD: {ref}"),
    "patient_contact": ("Patient address: {address}", "Patient phone: {pt_phone}"),
}
HEADER_FIELD_RATES = {
    "institution": 0.7,
    "institution_contact": 0.3,
    "patient": 0.8,
    "mrn": 0.85,
    "accession": 0.7,
    "date": 0.8,
    "referring": 0.5,
    "patient_contact": 0.08,
}
HEADER_RATE = 0.65  # reports that open with a header block
SIGN_DICTATED = ("Dictated by: {rad}", "Dictated by {rad}", "Reading radiologist: {rad}")
SIGN_SIGNED = (
    "Electronically signed by {rad_lf} MD on {signed}",
    "Electronically signed by: {rad_name}, MD {signed}",
    "Signed: {rad_name}, M.D. on {signed}",
    "Report finalized by {rad} {signed}",
    "E-signed {signed} by {rad_lf}",
)
SIGN_COMMUNICATED = (
    "Findings discussed with {ref} by telephone at {phone} on {comm}.",
    "Results were called to {ref} at {phone} on {comm}.",
    "Critical result communicated to {ref} ({phone}) on {comm} by {rad}.",
    "Findings discussed with {ref} on {comm}; callback number {phone}.",
)

SECTION_LABELS = {
    "exam": ("EXAMINATION", "EXAM", "PROCEDURE", "STUDY"),
    "history": ("INDICATION", "CLINICAL HISTORY", "HISTORY", "REASON FOR EXAM"),
    "comparison": ("COMPARISON",),
    "technique": ("TECHNIQUE",),
    "findings": ("FINDINGS",),
    "impression": ("IMPRESSION", "CONCLUSION"),
}

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Date layouts seen in US reports; a report keeps one for system text and one for dictation.
DATE_FORMATS = (
    "{mm}/{dd}/{yyyy}",  # 03/04/2019
    "{yyyy}-{mm}-{dd}",  # 2019-03-04
    "{d} {Mon} {yyyy}",  # 4 Mar 2019
    "{Month} {d}, {yyyy}",  # March 4, 2019
    "{m}/{d}/{yyyy}",  # 3/4/2019
    "{mm}-{dd}-{yyyy}",  # 03-04-2019
    "{dd}-{MON}-{yyyy}",  # 04-MAR-2019
)
TIME_FORMATS = ("{HH}:{MM}", "{HH}{MM}", "{h}:{MM} {ampm}", "{HH}:{MM}:{SS}")
DATETIME_FORMATS = ("{date} {time}", "{date} at {time}", "{date}, {time}")


def format_date(value: datetime.date, layout: str) -> str:
    """``value`` in one of :data:`DATE_FORMATS`, independent of the process locale."""
    month = MONTHS[value.month - 1]
    return layout.format(
        yyyy=f"{value.year:04d}",
        mm=f"{value.month:02d}",
        dd=f"{value.day:02d}",
        m=value.month,
        d=value.day,
        Month=month,
        Mon=month[:3],
        MON=month[:3].upper(),
    )


def format_time(value: datetime.datetime, layout: str) -> str:
    """``value``'s time of day in one of :data:`TIME_FORMATS`."""
    return layout.format(
        HH=f"{value.hour:02d}",
        MM=f"{value.minute:02d}",
        SS=f"{value.second:02d}",
        h=(value.hour - 1) % 12 + 1,
        ampm="AM" if value.hour < 12 else "PM",
    )


# ---------------------------------------------------------------------------------------------
# Filling templates and recording identifiers.


class _Phi(NamedTuple):
    """An identifying value for a slot; ``also``: values inside it (an address's ZIP code)."""

    value: str
    kind: str
    also: tuple[tuple[str, str], ...] = ()


Slots = dict[str, "str | _Phi"]
_FORMATTER = string.Formatter()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(template) if name is not None}


def _pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _choose(rng: np.random.Generator, templates: tuple[str, ...], slots: Slots) -> str:
    """A template whose every slot is known (there is always one: the lists are written so)."""
    usable = [t for t in templates if _fields(t) <= slots.keys()]
    return _pick(rng, usable)


@dataclass
class _Doc:
    """Fills templates; every identifying value that lands in the text is recorded."""

    phi: list[InjectedPHI] = field(default_factory=list)

    def fill(self, template: str, slots: Slots) -> str:
        """``template`` with its slots filled; the identifiers among them are recorded."""
        out = []
        for literal, name, _, _ in _FORMATTER.parse(template):
            out.append(literal)
            if name is None:
                continue
            value = slots[name]
            if isinstance(value, _Phi):
                self.phi.append(InjectedPHI(value.value, value.kind))
                self.phi.extend(InjectedPHI(v, k) for v, k in value.also)
                value = value.value
            out.append(value)
        return "".join(out)

    def unique_phi(self) -> tuple[InjectedPHI, ...]:
        """Each recorded identifier once, in order of first use."""
        return tuple(dict.fromkeys(self.phi))


def _sentence(template: str, slots: Slots) -> str:
    """A finding sentence: no identifiers, first letter capitalised, spaces tidied."""
    text = re.sub(r" {2,}", " ", template.format(**slots)).strip()
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# What the text will say about each finding, and the words for where it is.


@dataclass(frozen=True)
class _Mention:
    finding: Finding
    status: str
    slots: Slots


def _plan_status(truth: FindingTruth, rng: np.random.Generator) -> str:
    """The status the text will express: see the rates at the top of the module."""
    roll = rng.random()
    if truth.present:
        return "uncertain" if roll < PRESENT_UNCERTAIN else "positive"
    if roll < ABSENT_UNCERTAIN:
        return "uncertain"
    explicit = EXPLICIT_NEGATIVE.get(truth.finding, 0.5)
    return "negative" if rng.random() < explicit else "not_mentioned"


def _side_of(location: str | None, side: str | None) -> str | None:
    if side:
        return side
    words = (location or "").split()
    return next((w for w in words if w in ("left", "right")), None)


def _degree(finding: Finding, size_mm: float | None, rng: np.random.Generator) -> str:
    if finding in _DEGREES and size_mm is not None:
        return next(word for bound, word in _DEGREES[finding] if size_mm < bound)
    if finding is _H:
        return _pick(rng, ("mild", "moderate", "marked"))
    return "small"


def _size_words(size_mm: float, rng: np.random.Generator) -> str:
    """Size words: "8 mm" mostly, "0.8 cm" sometimes, as dictation varies."""
    if size_mm >= 10 and rng.random() < 0.3:
        return f"{size_mm / 10:.1f} cm"
    return f"{size_mm:.0f} mm"


def _chest_slots(truth: FindingTruth, status: str, rng: np.random.Generator) -> Slots:
    """Side, zone, lobe, region and size words for a chest finding, agreeing with the truth."""
    location = truth.location if truth.present else None
    location = location or _pick(rng, CHEST_PLACES.get(truth.finding, ("right lower zone",)))
    side = _side_of(location, truth.side if truth.present else None) or ""
    slots: Slots = {"side": side, "zone": location, "lobe": location, "region": location}
    slots["degree"] = _degree(truth.finding, truth.size_mm, rng)
    level = next((lvl for key, lvl in _LEVELS if key in location), None)
    if side and level:
        lobe, abbr = _LOBES[level]
        if side == "left" and level == "middle":
            lobe, abbr = _LEFT_MIDDLE_LOBE
        short = side[0].upper()
        slots.update(S=short, lobe=lobe.format(side=side), lobe_abbr=abbr.format(S=short))
        slots["region"] = _REGIONS[level].format(side=side)
    slots["apical"] = "apical " if level in ("apex", "upper") else ""
    if truth.finding is _N:
        known = truth.size_mm is not None and status != "uncertain"
        slots["size"] = _size_words(truth.size_mm, rng) if known else "small"
        slots["a_size"] = _article(slots["size"])
    if truth.finding is _P and truth.size_mm is not None and truth.present:
        slots["rim"] = f"{truth.size_mm:.0f} mm"
    return slots


def _with_side(bone: str, side: str) -> str:
    """Put the side in: "left distal radius", "surgical neck of the left humerus"."""
    if " of the " in bone:
        head, _, tail = bone.rpartition(" of the ")
        return f"{head} of the {side} {tail}"
    return f"{side} {bone}"


def _article(word: str) -> str:
    """The word with "a" or "an" by sound: "an acute", "an 8 mm", "an 11 mm", "a 1.1 cm"."""
    vowel_sound = word[0] in "aeiou" or re.match(r"(8|11|18|8\d)\b", word)
    return f"an {word}" if vowel_sound else f"a {word}"


def _fracture_slots(truth: FindingTruth, inp: ReportInput, rng: np.random.Generator) -> Slots:
    """The bone (with its side, sometimes) and the kind of fracture."""
    limb_side = {"L": "left", "R": "right"}.get(inp.laterality or "")
    side = truth.side or limb_side
    if truth.present and truth.location:
        bone = truth.location
    else:  # a hedged mention of an absent fracture: somewhere plausible
        places = FRACTURE_PLACES.get(inp.anatomy, ("{side} rib",))
        bone = _pick(rng, places).format(side=side or _pick(rng, ("left", "right")))
    if side and side not in bone.split() and rng.random() < 0.5:
        bone = _with_side(bone, side)
    kind = _pick(rng, _fracture_kinds(inp.anatomy, bone))
    return {"bone": bone, "kind": kind, "a_kind": _article(kind)}


def _plan(inp: ReportInput, rng: np.random.Generator) -> dict[Finding, _Mention]:
    """Status and slot words per finding of the input, in the input's order."""
    mentions = {}
    for truth in inp.findings:
        status = _plan_status(truth, rng)
        if truth.finding is _F:
            slots = _fracture_slots(truth, inp, rng)
        else:
            slots = _chest_slots(truth, status, rng)
        mentions[truth.finding] = _Mention(truth.finding, status, slots)
    return mentions


# ---------------------------------------------------------------------------------------------
# FINDINGS and IMPRESSION.


def _finding_sentence(m: _Mention, rng: np.random.Generator, extra: tuple[str, ...] = ()) -> str:
    templates = FINDING_SENTENCES[m.finding][m.status] + extra
    return _sentence(_choose(rng, templates, m.slots), m.slots)


def _said(mentions: dict[Finding, _Mention], finding: Finding) -> str:
    return mentions[finding].status if finding in mentions else "not_mentioned"


def _system(findings: set[Finding] | frozenset[Finding]) -> str:
    """The organ system a lung or pleura sentence belongs to (for structured layouts)."""
    lungs, pleura = bool(findings & {_C, _N}), bool(findings & {_E, _P})
    return "Lungs and pleura" if lungs and pleura else ("Lungs" if lungs else "Pleura")


def _combined(
    mentions: dict[Finding, _Mention], todo: list[Finding], rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Sentences covering several findings at once; what they cover is removed from ``todo``."""
    out = []
    if rng.random() < 0.35:
        for (pos, neg), templates in POSITIVE_WITH_NEGATIVE.items():
            both = pos in todo and neg in todo
            if both and _said(mentions, pos) == "positive" and _said(mentions, neg) == "negative":
                slots = mentions[pos].slots
                out.append((_system({pos, neg}), _sentence(_choose(rng, templates, slots), slots)))
                todo[:] = [f for f in todo if f not in (pos, neg)]
                break
    negatives = {f for f in todo if _said(mentions, f) == "negative"}
    if rng.random() < 0.5:
        for group, templates in NEGATION_GROUPS:
            if group <= negatives:
                if group == {_C, _E, _P} and _clear_lungs_ok(mentions) and rng.random() < 0.4:
                    templates = CLEAR_LUNGS_GROUP
                out.append((_system(group), _pick(rng, templates)))
                todo[:] = [f for f in todo if f not in group]
                break
    return out


def _clear_lungs_ok(mentions: dict[Finding, _Mention]) -> bool:
    """Whether "the lungs are clear" is true: only if no nodule is described."""
    return _said(mentions, _N) in ("negative", "not_mentioned")


def _lung_sentences(
    mentions: dict[Finding, _Mention], rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Lungs and pleura: consolidation, nodule, effusion, pneumothorax."""
    todo = [f for f in (_C, _N, _E, _P) if _said(mentions, f) != "not_mentioned"]
    out = _combined(mentions, todo, rng)
    for finding in todo:
        extra: tuple[str, ...] = ()
        if finding is _C and mentions[_C].status == "negative" and _clear_lungs_ok(mentions):
            extra = CLEAR_LUNGS * 2  # the commonest way to say it
        out.append((_system({finding}), _finding_sentence(mentions[finding], rng, extra)))
    return out


def _chest_findings(
    mentions: dict[Finding, _Mention], rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(system, sentence) pairs of a chest FINDINGS section, in the usual reading order."""
    out: list[tuple[str, str]] = []
    if rng.random() < 0.2:
        out.append(("Support devices", _pick(rng, CHEST_FILLERS["Support devices"])))
    if _said(mentions, _H) != "not_mentioned":
        out.append(("Heart", _finding_sentence(mentions[_H], rng)))
    if rng.random() < 0.5:
        out.append(("Mediastinum", _pick(rng, CHEST_FILLERS["Mediastinum"])))
    out += _lung_sentences(mentions, rng)
    if rng.random() < 0.4 and _F not in mentions:  # "no acute osseous abnormality" negates it
        out.append(("Bones", _pick(rng, CHEST_FILLERS["Bones"])))
    if rng.random() < 0.3:
        out.append(("Other", _pick(rng, INCIDENTALS[Anatomy.CHEST])))
    return out


def _bone_findings(
    mentions: dict[Finding, _Mention], anatomy: Anatomy, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(system, sentence) pairs of a FINDINGS section for a bone study."""
    out: list[tuple[str, str]] = []
    if _said(mentions, _F) != "not_mentioned":
        m = mentions[_F]
        extra = SPINE_FRACTURE_NEGATIVES if anatomy is Anatomy.LUMBAR_SPINE else ()
        out.append(("Bones", _finding_sentence(m, rng, extra if m.status == "negative" else ())))
        joints = anatomy not in (Anatomy.SKULL, Anatomy.LUMBAR_SPINE)
        if joints and m.status == "positive" and rng.random() < 0.4:
            out.append(("Joints", "No dislocation."))
    count = int(rng.integers(1, 3))
    picks = rng.choice(len(BONE_FILLERS), size=count, replace=False)
    out += [("Other", BONE_FILLERS[int(i)]) for i in sorted(picks)]
    if rng.random() < 0.35 or not out:
        out.append(("Other", _pick(rng, INCIDENTALS.get(anatomy, BONE_FILLERS))))
    return out


def _findings(
    inp: ReportInput, mentions: dict[Finding, _Mention], rng: np.random.Generator
) -> list[tuple[str, str]]:
    if inp.anatomy is Anatomy.CHEST:
        out = _chest_findings(mentions, rng)
        if _F in mentions:  # a chest with a fracture finding too (ribs): report it as a bone
            out += _bone_findings({_F: mentions[_F]}, inp.anatomy, rng)[:1]
        return out
    return _bone_findings(mentions, inp.anatomy, rng)


def _impression_items(mentions: dict[Finding, _Mention], rng: np.random.Generator) -> list[str]:
    """Abnormal and hedged findings, then perhaps a pertinent negative."""
    items = []
    ordered = sorted(mentions.values(), key=lambda m: m.status != "positive")
    for m in ordered:
        if m.status in ("positive", "uncertain"):
            templates = IMPRESSION_SENTENCES[m.finding][m.status]
            items.append(_sentence(_choose(rng, templates, m.slots), m.slots))
    for finding in (_P, _F):
        if items and _said(mentions, finding) == "negative" and rng.random() < 0.3:
            items.append(_pick(rng, IMPRESSION_SENTENCES[finding]["negative"]))
    return items


def _normal_impression(
    inp: ReportInput, mentions: dict[Finding, _Mention], rng: np.random.Generator
) -> list[str]:
    """An impression without abnormal findings; global statements only where they are true."""
    said = {f: m.status for f, m in mentions.items()}
    negatives = [f for f, s in said.items() if s == "negative"]
    if inp.anatomy is Anatomy.CHEST:
        if len(negatives) == len(said) and rng.random() < 0.4:
            return [_pick(rng, CHEST_ALL_NORMAL)]
        if set(negatives) >= CHEST_NO_ACUTE_REQUIRES and rng.random() < 0.8:
            return [_pick(rng, CHEST_NO_ACUTE)]
    elif said.get(_F) == "negative" and rng.random() < 0.7:
        return [_pick(rng, BONE_NORMAL).format(sided_part=_sided_part(inp))]
    if negatives:
        negatives.sort(key=IMPRESSION_NEGATIVE_ORDER.index)  # what the clinician asked first
        chosen = negatives[: int(rng.integers(1, 3))]
        return [_pick(rng, IMPRESSION_SENTENCES[f]["negative"]) for f in chosen]
    return [_pick(rng, NEUTRAL_IMPRESSION)]


def _add_typo(sentences: list[str], rng: np.random.Generator) -> list[str]:
    """Misspell one harmless word in one sentence, in some reports."""
    if rng.random() >= TYPO_RATE:
        return sentences
    # Whole words only: "mediastinal" must not turn "cardiomediastinal" into a non-word.
    candidates = [
        (i, w) for i, s in enumerate(sentences) for w in TYPOS if re.search(rf"\b{w}\b", s)
    ]
    if not candidates:
        return sentences
    index, word = candidates[int(rng.integers(len(candidates)))]
    out = list(sentences)
    out[index] = re.sub(rf"\b{word}\b", TYPOS[word], out[index], count=1)
    return out


# ---------------------------------------------------------------------------------------------
# Identifiers in their written forms.


def _patient_name(p: Person, rng: np.random.Generator, header: bool = False) -> _Phi:
    if header:
        forms = (p.dicom_pn("upper"), p.last_first(), f"{p.family.upper()}, {p.given.upper()}")
    else:
        title = "Mr." if p.sex == "M" else "Ms."
        forms = (p.display(), f"{p.given} {p.family}", p.last_first(), f"{title} {p.family}")
    return _Phi(_pick(rng, forms), "patient_name")


def _physician_name(p: Person, rng: np.random.Generator, header: bool = False) -> _Phi:
    if header:
        forms = (p.dicom_pn("upper"), p.last_first(), p.display())
    else:
        forms = (p.display(), f"Dr. {p.family}", f"Dr. {p.given} {p.family}")
    return _Phi(_pick(rng, forms), "physician_name")


def _address(address: Address) -> _Phi:
    return _Phi(address.one_line(), "address", ((address.zip_code, "zip"),))


@dataclass(frozen=True)
class _Style:
    """One report's habits: a RIS keeps its layout, and a radiologist their date style."""

    upper_labels: bool
    block: bool  # label on its own line, text below
    blank_lines: bool
    findings_layout: str  # "prose" | "lines" | "structured"
    impression_layout: str  # "prose" | "numbered" | "dashed"
    labels: dict[str, str]
    system_date: str
    dictation_date: str
    time: str
    datetime: str


def _draw_style(rng: np.random.Generator) -> _Style:
    upper = rng.random() < 0.75
    labels = {}
    for key, options in SECTION_LABELS.items():
        label = _pick(rng, options)
        labels[key] = label if upper else label.title()
    return _Style(
        upper_labels=upper,
        block=rng.random() < 0.4,
        blank_lines=rng.random() < 0.7,
        findings_layout=_pick(rng, ("prose", "prose", "lines", "structured")),
        impression_layout=_pick(rng, ("prose", "numbered", "numbered", "dashed")),
        labels=labels,
        system_date=_pick(rng, DATE_FORMATS),
        dictation_date=_pick(rng, DATE_FORMATS),
        time=_pick(rng, TIME_FORMATS),
        datetime=_pick(rng, DATETIME_FORMATS),
    )


def _date(value: datetime.date, style: _Style, system: bool = True) -> _Phi:
    layout = style.system_date if system else style.dictation_date
    return _Phi(format_date(value, layout), "date")


def _datetime(value: datetime.datetime, style: _Style) -> _Phi:
    text = style.datetime.format(
        date=format_date(value.date(), style.system_date), time=format_time(value, style.time)
    )
    return _Phi(text, "datetime")


def _sided_part(inp: ReportInput) -> str:
    side = {"L": "left ", "R": "right "}.get(inp.laterality or "", "")
    return side + PART[inp.anatomy]


# ---------------------------------------------------------------------------------------------
# The other sections.


def _header(inp: ReportInput, style: _Style, doc: _Doc, rng: np.random.Generator) -> list[str]:
    """The RIS header block: institution, patient, MRN, accession, date, referring."""
    inst = inp.institution
    slots: Slots = {
        "institution": _Phi(inst.name.upper() if style.upper_labels else inst.name, "institution"),
        "department": inst.department,
        "inst_address": _address(inst.address),
        "inst_phone": _Phi(inst.phone, "phone"),
        "patient": _patient_name(inp.patient, rng, header=True),
        "mrn": _Phi(inp.mrn, "mrn"),
        "acc": _Phi(inp.accession, "accession"),
        "study_dt": _datetime(inp.study_datetime, style),
        "study_date": _date(inp.study_datetime.date(), style),
        "ref": _physician_name(inp.referring, rng, header=True),
        "address": _address(inp.patient_address),
        "pt_phone": _Phi(inp.patient_phone, "phone"),
    }
    lines, chosen = [], set()
    for key, templates in HEADER_FIELDS.items():
        # The site's address and phone follow its name, never stand alone.
        named = key != "institution_contact" or "institution" in chosen
        if named and rng.random() < HEADER_FIELD_RATES[key]:
            chosen.add(key)
            lines.append(doc.fill(_pick(rng, templates), slots))
    if rng.random() < 0.5:  # some RIS put two fields per line
        lines = ["    ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]
    return lines


def _exam_line(inp: ReportInput, style: _Style, doc: _Doc, rng: np.random.Generator) -> str:
    n = len(inp.views)
    side = {"L": "left", "R": "right"}.get(inp.laterality or "", "")
    words = [VIEW_WORDS.get(v, v) for v in inp.views]
    slots: Slots = {
        "PART": PART[inp.anatomy].upper(),
        "_SIDE": f" {side.upper()}" if side else "",
        "n": str(n),
        "S": "S" if n > 1 else "",
        "s": "s" if n > 1 else "",
        "VIEWS": " AND ".join(inp.views) if n <= 2 else "/".join(inp.views),
        "views": _join(words),
        "sided_part": _sided_part(inp),
    }
    line = _pick(rng, EXAM_LINES).format(**slots)
    if rng.random() < 0.15:
        line += " " + doc.fill("{date}", {"date": _date(inp.study_datetime.date(), style)})
    return line


def _join(words: list[str]) -> str:
    """Join view words: "PA", "PA and lateral", "PA, oblique and lateral"."""
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _technique(inp: ReportInput, rng: np.random.Generator) -> str:
    n = len(inp.views)
    words = [VIEW_WORDS.get(v, v) for v in inp.views]
    if inp.anatomy is Anatomy.CHEST and inp.views == ("AP",) and rng.random() < 0.6:
        return "Single portable AP view of the chest."
    views = _join(words)
    slots = {
        "Views": views[:1].upper() + views[1:],
        "n": str(n) if n > 1 else "One",
        "s": "s" if n > 1 else "",
        "was": "were" if n > 1 else "was",
        "sided_part": _sided_part(inp),
    }
    return _pick(rng, TECHNIQUES).format(**slots)


def _age_phrase(inp: ReportInput, rng: np.random.Generator) -> tuple[str, Slots]:
    """Age and sex: "67 yo M" and friends; an age over 89 is an identifier (HIPAA Safe Harbor)."""
    age_form, sex_form = AGE_FORMS[int(rng.integers(len(AGE_FORMS)))]
    age = age_form.format(age=inp.age_years)
    slots: Slots = {
        "age": _Phi(age, "age_over_89") if inp.age_years > 89 else age,
        "sx": inp.sex,
        "sex_word": "male" if inp.sex == "M" else "female",
    }
    return "{age}" + sex_form, slots


def _complaint(
    inp: ReportInput, mentions: dict[Finding, _Mention], rng: np.random.Generator
) -> str:
    side = {"L": "left", "R": "right"}.get(inp.laterality or "", "")
    known_nodule = _said(mentions, _N) != "not_mentioned" and inp.prior_dates
    if known_nodule and rng.random() < 0.5:
        return _pick(rng, NODULE_FOLLOW_UP)
    templates = INDICATIONS.get(inp.anatomy, ("Pain",))
    if not side:
        templates = tuple(t for t in templates if "{side}" not in t) or ("Pain",)
    text = _pick(rng, templates).format(side=side, days=int(rng.integers(2, 8)))
    return text[:1].upper() + text[1:]


def _history(
    inp: ReportInput, mentions: dict[Finding, _Mention], doc: _Doc, rng: np.random.Generator
) -> str:
    """INDICATION: the clinical question, often with the identifiers real requests carry."""
    complaint = _complaint(inp, mentions, rng)
    if rng.random() < 0.6:
        template, slots = _age_phrase(inp, rng)
        text = doc.fill(template, slots) + " with " + complaint[:1].lower() + complaint[1:]
    else:
        text = complaint
    text = text.rstrip(".?") + ("?" if text.endswith("?") else ".")
    slots = _history_slots(inp, rng)
    for key, templates in HISTORY_EXTRAS.items():
        if rng.random() < HISTORY_EXTRA_RATES[key]:
            text += " " + doc.fill(_choose(rng, templates, slots), slots)
    return text


def _history_slots(inp: ReportInput, rng: np.random.Generator) -> Slots:
    ref = inp.referring
    return {
        "patient": _patient_name(inp.patient, rng),
        "mrn": _Phi(inp.mrn, "mrn"),
        "ref": _physician_name(ref, rng),
        "phone": _Phi(make_phone(rng), "phone"),
        "pt_phone": _Phi(inp.patient_phone, "phone"),
        "address": _address(inp.patient_address),
        "pt_email": _Phi(make_email(rng, inp.patient, None), "email"),
        "ref_email": _Phi(make_email(rng, ref, inp.institution), "email"),
    }


def _comparison(inp: ReportInput, style: _Style, doc: _Doc, rng: np.random.Generator) -> str:
    """COMPARISON: "None." or the most recent prior studies of this anatomy, by date."""
    if not inp.prior_dates or rng.random() < 0.1:
        return _pick(rng, COMPARISON_NONE)
    count = int(rng.integers(1, min(3, len(inp.prior_dates)) + 1))
    recent = sorted(inp.prior_dates)[-count:][::-1]  # newest first, as radiologists list them
    names = [f"d{i}" for i in range(len(recent))]
    slots: Slots = {n: _date(d, style, system=False) for n, d in zip(names, recent, strict=True)}
    dates = _join(["{" + n + "}" for n in names])
    part = PART[inp.anatomy]
    template = _pick(rng, COMPARISON_PRIORS).format(dates=dates, part=part, Part=part.title())
    return doc.fill(template, slots)


def _sign_off(
    inp: ReportInput,
    mentions: dict[Finding, _Mention],
    style: _Style,
    doc: _Doc,
    rng: np.random.Generator,
) -> tuple[list[str], datetime.datetime]:
    """Dictation, signature and (for abnormal studies, often) the call to the referrer.

    Returns the lines and the signing time, which the RIS export repeats in its own column.
    """
    read = inp.study_datetime + datetime.timedelta(minutes=int(rng.integers(10, 1800)))
    rad = inp.radiologist
    slots: Slots = {
        "rad": _physician_name(rad, rng),
        "rad_lf": _Phi(f"{rad.family}, {rad.given}", "physician_name"),
        "rad_name": _Phi(f"{rad.given} {rad.family}", "physician_name"),
        "signed": _datetime(read, style),
        "ref": _physician_name(inp.referring, rng),
        "phone": _Phi(make_phone(rng), "phone"),
        "comm": _datetime(read - datetime.timedelta(minutes=int(rng.integers(1, 10))), style),
    }
    lines = []
    abnormal = any(m.status in ("positive", "uncertain") for m in mentions.values())
    ptx = _said(mentions, _P) == "positive"
    if abnormal and rng.random() < (0.8 if ptx else 0.35):
        lines.append(doc.fill(_pick(rng, SIGN_COMMUNICATED), slots))
    dictated = rng.random() < 0.6
    if dictated:
        lines.append(doc.fill(_pick(rng, SIGN_DICTATED), slots))
    if rng.random() < 0.9 or not dictated:  # the radiologist is always named
        lines.append(doc.fill(_pick(rng, SIGN_SIGNED), slots))
    return lines, read


# ---------------------------------------------------------------------------------------------
# Layout.


def _findings_body(pairs: list[tuple[str, str]], style: _Style) -> str:
    if style.findings_layout == "lines":
        return "\n".join(s for _, s in pairs)
    if style.findings_layout == "structured":
        groups: dict[str, list[str]] = {}
        for system, sentence in pairs:
            groups.setdefault(system, []).append(sentence)
        return "\n".join(f"{system}: {' '.join(s)}" for system, s in groups.items())
    return " ".join(s for _, s in pairs)


def _impression_body(items: list[str], style: _Style) -> str:
    if style.impression_layout == "numbered" and len(items) > 1:
        return "\n".join(f"{i}. {s}" for i, s in enumerate(items, 1))
    if style.impression_layout == "dashed" and len(items) > 1:
        return "\n".join(f"- {s}" for s in items)
    return " ".join(items)


def _section(key: str, body: str, style: _Style) -> str:
    label = style.labels[key] + ":"
    if style.block or "\n" in body:
        return f"{label}\n{body}"
    return f"{label} {body}"


def _assemble(
    header: list[str], sections: list[tuple[str, str]], sign: list[str], style: _Style
) -> str:
    gap = "\n\n" if style.blank_lines else "\n"
    blocks = ["\n".join(header)] if header else []
    blocks += [_section(key, body, style) for key, body in sections]
    blocks.append("\n".join(sign))
    return gap.join(blocks) + "\n"


def write_report(inp: ReportInput, rng: np.random.Generator) -> Report:
    """A radiology report for ``inp``: its text, what it says per finding, and its identifiers."""
    style = _draw_style(rng)
    doc = _Doc()
    mentions = _plan(inp, rng)
    header = _header(inp, style, doc, rng) if rng.random() < HEADER_RATE else []
    sections = [
        ("exam", _exam_line(inp, style, doc, rng)),
        ("history", _history(inp, mentions, doc, rng)),
    ]
    if rng.random() < 0.9:
        sections.append(("comparison", _comparison(inp, style, doc, rng)))
    if rng.random() < 0.6:
        sections.append(("technique", _technique(inp, rng)))
    pairs = _findings(inp, mentions, rng)
    typoed = _add_typo([s for _, s in pairs], rng)
    pairs = [(system, s) for (system, _), s in zip(pairs, typoed, strict=True)]
    items = _impression_items(mentions, rng) or _normal_impression(inp, mentions, rng)
    sections.append(("findings", _findings_body(pairs, style)))
    sections.append(("impression", _impression_body(items, style)))
    sign, signed = _sign_off(inp, mentions, style, doc, rng)
    text = _assemble(header, sections, sign, style)
    status = {f: m.status for f, m in mentions.items()}
    return Report(text=text, status=status, phi=doc.unique_phi(), signed=signed)
