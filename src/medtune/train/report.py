"""The report-generation task: an image-conditioned decoder writes the report of an image.

The backbone's patch tokens condition a GPT-2-architecture decoder
(:mod:`medtune.models.report_decoder`), trained by teacher forcing (token cross-entropy) on the
FINDINGS and IMPRESSION text of the training split. A decoder trained from scratch gets a BPE
learnt on the training reports only (:mod:`medtune.models.report_tokenizer`); a Hugging Face
causal LM from a local directory brings its own tokenizer and may train through LoRA.

Models trained on reports often write the same, most common report for every image: the loss
falls (that report is a good guess on average) while the model has learnt nothing of the
image. Each evaluation therefore generates the reports of a fixed sample of validation images
and logs ``distinct`` (distinct reports / images) and ``common_report_share`` (the share equal
to the most common training report), with a corpus BLEU-4 against the true reports; a final
``distinct`` under ``report.min_distinct`` puts a warning in the run's summary and its export::

    loaded = load_report_model("ws/runs/finetune-report-full/export")
    reports = generate_reports(loaded, images, decode="beam", beams=3)
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.config_train import FinetuneConfig, LoraSection, ReportSection
from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.report_decoder import (
    ReportGenerator,
    add_decoder_lora,
    decoder_from_config,
    hf_decoder,
    merge_decoder_lora,
    scratch_decoder,
)
from medtune.models.report_tokenizer import (
    BPE_SPECIALS,
    TOKENIZER_FILE,
    hf_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_tokens,
    train_bpe,
)
from medtune.train.modes import Prepared, finish_backbone, save_adapter
from medtune.train.recipe import Backbone, evaluation_at, image_datasets, keep_best_weights
from medtune.train.tasks import TrainResult, register_task

# Mild geometry and exposure changes; never a flip: reports name the side of a finding.
REPORT_AUGMENT: dict[str, dict[str, Any]] = {
    "crop": {"scale": (0.85, 1.0)},
    "rotate": {"degrees": 5.0},
    "brightness": {"amount": 0.1},
    "contrast": {"amount": 0.1},
}
MONITOR = ("val_loss", "min")
EVAL_IMAGES = 64  # validation images whose reports each evaluation generates (the first ones)
DECODE_KEYS = ("decode", "beams", "top_p", "temperature", "max_tokens")


class ReportModel(nn.Module):
    """Backbone and generator in one module, so the loop's checkpoints hold both."""

    def __init__(self, prepared: Prepared, generator: ReportGenerator) -> None:
        super().__init__()
        self.encoder = prepared.encoder
        self.generator = generator
        self.prepared = prepared  # plain attribute: its encoder is registered above

    def loss(
        self, images: torch.Tensor, texts: list[str], label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Teacher-forced token cross-entropy of ``texts`` given ``images``."""
        ids, mask = self.generator.tokenize(texts)
        features = self.prepared.features(images)
        return self.generator.loss(features, ids, mask, label_smoothing)


@register_task("report")
def train_report(
    config: FinetuneConfig,
    backbone: Backbone,
    prepared: Prepared,
    run: Path,
    *,
    resume: bool,
    progress: Any = None,
) -> TrainResult:
    """Train a report generator on the workspace's reports and export it to ``run/export``
    (see :func:`load_report_model`)."""
    from medtune.train.loop import fit

    section = config.report
    train, val = image_datasets(config, prepared.encoder.contract, train_augment=REPORT_AUGMENT,
                                label_columns=[], text=True)  # fmt: skip
    tokenizer = _tokenizer(section, train.texts, run, resume)
    generator, trained = build_generator(section, tokenizer, prepared.encoder, config.lora,
                                         config.loop.seed)  # fmt: skip
    model = ReportModel(prepared, generator).train()
    common = most_common_report(train.texts)
    evaluate = _evaluator(val, config, common) if val is not None else None
    smoothing = section.label_smoothing

    def step(model: ReportModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": model.loss(batch["image"], batch["text"], smoothing)}

    result = fit(
        model, step, _train_loader(train, config), config.loop.to_loop_config(*MONITOR), run,
        evaluate=evaluate, resume=resume, trainable=[*prepared.trainable, *trained],
        progress=progress,
    )  # fmt: skip
    exported_step = keep_best_weights(model, run, result)
    exported = evaluation_at(run, exported_step) or result.last_eval
    collapse = collapse_check(exported, section.min_distinct)
    info = {
        "mode": prepared.mode,
        "metrics": exported,
        "step": exported_step,
        "steps": result.steps,
        "best": {"step": result.best_step, "value": result.best_value},
        "collapse": collapse,
        "recipe": config.model_dump(mode="json"),
        "init": str(backbone.init) if backbone.init is not None else None,
    }
    export = export_report_model(run / "export", backbone, prepared, generator, section, info)
    lines = _summary(prepared, generator, trained, train, val, result, collapse)
    return TrainResult(run, export, result.steps, dict(exported), lines)


def build_generator(
    section: ReportSection, tokenizer: Any, encoder: Encoder, lora: LoraSection, seed: int
) -> tuple[ReportGenerator, list[nn.Parameter]]:
    """The recipe's generator for ``encoder``'s tokens and the parameters of it that train:
    all of them, or with ``decoder_lora`` the decoder's adapters and the image projection."""
    prefix = _image_tokens(encoder) + 1 if section.conditioning == "prefix" else 0
    positions = prefix + section.max_tokens + 2  # + <bos> and <eos>
    with torch.random.fork_rng(devices=[]):  # new weights: a function of the seed alone
        torch.manual_seed(seed)
        if section.decoder == "scratch":
            if section.decoder_lora:
                raise MedtuneError("report.decoder_lora: needs a pretrained decoder "
                                   "(report.decoder: a model directory)")  # fmt: skip
            decoder = scratch_decoder(
                tokenizer, dim=section.dim, layers=section.layers, heads=section.heads,
                positions=positions, cross=section.conditioning == "cross", seed=seed,
            )  # fmt: skip
        else:
            decoder = hf_decoder(section.decoder)
            _check_positions(section.decoder, decoder, positions)
        generator = ReportGenerator(decoder, tokenizer, encoder.dim, section.conditioning,
                                    section.max_tokens)  # fmt: skip
    if not section.decoder_lora:
        return generator, list(generator.parameters())
    adapters = add_decoder_lora(decoder, lora.rank, lora.alpha, lora.dropout)
    return generator, [*generator.projection.parameters(), *adapters]


def decoder_record(section: ReportSection, generator: ReportGenerator) -> dict[str, Any]:
    """What rebuilds the generator without the decoder's original directory: its
    transformers config, the image width and the token budget (the export holds weights)."""
    return {
        "source": section.decoder,
        "config": generator.decoder.config.to_dict(),
        "image_dim": int(generator.projection[0].normalized_shape[0]),
        "max_tokens": generator.max_tokens,
        "lora": section.decoder_lora,
    }


def most_common_report(texts: list[str]) -> str:
    """The training split's most frequent report (whitespace normalised): what a collapsed
    model writes for every image."""
    counts = Counter(_normal(text) for text in texts)
    return counts.most_common(1)[0][0] if counts else ""


def report_metrics(generated: list[str], references: list[str], common: str) -> dict[str, float]:
    """``distinct`` (distinct generated reports / images), ``common_report_share`` (share of
    images given ``common``, the most common training report) and ``bleu4`` (corpus BLEU-4 of
    ``generated`` against one reference each)."""
    if not generated:
        return {}
    normal = [_normal(text) for text in generated]
    return {
        "distinct": len(set(normal)) / len(normal),
        "common_report_share": sum(text == common for text in normal) / len(normal),
        "bleu4": corpus_bleu4(generated, references),
    }


def corpus_bleu4(candidates: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 (Papineni et al. 2002) with one reference per candidate, on lowercased
    word and punctuation tokens, without smoothing: clipped n-gram precisions summed over the
    corpus (n = 1..4), geometric mean, brevity penalty. In [0, 1]."""
    matches, totals = [0] * 4, [0] * 4
    cand_length = ref_length = 0
    for candidate, reference in zip(candidates, references, strict=True):
        cand, ref = _words(candidate), _words(reference)
        cand_length, ref_length = cand_length + len(cand), ref_length + len(ref)
        for n in range(1, 5):
            grams, ref_grams = _ngrams(cand, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(c, ref_grams[g]) for g, c in grams.items())
            totals[n - 1] += max(len(cand) - n + 1, 0)
    if min(matches) == 0 or cand_length == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / 4
    brevity = min(0.0, 1.0 - ref_length / cand_length)
    return math.exp(brevity + log_precision)


def collapse_check(metrics: dict[str, float], min_distinct: float) -> dict[str, Any]:
    """The export's record of the collapse guard on the final evaluation, with a one-line
    ``warning`` when fewer than ``min_distinct`` of the validation reports are distinct."""
    if "distinct" not in metrics:
        return {"checked": False, "min_distinct": min_distinct, "collapsed": None,
                "warning": "no validation split: the collapse guard did not run"}  # fmt: skip
    distinct, common = metrics["distinct"], metrics.get("common_report_share", 0.0)
    collapsed = distinct < min_distinct
    warning = None
    if collapsed:
        warning = (
            f"warning: report collapse: only {distinct:.0%} of the validation reports are "
            f"distinct (min_distinct {min_distinct:.0%}) and {common:.0%} are the most common "
            "training report; train longer, use conditioning: cross, or check the images vary"
        )
    return {"checked": True, "distinct": distinct, "common_report_share": common,
            "min_distinct": min_distinct, "collapsed": collapsed, "warning": warning}  # fmt: skip


@dataclass
class LoadedReport:
    """A report model loaded from its export, in eval mode."""

    encoder: Encoder
    generator: ReportGenerator
    record: dict[str, Any]  # medtune.json

    @property
    def contract(self) -> InputContract:
        return self.encoder.contract


def load_report_model(directory: str | os.PathLike[str]) -> LoadedReport:
    """The backbone and generator of a report export (or a run holding one), in eval mode.
    Nothing outside the export is read: the decoder is rebuilt from its recorded config."""
    from medtune.models.export import load_encoder, load_part, read_export, resolve_export

    directory = resolve_export(directory)
    record = read_export(directory)
    if record.get("task") != "report":
        raise MedtuneError(f"{directory}: a {record.get('task')!r} model, not a report generator")
    decoder_info = record["decoder"]
    tokenizer = load_tokenizer(directory / record["tokenizer"], record["special_tokens"])
    generator = ReportGenerator(
        decoder_from_config(decoder_info["config"]), tokenizer, int(decoder_info["image_dim"]),
        record["conditioning"], int(decoder_info["max_tokens"]),
    )  # fmt: skip
    load_part(directory, "generator", generator)
    return LoadedReport(load_encoder(directory).eval(), generator.eval(), record)


def generate_reports(
    model: str | os.PathLike[str] | LoadedReport,
    images: torch.Tensor,
    batch_size: int = 16,
    **options: Any,
) -> list[str]:
    """One report per image of ``images`` (B, C, H, W), shaped by the model's input contract.
    ``options`` override the recorded decoding (``decode``, ``beams``, ``top_p``,
    ``temperature``, ``max_tokens``, ``seed``)."""
    loaded = model if isinstance(model, LoadedReport) else load_report_model(model)
    loaded.contract.check(images)
    decode = {**loaded.record.get("generation", {}), **options}
    encoder, generator = loaded.encoder.eval(), loaded.generator.eval()
    device = next(encoder.parameters()).device
    reports: list[str] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            features = encoder.forward_features(images[start : start + batch_size].to(device))
            reports += generator.generate(features, **decode)
    return reports


# ---------------------------------------------------------------------------------------------


def _tokenizer(section: ReportSection, texts: list[str], run: Path, resume: bool) -> Any:
    """The decoder's own tokenizer, or a BPE learnt on ``texts`` (the training split's) and
    kept in the run, so a resumed run tokenises as the interrupted one did."""
    if section.decoder != "scratch":
        return hf_tokenizer(section.decoder)
    path = run / TOKENIZER_FILE
    if resume and path.is_file():
        return load_tokenizer(path, BPE_SPECIALS)
    tokenizer = train_bpe(texts, section.vocab_size)
    run.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, path)
    return tokenizer


def _image_tokens(encoder: Encoder) -> int:
    """How many patch tokens ``encoder`` gives per image (one blank image's worth)."""
    c = encoder.contract
    device = next(encoder.parameters()).device
    blank = torch.zeros(1, c.channels, c.size, c.size, device=device)
    with torch.no_grad():
        return int(encoder.forward_features(blank).tokens.shape[1])


def _check_positions(source: str, decoder: nn.Module, needed: int) -> None:
    config = decoder.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 0)
    if limit and limit < needed:
        raise MedtuneError(f"{source}: the decoder takes {limit} positions; the image prefix "
                           f"and report.max_tokens need {needed}")  # fmt: skip


def _train_loader(train: Any, config: FinetuneConfig) -> Any:
    from medtune.train.data import make_loader

    # Under torchrun each rank reads its own share of every epoch.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return make_loader(train, config.data.batch_size, shuffle=True, workers=config.data.workers,
                       seed=config.loop.seed, rank=rank, world_size=world)  # fmt: skip


