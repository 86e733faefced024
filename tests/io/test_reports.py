"""Report readers: RIS CSV / JSON Lines and FHIR DiagnosticReport, one item per input row."""

from __future__ import annotations

import base64
import datetime as dt
import json
import tracemalloc
from pathlib import Path

import pytest

from medtune.errors import MedtuneError
from medtune.io.reports import (
    RejectedRow,
    ReportRecord,
    identifying_kind,
    parse_date,
    read_reports,
)


def _split(items: list) -> tuple[list[ReportRecord], list[RejectedRow]]:
    records = [i for i in items if isinstance(i, ReportRecord)]
    rejected = [i for i in items if isinstance(i, RejectedRow)]
    assert len(records) + len(rejected) == len(items)
    return records, rejected


def _b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode("ascii")


# ---------------------------------------------------------------------------------------------
# CSV.


def test_csv_with_bom_semicolons_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "ris.csv"
    path.write_bytes(
        "\ufeffaccession_number;patient_id;Patient Name;report_text;exam_description\n"
        'A100;P1;"Doe, John";"FINDINGS:\nNo fracture.\n\nIMPRESSION: Normal.";XR HAND\n'
        'A101;P2;"Roe; Jane";"One line.";XR CHEST\n'.encode()
    )
    records, rejected = _split(list(read_reports(path)))
    assert not rejected
    first, second = records
    assert first.id == "A100" and first.patient == "P1"
    assert first.text == "FINDINGS:\nNo fracture.\n\nIMPRESSION: Normal."
    assert first.source == f"{path}:2" and second.source == f"{path}:6"  # row 1 spans 4 lines
    assert first.fields == {"Patient Name": "Doe, John", "exam_description": "XR HAND"}
    assert first.identifiers.names == {"Doe, John"}
    assert first.identifiers.ids == {"A100", "P1"}
    assert second.identifiers.names == {"Roe; Jane"}


def test_csv_in_latin1_and_cp1252(tmp_path: Path) -> None:
    text = (
        "accession_number,report_text,radiologist\nA1,Kein Pneumothorax – Befund o.B.,Dr. Müller\n"
    )
    for encoding in ("cp1252", "latin-1"):
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes(text.replace("–", "-" if encoding == "latin-1" else "–").encode(encoding))
        (record,) = read_reports(path)
        assert isinstance(record, ReportRecord)
        assert record.identifiers.names == {"Dr. Müller"}
        assert record.text.startswith("Kein Pneumothorax")
    # A byte cp1252 leaves undefined (0x8D) means latin-1, which decodes every byte.
    odd = tmp_path / "odd.csv"
    odd.write_bytes("accession_number,report_text\nA1,Müller\x8d\n".encode("latin-1"))
    (record,) = read_reports(odd)
    assert isinstance(record, ReportRecord) and record.text == "Müller\x8d"
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(text, encoding="utf-8")
    (record,) = read_reports(utf8)
    assert isinstance(record, ReportRecord) and "–" in record.text


def test_csv_bad_rows_are_rejected_with_their_line_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "ris.tsv"
    path.write_text(
        "accession_number\tpatient_id\treport_text\n"
        "A1\tP1\tfine\n"
        "A2\tP2\ttoo\tmany\n"
        "\tP3\tno id\n"
        "A4\tP4\t\n"
        "\n"
        "A5\tP5\talso fine\n",
        encoding="utf-8",
    )
    records, rejected = _split(list(read_reports(path, patient_column="patient_id")))
    assert [r.id for r in records] == ["A1", "A5"]
    assert [(r.source, r.reason) for r in rejected] == [
        (f"{path}:3", "expected 3 fields, found 4"),
        (f"{path}:4", "no value in id column 'accession_number'"),
        (f"{path}:5", "no report text in column 'report_text'"),
    ]
    assert all("P2" not in r.reason and "fine" not in r.reason for r in rejected)


