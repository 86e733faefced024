"""DICOM header de-identification: the PS3.15 Annex E Basic Application Level Confidentiality
Profile (the 2024b table shipped in ``data/``) with its options, keyed pseudonyms and one date
shift per patient.

The table is resolved once per option set and IOD family into a tag -> action dict (cached);
:func:`deidentify` then walks the dataset's own elements, not the table's 621 rows, and touches
only those it must change, so pixel data is never decoded and a radiograph header costs about
a millisecond. Actions, as PS3.15 E.1.1 defines them:

* X remove, Z empty (Patient ID and Patient's Name get the patient's pseudonym instead, a dummy
  that Z permits), D a dummy valid for the VR (a keyed UID for UIDs), K keep, U a keyed
  replacement UID (the same UID maps to the same replacement in every file, run and shard, so
  references between files still resolve), C clean: dates shifted by the
  patient's shift, times kept, AE titles pseudonymised, text scrubbed of the file's own
  identifiers and of anything shaped like a date, number, phone or e-mail.
* Compound codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) pick the action that keeps the IOD valid, from
  the attribute's type in the IOD (``_TYPES``): Z for Type 2, D (U for UID sequences) for Type
  1, X otherwise. Inside sequence items every attribute counts as Type 3.
* Options override the basic action; where two selected options disagree (device identity K,
  modified dates C for a calibration date) the more protective C wins.
* Sequences: X or Z act on the whole sequence; K, C and U apply the profile to every item; D
  does too and also gives a dummy to any text inside that the profile would keep (D applies
  to a sequence's whole content: an SR's Content Sequence, say).
* Beyond the table (PS3.15 E.1.1 Note 4): unlisted DA/DT are handled as dates, unlisted PN and
  attributes unknown to the data dictionary are removed, curves (50xx) and whole overlay planes
  (60xx: their data, comments, labels and descriptions) are removed, and Patient's Age over 89
  becomes 090Y (HIPAA Safe Harbor). Private attributes are removed unless Retain Safe Private is
  chosen and they are on the safe list (:func:`load_safe_private`); kept ones still have their
  UIDs replaced and dates shifted or removed, and a private person name is never kept.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import difflib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import pydicom.config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue

from medtune import __version__
from medtune.deid.annex_e import annex_e_rows
from medtune.deid.identifiers import Identifiers
from medtune.deid.pseudonyms import Pseudonymizer
from medtune.errors import MedtuneError

# Option field -> (Annex E column, CID 7050 concept in pydicom's DCM code dictionary).
_OPTIONS = {
    "retain_long_full_dates": (
        "rtnLongFullDatesOpt", "RetainLongitudinalTemporalInformationFullDatesOption"),
    "retain_long_modified_dates": (
        "rtnLongModifDatesOpt", "RetainLongitudinalTemporalInformationModifiedDatesOption"),
    "retain_patient_chars": ("rtnPatCharsOpt", "RetainPatientCharacteristicsOption"),
    "retain_device_id": ("rtnDevIdOpt", "RetainDeviceIdentityOption"),
    "retain_institution_id": ("rtnInstIdOpt", "RetainInstitutionIdentityOption"),
    "retain_uids": ("rtnUIDsOpt", "RetainUidsOption"),
    "clean_descriptors": ("cleanDescOpt", "CleanDescriptorsOption"),
    "retain_safe_private": ("rtnSafePrivOpt", "RetainSafePrivateOption"),
}  # fmt: skip
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1544.1"  # medtune's (as synth.dicom writes)
SAFE_AGE = "090Y"  # HIPAA Safe Harbor: ages over 89 are grouped into one category
SafePrivate = frozenset[tuple[int, str, int]]  # (group, private creator, element within block)


@dataclass(frozen=True)
class DeidOptions:
    """The Annex E options (PS3.15 E.3) applied on top of the basic profile."""

    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    retain_patient_chars: bool = False
    retain_device_id: bool = False
    retain_institution_id: bool = False
    retain_uids: bool = False
    clean_descriptors: bool = False
    retain_safe_private: bool = False

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ValueError("choose one of retain-long-full-dates and retain-long-modified-dates")

    @classmethod
    def parse(cls, names: Sequence[str]) -> DeidOptions:
        """Options from CLI-style names, e.g. ``["retain-long-modified-dates"]``."""
        chosen = {}
        for name in names:
            if name not in OPTION_NAMES:
                near = difflib.get_close_matches(name, OPTION_NAMES, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise ValueError(f"unknown de-identification option '{name}'{hint}")
            chosen[name.replace("-", "_")] = True
        return cls(**chosen)

    @property
    def names(self) -> tuple[str, ...]:
        """The chosen options' CLI names, in a fixed order."""
        return tuple(n for n in OPTION_NAMES if getattr(self, n.replace("-", "_")))


