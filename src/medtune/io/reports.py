"""Report readers: a RIS export (CSV or JSON Lines, one report per row, keyed by accession
number) or FHIR R4 DiagnosticReport resources (one resource, a Bundle, or NDJSON), read one
report at a time.

Every input row comes back as exactly one item: a :class:`ReportRecord`, or a
:class:`RejectedRow` that names the row ("file:line") and what is wrong with it, never its
content. A bad row never stops the file; only a file that cannot be read at all (missing, no
report text column, unknown type) raises :class:`~medtune.errors.MedtuneError`.

Each record carries the identifying values of its own row (patient name, IDs, birth date,
physicians, addresses, phones...) as an :class:`~medtune.deid.identifiers.Identifiers`, so that
the report scrubber can remove exactly those values from the text, in any spelling. Which columns
identify is decided by :func:`identifying_kind`: a table of column names seen in RIS and HL7
exports, then rules on the words of the name.

CSV and JSON Lines are streamed (memory does not grow with the file). A ``.json`` file (one
resource, a Bundle or an array) is parsed whole: FHIR servers page their Bundles.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medtune.deid.identifiers import Identifiers
from medtune.errors import MedtuneError

# Defaults: the RIS export that `medtune synth` writes.
DEFAULT_TEXT_COLUMN = "report_text"
DEFAULT_ID_COLUMN = "accession_number"
DEFAULT_PATIENT_COLUMN = "patient_id"
# Tried in order when the caller names no column (after normalising, see _norm).
TEXT_COLUMNS = ("report_text", "report", "text", "report_body", "narrative", "befund", "obx_5")
ID_COLUMNS = ("accession_number", "accession", "accession_no", "acc_no", "report_id", "id")
PATIENT_COLUMNS = ("patient_id", "mrn", "patientid", "pid_3", "medical_record_number")

# A report is text; anything bigger than this in one CSV field is a broken file, not a report.
csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))

# Column name (normalised) -> kind of identifying value, as Identifiers files them. Exact names
# first: the common RIS column names and HL7 v2 fields (PID-5 patient name, OBR-16 ordering
# provider...). Names not listed here go through the word rules of identifying_kind.
_COLUMNS_BY_KIND = {
    "names": (
        "patient_name patientname pat_name name first_name last_name given_name family_name "
        "surname middle_name maiden_name radiologist referring referrer attending resident "
        "technologist transcriptionist author signer ordering requester consultant performer "
        "results_interpreter subject_display pid_5 pid_6 pid_9 pv1_7 pv1_8 pv1_9 pv1_17 obr_16 "
        "obr_28 obr_32 obr_33 obr_34 obr_35 orc_10 orc_11 orc_12 nk1_2 vorname nachname nom "
        "prenom"
    ),
    "ids": (
        "patient_id patientid mrn mr_number medical_record_number accession accession_number "
        "accession_no acc_no acc report_id order_id order_number placer_order_number "
        "filler_order_number visit_number encounter_id account_number ssn nhs_number "
        "insurance_number study_instance_uid study_uid series_instance_uid sop_instance_uid "
        "resource_id device_serial_number pid_2 pid_3 pid_4 pid_18 pid_19 pid_20 pv1_19 obr_2 "
        "obr_3 obr_18 obr_19 orc_2 orc_3 fallnummer patientennummer ipp"
    ),
    "dates": (
        "birth_date patient_birth_date dob date_of_birth birthdate study_date exam_date "
        "exam_datetime study_datetime signed_datetime report_date order_date admission_date "
        "discharge_date death_date effective issued pid_7 pid_29 obr_6 obr_7 obr_8 obr_14 obr_22 "
        "obr_27 pv1_44 pv1_45 geburtsdatum"
    ),
    "places": (
        "institution institution_name institution_address facility hospital site_name address "
        "street city zip zip_code postal_code postcode station_name pid_11 pid_12 msh_4 pv1_3 plz "
        "ort"
    ),
    "contacts": "phone telephone fax email e_mail mobile pager url pid_13 pid_14 obr_17 telefon",
}
COLUMN_KINDS: dict[str, str] = {
    column: kind for kind, columns in _COLUMNS_BY_KIND.items() for column in columns.split()
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Word rules for names not in the table, checked in this order.
_DATE_WORDS = _words("date datetime dob dt time timestamp birthdate datum")
_CONTACT_WORDS = _words("phone telephone tel fax email mail pager mobile url")
_PLACE_WORDS = _words(
    "address street city zip postal postcode institution facility hospital station"
)
_PERSON_WORDS = _words(
    "physician doctor radiologist provider author signer technologist attending resident "
    "referring ordering requester dictated signed transcriptionist interpreter performer"
)
_NOT_A_PERSON = _words(
    "exam procedure study series protocol file body modality code test department description "
    "status"
)
_ID_WORDS = _words("id mrn number no nr acc accession uid ssn serial")


def _norm(column: str) -> str:
    """``"Patient Name"``, ``"PatientName"``, ``"PID.5"`` -> ``patient_name``, ``patientname``,
    ``pid_5``: lower case, runs of other characters as one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", column.strip().lstrip("\ufeff").lower()).strip("_")


