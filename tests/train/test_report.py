"""The report task: learning image-dependent reports, the collapse guard, LoRA on a pretrained
decoder, export round trips, and the whole task on the ingested test workspace."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from medtune.config_train import FinetuneConfig, LoraSection, ReportSection
from medtune.curate.splits import SplitSpec, make_split
from medtune.errors import MedtuneError
from medtune.models.registry import create_backbone
from medtune.models.report_tokenizer import train_bpe
from medtune.models.weights import read_state_dict
from medtune.train.loop import LoopConfig, fit
from medtune.train.modes import prepare_backbone
from medtune.train.recipe import Backbone, build_backbone, run_dir
from medtune.train.report import (
    ReportModel,
    build_generator,
    collapse_check,
    corpus_bleu4,
    export_report_model,
    generate_reports,
    load_report_model,
    most_common_report,
    report_metrics,
    train_report,
)
from medtune.train.tracking import read_metrics

VIT = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
       "heads": 2}  # fmt: skip
# Four brightness classes, four reports: the report can only be right if the image is read.
REPORTS = [
    "No acute findings.",
    "Small left pleural effusion.",
    "Large right pleural effusion.",
    "Cardiomegaly without effusion.",
]
SECTION = ReportSection(conditioning="cross", layers=2, dim=32, heads=2, vocab_size=300,
                        max_tokens=16, decode="greedy", min_distinct=0.3)  # fmt: skip


def _images(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(n) % 4
    level = (classes.float() / 3.0 - 0.5) * 2  # -1 .. 1, in normalised units
    x = level.view(-1, 1, 1, 1) + 0.3 * torch.randn(n, 1, 32, 32, generator=g)
    return x, [REPORTS[c] for c in classes]


def _train(prepared, generator, trained, images, texts, run, steps, lr=5e-3):
    model = ReportModel(prepared, generator)
    batches = [{"image": images[i : i + 16], "text": texts[i : i + 16]}
               for i in range(0, len(texts), 16)]  # fmt: skip

    def step(model, batch):
        return {"loss": model.loss(batch["image"], batch["text"])}

    config = LoopConfig(max_steps=steps, lr=lr, warmup_steps=5, precision="fp32", log_every=1)
    fit(model, step, batches, config, run, trainable=[*prepared.trainable, *trained],
        progress=False)  # fmt: skip
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """A tiny ViT and cross-attention decoder trained (full) on the brightness -> report task."""
    images, texts = _images(64, seed=0)
    tokenizer = train_bpe(texts, SECTION.vocab_size)
    backbone = Backbone(create_backbone(**VIT), dict(VIT), None)
    prepared = prepare_backbone(backbone.encoder, "full", LoraSection())
    generator, trained = build_generator(SECTION, tokenizer, prepared.encoder, LoraSection(), 0)
    run = tmp_path_factory.mktemp("learnt") / "run"
    losses = _train(prepared, generator, trained, images, texts, run, steps=60)
    generator.eval(), prepared.encoder.eval()
    return {"backbone": backbone, "prepared": prepared, "generator": generator,
            "losses": losses, "common": most_common_report(texts)}  # fmt: skip


def _generate(learnt, images, **options):
    with torch.no_grad():
        features = learnt["prepared"].encoder.forward_features(images)
        return learnt["generator"].generate(features, **options)


@pytest.mark.slow
def test_a_learnable_mapping_is_learnt_reports_differ_by_image(learnt):
    assert learnt["losses"][-1] < 0.25 * learnt["losses"][0]
    images, truth = _images(8, seed=1)  # unseen images
    for decode in ("greedy", "beam"):
        assert _generate(learnt, images, decode=decode, beams=3) == truth


@pytest.mark.slow
def test_collapse_guard_fires_on_a_collapsed_model_not_on_the_learnt_one(learnt):
    images, truth = _images(8, seed=1)
    common = learnt["common"]
    metrics = report_metrics(_generate(learnt, images, decode="greedy"), truth, common)
    assert metrics["distinct"] == 0.5 and metrics["bleu4"] == 1.0  # 4 reports for 8 images
    check = collapse_check(metrics, SECTION.min_distinct)
    assert check["checked"] and not check["collapsed"] and check["warning"] is None
    # Forced collapse: the image projection zeroed, so every image looks the same to the decoder.
    collapsed = dict(learnt, generator=copy.deepcopy(learnt["generator"]))
    torch.nn.init.zeros_(collapsed["generator"].projection[1].weight)
    torch.nn.init.zeros_(collapsed["generator"].projection[1].bias)
    reports = _generate(collapsed, images, decode="greedy")
    assert len(set(reports)) == 1
    metrics = report_metrics(reports, truth, common)
    assert metrics["distinct"] == 1 / 8 and metrics["bleu4"] < 0.5
    check = collapse_check(metrics, SECTION.min_distinct)
    assert check["collapsed"] and "collapse" in check["warning"] and "12%" in check["warning"]


@pytest.mark.slow
def test_export_round_trip_gives_identical_reports(learnt, tmp_path):
    images, _ = _images(8, seed=2)
    before = {d: _generate(learnt, images, decode=d, seed=5) for d in ("beam", "sample")}
    export = export_report_model(tmp_path / "export", learnt["backbone"], learnt["prepared"],
                                 learnt["generator"], SECTION, {"step": 60})  # fmt: skip
    assert {"medtune.json", "tokenizer.json", "generator.safetensors"} <= {
        p.name for p in export.iterdir()}  # fmt: skip
    loaded = load_report_model(export)
    assert loaded.record["generation"]["decode"] == "greedy" and loaded.record["step"] == 60
    assert generate_reports(loaded, images, batch_size=3, decode="beam") == before["beam"]
    # A sample depends on the batch (one random stream for all its rows): the same batch here.
    assert generate_reports(loaded, images, decode="sample", seed=5) == before["sample"]
    with pytest.raises(MedtuneError, match="does not match the backbone's contract"):
        generate_reports(loaded, torch.zeros(2, 1, 16, 16))


def _hf_gpt2(directory: Path, texts: list[str]) -> Path:
    """A tiny pretrained-style GPT-2 directory (weights, config, tokenizer), as a user has."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_bpe(texts, 300)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=1, eos_token_id=2)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_hf_decoder_with_lora_trains_only_adapters_and_projection(tmp_path):
    from medtune.models.report_tokenizer import hf_tokenizer

    images, texts = _images(16, seed=0)
    directory = _hf_gpt2(tmp_path / "gpt2", texts)
    section = ReportSection(decoder=str(directory), conditioning="prefix", decoder_lora=True,
                            max_tokens=16, decode="beam", beams=2)  # fmt: skip
    backbone = Backbone(create_backbone(**VIT), dict(VIT), None)
    prepared = prepare_backbone(backbone.encoder, "probe", LoraSection())
    tokenizer = hf_tokenizer(directory)
    generator, trained = build_generator(section, tokenizer, prepared.encoder,
                                         LoraSection(rank=4), 0)  # fmt: skip
    names = {id(p): n for n, p in generator.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in trained} == {"projection", "decoder"}
    assert all("lora_" in names[id(p)] for p in trained if names[id(p)].startswith("decoder"))
    start = {n: p.detach().clone() for n, p in generator.named_parameters()}
    encoder_start = {n: p.detach().clone() for n, p in prepared.encoder.named_parameters()}
    losses = _train(prepared, generator, trained, images, texts, tmp_path / "run", steps=6)
    assert losses[-1] < losses[0]
    changed = {n for n, p in generator.named_parameters() if not torch.equal(p, start[n])}
    assert changed == {names[id(p)] for p in trained}  # adapters and projection, nothing else
    assert all(torch.equal(p, encoder_start[n]) for n, p in prepared.encoder.named_parameters())
    # The export merges the adapters: the same reports, from plain weights.
    before = _generate({"prepared": prepared, "generator": generator}, images[:4], beams=2)
    export = export_report_model(tmp_path / "export", backbone, prepared, generator, section)
    assert not any("lora_" in key for key in read_state_dict(export / "generator.safetensors"))
    assert generate_reports(export, images[:4]) == before
    # A decoder without cross-attention cannot be conditioned by it.
    with pytest.raises(MedtuneError, match="conditioning: prefix"):
        build_generator(section.model_copy(update={"conditioning": "cross"}), tokenizer,
                        prepared.encoder, LoraSection(), 0)  # fmt: skip
    with pytest.raises(MedtuneError, match="needs a pretrained decoder"):
        build_generator(SECTION.model_copy(update={"decoder_lora": True}), tokenizer,
                        prepared.encoder, LoraSection(), 0)  # fmt: skip


