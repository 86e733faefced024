"""`run_pretrain` end to end on the ingested test workspace: DINO (with iBOT) and contrastive
runs, their checkpoints, metrics and exports, a resume after a kill, and init from an export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medtune.config_train import PretrainConfig
from medtune.models.export import load_encoder, load_part, read_export
from medtune.models.registry import backbone_from_config
from medtune.models.text import text_encoder_from_config
from medtune.train.checkpoint import (
    checkpoint_dir,
    latest_complete,
    list_complete,
    load_checkpoint,
)
from medtune.train.contrastive import Contrastive
from medtune.train.dino import Dino
from medtune.train.pretrain import dino_objective, run_pretrain
from medtune.train.recipe import build_backbone
from medtune.train.tasks import TrainResult
from medtune.train.tracking import read_metrics

BACKBONE = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
            "heads": 2}  # fmt: skip
DINO = {"out_dim": 64, "head_hidden": 32, "head_bottleneck": 16, "local_crops": 2, "ibot": True}
TEXT = {"name": "tiny-bert", "dim": 32, "depth": 1, "heads": 2, "max_length": 64}
LOOP = {"max_steps": 4, "lr": 1e-3, "eval_every": 2, "checkpoint_every": 2, "log_every": 1,
        "deterministic": True}  # fmt: skip


@pytest.fixture(scope="module")
def workspace(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ingested workspace with report labels and a patient split."""
    from medtune.curate.labels import label_workspace
    from medtune.curate.splits import SplitSpec, make_split

    root = tmp_path_factory.mktemp("pretrain") / "ws"
    shutil.copytree(ingested_workspace, root)
    label_workspace(root)
    make_split(root, SplitSpec())
    return root


def _dino_config(workspace: Path, name: str, **changes: object) -> PretrainConfig:
    values = {
        "workspace": workspace,
        "name": name,
        "objective": "dino",
        "backbone": BACKBONE,
        "data": {"batch_size": 8},
        "dino": DINO,
        "loop": LOOP,
    }
    return PretrainConfig(**(values | changes))


class _Killed(Exception):
    pass


class _KillAt:
    """A progress display that dies at ``step``, as a killed run would, after the checkpoint
    of the step before."""

    def __init__(self, step: int) -> None:
        self.step = step

    def update(self, step: int, samples_per_s: float, metrics: dict[str, float]) -> None:
        if step == self.step:
            raise _Killed

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def dino_run(workspace: Path) -> TrainResult:
    return run_pretrain(_dino_config(workspace, "dino"), progress=False)


@pytest.mark.slow
def test_dino_run_records_checkpoints_metrics_and_the_teacher(
    workspace: Path, dino_run: TrainResult
) -> None:
    run = dino_run.run_dir
    assert run == workspace / "runs" / "dino" and dino_run.steps == 4
    assert [p.name for p in list_complete(run)] == ["step-00000002", "step-00000004"]
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all({"loss", "dino", "ibot"} <= set(r) for r in train)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["val_loss"] > 0 and r["feature_std"] > 0 for r in evals)
    assert set(dino_run.metrics) == {"val_loss", "feature_std"}

    record = read_export(dino_run.export_dir)
    assert record["task"] == "encoder" and record["objective"] == "dino"
    assert record["exported"] == "teacher" and record["step"] == record["steps"] == 4
    assert record["recipe"]["dino"]["ibot"] is True and record["backbone"] == BACKBONE

    # The export is the trained teacher: rebuild the run's model from its last checkpoint.
    config = _dino_config(workspace, "dino")
    model = Dino(backbone_from_config(BACKBONE), config.dino, max_steps=4)
    load_checkpoint(latest_complete(run), model)
    model.catch_up_teacher()
    model.eval()
    exported = load_encoder(dino_run.export_dir).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = model.teacher["backbone"].forward_features(x)
        got = exported.forward_features(x)
        student = model.student["backbone"](x)
    torch.testing.assert_close(got.pooled, expected.pooled)
    torch.testing.assert_close(got.tokens, expected.tokens)
    assert not torch.allclose(got.pooled, student)  # the teacher, not the student