OPTION_NAMES = tuple(f.name.replace("_", "-") for f in dataclasses.fields(DeidOptions))
BASIC = DeidOptions()
# A training set needs per-patient date intervals, sex and age; everything else goes.
MEDTUNE_DEFAULT = DeidOptions(retain_long_modified_dates=True, retain_patient_chars=True)


@dataclass
class DeidRecord:
    """What was done to one file's header, for the de-identification log: counts per action
    code and the pseudonymous patient id and date shift; never an original value."""

    actions: dict[str, int]  # Annex E code -> elements it was applied to (listed ones and X)
    private_removed: int
    private_kept: int
    patient_pseudonym: str
    date_shift_days: int | None  # None when dates were not shifted
    options: tuple[str, ...]
    clean_pixel_data: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dict."""
        out = dataclasses.asdict(self)
        out["options"] = list(self.options)
        return out


# -- The Annex E table, resolved ----------------------------------------------------------------

# Type 1 and 2 attributes (PS3.3) of the modules every classic image IOD shares and of the DX and
# CR modules; anything absent counts as Type 3. Conditional types (1C, 2C) count as their base
# type: when the attribute is present its condition holds. Only attributes with a compound
# Annex E action need a type; the rest are here so the table reads as the modules do.
_COMMON_TYPES = {
    # Patient (C.7.1.1); Patient's Sex Neutered is 2C, required for animals, present only there
    "PatientName": 2, "PatientID": 2, "PatientBirthDate": 2, "PatientSex": 2,
    "PatientSexNeutered": 2,
    # General Study (C.7.2.1)
    "StudyInstanceUID": 1, "StudyDate": 2, "StudyTime": 2, "ReferringPhysicianName": 2,
    "StudyID": 2, "AccessionNumber": 2,
    # General Series (C.7.3.1), General Equipment (C.7.5.1); General Acquisition is all Type 3
    "Modality": 1, "SeriesInstanceUID": 1, "SeriesNumber": 2, "Laterality": 2,
    "PatientPosition": 2, "Manufacturer": 2,
    # General Image (C.7.6.1): content date and time are 2C (temporally related images)
    "InstanceNumber": 2, "PatientOrientation": 2, "ContentDate": 2, "ContentTime": 2,
    # Contrast/Bolus (C.7.6.4, present when contrast was given), SOP Common (C.12.1)
    "ContrastBolusAgent": 2, "SOPClassUID": 1, "SOPInstanceUID": 1,
}  # fmt: skip
_CR_TYPES = {"BodyPartExamined": 2, "ViewPosition": 2}  # CR Series (C.8.1.1)
_DX_TYPES = {
    # DX Series (C.8.11.1; the PPS reference is 1C), DX Anatomy Imaged (C.8.11.2), and the
    # Acquisition Context module (C.7.6.14), mandatory in DX, MG and IO images.
    "ReferencedPerformedProcedureStepSequence": 1, "PresentationIntentType": 1,
    "ImageLaterality": 1, "AcquisitionContextSequence": 2,
}  # fmt: skip
_TYPES = {
    "image": _COMMON_TYPES,
    "cr": _COMMON_TYPES | _CR_TYPES,
    "dx": _COMMON_TYPES | _DX_TYPES,
    "nested": {},  # inside sequence items: Type 3, so compound codes resolve to X
}
_SOP_FAMILY = {
    "1.2.840.10008.5.1.4.1.1.1": "cr",
    **{f"1.2.840.10008.5.1.4.1.1.1.{kind}{sub}": "dx"  # DX, MG and IO, both intents
       for kind in (1, 2, 3) for sub in ("", ".1")},
}  # fmt: skip


def iod_family(ds: Dataset) -> str:
    """Which type table applies to the top level of ``ds``: "dx", "cr" or "image"."""
    return _SOP_FAMILY.get(str(ds.get("SOPClassUID", "")), "image")


def _resolve(code: str, attr_type: int) -> str:
    """One action for a compound code, given the attribute's type (PS3.15 E.1.1)."""
    choices = code.replace("*", "").split("/")
    if len(choices) == 1:
        return choices[0]
    wanted = {1: ("U", "D", "Z"), 2: ("Z", "D")}.get(attr_type, ("X", "Z"))
    return next((c for c in wanted if c in choices), choices[-1])


