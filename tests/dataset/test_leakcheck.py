"""The workspace leak check: a report's own patient's real dates, and the shift coincidence."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medtune.dataset.leakcheck import CohortIdentifiers, check_workspace
from medtune.deid.pseudonyms import Pseudonymizer
from medtune.workspace import Workspace


def _workspace_with_report(root: Path, study: str, patient: str, text: str) -> Workspace:
    ws = Workspace(root).create()
    table = pa.table({"study_id": [study], "patient_id": [patient], "text": [text]})
    pq.write_table(table, ws.reports_path)
    return ws


def test_a_real_date_is_a_hit_unless_it_is_the_shift_of_another_of_the_patients(tmp_path):
    pseudo = Pseudonymizer(bytes(range(32)))
    patient = pseudo.patient("P1")
    first = dt.date(2015, 3, 2)
    later = pseudo.shift_date(patient, first)  # the patient's next study fell on this day
    cohort = CohortIdentifiers()
    cohort.dates_by_accession["ACC1"] = {first, later}
    study = pseudo.study("ACC1")

    # The first study's date, shifted right, equals the later study's real date: no hit.
    ws = _workspace_with_report(tmp_path / "a", study, patient, f"Comparison: {later}.")
    assert check_workspace(ws, cohort, pseudo) == []
    # The first study's real date, left as it was: a leak.
    ws = _workspace_with_report(tmp_path / "b", study, patient, f"Comparison: {first}.")
    assert [h.kind for h in check_workspace(ws, cohort, pseudo)] == ["dates"]