@pytest.mark.slow
def test_a_killed_dino_run_resumes_to_the_same_weights(
    workspace: Path, dino_run: TrainResult
) -> None:
    config = _dino_config(workspace, "killed")
    with pytest.raises(_Killed):
        run_pretrain(config, progress=_KillAt(3))
    run = workspace / "runs" / "killed"
    assert latest_complete(run).name == "step-00000002"
    resumed = run_pretrain(config, resume=True, progress=False)
    assert resumed.steps == 4
    ours = load_file(latest_complete(run) / "model.safetensors")
    theirs = load_file(latest_complete(dino_run.run_dir) / "model.safetensors")
    assert ours.keys() == theirs.keys() and any("mask_token" in k for k in ours)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    losses = [[r["loss"] for r in read_metrics(p / "metrics.jsonl") if r["kind"] == "train"]
              for p in (run, dino_run.run_dir)]  # fmt: skip
    assert losses[0] == losses[1]
    exported = [load_file(p / "encoder.safetensors") for p in (resumed.export_dir,
                                                                dino_run.export_dir)]  # fmt: skip
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])


@pytest.mark.slow
def test_contrastive_run_from_a_dino_export(workspace: Path, dino_run: TrainResult) -> None:
    config = PretrainConfig(
        workspace=workspace,
        objective="contrastive",
        init=dino_run.run_dir,  # a run holding an export
        data={"batch_size": 8},
        contrastive={"text": TEXT, "projection_dim": 16, "text_lr_scale": 0.5},
        loop=LOOP,
    )
    result = run_pretrain(config, progress=False)
    assert result.run_dir.name == "pretrain-contrastive" and result.steps == 4
    expected = {"val_loss", "i2t_recall@1", "i2t_recall@5", "t2i_recall@1", "t2i_recall@5"}
    assert set(result.metrics) == expected
    assert all(0 <= result.metrics[k] <= 1 for k in expected - {"val_loss"})

    record = read_export(result.export_dir)
    assert record["objective"] == "contrastive" and record["init"] == str(dino_run.export_dir)
    assert record["parts"] == ["image_projection", "text", "text_projection"]
    assert record["text"] == TEXT

    # The export holds the towers of the best evaluation: compare with that checkpoint.
    evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r["val_loss"])
    assert record["step"] == record["best"]["step"] == best["step"]
    model = Contrastive(load_encoder(dino_run.export_dir), text_encoder_from_config(TEXT),
                        config.contrastive)  # fmt: skip
    load_checkpoint(checkpoint_dir(result.run_dir, best["step"]), model)
    model.eval()
    image = load_encoder(result.export_dir).eval()
    projection = load_part(result.export_dir, "image_projection", torch.nn.Linear(32, 16, False))
    text = load_part(result.export_dir, "text", text_encoder_from_config(TEXT)).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(projection(image(x)), model.image_projection(model.image(x)))
        torch.testing.assert_close(text.encode(["no acute findings"]),
                                   model.text.encode(["no acute findings"]))  # fmt: skip
    started = load_encoder(dino_run.export_dir)
    assert not torch.equal(started.pos_embed, image.pos_embed)  # it trained from the init


def test_dino_on_a_fixed_size_family_resizes_local_views_and_says_so(workspace: Path) -> None:
    timm_vit = {"name": "timm", "model_name": "vit_tiny_patch16_224", "image_size": 32,
                "in_chans": 1, "model_kwargs": {"depth": 1, "patch_size": 8}}  # fmt: skip
    config = _dino_config(workspace, "timm", backbone=timm_vit)
    objective = dino_objective(config, build_backbone(config.backbone, None))
    assert any("resized" in line for line in objective.lines)
    dynamic = timm_vit | {"model_kwargs": {"depth": 1, "patch_size": 8, "dynamic_img_size": True}}
    config = _dino_config(workspace, "timm", backbone=dynamic)
    assert dino_objective(config, build_backbone(config.backbone, None)).lines == []
