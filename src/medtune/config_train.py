"""Recipes of the training commands: ``medtune pretrain`` and ``medtune finetune``.

Each recipe names a workspace, a backbone from the registry, the rows to train on, the
objective or task with its options, and the loop. Sections are shared: a pretraining run and a
fine-tuning run read their images, build their backbone and step their loop the same way.
Example (configs/finetune/classify-lora.yaml)::

    kind: finetune
    workspace: medtune-demo
    task: classify
    mode: lora
    backbone: {name: medtune-vit-tiny, image_size: 128}
    init: medtune-demo/runs/pretrain-dino/export
    loop: {max_steps: 300, lr: 3.0e-4, warmup_steps: 30}
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medtune.config_base import Recipe


class BackboneSection(Recipe):
    """A backbone of the registry: ``name`` plus the factory's own keys, for example
    ``{name: timm, model_name: vit_small_patch16_224, pretrained_path: w.safetensors}`` or
    ``{name: hf, path: models/rad-dino}``. Keys are checked against the factory's arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    name: str = "medtune-vit-tiny"

    @model_validator(mode="after")
    def _known_keys(self) -> BackboneSection:
        from medtune.models.registry import BACKBONES, backbone_names

        if self.name not in backbone_names():
            raise ValueError(
                f"unknown backbone {self.name!r} (known: {', '.join(backbone_names())})"
            )
        params = inspect.signature(BACKBONES[self.name]).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key in self.options():
            if not takes_any and key not in params:
                raise ValueError(f"backbone {self.name!r} takes no key {key!r} "
                                 f"(it takes {', '.join(params)})")  # fmt: skip
        return self

    def options(self) -> dict[str, Any]:
        """The factory's keyword arguments (every key but ``name``)."""
        return dict(self.model_extra or {})

    def as_mapping(self) -> dict[str, Any]:
        """``{"name": ..., **options}``, as :func:`medtune.models.registry.backbone_from_config`
        takes it and as an export records it."""
        return {"name": self.name, **self.options()}


class TextSection(Recipe):
    """A text tower of ``medtune.models.text``: ``all-minilm-l6-v2`` (the default, pretrained,
    shipped in its wheel), ``hf`` with ``path``, or ``tiny-bert`` for tests."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    name: str = "all-minilm-l6-v2"

    def as_mapping(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.model_extra or {})}


class DataSection(Recipe):
    """Which catalog rows train and which validate, and how they are batched."""

    split_column: str = Field("split", description="catalog column made by `medtune split`")
    train: list[str] = Field(default_factory=lambda: ["train"], min_length=1)
    val: list[str] = Field(default_factory=lambda: ["val"], description="[] for no validation")
    where: str | None = Field(None, description="DuckDB condition, e.g. \"body_part = 'CHEST'\"")
    batch_size: int = Field(32, ge=1, le=65_536)
    eval_batch_size: int | None = Field(None, ge=1, le=65_536, description="default batch_size")
    workers: int = Field(0, ge=0, le=256, description="loader processes; 0 = in the main one")
    augment: dict[str, Any] | None = Field(
        None, description="medtune.train.augment config; None: the task's default"
    )


class LoopSection(Recipe):
    """:class:`medtune.train.loop.LoopConfig`, as a recipe section."""

    max_steps: int = Field(500, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    batch_accumulation: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    monitor: str | None = Field(None, description="metric to keep the best of; None: the task's")
    mode: Literal["min", "max"] | None = None
    seed: int = 0
    deterministic: bool = False
    compile: bool = Field(False, description="torch.compile each block (GPU runs: faster)")
    log_every: int = Field(10, ge=1)
    tracking_uri: str | None = Field(None, description="MLflow store, e.g. sqlite:///mlflow.db")

    def to_loop_config(self, monitor: str, mode: Literal["min", "max"]) -> Any:
        """The loop's config, with the task's ``monitor``/``mode`` unless the recipe set them."""
        from medtune.train.loop import LoopConfig

        values = self.model_dump()
        values["monitor"] = self.monitor or monitor
        values["mode"] = self.mode or mode
        return LoopConfig(**values)


class DinoSection(Recipe):
    """Self-distillation (DINO): a student matches an EMA teacher across multi-crop views;
    with ``ibot``, also on masked patch tokens (iBOT). Defaults suit a tiny ViT on a CPU."""

    out_dim: int = Field(1024, ge=16, description="prototypes of the projection head")
    head_hidden: int = Field(512, ge=16)
    head_bottleneck: int = Field(128, ge=8)
    global_size: int | None = Field(None, ge=16, description="default: the backbone's size")
    local_size: int | None = Field(None, ge=16, description="default: 3/7 of global_size")
    local_crops: int = Field(4, ge=0, le=16)
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp_steps: int = Field(0, ge=0)
    center_momentum: float = Field(0.9, ge=0, lt=1)
    teacher_momentum: float = Field(0.996, ge=0, le=1, description="rises to 1 by a cosine")
    ibot: bool = Field(False, description="add the masked-patch (iBOT) term")
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    ibot_weight: float = Field(1.0, ge=0)

    @field_validator("global_scale", "local_scale", "mask_ratio")
    @classmethod
    def _ordered_fraction_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high <= 1:
            raise ValueError("expected [low, high] with 0 <= low <= high <= 1")
        return value


class ContrastiveSection(Recipe):
    """Image-report contrastive learning (CLIP / ConVIRT InfoNCE) on FINDINGS and IMPRESSION."""

    text: TextSection = Field(default_factory=TextSection)
    projection_dim: int = Field(256, ge=8)
    temperature: float = Field(0.07, gt=0, description="initial; learned unless fixed")
    learn_temperature: bool = True
    text_lr_scale: float = Field(0.1, ge=0, description="text tower lr = lr x this; 0 freezes it")
    sections: bool = Field(True, description="findings and impression only (not the indication)")


class PretrainConfig(Recipe):
    """``medtune pretrain``: self-supervised or image-report pretraining of a backbone."""

    kind: Literal["pretrain"] = "pretrain"
    workspace: Path
    name: str | None = Field(None, description="run name under runs/; default the recipe's")
    objective: Literal["dino", "contrastive"] = "dino"
    backbone: BackboneSection = Field(default_factory=BackboneSection)
    init: Path | None = Field(None, description="an export or run directory to start from")
    data: DataSection = Field(default_factory=DataSection)
    dino: DinoSection = Field(default_factory=DinoSection)
    contrastive: ContrastiveSection = Field(default_factory=ContrastiveSection)
    loop: LoopSection = Field(default_factory=LoopSection)

    _plain_name = field_validator("name")(classmethod(lambda cls, v: _plain_run_name(v)))


class LoraSection(Recipe):
    """PEFT LoRA on the backbone's attention and MLP linears (``targets`` overrides them)."""

    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] | None = Field(None, description="module-name regexes; None: the family's")