def identifying_kind(column: str) -> str | None:
    """The kind of identifying value a column holds ("names", "ids", "dates", "places",
    "contacts"), or None for a column that does not identify (exam description, status).

    >>> identifying_kind("Referring Physician"), identifying_kind("exam_description")
    ('names', None)
    """
    name = _norm(column)
    if name in COLUMN_KINDS:
        return COLUMN_KINDS[name]
    words = set(name.split("_"))
    if words & _DATE_WORDS or name.endswith(("date", "datetime")):
        return "dates"
    if words & _CONTACT_WORDS:
        return "contacts"
    if words & _PLACE_WORDS:
        return "places"
    if words & _PERSON_WORDS or ("name" in words and not words & _NOT_A_PERSON):
        return "names"
    if words & _ID_WORDS:
        return "ids"
    return None


@dataclass
class ReportRecord:
    """One report: its text, its keys, its other columns and the identifiers of its row."""

    id: str  # accession number (or report id where there is none)
    text: str
    patient: str | None  # patient ID, or None when the input has none
    fields: dict[str, str] = field(default_factory=dict)  # other columns, as text
    identifiers: Identifiers = field(default_factory=Identifiers)
    source: str = ""  # "file:line" (or "file:entry N" inside a JSON document)


@dataclass(frozen=True)
class RejectedRow:
    """An input row that could not be read; ``reason`` never quotes the row."""

    source: str
    reason: str


Item = ReportRecord | RejectedRow


def read_reports(
    path: str | os.PathLike[str],
    text_column: str | None = None,
    id_column: str | None = None,
    patient_column: str | None = None,
) -> Iterator[Item]:
    """Every report of a RIS export or FHIR file, in file order, one item per input row.

    ``.csv``/``.tsv``/``.txt``: delimited text (delimiter sniffed from the header line; UTF-8
    with or without BOM, else cp1252, else latin-1; quoted fields may span lines).
    ``.jsonl``/``.ndjson``: one JSON object per line, RIS rows or FHIR resources.
    ``.json``: a DiagnosticReport, a Bundle, or an array of rows or resources.

    Columns default to the synthetic RIS export's (``report_text``, ``accession_number``,
    ``patient_id``), then to the common names in ``TEXT_COLUMNS``/``ID_COLUMNS``/
    ``PATIENT_COLUMNS``. FHIR resources ignore the column arguments.
    """
    file = Path(path)
    name = str(path)  # the path as the user gave it: errors name it so
    if not file.is_file():
        raise MedtuneError(f"{name}: no such report file")
    suffix = file.suffix.lower()
    columns = _Columns(text_column, id_column, patient_column)
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(file, name, columns)
    if suffix in (".jsonl", ".ndjson"):
        return _read_json_lines(file, name, columns)
    if suffix == ".json":
        return _read_json_document(file, name, columns)
    raise MedtuneError(
        f"{name}: unknown report file type {suffix or '(none)'!r} "
        "(expected .csv, .tsv, .jsonl, .ndjson or .json)"
    )


# ---------------------------------------------------------------------------------------------
# Encodings and rows.

_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")