@cache
def resolved_actions(options: DeidOptions, iod: str = "image") -> dict[int, str]:
    """Tag -> single action (X, Z, D, K, C, U, or P for the patient pseudonym) for every
    concrete row of the table, under ``options`` and in the type context ``iod`` (see
    :func:`iod_family`; "nested" inside sequence items)."""
    types = {tag_for_keyword(k): t for k, t in _TYPES[iod].items()}
    columns = [col for name, (col, _) in _OPTIONS.items() if getattr(options, name)]
    table = {}
    for row in annex_e_rows():
        tag = row.keyword_tag
        if tag is None:
            continue
        chosen = [row.options[col] for col in columns if col in row.options]
        if chosen:  # an option overrides the profile; C beats K when two disagree
            action = "C" if "C" in chosen else chosen[0]
        else:
            action = _resolve(row.basic, types.get(tag, 3))
        table[tag] = action
    for keyword in ("PatientID", "PatientName"):  # Z allows a dummy: the patient's pseudonym
        tag = tag_for_keyword(keyword)
        if table[tag] == "Z":
            table[tag] = "P"
    return table


@cache
def _not_identifiers() -> frozenset[int]:
    """Descriptors and patient characteristics: removed because they might hold identity, but
    themselves not identifiers to look for elsewhere (a study description, a weight)."""
    return frozenset(
        row.keyword_tag
        for row in annex_e_rows()
        if row.keyword_tag and {"cleanDescOpt", "rtnPatCharsOpt"} & row.options.keys()
    ) | {_TIMEZONE_OFFSET}


# -- Safe private attributes --------------------------------------------------------------------


def load_safe_private(*extra: str | os.PathLike[str]) -> SafePrivate:
    """The shipped safe list (PS3.15 Table E.3.10-1) plus each CSV file in ``extra``, with the
    columns group,element,creator (vr and name optional), e.g. ``0019,10,ACME 1.0,DS,Exposure``
    for (0019,xx10) of private creator "ACME 1.0"; lines starting with # are comments."""
    entries = set(_shipped_safe_private())
    for path in extra:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise MedtuneError(f"{path}: cannot read the safe private list ({err})") from err
        entries |= _parse_safe_private(text, str(path))
    return frozenset(entries)


@cache
def _shipped_safe_private() -> SafePrivate:
    text = resources.files("medtune.deid").joinpath("data", "safe_private.csv").read_text("utf-8")
    return frozenset(_parse_safe_private(text, "safe_private.csv"))


def _parse_safe_private(text: str, source: str) -> set[tuple[int, str, int]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    entries = set()
    for number, row in enumerate(csv.DictReader(lines), start=2):
        try:
            group, element = int(row["group"], 16), int(row["element"], 16)
            creator = row["creator"].strip()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MedtuneError(
                f"{source}: entry {number}: expected hex group, hex element and a creator"
            ) from None
        if not group & 1 or not 0 <= element <= 0xFF or not creator:
            raise MedtuneError(f"{source}: entry {number}: not an odd group, element 00-FF and "
                               "a private creator")  # fmt: skip
        entries.add((group, creator, element))
    return entries


# -- De-identification ---------------------------------------------------------------------------

_FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "UR", "AE", "DA", "DT", "TM"})
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "UR", "CS", "AE"})
_DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMOUS", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": "ANONYMOUS", "LT": "ANONYMOUS", "PN": "ANONYMOUS",
    "SH": "ANONYMOUS", "ST": "ANONYMOUS", "TM": "000000", "UC": "ANONYMOUS", "UR": "ANONYMOUS",
    "UT": "ANONYMOUS", "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "SV": 0, "UL": 0, "US": 0,
    "UV": 0, "AT": 0, "OF": b"\0" * 4, "OL": b"\0" * 4, "OD": b"\0" * 8, "OV": b"\0" * 8,
}  # fmt: skip
_TIMEZONE_OFFSET = 0x00080201  # SH, C under modified dates: kept like times
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$", re.S)
_VR_CACHE: dict[int, str] = {}
_UNLISTED: dict[tuple[int, str, str], str] = {}
_Plan = list[tuple[Dataset, int, str, str]]  # (dataset, tag, action, VR), applied in order


@dataclass
class _Walk:
    """State of one de-identification: what to do, and what was counted."""

    pseudo: Pseudonymizer
    options: DeidOptions
    safe: SafePrivate
    nested: dict[int, str]
    patient: str  # the patient's pseudonym
    shift: int | None  # days, under modified dates
    plan: _Plan = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    private_removed: int = 0
    private_kept: int = 0
    cleans_text: bool = False
    scrub: Callable[[str], str] = str

    @property
    def date_action(self) -> str:
        if self.options.retain_long_full_dates:
            return "K"
        return "C" if self.options.retain_long_modified_dates else "X"


