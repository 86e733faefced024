"""`medtune label`: report labels into the catalog, the evidence table, and report files.

The workspace is the small ingested cohort (tests/conftest.py), copied before it is changed.
Its catalog ids are pseudonyms, so the synthetic ground truth is joined through ``input_id``:
the catalog's opaque id of the source file, sha256 of the file's path under ``dicom/``
(medtune.io.folder.input_id), a path the truth table records for every image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medtune.curate.labeler import label_report, load_rules
from medtune.curate.labels import (
    EVIDENCE_FILE,
    LabelSummary,
    label_report_file,
    label_workspace,
)
from medtune.dataset.catalog import catalog_metadata, read_catalog
from medtune.errors import MedtuneError
from medtune.io.folder import input_id
from medtune.workspace import Workspace

VALUE = {"positive": 1, "negative": 0, "uncertain": -1, "not_mentioned": None}


def _copy(ingested_workspace: Path, tmp: Path) -> Workspace:
    shutil.copytree(ingested_workspace, tmp / "ws")
    return Workspace(tmp / "ws")


@pytest.fixture(scope="module")
def labelled(
    ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, LabelSummary]:
    ws = _copy(ingested_workspace, tmp_path_factory.mktemp("labelled"))
    return ws, label_workspace(ws.root)


def _rows(ws: Workspace) -> list[dict]:
    return read_catalog(ws.catalog_path).to_pylist()


def _reports(ws: Workspace) -> list[dict]:
    return pq.read_table(ws.reports_path).to_pylist()


def _write_reports(ws: Workspace, rows: list[dict]) -> None:
    schema = pq.read_schema(ws.reports_path)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), ws.reports_path)


# ---------------------------------------------------------------------------------------------
# The catalog.


def test_one_int8_column_per_finding(labelled):
    ws, summary = labelled
    table = read_catalog(ws.catalog_path)
    findings = load_rules().findings
    columns = [f"label_{f}" for f in findings]
    assert summary.columns == columns
    for name in columns:
        assert table.schema.field(name).type == pa.int8()
        assert set(table.column(name).to_pylist()) <= {1, 0, -1, None}
    assert table.num_rows == summary.images == 68
    # Not all null, and every kind of value present somewhere.
    values = {v for name in columns for v in table.column(name).to_pylist()}
    assert values == {1, 0, -1, None}


def test_study_labels_are_the_labels_of_its_report(labelled):
    """Each image carries what label_report reads in its study's report (one each here)."""
    ws, _ = labelled
    rules = load_rules()
    expected = {
        r["study_id"]: {f: VALUE[x.status] for f, x in label_report(r["text"], rules).items()}
        for r in _reports(ws)
    }
    rows = _rows(ws)
    assert {r["study_id"] for r in rows} <= set(expected)
    for row in rows:
        assert {f: row[f"label_{f}"] for f in rules.findings} == expected[row["study_id"]]


@pytest.mark.integration  # synthetic cohort -> ingest -> label, against the truth
def test_labels_agree_with_the_synthetic_truth(labelled, synth_cohort):
    """Joined image by image through input_id: what each report says of each of its findings
    (truth/reports.parquet), and whether the finding is in the image (truth/images.parquet)."""
    ws, _ = labelled
    images = pq.read_table(synth_cohort / "truth" / "images.parquet").to_pylist()
    said = pq.read_table(synth_cohort / "truth" / "reports.parquet").to_pylist()
    by_input = {input_id(i["file"].removeprefix("dicom/")): i for i in images}
    status = {(r["study_key"], r["finding"]): r["status"] for r in said}
    pairs = agree = positives = 0
    for row in _rows(ws):
        truth = by_input[row["input_id"]]  # every catalog row joins
        for (study, finding), expected in status.items():
            if study != truth["study_key"]:
                continue
            pairs += 1
            agree += row[f"label_{finding}"] == VALUE[expected]
            # The writer states a finding positive only if it is there, negative only if not.
            if row[f"label_{finding}"] == 1:
                positives += 1
                assert truth[f"label_{finding}"] is True
            if row[f"label_{finding}"] == 0:
                assert not truth[f"label_{finding}"]
    assert pairs >= 100 and positives >= 5
    assert agree / pairs >= 0.97, (agree, pairs)


def test_metadata_records_how_labels_were_made(labelled):
    ws, summary = labelled
    meta = catalog_metadata(read_catalog(ws.catalog_path))["labels"]
    assert meta["findings"] == list(load_rules().findings)
    assert meta["columns"] == summary.columns
    assert meta["rules"] == ["findings.yaml", "modifiers.yaml"]
    assert len(meta["rules_sha256"]) == 64
    assert meta["medtune_version"]
    assert meta["reports"] == summary.reports == 43
    assert meta["studies_without_report"] == meta["images_without_report"] == 0


