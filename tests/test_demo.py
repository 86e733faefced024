"""`medtune demo`, first form: a small cohort in a workspace and a summary."""

import pyarrow.parquet as pq
import pytest

from medtune.cli import main

pytestmark = pytest.mark.integration


def test_demo_generates_a_cohort_and_prints_a_summary(tmp_path, capsys):
    workspace = tmp_path / "ws"
    # A fresh key each run (never the repository's medtune-demo.key): pseudonyms, and so the
    # order of tied sites in the default hold-out, differ from run to run as on a new machine.
    rc = main(["demo", "--workspace", str(workspace), "--set", f"key={tmp_path / 'demo.key'}",
               "--set", "synth.patients=6", "--set", "train.enabled=false",
               "--set", "synth.size=192", "--set", "synth.workers=1"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    for title in ("Images per site", "Images per anatomy", "Images per view", "Images per finding"):
        assert title in out
    assert (workspace / "medtune.yaml").is_file()
    assert (workspace / "sources" / "synth" / "cohort.json").is_file()
    assert any((workspace / "sources" / "synth" / "dicom").rglob("*"))
    # Curated: labels and splits in the catalog, a card beside it.
    catalog = pq.read_table(workspace / "dataset" / "catalog.parquet")
    assert {"label_fracture", "label_pleural_effusion", "split", "split_site"} <= set(
        catalog.column_names
    )
    assert "labels vs the cohort's truth" in out
    assert (workspace / "dataset" / "card.md").read_text().startswith("---\n")
    assert (workspace / "dataset" / "card.html").is_file()