def _evaluator(val: Any, config: FinetuneConfig, common: str) -> Callable[[nn.Module], dict]:
    from medtune.train.data import make_loader

    batch_size = config.data.eval_batch_size or config.data.batch_size
    loader = make_loader(val, batch_size, shuffle=False, workers=config.data.workers,
                         seed=config.loop.seed)  # fmt: skip
    decode = {key: getattr(config.report, key) for key in DECODE_KEYS} | {"seed": config.loop.seed}

    def evaluate(model: ReportModel) -> dict[str, float]:
        device = next(model.parameters()).device
        loss_sum, tokens = 0.0, 0
        generated: list[str] = []
        references: list[str] = []
        for batch in loader:
            features = model.prepared.features(batch["image"].to(device))
            ids, mask = model.generator.tokenize(batch["text"])
            counted = int(mask[:, 1:].sum())  # the tokens the loss averages over
            loss_sum += float(model.generator.loss(features, ids, mask)) * counted
            tokens += counted
            take = EVAL_IMAGES - len(generated)
            if take > 0:
                part = Features(features.pooled[:take], features.tokens[:take], features.grid)
                generated += model.generator.generate(part, **decode)
                references += list(batch["text"][:take])
        metrics = report_metrics(generated, references, common)
        return {"val_loss": loss_sum / max(tokens, 1), **metrics}

    return evaluate