def patient_key(ds: Dataset) -> str:
    """The key a patient's pseudonym and date shift derive from: Patient ID, qualified by its
    issuer when there is one ("ISSUER|ID"), or the study's UID when the file has no Patient ID
    (each such study then counts as its own patient)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        return f"study:{ds.get('StudyInstanceUID', '')}"
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    return f"{issuer}|{pid}" if issuer else pid


def patient_pseudonym(ds: Dataset, pseudo: Pseudonymizer) -> str:
    """The patient's pseudonym (see :meth:`Pseudonymizer.patient`); every stage keys the
    patient's date shift on it, so images and reports shift alike without the original ID."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        return pseudo.patient(f"study:{ds.get('StudyInstanceUID', '')}")
    return pseudo.patient(pid, str(ds.get("IssuerOfPatientID", "") or "").strip())


def deidentify(
    ds: Dataset,
    pseudo: Pseudonymizer,
    options: DeidOptions,
    *,
    clean_pixel_data: bool = False,
    safe_private: SafePrivate | None = None,
) -> DeidRecord:
    """De-identify ``ds`` in place (file meta included) under the basic profile and ``options``.

    ``clean_pixel_data`` only records that the caller cleaned the pixels (code 113101); pixel
    data is never read here. ``safe_private`` defaults to the shipped list.

    >>> record = deidentify(ds, Pseudonymizer(key), MEDTUNE_DEFAULT)
    >>> json.dumps(record.to_dict())  # counts, pseudonym and shift only
    """
    patient = patient_pseudonym(ds, pseudo)
    walk = _Walk(
        pseudo, options, _shipped_safe_private() if safe_private is None else safe_private,
        resolved_actions(options, "nested"), patient,
        pseudo.date_shift_days(patient) if options.retain_long_modified_dates else None,
    )  # fmt: skip
    _plan(ds, resolved_actions(options, iod_family(ds)), walk)
    if walk.cleans_text:  # scrub with the values this file held before anything changed
        walk.scrub = _scrubber(collect_identifiers(ds, options, safe_private=walk.safe))
    # Every value written is valid by construction; pydicom's checks would double the cost.
    with pydicom.config.disable_value_validation():
        for item, tag, action, vr in walk.plan:
            _apply(item, tag, action, vr, walk)
        _replace_file_meta(ds, walk)
        _mark(ds, options, clean_pixel_data)
    return DeidRecord(
        dict(sorted(walk.counts.items())), walk.private_removed, walk.private_kept,
        walk.patient, walk.shift, options.names, clean_pixel_data,
    )  # fmt: skip


def _vr(elem: DataElement | RawDataElement) -> str:
    """The element's VR; the dictionary's when the file did not say (implicit VR, or UN)."""
    vr = elem.VR
    if vr is None or vr == "UN":
        tag = elem.tag
        vr = _VR_CACHE.get(tag)
        if vr is None:
            try:
                vr = dictionary_VR(tag)[:2]  # "US or SS" -> "US"
            except KeyError:
                vr = "UN"
            _VR_CACHE[tag] = vr
    return str(vr)


def _unlisted(tag: int, vr: str, walk: _Walk) -> str:
    """The action for an attribute the table does not name (see the module docstring)."""
    key = (tag, vr, walk.date_action)
    action = _UNLISTED.get(key)
    if action is None:
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            action = "X"  # curves; overlay planes whole
        elif vr in ("DA", "DT"):
            action = walk.date_action
        elif vr == "PN" or not keyword_for_tag(tag):
            action = "X"
        else:
            action = "K"
        _UNLISTED[key] = action
    return action


def _plan(ds: Dataset, table: dict[int, str], walk: _Walk, dummy: bool = False) -> None:
    """Decide every element's action (recursing into kept sequences) without changing ds.
    ``dummy``: inside a sequence whose action is D, which applies to all its contents (PS3.15
    E.1.1): text the profile would keep gets a dummy too (an SR's Text Value, say)."""
    creators: list[int] = []
    used: set[int] = set()
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if elem is None:
            continue
        if tag >> 16 & 1:
            _plan_private(ds, tag, walk, creators, used, dummy)
            continue
        if not tag & 0xFFFF or tag >> 16 == 2:  # group lengths go stale; file meta is rebuilt
            walk.plan.append((ds, tag, "X", ""))
            continue
        vr = _vr(elem)
        action = table.get(tag)
        listed = action is not None
        if action is None:
            action = _unlisted(tag, vr, walk)
        if dummy and action == "K" and vr in _FREE_TEXT_VRS:
            action = "D"
        if listed or action != "K":
            walk.counts["D" if action == "P" else action] += 1
        if vr == "SQ" and action not in ("X", "Z"):
            _plan_items(ds, tag, walk, dummy or action == "D")
        elif action != "K" or vr == "AS":
            walk.cleans_text |= (
                action == "C" and vr in _TEXT_VRS and vr != "AE" and (tag != _TIMEZONE_OFFSET)
            )
            walk.plan.append((ds, tag, "A" if action == "K" else action, vr))
    walk.plan.extend((ds, tag, "X", "") for tag in creators if tag not in used)