def _encoding(path: Path) -> str:
    """UTF-8 (BOM or not) when the whole file decodes so; else cp1252, else latin-1.

    One pass in 256 KiB chunks before reading, so the choice holds for the whole file and memory
    stays flat (an error at row 90,000 would otherwise come after 89,999 rows already read).
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8, cp1252 = True, True
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 18), b""):
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
            if cp1252 and any(b in chunk for b in _CP1252_UNDEFINED):
                cp1252 = False
            if not utf8 and not cp1252:
                break
    if utf8:
        try:
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
    return "cp1252" if cp1252 else "latin-1"


@dataclass(frozen=True)
class _Columns:
    text: str | None
    id: str | None
    patient: str | None

    def resolve(self, names: Iterable[str]) -> tuple[str | None, str | None, str | None]:
        """The actual names of the text, id and patient columns among ``names`` (None where
        absent): a named column matches case- and spacing-insensitively, else the defaults."""
        by_norm: dict[str, str] = {}
        for n in names:
            by_norm.setdefault(_norm(n), n)

        def find(wanted: str | None, defaults: tuple[str, ...]) -> str | None:
            if wanted is not None:
                return by_norm.get(_norm(wanted))
            return next((by_norm[d] for d in defaults if d in by_norm), None)

        return (
            find(self.text, TEXT_COLUMNS),
            find(self.id, ID_COLUMNS),
            find(self.patient, PATIENT_COLUMNS),
        )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _row_record(
    values: dict[str, str], text_col: str, id_col: str, patient_col: str | None, source: str
) -> Item:
    """A record from one row's columns, or why not."""
    text = values.get(text_col, "")
    key = values.get(id_col, "").strip()
    if not key:
        return RejectedRow(source, f"no value in id column '{id_col}'")
    if not text.strip():
        return RejectedRow(source, f"no report text in column '{text_col}'")
    patient = values.get(patient_col, "").strip() if patient_col else ""
    known = Identifiers()
    fields: dict[str, str] = {}
    for column, value in values.items():
        if column == text_col:
            continue
        kind = "ids" if column in (id_col, patient_col) else identifying_kind(column)
        if kind:
            add_identifier(known, kind, value)
        if column not in (id_col, patient_col):
            fields[column] = value
    return ReportRecord(key, text, patient or None, fields, known, source)


def add_identifier(known: Identifiers, kind: str, value: str) -> None:
    """Add a column value to ``known``; dates are parsed (an unparsable date is left out: the
    text scrubber removes every date it recognises anyway)."""
    value = value.strip()
    if not value:
        return
    if kind == "dates":
        known.add("dates", parse_date(value))
    else:
        known.add(kind, value)


_ISO_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:$|[T\s])")
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.])(\d{1,2})\2(\d{4})\b")


def parse_date(value: str) -> dt.date | None:
    """A date from a column value: ISO date or datetime, DICOM DA/DT (``20190314``),
    ``03/14/2019`` (US) or ``14.03.2019`` (European); None when it is none of these."""
    text = value.strip()
    try:
        if m := _ISO_DATE.match(text):
            return dt.date(int(m[1]), int(m[2]), int(m[3]))
        if m := _NUMERIC_DATE.match(text):
            first, second, year = int(m[1]), int(m[3]), int(m[4])
            day_first = m[2] == "." or first > 12
            month, day = (second, first) if day_first else (first, second)
            return dt.date(year, month, day)
    except ValueError:
        return None
    return None


# ---------------------------------------------------------------------------------------------
# CSV.


def _delimiter(header_line: str) -> str:
    # The header line alone decides: csv.Sniffer guesses wrong on long quoted report texts,
    # and column names never hold a delimiter.
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, name: str, columns: _Columns) -> Iterator[Item]:
    with open(path, encoding=_encoding(path), newline="") as fh:
        delimiter = _delimiter(fh.readline())
        fh.seek(0)
        reader = csv.reader(fh, delimiter=delimiter)
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if not header:
            return
        text_col, id_col, patient_col = columns.resolve(header)
        _check_columns(name, columns, text_col, id_col, patient_col)
        assert text_col is not None and id_col is not None
        while True:
            line = reader.line_num + 1
            source = f"{name}:{line}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield RejectedRow(source, "malformed CSV row (bad quoting or a huge field)")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line is no row
            if len(row) != len(header):
                yield RejectedRow(source, f"expected {len(header)} fields, found {len(row)}")
                continue
            yield _row_record(
                dict(zip(header, row, strict=True)), text_col, id_col, patient_col, source
            )