def test_csv_named_columns_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Report ID,MRN,Befund\nR1,M1,Text\n", encoding="utf-8")
    (record,) = read_reports(path, text_column="befund", id_column="report id")
    assert isinstance(record, ReportRecord)
    assert (record.id, record.patient, record.text) == ("R1", "M1", "Text")  # MRN by default
    with pytest.raises(MedtuneError, match="no report text column 'text'"):
        list(read_reports(path, text_column="text"))
    with pytest.raises(MedtuneError, match="no patient column 'pid'"):
        list(read_reports(path, text_column="Befund", id_column="Report ID", patient_column="pid"))
    with pytest.raises(MedtuneError, match="no such report file"):
        read_reports(tmp_path / "missing.csv")
    with pytest.raises(MedtuneError, match="unknown report file type"):
        read_reports(path.rename(tmp_path / "export.xlsx"))


# ---------------------------------------------------------------------------------------------
# JSON Lines.


def test_jsonl_broken_line_is_rejected_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "ris.jsonl"
    rows = [
        json.dumps({"accession_number": "A1", "patient_id": "P1", "report_text": "ok",
                    "patient_birth_date": "1931-02-11", "exam_datetime": "2021-03-14 08:42"}),
        '{"accession_number": "A2", "report_text": "cut off',
        "[1, 2]",
        json.dumps({"accession_number": "A3", "text": "no report_text field"}),
        "",
        json.dumps({"accession_number": 4, "patient_id": None, "report_text": "numbers",
                    "extra": {"nested": True}}),
    ]  # fmt: skip
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    records, rejected = _split(list(read_reports(path)))
    assert [r.id for r in records] == ["A1", "A3", "4"]
    assert [r.source for r in rejected] == [f"{path}:2", f"{path}:3"]
    assert rejected[0].reason.startswith("not valid JSON (column ")
    assert rejected[1].reason == "not a JSON object"
    first = records[0]
    assert first.identifiers.dates == {dt.date(1931, 2, 11), dt.date(2021, 3, 14)}
    assert records[1].text == "no report_text field"  # "text" is a default text column
    assert records[2].patient is None and records[2].fields["extra"] == '{"nested": true}'


# ---------------------------------------------------------------------------------------------
# FHIR R4 DiagnosticReport.


def _report(**extra: object) -> dict:
    resource = {
        "resourceType": "DiagnosticReport",
        "id": "dr-1",
        "status": "final",
        "identifier": [
            {"system": "urn:oid:1.2.3", "value": "INT-77"},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "ACSN"}]},
                "value": "ACC123",
            },
        ],
        "subject": {"reference": "Patient/pat-9", "display": "Doe, John"},
        "effectiveDateTime": "2021-03-14T08:42:00Z",
        "issued": "2021-03-14T10:00:00+01:00",
        "resultsInterpreter": [{"display": "Dr. Jane Roe"}],
        "code": {"text": "XR chest 2 views"},
        "conclusion": "No acute cardiopulmonary process.",
        "presentedForm": [
            {"contentType": "text/plain; charset=utf-8", "data": _b64("FINDINGS: Clear lungs.")},
            {"contentType": "application/pdf", "data": _b64("%PDF-1.4")},
        ],
    }  # fmt: skip
    resource.update(extra)
    return resource


def test_fhir_single_resource(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()), encoding="utf-8")
    (record,) = read_reports(path)
    assert isinstance(record, ReportRecord)
    assert record.id == "ACC123" and record.patient == "pat-9"
    assert record.text == "No acute cardiopulmonary process.\n\nFINDINGS: Clear lungs."
    assert record.identifiers.names == {"Doe, John", "Dr. Jane Roe"}
    assert {"ACC123", "INT-77", "pat-9", "dr-1"} <= record.identifiers.ids
    assert record.identifiers.dates == {dt.date(2021, 3, 14)}
    assert record.fields["status"] == "final" and record.fields["code"] == "XR chest 2 views"
    assert record.source == f"{path}:1"


def test_fhir_bundle_uses_its_patients_and_based_on(tmp_path: Path) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "pat-9",
        "name": [{"family": "Doe", "given": ["John", "Q"]}],
        "birthDate": "1931-02-11",
        "telecom": [{"system": "phone", "value": "555-010-1234"}],
        "address": [{"line": ["12 Oak Street"], "city": "Springfield", "postalCode": "01234"}],
    }
    based_on = _report(identifier=[], basedOn=[{"identifier": {"value": "ORDER-5"}}])
    no_text = _report(conclusion=None, presentedForm=[])
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient},
            {"resource": _report()},
            {"resource": based_on},
            {"resource": no_text},
            {"resource": {"resourceType": "Observation"}},
        ],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    records, rejected = _split(list(read_reports(path)))
    assert [r.id for r in records] == ["ACC123", "ORDER-5"]
    assert "Doe, John Q" in records[0].identifiers.names
    assert dt.date(1931, 2, 11) in records[0].identifiers.dates
    assert {"12 Oak Street", "Springfield", "01234"} <= records[0].identifiers.places
    assert "555-010-1234" in records[0].identifiers.contacts
    assert [(r.source, r.reason) for r in rejected] == [
        (f"{path}:entry 4", "no conclusion and no text/plain presentedForm"),
        (f"{path}:entry 5", "a Observation resource, not a DiagnosticReport"),
    ]


