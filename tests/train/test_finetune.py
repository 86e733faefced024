"""`run_finetune` end to end on the ingested workspace (labelled and split on a copy): probe,
LoRA and full fine-tuning with a tiny ViT, the export round trip, and resume after a kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medtune.config_train import FinetuneConfig
from medtune.curate.labels import label_workspace
from medtune.curate.splits import SplitSpec, make_split
from medtune.models import create_backbone
from medtune.models.heads import head_from_config
from medtune.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter
from medtune.models.weights import load_weights
from medtune.train.checkpoint import checkpoint_dir, latest_complete
from medtune.train.classify import Classifier, predict
from medtune.train.finetune import run_finetune
from medtune.train.modes import prepare_backbone
from medtune.train.tracking import read_metrics

TINY_VIT = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
            "heads": 2}  # fmt: skip
LABELS = ["no_finding", "fracture", "cardiomegaly"]  # each has positives in the fixture


@pytest.fixture(scope="module")
def workspace(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ingested workspace with report labels and a patient split (read-only: copy it)."""
    root = tmp_path_factory.mktemp("finetune") / "ws"
    shutil.copytree(ingested_workspace, root)
    label_workspace(root)
    make_split(root, SplitSpec())
    return root


def recipe(workspace: Path, tmp_path: Path, mode: str, **loop: object) -> FinetuneConfig:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    return FinetuneConfig(
        workspace=ws, mode=mode, backbone=TINY_VIT, data={"batch_size": 16},
        lora={"rank": 2, "dropout": 0.1}, classify={"labels": LABELS, "hidden": 32},
        loop={"max_steps": 4, "lr": 1e-2, "eval_every": 2, "log_every": 1, **loop},
    )  # fmt: skip


def fresh_state() -> dict[str, torch.Tensor]:
    return create_backbone(**TINY_VIT).state_dict()


def images() -> torch.Tensor:
    return torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def trained_model(config: FinetuneConfig, run: Path, record: dict) -> Classifier:
    """The model the run exports: a fresh backbone prepared for the mode, with the weights of
    the best evaluation's checkpoint (backbone, adapters and head)."""
    prepared = prepare_backbone(create_backbone(**TINY_VIT), config.mode, config.lora)
    model = Classifier(prepared, head_from_config(record["head"]))
    load_weights(model, checkpoint_dir(run, record["best"]["step"]) / "model.safetensors")
    return model.eval()


@pytest.mark.parametrize("mode", ["probe", "lora", "full"])
def test_modes_train_what_they_should_and_export_round_trips(
    workspace: Path, tmp_path: Path, mode: str
) -> None:
    config = recipe(workspace, tmp_path, mode)
    result = run_finetune(config, progress=False)
    assert result.run_dir.name == f"finetune-classify-{mode}" and result.steps == 4
    assert 0.0 <= result.metrics["val_auroc"] <= 1.0 and "val_loss" in result.metrics
    record = json.loads((result.export_dir / "medtune.json").read_text())
    assert record["task"] == "classify" and record["mode"] == mode and record["steps"] == 4
    assert record["step"] == record["best"]["step"]  # the best evaluation's weights
    assert record["labels"] == LABELS and record["label_columns"] == [f"label_{n}" for n in LABELS]
    assert record["head"]["classes"] == 3 and record["recipe"]["mode"] == mode

    before = fresh_state()
    exported = load_file(result.export_dir / "encoder.safetensors")
    assert exported.keys() == before.keys()  # a plain backbone, LoRA merged
    unchanged = [k for k in before if torch.equal(exported[k], before[k])]
    if mode == "probe":
        assert len(unchanged) == len(before)  # the backbone is bit-identical
    elif mode == "full":
        assert len(unchanged) < len(before) // 4
    else:  # lora: only the wrapped linears' weights moved, by the merged adapters
        moved = {k.rsplit(".", 1)[0] for k in before if k not in unchanged}
        assert moved == {f"blocks.{b}.{layer}" for b in (0, 1)
                         for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}  # fmt: skip
        adapter = result.export_dir / "adapter"
        names = {ADAPTER_CONFIG, ADAPTER_WEIGHTS, "head.safetensors", "medtune_head.json"}
        assert {p.name for p in adapter.iterdir()} == names
        checkpoint = load_file(latest_complete(result.run_dir) / "model.safetensors")
        encoder_keys = [k for k in checkpoint if k.startswith("encoder.") and "lora_" not in k]
        base = {k.removeprefix("encoder.").replace(".base_layer", ""): checkpoint[k]
                for k in encoder_keys}  # fmt: skip
        assert all(torch.equal(base[k], before[k]) for k in before)  # only adapters trained

    x = images()
    expected = torch.sigmoid(trained_model(config, result.run_dir, record)(x))
    torch.testing.assert_close(predict(result.export_dir, x), expected, atol=1e-5, rtol=1e-5)
    if mode == "lora":  # the adapter folder alone, on the original backbone, is the same model
        adapter = result.export_dir / "adapter"
        shared = json.loads((adapter / "medtune_head.json").read_text())
        assert shared["labels"] == LABELS and shared["backbone"] == TINY_VIT
        encoder = create_backbone(**shared["backbone"])
        load_adapter(encoder, adapter)
        head = head_from_config(shared["head"])
        load_weights(head, adapter / "head.safetensors")
        torch.testing.assert_close(predict((encoder, head, LABELS), x), expected, atol=1e-5,
                                   rtol=1e-5)  # fmt: skip


