"""`medtune evaluate`: the probe suite on several models, and report scores from JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.evaluate.text_metrics import text_scores, tokenize
from tests.evaluate.probe_builders import make_export, make_probe_workspace

PREDICTIONS = {
    "s1": ["Small left pleural effusion. No pneumothorax."],
    "s2": ["No acute cardiopulmonary process."],
    "s3": ["Fracture of the distal radius."],
}
REFERENCES = {
    "s1": ["Small left pleural effusion, no pneumothorax."],
    "s2": ["No acute cardiopulmonary abnormality.", "Lungs are clear."],
    "s3": ["No fracture."],
}


def test_report_gen_from_files_writes_pycocoevalcaps_keys(tmp_path: Path, capsys) -> None:
    preds, refs, out = tmp_path / "p.json", tmp_path / "r.json", tmp_path / "scores.json"
    preds.write_text(json.dumps(PREDICTIONS))
    refs.write_text(json.dumps(REFERENCES))
    rc = main(["evaluate", "report-gen", "--predictions", str(preds), "--references", str(refs),
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    scores = json.loads(out.read_text())
    tokens = {k: [" ".join(tokenize(t)) for t in v] for k, v in PREDICTIONS.items()}
    ref_tokens = {k: [" ".join(tokenize(t)) for t in v] for k, v in REFERENCES.items()}
    for key, value in text_scores(tokens, ref_tokens).items():
        assert scores[key] == pytest.approx(value, abs=1e-12)
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"} <= set(scores)
    # Clinical efficacy: s1 effusion agrees; s3 says fracture where the reference denies it.
    assert scores["clinical"]["precision"] < 1 and scores["clinical"]["recall"] > 0
    assert "report generation" in capsys.readouterr().out


def test_report_gen_names_a_bad_file_in_one_line(tmp_path: Path, capsys) -> None:
    preds, refs = tmp_path / "p.json", tmp_path / "r.json"
    preds.write_text("[1, 2]")
    refs.write_text(json.dumps(REFERENCES))
    rc = main(["evaluate", "report-gen", "--predictions", str(preds), "--references", str(refs)])
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "p.json" in err


@pytest.mark.integration
def test_probe_compares_two_models_and_writes_one_report(
    ingested_workspace: Path, synth_cohort: Path, tmp_path: Path, capsys
) -> None:
    ws = make_probe_workspace(ingested_workspace, synth_cohort, tmp_path / "ws")
    a, b = make_export(tmp_path / "a", seed=0), make_export(tmp_path / "b", seed=1)
    rc = main(["evaluate", "probe", str(a), str(b), "-w", str(ws), "--label", "first",
               "--label", "second", "--task", "sex", "--task", "anatomy", "--task", "mirrored",
               "--bootstrap", "50", "--hidden", "32",
               "--json", str(tmp_path / "out.json")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "Mean AUROC over the probe tasks" in out and "second - first" in out
    page = (ws / "eval" / "first-vs-second" / "report.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page
    numbers = json.loads((tmp_path / "out.json").read_text())
    models = numbers["probe"]["models"]
    assert set(models) == {"first", "second"}
    assert set(models["first"]["tasks"]) == {"sex", "anatomy", "mirrored"}
    for task in models["first"]["tasks"].values():
        auroc = task["auroc"]
        assert 0 <= auroc["low"] <= auroc["value"] <= auroc["high"] <= 1
    # Features are cached per model and data: one file each, plus flipped ones for mirrored.
    assert len(list((ws / "eval" / "features").glob("*-orig.npy"))) == 2
    assert len(list((ws / "eval" / "features").glob("*-flip.npy"))) == 2