def _plan_private(
    ds: Dataset, tag: int, walk: _Walk, creators: list[int], used: set[int], dummy: bool
) -> None:
    element = tag & 0xFFFF
    if 0x10 <= element <= 0xFF:
        creators.append(tag)  # kept only if one of its block's elements is
        return
    vr = _safe_private_vr(ds, tag, walk) if element >= 0x1000 else None
    if vr is None or vr == "PN":  # not on the list; and a person's name is never safe
        walk.private_removed += element >= 0x1000
        walk.plan.append((ds, tag, "X", ""))
        return
    used.add((tag & 0xFFFF0000) | (element >> 8))
    walk.private_kept += 1
    if vr == "SQ":
        _plan_items(ds, tag, walk, dummy)
    elif vr == "UI" and not walk.options.retain_uids:
        walk.plan.append((ds, tag, "U", vr))  # UIDs stay consistent with the standard ones
    elif vr in ("DA", "DT") and walk.date_action != "K":
        walk.plan.append((ds, tag, walk.date_action, vr))


def _safe_private_vr(ds: Dataset, tag: int, walk: _Walk) -> str | None:
    """The VR of a private data element to keep under Retain Safe Private, or None."""
    creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFFFF) >> 8)
    if not walk.options.retain_safe_private or creator_tag not in ds:
        return None
    try:
        creator = str(ds[creator_tag].value).strip()
        if (tag >> 16, creator, tag & 0xFF) not in walk.safe:
            return None
        return str(ds[tag].VR)  # converted: pydicom knows many private VRs by creator
    except Exception:  # undecodable: cannot be shown safe
        return None


def _plan_items(ds: Dataset, tag: int, walk: _Walk, dummy: bool) -> None:
    """Plan each item of a kept sequence; a sequence that cannot be parsed goes whole."""
    try:
        items = list(ds[tag].value or [])
    except Exception:
        walk.plan.append((ds, tag, "X", "SQ"))
        return
    for item in items:
        _plan(item, walk.nested, walk, dummy)


def _apply(ds: Dataset, tag: int, action: str, vr: str, walk: _Walk) -> None:
    if action == "X":
        del ds[tag]
    elif action == "Z":
        ds[tag] = DataElement(tag, vr, empty_value_for_VR(vr))
    elif action == "P":
        ds[tag] = DataElement(tag, vr, walk.patient)
    elif action == "U" or (action == "D" and vr == "UI"):
        _map_values(ds, tag, walk.pseudo.uid)
    elif action == "D":
        ds[tag] = DataElement(tag, vr, _DUMMY.get(vr, b"\0\0"))
    elif action == "A":
        _map_values(ds, tag, _safe_age)
    elif action == "C":
        _clean(ds, tag, vr, walk)


# VRs whose values are ASCII by definition, with no meaningful spaces (PS3.5 6.2).
_ASCII_VRS = frozenset({"AS", "DA", "DT", "UI"})


def _map_values(ds: Dataset, tag: int, change: Callable[[str], str]) -> None:
    """Apply ``change`` to each non-empty value of a string element; undecodable ones go."""
    raw = ds._dict.get(tag)
    if type(raw) is RawDataElement and raw.VR in _ASCII_VRS:
        # Unparsed: split the bytes here, as pydicom would (checked against it in a test).
        try:
            parts = [part.strip(" \0") for part in (raw.value or b"").decode("ascii").split("\\")]
        except UnicodeDecodeError:
            pass  # not ASCII: pydicom's own handling below
        else:
            if len(parts) > 1:
                ds[tag] = DataElement(tag, raw.VR, [change(p) if p else "" for p in parts])
            elif parts[0]:
                ds[tag] = DataElement(tag, raw.VR, change(parts[0]))
            return
    try:
        elem = ds[tag]
        value = elem.value
    except Exception:  # a value pydicom cannot decode cannot be checked: remove it
        del ds[tag]
        return
    if isinstance(value, (MultiValue, list, tuple)):
        elem.value = [change(str(v)) if str(v).strip() else "" for v in value]
    elif value not in (None, ""):
        elem.value = change(str(value))