def export_report_model(
    directory: Path,
    backbone: Backbone,
    prepared: Prepared,
    generator: ReportGenerator,
    section: ReportSection,
    info: dict[str, Any] | None = None,
) -> Path:
    """Export backbone and generator as ``directory`` (see :func:`load_report_model`), with
    what rebuilds the generator (decoder config, conditioning, tokenizer, decoding defaults)
    and ``info`` (metrics, recipe). The decoder's LoRA adapters are merged first, in place;
    the backbone's adapter is also written alone under ``adapter/``."""
    from medtune.models.export import export_model

    generator = merge_decoder_lora(generator)  # plain weights: the decoder rebuilds from config
    record = {
        "decoder": decoder_record(section, generator),
        "conditioning": generator.conditioning,
        "tokenizer": TOKENIZER_FILE,
        "special_tokens": special_tokens(generator.tokenizer),
        "generation": {key: getattr(section, key) for key in DECODE_KEYS},
        **dict(info or {}),
    }

    def write_extra(tmp: Path) -> None:
        save_tokenizer(generator.tokenizer, tmp / TOKENIZER_FILE)
        save_adapter(prepared, tmp / "adapter")

    return export_model(
        directory, task="report", backbone=backbone.config, encoder=finish_backbone(prepared),
        parts={"generator": generator}, info=record, write_extra=write_extra,
    )  # fmt: skip


def _summary(prepared, generator, trained, train, val, result, collapse) -> list[str]:
    backbone = sum(p.numel() for p in prepared.trainable)
    decoder = sum(p.numel() for p in trained)
    lines = [
        f"{prepared.mode}: {backbone:,} backbone parameters trained; generator "
        f"{decoder:,} ({generator.conditioning}, {len(generator.tokenizer):,} tokens)",
        f"{len(train)} training images, {len(val) if val is not None else 0} validation images",
    ]
    scores = result.last_eval
    if "distinct" in scores:
        lines.append(
            f"val_loss {scores['val_loss']:.3f}, BLEU-4 {scores['bleu4']:.3f}, distinct "
            f"{scores['distinct']:.2f}, most common report {scores['common_report_share']:.2f} "
            f"at step {result.steps}"
        )
    if collapse.get("warning"):
        lines.append(collapse["warning"])
    return lines


def _normal(text: str) -> str:
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
