"""Report-generation evaluation: the reports file format, text metrics on medtune's and R2Gen's
tokens, clinical efficacy computed by hand, diversity, and a tiny trained report export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import medtune.evaluate.report_gen as report_gen
from medtune.errors import MedtuneError
from medtune.evaluate.report_gen import (
    TEXT_KEYS,
    clinical_efficacy,
    evaluate_report_model,
    read_reports_json,
    score_reports,
)
from medtune.evaluate.text_metrics import text_scores, tokenize

PREDS = {
    "a": ["Small left pleural effusion."],
    "b": ["No pleural effusion."],
    "c": ["Cardiomegaly without effusion."],
    "d": ["Possible pneumothorax. Mild cardiomegaly."],
}
REFS = {
    "a": ["Large right pleural effusion. Cardiomegaly."],
    "b": ["Small left pleural effusion."],
    "c": ["No acute findings.", "Cardiomegaly."],  # two references: positive if either is
    "d": ["Small right pneumothorax."],
}


# --- the reports file ---------------------------------------------------------------------------


def test_read_reports_json_takes_lists_and_bare_strings(tmp_path: Path) -> None:
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"x": ["One.", "Two."], "y": "Three."}))
    assert read_reports_json(path) == {"x": ["One.", "Two."], "y": ["Three."]}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ('["a", "b"]', "not a JSON object"),
        ('{"x": 3}', "'x' is not a string or a list of strings"),
        ('{"x": ["ok", 4]}', "'x' is not a string or a list of strings"),
        ('{"x": []}', "'x' has an empty list"),
    ],
)
def test_read_reports_json_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "preds.json"
    path.write_text(text)
    with pytest.raises(MedtuneError) as err:
        read_reports_json(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message
    with pytest.raises(MedtuneError, match="cannot read"):
        read_reports_json(tmp_path / "missing.json")


# --- text metrics -------------------------------------------------------------------------------


def test_text_scores_are_those_of_the_tokenized_reports() -> None:
    scores = score_reports(PREDS, REFS, clinical=False, meteor=False)
    tokens = {k: [" ".join(tokenize(v[0]))] for k, v in PREDS.items()}
    refs = {k: [" ".join(tokenize(r)) for r in v] for k, v in REFS.items()}
    assert scores.scores == text_scores(tokens, refs)
    assert set(scores.scores) == set(TEXT_KEYS) and scores.n == 4
    assert scores.clinical == {} and scores.per_finding == {}


def test_r2gen_tokenization_drops_punctuation_inside_sentences() -> None:
    preds, refs = {"x": ["Small effusion, left."]}, {"x": ["Small effusion left."]}
    medtune = score_reports(preds, refs, clinical=False, meteor=False)
    r2gen = score_reports(preds, refs, clinical=False, meteor=False, r2gen=True)
    assert r2gen.r2gen and r2gen.scores["Bleu_4"] == pytest.approx(1.0)  # the comma is gone
    assert medtune.scores["Bleu_4"] < 0.9  # "," breaks the n-grams


def test_ids_must_match_and_each_prediction_is_one_report() -> None:
    refs = {f"r{i}": ["x"] for i in range(5)}
    with pytest.raises(MedtuneError, match=r"5 without a prediction \('r0', 'r1', 'r2', \.\.\.\)"):
        score_reports({"p": ["x"]}, refs, meteor=False)
    with pytest.raises(MedtuneError, match=r"1 without a reference \('p'\)"):
        score_reports({"p": ["x"]}, refs, meteor=False)
    with pytest.raises(MedtuneError, match="exactly one report"):
        score_reports({"p": ["x", "y"]}, {"p": ["x"]}, meteor=False)


def test_meteor_is_left_out_with_a_note_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_gen.shutil, "which", lambda name: None)
    scores = score_reports(PREDS, REFS, clinical=False)
    assert "METEOR" not in scores.scores and "Java" in scores.meteor_note
    assert scores.as_json()["meteor_note"] == scores.meteor_note


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR's scorer needs Java")
def test_meteor_runs_when_java_is_there() -> None:
    # One Java start (some 15 s): the scorer reads pycocoevalcap's layout with our string ids.
    scores = score_reports(PREDS, REFS, clinical=False)
    assert scores.meteor_note is None and 0 < scores.scores["METEOR"] < 1
    assert scores.as_json()["METEOR"] == scores.scores["METEOR"]


# --- clinical efficacy --------------------------------------------------------------------------


def test_clinical_efficacy_by_hand() -> None:
    scores = score_reports(PREDS, REFS, meteor=False)
    # Positive findings (uncertain is not positive: d's "possible pneumothorax"):
    #   pred  a: effusion   b: -          c: cardiomegaly              d: cardiomegaly
    #   ref   a: effusion,  b: effusion   c: no_finding, cardiomegaly  d: pneumothorax
    #            cardiomegaly
    # effusion TP 1 FN 1; cardiomegaly TP 1 FP 1 FN 1; no_finding FN 1; pneumothorax FN 1.
    per = scores.per_finding
    assert set(per) == {"pleural_effusion", "cardiomegaly", "no_finding", "pneumothorax"}
    assert per["pleural_effusion"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert per["cardiomegaly"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert per["pneumothorax"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per["no_finding"]["support"] == 1
    # Micro over all (report, finding) pairs: TP 2, FP 1, FN 4.
    assert scores.clinical == pytest.approx(
        {"precision": 2 / 3, "recall": 1 / 3, "f1": 4 / 9, "macro_f1": (2 / 3 + 0.5) / 4}
    )


def test_clinical_efficacy_of_perfect_predictions_is_one() -> None:
    from medtune.curate.labeler import load_rules

    texts = ["Small left pleural effusion.", "Cardiomegaly.", "No pleural effusion."]
    summary, per = clinical_efficacy(texts, [[t] for t in texts], load_rules())
    assert summary == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "macro_f1": 1.0}
    # A negated finding is positive nowhere, so it is not scored.
    assert set(per) == {"pleural_effusion", "cardiomegaly"}


# --- diversity and the JSON -----------------------------------------------------------------


def test_identical_predictions_are_collapsed() -> None:
    preds = {k: ["No  acute findings."] if k != "b" else ["no acute FINDINGS."] for k in PREDS}
    scores = score_reports(preds, REFS, clinical=False, meteor=False, min_distinct=0.3)
    assert scores.diversity == {"distinct": 1, "distinct_share": 0.25, "most_common_share": 1.0}
    assert scores.collapsed
    varied = score_reports(PREDS, REFS, clinical=False, meteor=False, min_distinct=0.3)
    assert varied.diversity["distinct"] == 4 and not varied.collapsed


def test_as_json_has_the_text_metrics_on_top() -> None:
    data = score_reports(PREDS, REFS, meteor=False).as_json()
    assert set(TEXT_KEYS) <= set(data)
    assert {"clinical", "per_finding", "diversity", "n", "r2gen"} <= set(data)
    assert data["n"] == 4 and data["clinical"]["f1"] == pytest.approx(4 / 9)
    json.dumps(data)  # plain JSON types only


# --- a trained export ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_export(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny report model trained a few steps on the ingested workspace's train split."""
    from medtune.config_train import FinetuneConfig
    from medtune.curate.splits import SplitSpec, make_split
    from medtune.train.finetune import run_finetune

    root = tmp_path_factory.mktemp("report-eval") / "ws"
    shutil.copytree(ingested_workspace, root)
    make_split(root, SplitSpec())
    vit = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
           "heads": 2}  # fmt: skip
    config = FinetuneConfig(
        workspace=root, task="report", mode="full", backbone=vit,
        data={"batch_size": 8, "val": []},
        report={"layers": 1, "dim": 32, "heads": 2, "vocab_size": 200, "max_tokens": 12,
                "decode": "greedy"},
        loop={"max_steps": 3, "lr": 1e-3, "log_every": 1, "precision": "fp32"},
    )  # fmt: skip
    return root, run_finetune(config, progress=False).export_dir