def _clean(ds: Dataset, tag: int, vr: str, walk: _Walk) -> None:
    """C: replace with values of similar meaning that identify no one."""
    if vr == "DA":
        _map_values(ds, tag, lambda v: _shift_da(v, walk.shift))
    elif vr == "DT":
        _map_values(ds, tag, lambda v: _shift_dt(v, walk.shift))
    elif vr == "AE":
        _map_values(ds, tag, lambda v: walk.pseudo.pseudonym("ae", v))
    elif vr == "AS":
        _map_values(ds, tag, _safe_age)
    elif vr in _TEXT_VRS and tag != _TIMEZONE_OFFSET:
        _map_values(ds, tag, walk.scrub)
    # Times of day and the UTC offset stay (modified dates move whole days); numbers identify
    # no one.


def _shift_da(value: str, days: int | None) -> str:
    """A DA value (or range "A-B") moved by ``days``; empty when it cannot be read."""
    if days is None:
        return ""
    parts = value.strip().split("-")
    out = []
    for part in parts:
        digits = part.strip().replace(".", "")  # ACR-NEMA "YYYY.MM.DD"
        if not digits and len(parts) == 2:  # open-ended range
            out.append("")
            continue
        if len(digits) != 8 or not digits.isdigit():
            return ""
        try:
            day = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        except ValueError:
            return ""
        out.append((day + dt.timedelta(days=days)).strftime("%Y%m%d"))
    return "-".join(out)


def _shift_dt(value: str, days: int | None) -> str:
    """A DT value moved by ``days``, time and offset kept; a bare year or year-month moves
    with its middle day. Empty when it cannot be read."""
    match = _DT.match(value.strip())
    if days is None or not match:
        return ""
    year, month, day, rest = match.groups()
    try:
        base = dt.date(int(year), int(month or 7), int(day or (15 if month else 1)))
    except ValueError:
        return ""
    moved = base + dt.timedelta(days=days)
    return moved.strftime("%Y%m%d" if day else "%Y%m" if month else "%Y") + rest


def _safe_age(value: str) -> str:
    """Patient's Age with everything over 89 years grouped as 090Y (HIPAA Safe Harbor)."""
    match = _AGE.match(value)
    if not match:
        return ""
    number, unit = int(match.group(1)), match.group(2) or "Y"
    years = {"D": number / 365.25, "W": number / 52.18, "M": number / 12, "Y": number}[unit]
    return SAFE_AGE if years > 89 else f"{number:03d}{unit}"


def _replace_file_meta(ds: Dataset, walk: _Walk) -> None:
    """PS3.15 E.1.1 (7): new File Meta Information naming medtune, and a blank preamble."""
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    sop_class = ds.get("SOPClassUID") or old.get("MediaStorageSOPClassUID")
    sop = ds.get("SOPInstanceUID")
    if not sop and old.get("MediaStorageSOPInstanceUID"):
        sop = str(old.MediaStorageSOPInstanceUID)
        sop = sop if walk.options.retain_uids else walk.pseudo.uid(sop)
    values = [
        (0x00020001, "OB", b"\x00\x01"),  # File Meta Information Version
        (0x00020002, "UI", sop_class),  # Media Storage SOP Class UID
        (0x00020003, "UI", sop),  # Media Storage SOP Instance UID
        (0x00020010, "UI", old.get("TransferSyntaxUID")),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", f"MEDTUNE_{__version__}"[:16]),  # Implementation Version Name
    ]
    meta = FileMetaDataset()
    for tag, vr, value in values:
        if value:
            meta[tag] = DataElement(tag, vr, value)
    ds.file_meta = meta
    if isinstance(ds, FileDataset):
        ds.preamble = b"\0" * 128


def _mark(ds: Dataset, options: DeidOptions, clean_pixel_data: bool) -> None:
    """Patient Identity Removed, the method and its CID 7050 codes (PS3.15 E.1.1 (6)), and
    Longitudinal Temporal Information Modified (E.3.6)."""
    method = [f"medtune {__version__} PS3.15 Annex E 2024b", *options.names]
    method += ["clean-pixel-data"] if clean_pixel_data else []
    items = [_code_item(code) for code in _method_codes(options, clean_pixel_data)]
    ds[0x00120062] = DataElement(0x00120062, "CS", "YES")  # Patient Identity Removed
    ds[0x00120063] = DataElement(0x00120063, "LO", method)  # De-identification Method
    ds[0x00120064] = DataElement(0x00120064, "SQ", items)  # ... Method Code Sequence
    modified = 0x00280303  # Longitudinal Temporal Information Modified
    previous = ds[modified].value if modified in ds else None
    if options.retain_long_modified_dates:
        ds[modified] = DataElement(modified, "CS", "MODIFIED")
    elif options.retain_long_full_dates and previous != "MODIFIED":
        ds[modified] = DataElement(modified, "CS", "UNMODIFIED")