def test_summary_tables_count_images(labelled):
    _, summary = labelled
    header, *rows = summary.tables["labels (images)"]
    assert header == ["finding", "positive", "negative", "uncertain", "not mentioned"]
    assert [r[0] for r in rows] == list(load_rules().findings)
    assert all(sum(r[1:]) == 68 for r in rows)
    assert any("43 reports" in line for line in summary.lines)


# ---------------------------------------------------------------------------------------------
# The evidence table.


def test_evidence_spans_point_at_the_phrase(labelled):
    ws, summary = labelled
    evidence = pq.read_table(ws.dataset_dir / EVIDENCE_FILE).to_pylist()
    texts = {r["source"]: r["text"] for r in _reports(ws)}
    assert len(evidence) == summary.evidence_rows > 43
    for e in evidence:
        text = texts[e["source"]]
        assert text[e["start"] : e["end"]] == e["phrase"]
        assert e["phrase"] in e["sentence"] and e["sentence"] in text
        assert e["status"] in ("positive", "negative", "uncertain")
    negated = [e for e in evidence if e["trigger"] == "no" and e["finding"] == "pneumothorax"]
    assert negated and all(e["phrase"].lower() in ("pneumothorax", "ptx") for e in negated)


def test_evidence_adds_up_to_the_labels(labelled):
    """The strongest mention of a finding in a study is its label (no_finding aside: it is
    withdrawn when something else is found)."""
    ws, _ = labelled
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    strongest: dict[tuple[str, str], str] = {}
    for e in pq.read_table(ws.dataset_dir / EVIDENCE_FILE).to_pylist():
        key = (e["study_id"], e["finding"])
        if key not in strongest or rank[e["status"]] > rank[strongest[key]]:
            strongest[key] = e["status"]
    for row in _rows(ws):
        for finding in load_rules().findings:
            if finding == "no_finding":
                continue
            said = strongest.get((row["study_id"], finding), "not_mentioned")
            assert row[f"label_{finding}"] == VALUE[said]


# ---------------------------------------------------------------------------------------------
# Re-runs, stale columns, studies without a report, several reports per study.


def test_rerun_is_idempotent(ingested_workspace, tmp_path):
    ws = _copy(ingested_workspace, tmp_path)
    label_workspace(ws.root)
    first = read_catalog(ws.catalog_path)
    evidence = pq.read_table(ws.dataset_dir / EVIDENCE_FILE)
    label_workspace(ws.root)
    second = read_catalog(ws.catalog_path)
    assert second.column_names == first.column_names
    assert second.equals(first) and catalog_metadata(second) == catalog_metadata(first)
    assert pq.read_table(ws.dataset_dir / EVIDENCE_FILE).equals(evidence)


def test_stale_label_columns_are_dropped(ingested_workspace, tmp_path):
    ws = _copy(ingested_workspace, tmp_path)
    extra = tmp_path / "site.yaml"
    extra.write_text("findings:\n  hiatal_hernia:\n    mentions: [hiatal hernia]\n")
    summary = label_workspace(ws.root, [extra])
    assert "label_hiatal_hernia" in summary.columns
    meta = catalog_metadata(read_catalog(ws.catalog_path))["labels"]
    assert meta["rules"] == ["findings.yaml", "modifiers.yaml", str(extra)]
    # A column of the user's own, never recorded as a label column, is left alone.
    table = read_catalog(ws.catalog_path)
    pq.write_table(table.append_column("label_mine", pa.array([1] * table.num_rows)),
                   ws.catalog_path)  # fmt: skip
    summary = label_workspace(ws.root)
    table = read_catalog(ws.catalog_path)
    assert summary.dropped == ["label_hiatal_hernia"]
    assert "label_hiatal_hernia" not in table.column_names
    assert "label_mine" in table.column_names
    assert "label_hiatal_hernia" not in catalog_metadata(table)["labels"]["columns"]
    assert catalog_metadata(table)["labels"]["rules"] == ["findings.yaml", "modifiers.yaml"]


def test_images_without_a_report_get_nulls(ingested_workspace, tmp_path):
    ws = _copy(ingested_workspace, tmp_path)
    reports = _reports(ws)
    gone = {reports[0]["study_id"], reports[1]["study_id"]}
    _write_reports(ws, [r for r in reports if r["study_id"] not in gone])
    summary = label_workspace(ws.root)
    rows = _rows(ws)
    orphans = [r for r in rows if r["study_id"] in gone]
    assert orphans and all(r[c] is None for r in orphans for c in summary.columns)
    assert summary.images_without_report == len(orphans)
    assert summary.studies_without_report == 2
    meta = catalog_metadata(read_catalog(ws.catalog_path))["labels"]
    assert meta["images_without_report"] == len(orphans) and meta["studies_without_report"] == 2
    # The other images keep their labels.
    assert any(r["label_fracture"] is not None for r in rows if r["study_id"] not in gone)