def test_corpus_bleu4_matches_the_definition():
    assert corpus_bleu4(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    # Clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu4(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(
        expected)  # fmt: skip
    assert corpus_bleu4(["no effusion"], ["large right effusion seen"]) == 0.0
    short = corpus_bleu4(["the cat sat on"], ["the cat sat on the mat"])
    assert short == pytest.approx(math.exp(1 - 6 / 4))  # all n-grams match: brevity only


def test_report_metrics_measure_collapse():
    common = most_common_report(["A  b.", "A b.", "C."])
    assert common == "A b."
    metrics = report_metrics(["A b.", "A b.", "C.", "D."], ["A b.", "E.", "C.", "D."], common)
    assert metrics["distinct"] == 0.75 and metrics["common_report_share"] == 0.5
    assert collapse_check(metrics, 0.8)["collapsed"]
    assert collapse_check({"val_loss": 1.0}, 0.2)["checked"] is False


# --- the whole task on the ingested test workspace --------------------------------------------


@pytest.fixture(scope="module")
def workspace(ingested_workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "ws"
    shutil.copytree(ingested_workspace, root)
    make_split(root, SplitSpec())
    return root


@pytest.mark.slow
def test_train_report_end_to_end(workspace, monkeypatch):
    import medtune.train.report as report

    seen: list[str] = []
    monkeypatch.setattr(report, "train_bpe", lambda texts, size: seen.extend(texts)
                        or train_bpe(seen, size))  # fmt: skip
    config = FinetuneConfig(
        workspace=workspace, task="report", mode="full", backbone=VIT,
        data={"batch_size": 8}, report=SECTION.model_dump(exclude={"decode"}),
        loop={"max_steps": 4, "lr": 1e-3, "eval_every": 2, "log_every": 1},
    )  # fmt: skip
    backbone = build_backbone(config.backbone, None)
    prepared = prepare_backbone(backbone.encoder, config.mode, config.lora)
    run = run_dir(config, "finetune-report-full")
    result = train_report(config, backbone, prepared, run, resume=False, progress=False)

    from medtune.train.data import ImageDataset

    splits = {s: ImageDataset(workspace, contract=prepared.encoder.contract, split_values=s,
                              label_columns=[], text=True) for s in ("train", "val")}  # fmt: skip
    assert seen and set(seen) <= set(splits["train"].texts)  # the BPE saw training text only
    assert not set(seen) & (set(splits["val"].texts) - set(splits["train"].texts))
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for key in ("val_loss", "distinct", "common_report_share", "bleu4"):
        assert all(key in r for r in evals)
    assert result.steps == 4 and result.metrics["distinct"] > 0
    record = json.loads((result.export_dir / "medtune.json").read_text())
    assert record["task"] == "report" and record["collapse"]["checked"]
    collapsed = result.metrics["distinct"] < SECTION.min_distinct
    assert record["collapse"]["collapsed"] == collapsed
    assert any("report collapse" in line for line in result.lines) == collapsed
    assert (run / "tokenizer.json").read_text() == (
        result.export_dir / "tokenizer.json"
    ).read_text()
    images = torch.stack([splits["val"][i]["image"] for i in range(3)])
    reports = generate_reports(run, images)
    assert len(reports) == 3 and reports == generate_reports(run, images)