# CID 7050 De-identification Method, written out: pydicom.sr.codedict holds it too, but importing
# that costs every worker process 0.16 s. A test checks this table against pydicom's.
CID_7050 = {
    "BasicApplicationConfidentialityProfile": (
        "113100", "Basic Application Confidentiality Profile"),
    "CleanPixelDataOption": ("113101", "Clean Pixel Data Option"),
    "CleanDescriptorsOption": ("113105", "Clean Descriptors Option"),
    "RetainLongitudinalTemporalInformationFullDatesOption": (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "RetainLongitudinalTemporalInformationModifiedDatesOption": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "RetainPatientCharacteristicsOption": ("113108", "Retain Patient Characteristics Option"),
    "RetainDeviceIdentityOption": ("113109", "Retain Device Identity Option"),
    "RetainUidsOption": ("113110", "Retain UIDs Option"),
    "RetainSafePrivateOption": ("113111", "Retain Safe Private Option"),
    "RetainInstitutionIdentityOption": ("113112", "Retain Institution Identity Option"),
}  # fmt: skip


@cache
def _method_codes(options: DeidOptions, clean_pixel_data: bool) -> tuple[tuple[str, str], ...]:
    """(code value, meaning) of CID 7050 for the profile and the chosen options."""
    names = ["BasicApplicationConfidentialityProfile"]
    names += ["CleanPixelDataOption"] if clean_pixel_data else []
    names += [concept for name, (_, concept) in _OPTIONS.items() if getattr(options, name)]
    return tuple(sorted(CID_7050[name] for name in names))


def _code_item(code: tuple[str, str]) -> Dataset:
    item = Dataset()
    item[0x00080100] = DataElement(0x00080100, "SH", code[0])  # Code Value
    item[0x00080102] = DataElement(0x00080102, "SH", "DCM")  # Coding Scheme Designator
    item[0x00080104] = DataElement(0x00080104, "LO", code[1])  # Code Meaning
    return item


# -- Identifiers ---------------------------------------------------------------------------------

_PLACE_KEYWORDS = ("Institution", "Address", "StationName", "Residence")
_CONTACT_KEYWORDS = ("Telephone", "Telecom", "ElectronicMail")
_NOT_TEXT = frozenset({"CS", "TM", "DS", "IS", "SQ", "AS"})


def collect_identifiers(
    ds: Dataset, options: DeidOptions = BASIC, *, safe_private: SafePrivate | None = None
) -> Identifiers:
    """Every identifying value in ``ds`` (call it before :func:`deidentify`): each element the
    profile and ``options`` do not keep, at any depth, and each private text value not kept,
    sorted by kind. Descriptions and patient characteristics are left out (they are removed
    because they might hold identity, not because they are identities), and so are codes,
    times and numbers; an age over 89 counts as an id. The report scrubber and the leak scan
    look for exactly these values."""
    ids = Identifiers()
    walk = _Walk(Pseudonymizer(b"\0" * 16), options,
                 _shipped_safe_private() if safe_private is None else safe_private,
                 resolved_actions(options, "nested"), "", None)  # fmt: skip
    _collect(ds, resolved_actions(options, iod_family(ds)), walk, ids)
    return ids


# Text VRs whose value is the encoded string itself (PS3.5 6.2), and those holding one value.
_PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"})  # fmt: skip
_SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UR", "UT"})
# Specific Character Sets whose bytes decode with one Python codec; ISO 2022 sets (code
# extensions with escape sequences) are left to pydicom.
_PLAIN_CHARSETS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1",
                   "ISO_IR 192": "utf_8"}  # fmt: skip


def _collect(
    ds: Dataset,
    table: dict[int, str],
    walk: _Walk,
    ids: Identifiers,
    inherited: str | None = _PLAIN_CHARSETS[""],
) -> None:
    skip = _not_identifiers()
    codec = _plain_codec(ds, inherited)
    # The data set's own (tag, element) pairs: lookups by tag would call pydicom's Python-level
    # tag comparison each time, and indexing would parse every value.
    for key, elem in list(ds._dict.items()):
        tag = int(key)
        element = tag & 0xFFFF
        if tag >> 16 & 1:
            if element >= 0x1000:
                _collect_private(ds, tag, walk, ids, elem, codec)
            continue
        if not element or elem is None:
            continue
        vr = _vr(elem)
        if vr == "SQ":
            for item in _items(ds, tag):
                _collect(item, walk.nested, walk, ids, codec)
            continue
        action = table.get(tag) or _unlisted(tag, vr, walk)
        if vr == "AS":
            for value in _values(ds, tag, elem, codec):  # kept or not, an age over 89 identifies
                if _safe_age(value) == SAFE_AGE:
                    ids.add("ids", value)
        elif action != "K" and tag not in skip and vr not in _NOT_TEXT:
            for value in _values(ds, tag, elem, codec):
                _add(ids, _kind(tag, vr), value)