def test_several_reports_of_a_study_combine(ingested_workspace, tmp_path):
    """Per finding: positive > uncertain > negative > not mentioned, whichever report says it."""
    ws = _copy(ingested_workspace, tmp_path)
    reports = _reports(ws)
    study = reports[0]["study_id"]
    texts = [
        "FINDINGS: No pneumothorax. Possible small left pleural effusion. No fracture.",
        "ADDENDUM: Small left apical pneumothorax. No pleural effusion.",
        "IMPRESSION: No fracture.",
    ]
    extra = [{**reports[0], "text": t, "source": f"x:{i}"} for i, t in enumerate(texts)]
    _write_reports(ws, [*extra, *reports[1:]])
    summary = label_workspace(ws.root)
    assert summary.reports == len(reports) + 2
    for row in (r for r in _rows(ws) if r["study_id"] == study):
        assert row["label_pneumothorax"] == 1
        assert row["label_pleural_effusion"] == -1
        assert row["label_fracture"] == 0
        assert row["label_edema"] is None
    evidence = pq.read_table(ws.dataset_dir / EVIDENCE_FILE).to_pylist()
    ours = [e for e in evidence if e["study_id"] == study and e["finding"] == "pneumothorax"]
    assert sorted(e["source"] for e in ours) == ["x:0", "x:1"]  # evidence of both reports kept


def test_a_workspace_without_reports(ingested_workspace, tmp_path):
    ws = _copy(ingested_workspace, tmp_path)
    ws.reports_path.unlink()
    with pytest.raises(MedtuneError, match=r"reports\.parquet: no reports to label"):
        label_workspace(ws.root)


# ---------------------------------------------------------------------------------------------
# Report files.

REPORTS = {
    "A1": "FINDINGS: Small right pneumothorax. No pleural effusion.",
    "A2": "IMPRESSION: Possible early pneumonia, left base.",
    "A3": "No acute cardiopulmonary process.",
}


def test_csv_with_custom_columns(tmp_path):
    source = tmp_path / "export.csv"
    lines = ["Accession,Body,Site"] + [f'{k},"{v}",north' for k, v in REPORTS.items()]
    lines.insert(2, ",No pneumothorax.,north")  # no id: rejected
    lines.append("A4,,north")  # no text: rejected
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "labels.csv"
    summary = label_report_file(source, out, text_column="Body", id_column="Accession")
    assert (summary.read, summary.labelled, summary.rejected) == (5, 3, 2)
    assert [s.rsplit(":", 1)[1] for s, _ in summary.rejects] == ["3", "6"]
    assert sum("rejected" in line for line in summary.lines) == 2
    rows = out.read_text(encoding="utf-8").splitlines()
    findings = load_rules().findings
    assert rows[0].split(",") == ["Accession", *findings]
    assert [r.split(",")[0] for r in rows[1:]] == list(REPORTS)
    rules = load_rules()
    for row, text in zip(rows[1:], REPORTS.values(), strict=True):
        cells = row.split(",")[1:]
        expected = [VALUE[x.status] for x in label_report(text, rules).values()]
        assert cells == ["" if v is None else str(v) for v in expected]
    assert "pneumothorax." not in out.read_text().lower()  # no report text in the output


def test_jsonl_to_jsonl_and_parquet(tmp_path):
    source = tmp_path / "export.jsonl"
    lines = [json.dumps({"rid": k, "narrative": v}) for k, v in REPORTS.items()]
    lines.insert(1, "{not json")
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    summary = label_report_file(source, out, text_column="narrative", id_column="rid")
    assert (summary.read, summary.labelled, summary.rejected) == (4, 3, 1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["rid"] for r in rows] == list(REPORTS)
    assert rows[0]["pneumothorax"] == 1 and rows[0]["pleural_effusion"] == 0
    assert rows[1]["pneumonia"] == -1 and rows[1]["edema"] is None
    assert rows[2]["no_finding"] == 1
    parquet = tmp_path / "labels.parquet"
    label_report_file(source, parquet, text_column="narrative", id_column="rid")
    table = pq.read_table(parquet)
    assert table.column_names[0] == "rid" and table.schema.field("pneumonia").type == pa.int8()
    assert table.to_pylist() == rows


def test_default_id_column_name(tmp_path):
    source = tmp_path / "ris.csv"
    source.write_text('accession_number,report_text\nX9,"Mild cardiomegaly."\n')
    out = tmp_path / "labels.csv"
    label_report_file(source, out, None, None)
    header, row = out.read_text().splitlines()
    assert header.startswith("id,") and row.startswith("X9,")


def test_unknown_output_suffix(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text('id,text\n1,"No pneumothorax."\n')
    with pytest.raises(MedtuneError, match=r"labels\.xlsx: write labels to a \.csv"):
        label_report_file(source, tmp_path / "labels.xlsx", None, None)
    assert not (tmp_path / "labels.xlsx").exists()
