"""`medtune demo --quick`: the whole pipeline, and a report that answers the demo's question."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.demo_train import RUN_PREFIX
from medtune.models.export import read_export

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ("random", "chest-only", "full-body")


def test_quick_demo_pretrains_three_backbones_and_reports_on_them(tmp_path: Path, capsys) -> None:
    workspace = tmp_path / "ws"
    # A fresh key (never the repository's): pseudonyms differ from run to run as on a new machine.
    rc = main(["demo", "--quick", "--workspace", str(workspace),
               "--set", f"key={tmp_path / 'demo.key'}", "--set", "synth.workers=1"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(
        r"answer: full-body vs chest-only: on non-chest images [+-]\d\.\d{3} AUROC", out
    )

    # Three backbones of one architecture; two pretrained on the same budget, one untouched.
    exports = {m: read_export(workspace / "runs" / f"{RUN_PREFIX}pretrain-{m}" / "export")
               for m in MODELS}  # fmt: skip
    assert len({json.dumps(e["backbone"], sort_keys=True) for e in exports.values()}) == 1
    assert exports["random"]["pretraining"] == "none"
    chest, full = exports["chest-only"]["recipe"], exports["full-body"]["recipe"]
    assert chest["loop"]["max_steps"] == full["loop"]["max_steps"]
    assert chest["data"]["batch_size"] == full["data"]["batch_size"]
    assert chest["data"]["where"] == "body_part = 'CHEST'" and not full["data"]["where"]

    report = workspace / "eval" / "demo" / "report.html"
    page = report.read_text()
    assert "<script" not in page and "https://" not in page and "http://" not in page
    for heading in ("Probe suite", "Report generation", "Phrase grounding"):
        assert f"<h2>{heading}</h2>" in page
    for caption in ("Mean AUROC over the probe tasks", "Paired comparisons of mean AUROC",
                    "AUROC per probe task", "Calibration of the findings heads",
                    "Clinical efficacy and diversity"):  # fmt: skip
        assert caption in page
    assert page.count("data:image/png;base64,") >= 5  # ROC, reliability, subgroups, heat maps

    numbers = json.loads((report.parent / "results.json").read_text())
    probe = numbers["probe"]
    assert set(probe["models"]) == set(MODELS)
    for model in probe["models"].values():
        assert {"findings", "sex", "view", "anatomy", "marker", "mirrored", "site"} <= set(
            model["tasks"]
        )
        mean = model["mean_auroc"]
        assert 0 <= mean["low"] <= mean["value"] <= mean["high"] <= 1
        assert {"chest", "non-chest"} <= set(model["subgroups"]["region"])
    headline = probe["comparisons"]["full-body"]["chest-only"]
    assert 0 < headline["region:non-chest"]["p_value"] <= 1
    assert numbers["summary"][0].startswith("full-body vs chest-only: on non-chest images")
    assert set(numbers["report_generation"]) == {"full-body"}
    assert {"Bleu_4", "ROUGE_L", "CIDEr"} <= set(numbers["report_generation"]["full-body"])
    assert numbers["grounding"]["full-body"]["n"] > 0