def _collect_private(
    ds: Dataset,
    tag: int,
    walk: _Walk,
    ids: Identifiers,
    raw: object = None,
    codec: str | None = None,
) -> None:
    if codec and type(raw) is RawDataElement and raw.VR in _PLAIN_VRS:
        elem: object = raw  # a text VR the file states: decoded from its bytes (see _values)
    else:
        try:
            elem = ds[tag]
        except Exception:
            return
    creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFFFF) >> 8)
    creator = str(ds[creator_tag].value).strip() if creator_tag in ds else ""
    kept = walk.options.retain_safe_private and (tag >> 16, creator, tag & 0xFF) in walk.safe
    if elem.VR == "SQ":
        for item in elem.value:
            _collect(item, walk.nested, walk, ids, None)  # items parsed by pydicom
        return
    if kept and elem.VR not in ("PN", "UI", "DA", "DT"):
        return
    if elem.VR == "UN" and isinstance(elem.value, bytes):
        text = elem.value.decode("latin-1").strip("\0 ")
        if len(text) >= 3 and text.isprintable():
            ids.add("ids", text)
    elif elem.VR in _TEXT_VRS or elem.VR in ("DA", "DT", "UI"):
        for value in _values(ds, tag, raw, codec):
            _add(ids, _kind(tag, elem.VR), value)


@cache
def _kind(tag: int, vr: str) -> str:
    if vr == "PN":
        return "names"
    if vr in ("DA", "DT"):
        return "dates"
    keyword = keyword_for_tag(tag)
    if any(k in keyword for k in _CONTACT_KEYWORDS):
        return "contacts"
    if any(k in keyword for k in _PLACE_KEYWORDS):
        return "places"
    return "ids"


def _items(ds: Dataset, tag: int) -> Iterable[Dataset]:
    try:
        return list(ds[tag].value or [])
    except Exception:
        return []


def _values(ds: Dataset, tag: int, raw: object = None, codec: str | None = None) -> list[str]:
    """The element's non-empty values as text. ``raw``: the element as stored in ``ds``;
    unparsed and in a single-byte or UTF-8 character set (``codec``), its bytes are decoded
    here as pydicom would, at a tenth of the cost of parsing it."""
    if codec and type(raw) is RawDataElement and raw.VR in _PLAIN_VRS and raw.value is not None:
        try:
            text = raw.value.decode(codec)
        except UnicodeDecodeError:
            pass  # pydicom's handling of bad bytes below
        else:
            parts = [text] if raw.VR in _SINGLE_VALUE_VRS else text.split("\\")
            return [part for part in (p.strip(" \0") for p in parts) if part]
    try:
        value = ds[tag].value
    except Exception:
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value if v not in (None, "")]
    return [] if value in (None, "", b"") else [str(value)]


def _plain_codec(ds: Dataset, inherited: str | None) -> str | None:
    """The Python codec for ``ds``'s Specific Character Set if it is a plain one, else None
    (values then go through pydicom). A sequence item without its own set has its parent's."""
    element = ds._dict.get(0x00080005)
    if element is None:
        return inherited
    value = element.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None  # several sets: code extensions
    return _PLAIN_CHARSETS.get(value.strip(" \0"))


def _add(ids: Identifiers, kind: str, value: str) -> None:
    value = value.strip()
    if len(value) < 2 or not any(c.isalnum() for c in value):  # "--", "." identify no one
        return
    if kind == "dates":
        digits = value.replace(".", "")[:8]
        try:
            ids.add("dates", dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8])))
        except ValueError:
            ids.add("ids", value)  # not a readable date: look for it as text
        return
    ids.add(kind, value)


# -- Text cleaning (C for descriptions) ----------------------------------------------------------

# Shapes that identify whatever their source: e-mail, phone numbers and dates with separators,
# runs of 5+ digits (record and accession numbers, compact dates).
_GENERIC = (
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|\+?\(?\d[\d ()./-]{6,}\d"
    r"|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
    r"|\d{5,}"
)
_DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d")


def _scrubber(ids: Identifiers) -> Callable[[str], str]:
    """A function removing ``ids`` (names also word by word) and generic shapes from text."""
    words = {v for v in ids.ids | ids.places | ids.contacts | ids.names if len(v) >= 2}
    for name in ids.names:
        words |= {part for part in re.split(r"[\^\s,]+", name) if len(part) >= 2}
    words |= {day.strftime(fmt) for day in ids.dates for fmt in _DATE_FORMATS}
    known = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = re.compile((rf"(?<!\w)(?:{known})(?!\w)|" if known else "") + _GENERIC, re.IGNORECASE)
    return lambda text: " ".join(pattern.sub(" ", text).split())
