"""The demo's training stage: the shipped recipes on a curated workspace, with tiny budgets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medtune.config import DemoConfig
from medtune.curate.labels import label_workspace
from medtune.curate.splits import SplitSpec, make_split
from medtune.demo_train import RUN_PREFIX, train
from medtune.models.export import read_export
from medtune.synth.cohort import Summary
from medtune.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_training_runs_every_shipped_recipe_and_reports_them(
    ingested_workspace: Path, synth_cohort: Path, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(ingested_workspace, ws.root)
    label_workspace(ws.root)
    make_split(ws.root, SplitSpec())
    stale = ws.runs_dir / f"{RUN_PREFIX}dino"
    stale.mkdir(parents=True)  # a run of an earlier demo: replaced, not refused
    (stale / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    config = DemoConfig(
        workspace=ws.root,
        train={"image_size": 32, "pretrain_steps": 2, "finetune_steps": 2},
    )
    summary = Summary()
    train(config, ws, synth_cohort, summary, progress=None)

    runs = {p.name for p in ws.runs_dir.iterdir()}
    expected = {"dino", "probe-random", "probe-dino", "report", "ground"}
    assert runs == {RUN_PREFIX + name for name in expected}
    tasks = {name: read_export(ws.runs_dir / (RUN_PREFIX + name) / "export")["task"]
             for name in expected}  # fmt: skip
    assert tasks == {"dino": "encoder", "probe-random": "classify", "probe-dino": "classify",
                     "report": "report", "ground": "ground"}  # fmt: skip
    probe = read_export(ws.runs_dir / f"{RUN_PREFIX}probe-dino" / "export")
    assert probe["init"] == str(ws.runs_dir / f"{RUN_PREFIX}dino" / "export")
    table = summary.tables["training runs (last validation)"]
    assert [row[0] for row in table[1:]] == [
        "pretrain: dino", "probe: random init", "probe: DINO init", "report generation",
        "grounding",
    ]  # fmt: skip
    assert summary.tables["probe: validation AUROC per finding"][0][1:] == [
        "random init",
        "DINO init",
    ]
    assert any(line.startswith("boxes:") for line in summary.lines)
