"""The run's final leak check: every identifying value seen in the inputs, looked for in every
text the workspace holds (catalog, reports, de-identification log, quarantine list, config).

Item-level checks (each header after de-identification, each image's pixels after blanking)
happen during ingest; this one covers what the pipeline wrote around them. For the synthetic
cohort the identifiers come from its PHI manifest, so the check is complete by construction.

Dates are checked per patient: a shifted date may equal some other patient's real date (the
cohort spans a few years), which reveals nothing; a patient's own real date in their own report
does. Everything else is checked against the whole cohort.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from medtune.deid.identifiers import Identifiers
from medtune.deid.leak import Hit, Needles, scan_texts
from medtune.deid.pseudonyms import Pseudonymizer
from medtune.workspace import Workspace

# UIDs are replaced wholesale; a time of day or an age under 90 identifies no one; 5-digit ZIP
# codes are checked in the report scrubber's own tests (as numbers alone they match by chance).
_NOT_CHECKED = frozenset({"uid", "time", "age", "age_over_89", "zip"})
# Department names ("Radiology Department") leave the header under Annex E, but they name no
# one and reports use the same words.
_GENERIC_FIELDS = frozenset({"InstitutionalDepartmentName"})


@dataclass
class CohortIdentifiers:
    known: Identifiers = field(default_factory=Identifiers)  # all but dates
    dates_by_accession: dict[str, set[dt.date]] = field(default_factory=dict)  # the patient's


def identifiers_from_phi_manifest(path: str | Path) -> CohortIdentifiers:
    """A synthetic cohort's injected identifiers (truth/phi.parquet)."""
    out = CohortIdentifiers()
    table = pq.read_table(path, columns=["value", "kind", "field", "accession", "patient_index"])
    names = ("value", "kind", "field", "accession", "patient_index")
    rows = zip(*(table.column(name).to_pylist() for name in names), strict=True)
    dates_of_patient: dict[int, set[dt.date]] = {}
    accessions_of_patient: dict[int, set[str]] = {}
    for value, kind, where, accession, patient in rows:
        if accession:
            accessions_of_patient.setdefault(patient, set()).add(accession)
        if not value or kind in _NOT_CHECKED or where in _GENERIC_FIELDS:
            continue
        if kind in ("date", "datetime"):
            day = _parse_day(value)
            if day:
                dates_of_patient.setdefault(patient, set()).add(day)
        elif "name" in kind:
            out.known.add("names", value)
        elif kind in ("phone", "fax", "email", "url", "ip"):
            out.known.add("contacts", value)
        elif kind in ("institution", "address", "station"):
            out.known.add("places", value)
        else:
            out.known.add("ids", value)
    for patient, accessions in accessions_of_patient.items():
        for accession in accessions:
            out.dates_by_accession[accession] = dates_of_patient.get(patient, set())
    return out


def _parse_day(value: str) -> dt.date | None:
    digits = "".join(c for c in str(value) if c.isdigit())
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def workspace_texts(ws: Workspace) -> Iterator[tuple[str, str]]:
    """(where, text) for every text the dataset holds, reports excepted (see check_workspace)."""
    if ws.catalog_path.exists():
        table = pq.read_table(ws.catalog_path)
        for name in table.column_names:
            if str(table.schema.field(name).type) == "string":
                for value in table.column(name).to_pylist():
                    if value:
                        yield f"catalog column {name}", value
    inputs = ws.deid_dir / "inputs.parquet"
    if inputs.exists():
        table = pq.read_table(inputs, columns=["reason", "deid"])
        for name in ("reason", "deid"):
            for value in table.column(name).to_pylist():
                if value:
                    yield f"de-identification log {name}", value
    for path in (ws.deid_dir / "quarantine.csv", ws.config_path):
        if path.exists():
            yield path.name, path.read_text(encoding="utf-8")


def check_workspace(
    ws: Workspace, cohort: CohortIdentifiers, pseudo: Pseudonymizer | None = None
) -> list[Hit]:
    """Hits of the cohort's identifiers in the workspace (kinds and places only). With the
    pseudonym key, each report is also checked for its own patient's real dates."""
    needles = Needles.of(cohort.known)
    reports = []
    if ws.reports_path.exists():
        columns = ["study_id", "patient_id", "text"]
        reports = pq.read_table(ws.reports_path, columns=columns).to_pylist()
    hits = scan_texts(workspace_texts(ws), needles)
    hits += scan_texts((("reports", r["text"] or "") for r in reports), needles)
    if pseudo is not None:
        dates_by_study = {pseudo.study(a): d for a, d in cohort.dates_by_accession.items()}
        for report in reports:
            dates = set(dates_by_study.get(report["study_id"]) or ())
            if report.get("patient_id"):
                # A real date that is also the correct shift of another of the patient's dates
                # (the shift equals the days between two of their studies) is what a right
                # de-identification writes: it tells a reader nothing, so it is no hit.
                dates -= {pseudo.shift_date(report["patient_id"], d) for d in dates}
            if dates:
                own = Identifiers(dates=dates)
                hits += [Hit(k, "reports") for k in Needles.of(own).find(report["text"] or "")]
    return hits