def test_resume_after_a_kill_gives_the_uninterrupted_run(workspace: Path, tmp_path: Path) -> None:
    """LoRA with adapter and head dropout, augmentation: every generator must be restored."""
    config = recipe(workspace, tmp_path, "lora", max_steps=6, checkpoint_every=3,
                    deterministic=True)  # fmt: skip
    first = run_finetune(config, progress=False)
    final = load_file(checkpoint_dir(first.run_dir, 6) / "model.safetensors")
    lines = read_metrics(first.run_dir / "metrics.jsonl")
    probabilities = predict(first.export_dir, images())
    # A kill after step 3: the later checkpoint and the export never got written.
    shutil.rmtree(checkpoint_dir(first.run_dir, 6))
    shutil.rmtree(first.export_dir)
    assert latest_complete(first.run_dir) == checkpoint_dir(first.run_dir, 3)

    resumed = run_finetune(config, resume=True, progress=False)
    again = load_file(checkpoint_dir(resumed.run_dir, 6) / "model.safetensors")
    assert again.keys() == final.keys()
    assert all(torch.equal(again[k], final[k]) for k in final)
    assert resumed.metrics == first.metrics
    drop = ("samples_per_s", "time_s")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in lines]
    assert [{k: v for k, v in r.items() if k not in drop}
            for r in read_metrics(resumed.run_dir / "metrics.jsonl")] == strip  # fmt: skip
    torch.testing.assert_close(predict(resumed.export_dir, images()), probabilities,
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.slow
@pytest.mark.integration
def test_finetune_command_under_torchrun_with_two_ranks(workspace: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    import yaml

    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    recipe_path = tmp_path / "lora.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "kind": "finetune", "workspace": str(ws), "mode": "lora", "backbone": TINY_VIT,
        "data": {"batch_size": 8}, "lora": {"rank": 2}, "classify": {"labels": LABELS},
        "loop": {"max_steps": 4, "lr": 1e-2, "eval_every": 2, "log_every": 1},
    }))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(port), "-m", "medtune", "finetune",
               str(recipe_path)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo, 2 CPUs
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = ws / "runs" / "finetune-classify-lora"
    records = read_metrics(run / "metrics.jsonl")  # rank 0 alone writes: one line a step
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert latest_complete(run).name == "step-00000004"
    assert json.loads((run / "export" / "medtune.json").read_text())["mode"] == "lora"
    assert predict(run / "export", images()).shape == (len(images()), len(LABELS))