def _check_columns(
    name: str, columns: _Columns, text: str | None, key: str | None, patient: str | None
) -> None:
    """File-level errors: without its text or id column no row of the file can be read."""
    if text is None:
        wanted = columns.text or DEFAULT_TEXT_COLUMN
        raise MedtuneError(f"{name}: no report text column '{wanted}' (name it with --text-column)")
    if key is None:
        wanted = columns.id or DEFAULT_ID_COLUMN
        raise MedtuneError(f"{name}: no id column '{wanted}' (name it with --id-column)")
    if columns.patient is not None and patient is None:
        raise MedtuneError(f"{name}: no patient column '{columns.patient}'")


# ---------------------------------------------------------------------------------------------
# JSON Lines and JSON documents.


def _read_json_lines(path: Path, name: str, columns: _Columns) -> Iterator[Item]:
    with open(path, encoding=_encoding(path)) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            source = f"{name}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield RejectedRow(source, f"not valid JSON (column {err.colno})")
                continue
            yield _object_record(obj, source, columns, {})


def _read_json_document(path: Path, name: str, columns: _Columns) -> Iterator[Item]:
    try:
        with open(path, encoding=_encoding(path)) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as err:
        hint = (
            "; one object a line is JSON Lines: name it .jsonl" if err.msg == "Extra data" else ""
        )
        raise MedtuneError(f"{name}: not valid JSON (line {err.lineno}){hint}") from None
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = [
            e.get("resource") if isinstance(e, dict) else None for e in doc.get("entry") or []
        ]
        context = _bundle_context(entries, doc.get("entry") or [])
        for number, resource in enumerate(entries, 1):
            # A Bundle also carries the Patient, Practitioner... its reports refer to: those
            # are context, not rows.
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            if kind in _CONTEXT_RESOURCES:
                continue
            yield _object_record(resource, f"{name}:entry {number}", columns, context)
    elif isinstance(doc, list):
        for number, obj in enumerate(doc, 1):
            yield _object_record(obj, f"{name}:entry {number}", columns, {})
    else:
        yield _object_record(doc, f"{name}:1", columns, {})


def _object_record(
    obj: object, source: str, columns: _Columns, context: dict[str, dict[str, object]]
) -> Item:
    if not isinstance(obj, dict):
        return RejectedRow(source, "not a JSON object")
    if "resourceType" in obj:
        return _fhir_record(obj, source, context)
    values = {str(k): _text(v) for k, v in obj.items()}
    text_col, id_col, patient_col = columns.resolve(values)
    if text_col is None:
        return RejectedRow(source, f"no field '{columns.text or DEFAULT_TEXT_COLUMN}'")
    if id_col is None:
        return RejectedRow(source, f"no field '{columns.id or DEFAULT_ID_COLUMN}'")
    if columns.patient is not None and patient_col is None:
        return RejectedRow(source, f"no field '{columns.patient}'")
    return _row_record(values, text_col, id_col, patient_col, source)


# ---------------------------------------------------------------------------------------------
# FHIR R4 DiagnosticReport.

ACCESSION_TYPE = "ACSN"  # v2-0203 identifier type of an accession number
_CONTEXT_RESOURCES = {
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "ServiceRequest",
    "ImagingStudy",
    "Encounter",
    "Location",
}


def _bundle_context(resources: list[object], entries: list[object]) -> dict[str, dict[str, object]]:
    """Supporting resources of a Bundle by every name a reference may use for them."""
    context: dict[str, dict[str, object]] = {}
    for resource, entry in zip(resources, entries, strict=True):
        if not isinstance(resource, dict) or resource.get("resourceType") not in (
            _CONTEXT_RESOURCES
        ):
            continue
        if resource.get("id"):
            context[f"{resource['resourceType']}/{resource['id']}"] = resource
        if isinstance(entry, dict) and entry.get("fullUrl"):
            context[str(entry["fullUrl"])] = resource
    return context