def test_fhir_ndjson_with_base64_and_bad_lines(tmp_path: Path) -> None:
    latin = _report(
        conclusion=None,
        presentedForm=[{"contentType": "text/plain; charset=iso-8859-1",
                        "data": _b64("Befund: Erguss rechts, Dr. Müller", "latin-1")}],
    )  # fmt: skip
    bad = _report(presentedForm=[{"contentType": "text/plain", "data": "not base64!"}])
    lines = [_report(), latin, bad, {"resourceType": "Patient", "id": "x"}]
    path = tmp_path / "reports.ndjson"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    records, rejected = _split(list(read_reports(path)))
    assert [r.text for r in records][1] == "Befund: Erguss rechts, Dr. Müller"
    assert [(r.source, r.reason) for r in rejected] == [
        (f"{path}:3", "presentedForm data is not valid base64 text"),
        (f"{path}:4", "a Patient resource, not a DiagnosticReport"),
    ]


# ---------------------------------------------------------------------------------------------
# Columns, dates, the synthetic cohort, memory.


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("patient_name", "names"),
        ("Referring Physician", "names"),
        ("PID-5", "names"),
        ("OBR.16", "names"),
        ("radiologist", "names"),
        ("patient_id", "ids"),
        ("MRN", "ids"),
        ("Accession Number", "ids"),
        ("PID.3", "ids"),
        ("patient_birth_date", "dates"),
        ("DOB", "dates"),
        ("signed_datetime", "dates"),
        ("ExamDate", "dates"),
        ("Institution Name", "places"),
        ("patient address", "places"),
        ("Fax", "contacts"),
        ("e-mail", "contacts"),
        ("exam_description", None),
        ("report_status", None),
        ("procedure_name", None),
        ("modality", None),
    ],
)
def test_identifying_columns(column: str, kind: str | None) -> None:
    assert identifying_kind(column) == kind


def test_parse_date() -> None:
    assert parse_date("1969-03-30") == dt.date(1969, 3, 30)
    assert parse_date("2014-11-12 04:44:49") == dt.date(2014, 11, 12)
    assert parse_date("20141112") == dt.date(2014, 11, 12)
    assert parse_date("11/12/2014") == dt.date(2014, 11, 12)
    assert parse_date("12.11.2014") == dt.date(2014, 11, 12)
    assert parse_date("2014-13-45") is None and parse_date("soon") is None


def test_reads_every_synthetic_ris_export(synth_cohort: Path) -> None:
    files = [p for folder in ("reports", "ris") for p in sorted((synth_cohort / folder).glob("*"))]
    assert {p.suffix for p in files} == {".csv", ".jsonl"}
    records = [item for path in files for item in read_reports(path)]
    assert records and all(isinstance(r, ReportRecord) for r in records)
    for record in records:
        assert isinstance(record, ReportRecord)
        assert record.id in record.identifiers.ids and record.patient in record.identifiers.ids
        assert record.fields["patient_name"] in record.identifiers.names
        assert record.fields["radiologist"] in record.identifiers.names
        for column in ("patient_birth_date", "exam_datetime", "signed_datetime"):
            assert parse_date(record.fields[column]) in record.identifiers.dates
        assert "report_text" not in record.fields


@pytest.mark.slow
def test_csv_is_streamed_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    report = "FINDINGS: " + "No acute fracture. " * 40
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("accession_number,report_text\n")
        for i in range(20_000):  # about 15 MB
            fh.write(f'A{i},"{report}"\n')
    tracemalloc.start()
    count = sum(1 for _ in read_reports(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20_000
    assert peak < 4 * 1024 * 1024  # a few chunks and rows, never the file