def test_evaluate_report_model_scores_every_test_image(report_export) -> None:
    from medtune.dataset.catalog import read_catalog
    from medtune.models.export import load_encoder
    from medtune.train.data import ImageDataset

    root, export = report_export
    scores, samples = evaluate_report_model(export, root, meteor=False, batch_size=7)
    test = ImageDataset(root, contract=load_encoder(export).contract, split_values="test",
                        label_columns=[], text=True)  # fmt: skip
    assert len(samples) == len(test) == scores.n > 0
    ids = read_catalog(root / "dataset" / "catalog.parquet", columns=["image_id"]).column(0)
    assert [s.row for s in samples] == list(test.rows)
    assert [s.image_id for s in samples] == [ids[int(r)].as_py() for r in test.rows]
    assert all(s.reference for s in samples) and [s.reference for s in samples] == test.texts
    assert all(isinstance(s.generated, str) for s in samples)
    for key, value in scores.scores.items():
        assert value >= 0 and (key == "CIDEr" or value <= 1)
    assert all(0 <= v <= 1 for v in scores.clinical.values())
    assert 1 <= scores.diversity["distinct"] <= scores.n
    few, first = evaluate_report_model(export, root, meteor=False, max_images=2)
    assert few.n == 2 and [s.generated for s in first] == [s.generated for s in samples[:2]]