def _fhir_record(res: dict, source: str, context: dict[str, dict[str, object]]) -> Item:
    kind = res.get("resourceType")
    if kind != "DiagnosticReport":
        return RejectedRow(source, f"a {_text(kind)[:40]} resource, not a DiagnosticReport")
    texts = []
    if isinstance(res.get("conclusion"), str) and res["conclusion"].strip():
        texts.append(res["conclusion"])
    for attachment in _list(res.get("presentedForm")):
        content_type = str(attachment.get("contentType", "")).lower()
        if not content_type.startswith("text/plain") or not attachment.get("data"):
            continue  # PDFs, HTML and links are not read
        charset = re.search(r"charset=([\w.-]+)", content_type)
        try:
            raw = base64.b64decode(str(attachment["data"]), validate=True)
            texts.append(raw.decode(charset[1] if charset else "utf-8"))
        except (binascii.Error, ValueError):
            return RejectedRow(source, "presentedForm data is not valid base64 text")
        except LookupError:
            return RejectedRow(source, "presentedForm has an unknown charset")
    if not texts:
        return RejectedRow(source, "no conclusion and no text/plain presentedForm")
    key = _accession(res) or _text(res.get("id")).strip()
    if not key:
        return RejectedRow(source, "no accession identifier, basedOn or id")
    subject = res.get("subject") if isinstance(res.get("subject"), dict) else {}
    patient = _reference_id(subject)
    known = Identifiers()
    for value in (key, patient, _text(res.get("id"))):
        known.add("ids", value)
    for ident in _list(res.get("identifier")):
        known.add("ids", _text(ident.get("value")))
    for reference in (subject, *_list(res.get("performer")), *_list(res.get("resultsInterpreter"))):
        known.add("names", _text(reference.get("display")))
        linked = context.get(_text(reference.get("reference")))
        if linked:
            _add_resource(known, linked)
    for contained in _list(res.get("contained")):
        _add_resource(known, contained)
    period = res.get("effectivePeriod") if isinstance(res.get("effectivePeriod"), dict) else {}
    for value in (
        res.get("effectiveDateTime"),
        res.get("issued"),
        period.get("start"),
        period.get("end"),
    ):
        add_identifier(known, "dates", _text(value))
    code = res.get("code") if isinstance(res.get("code"), dict) else {}
    codings = _list(code.get("coding"))
    fields = {
        "status": _text(res.get("status")),
        "code": _text(code.get("text") or (codings[0].get("display") if codings else "")),
        "effective_datetime": _text(res.get("effectiveDateTime") or period.get("start")),
        "issued_datetime": _text(res.get("issued")),
    }
    return ReportRecord(key, "\n\n".join(texts), patient or None, fields, known, source)


def _list(value: object) -> list[dict]:
    """The dicts of a FHIR list element (absent, or holding junk, is an empty list)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _is_accession(identifier: dict) -> bool:
    kind = identifier.get("type") if isinstance(identifier.get("type"), dict) else {}
    return any(c.get("code") == ACCESSION_TYPE for c in _list(kind.get("coding")))


def _accession(res: dict) -> str:
    """The accession: an identifier typed ACSN, else the basedOn order's identifier or id."""
    for ident in _list(res.get("identifier")):
        if _is_accession(ident) and ident.get("value"):
            return _text(ident["value"]).strip()
    for reference in _list(res.get("basedOn")):
        ident = reference.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            return _text(ident["value"]).strip()
        if reference.get("reference"):
            return _reference_id(reference)
    return ""


def _reference_id(reference: dict) -> str:
    """``{"reference": "Patient/123"}`` -> ``123``; else the reference's identifier value."""
    target = _text(reference.get("reference")).strip()
    if target:
        return target.rstrip("/").rsplit("/", 1)[-1]
    ident = reference.get("identifier")
    return _text(ident.get("value")).strip() if isinstance(ident, dict) else ""


def _add_resource(known: Identifiers, resource: dict) -> None:
    """The identifying elements of a Patient, Practitioner or Organization resource."""
    for name in _list(resource.get("name")):
        known.add("names", _text(name.get("text")))
        family, given = _text(name.get("family")), " ".join(map(_text, name.get("given") or []))
        if family or given:
            known.add("names", f"{family}, {given}".strip(", "))
    if isinstance(resource.get("name"), str):  # Organization.name
        known.add("places", resource["name"])
    for ident in _list(resource.get("identifier")):
        known.add("ids", _text(ident.get("value")))
    for telecom in _list(resource.get("telecom")):
        known.add("contacts", _text(telecom.get("value")))
    for address in _list(resource.get("address")):
        for line in address.get("line") or []:
            known.add("places", _text(line))
        for part in ("city", "postalCode", "text"):
            known.add("places", _text(address.get(part)))
    add_identifier(known, "dates", _text(resource.get("birthDate")))