class ClassifySection(Recipe):
    """Multi-label classification on label columns of the catalog."""

    labels: list[str] | None = Field(None, description="label columns; None: every label_ column")
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore"
    unmentioned: Literal["ignore", "zeros", "ones"] = "zeros"
    head: Literal["mlp", "linear"] = Field("mlp", description="mlp: three layers, as in probing")
    hidden: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)


class ReportSection(Recipe):
    """Report generation: an image-conditioned GPT-2-architecture decoder."""

    decoder: str = Field("scratch", description="'scratch' (small, trained here) or a local "
                                                "Hugging Face causal LM directory")  # fmt: skip
    conditioning: Literal["prefix", "cross"] = "cross"
    layers: int = Field(3, ge=1, le=48)
    dim: int = Field(256, ge=16)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(2000, ge=100, description="scratch decoder: BPE trained on reports")
    max_tokens: int = Field(128, ge=8, le=2048)
    decoder_lora: bool = Field(False, description="LoRA on a pretrained decoder, else full")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="of the token cross-entropy")
    decode: Literal["beam", "greedy", "sample"] = "beam"
    beams: int = Field(3, ge=1, le=32)
    top_p: float = Field(0.9, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    min_distinct: float = Field(
        0.2, ge=0, le=1, description="collapse guard: least share of distinct validation reports"
    )


class GroundSection(Recipe):
    """Phrase grounding: text query to heat map and box, by patch-text similarity."""

    text: TextSection = Field(default_factory=TextSection)
    projection_dim: int = Field(128, ge=8)
    boxes: Path | None = Field(None, description="box table; default dataset/boxes.parquet")
    threshold: float = Field(0.5, gt=0, lt=1, description="heat-map level that makes the box")
    contrastive_weight: float = Field(
        0.5, ge=0, description="weight of 'its own phrase scores its box above the others'"
    )


class FinetuneConfig(Recipe):
    """``medtune finetune``: adapt a backbone to a task by probe, LoRA or full fine-tuning."""

    kind: Literal["finetune"] = "finetune"
    workspace: Path
    name: str | None = Field(None, description="run name under runs/; default the recipe's")
    task: Literal["classify", "report", "ground"] = "classify"
    mode: Literal["probe", "lora", "full"] = "probe"
    backbone: BackboneSection = Field(default_factory=BackboneSection)
    init: Path | None = Field(None, description="an export or run directory to start from")
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    classify: ClassifySection = Field(default_factory=ClassifySection)
    report: ReportSection = Field(default_factory=ReportSection)
    ground: GroundSection = Field(default_factory=GroundSection)
    loop: LoopSection = Field(default_factory=LoopSection)

    _plain_name = field_validator("name")(classmethod(lambda cls, v: _plain_run_name(v)))


def _plain_run_name(value: str | None) -> str | None:
    if value is not None and (not value or "/" in value or value.startswith(".")):
        raise ValueError("a run name is one plain folder name")
    return value
