"""Benchmark training on CPU: the data path against the training step, measured in this run.

1. loader: images/s of medtune's loader (shards memory-mapped, default augmentation, images
   shaped to the model's input contract as training shapes them, ``--workers`` processes)
   against training steps/s x batch of the default model on the same machine (forward, masked
   BCE loss, backward, AdamW), at ``--size`` px. Each figure is the best of its timed epochs or
   steps: other work on the machine only ever slows them. Target: the loader at least 10x the
   step, so training never waits for data.

The workspace is synthetic, written as ingest writes it (ShardWriter shards of 1,024 images,
write_catalog with label and split columns): ``--images`` smooth random 256 px images in a
temporary folder. The model: ``--model``, a backbone of medtune's registry with a linear head
(default ``medtune-vit-tiny``), or ``timm:NAME`` (random weights, one gray channel). Each
section is a function of (args, workspace) in :data:`SECTIONS`; more follow.

    python benchmarks/bench_train.py                       # 2,000 images at 128 px
    python benchmarks/bench_train.py --images 500 --size 224 --model timm:vit_tiny_patch16_224
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from medtune.models.contract import InputContract

TARGET_LOADER_VS_STEP = 10.0
FINDINGS = ("effusion", "nodule", "pneumothorax", "cardiomegaly", "fracture")


def build_workspace(root: Path, images: int = 2000, side: int = 256, seed: int = 0) -> Path:
    """A workspace of ``images`` uint8 ``side`` px images under ``root`` (shards of 1,024,
    label_* int8 columns with uncertain and null values, a train/val/test split column)."""
    from medtune.dataset.catalog import CATALOG_SCHEMA, write_catalog
    from medtune.dataset.shards import ShardWriter
    from medtune.workspace import Workspace

    rng = np.random.default_rng(seed)
    ws = Workspace(root / "ws").create()
    shard_of, index_of = [], []
    y, x = np.mgrid[0:side, 0:side] / side
    noise = rng.normal(0, 8, (16, side, side))  # a pool: drawing 2,000 fields took most of 20 s
    for shard in range(-(-images // 1024)):
        writer = ShardWriter(ws.shard_path(shard), side, "uint8")
        for k in range(min(1024, images - shard * 1024)):
            # Soft gradients and noise, as in a radiograph; the content does not change the cost.
            a, b, c = rng.uniform(0.5, 3, 3)
            field = np.sin(a * x * 3 + b) * np.cos(c * y * 3) * 90 + 128
            image = np.clip(field + noise[k % 16], 0, 255).astype(np.uint8)
            index_of.append(writer.add(image))
            shard_of.append(shard)
        writer.finish()
    values = {
        "image_id": [f"I{i:07d}" for i in range(images)],
        "patient_id": [f"P{i // 3:06d}" for i in range(images)],
        "study_id": [f"S{i // 2:07d}" for i in range(images)],
        "body_part": ["CHEST"] * images,
        "shard": shard_of,
        "shard_file": [f"shard-{s:05d}" for s in shard_of],
        "index": index_of,
    }
    table = pa.table({f.name: pa.array(values.get(f.name, [None] * images), f.type)
                      for f in CATALOG_SCHEMA})  # fmt: skip
    labels = {}
    for finding in FINDINGS:
        draw = rng.random(images)
        codes = np.select([draw < 0.15, draw < 0.2, draw < 0.7], [1, -1, 0], 2)
        labels[f"label_{finding}"] = pa.array(codes, pa.int8(), mask=codes == 2)
    split = rng.choice(np.array(["train", "val", "test"]), images, p=[0.7, 0.1, 0.2]).tolist()
    write_catalog(ws.catalog_path, table, {**labels, "split": split})
    return ws.root


def loader_throughput(
    workspace: Path,
    contract: InputContract,
    batch_size: int = 64,
    workers: int = 2,
    epochs: int = 3,
    seed: int = 0,
) -> float:
    """Images/s of medtune's loader with the default augmentation: the best epoch after the
    first (which starts the workers and fills the page cache)."""
    from medtune.train.augment import DEFAULT_AUGMENT
    from medtune.train.data import ImageDataset, make_loader

    data = ImageDataset(workspace, contract=contract, augment=DEFAULT_AUGMENT)
    loader = make_loader(data, batch_size, shuffle=True, workers=workers, seed=seed)
    for _ in loader:  # warm-up epoch
        pass
    best = 0.0
    for _ in range(epochs - 1):
        count, start = 0, time.perf_counter()
        for batch in loader:
            count += len(batch["index"])
        best = max(best, count / (time.perf_counter() - start))
    return best


def timm_model(name: str, contract: InputContract, classes: int) -> nn.Module:
    """A timm model with random weights at the contract's size and channels."""
    import timm

    return timm.create_model(name, pretrained=False, img_size=contract.size,
                             in_chans=contract.channels, num_classes=classes)  # fmt: skip


def step_throughput(
    model: nn.Module,
    contract: InputContract,
    classes: int,
    batch_size: int = 32,
    steps: int = 5,
    warmup: int = 2,
) -> float:
    """Images/s of training steps (forward, masked BCE, backward, AdamW) of ``model`` on
    batches shaped by ``contract``, in this process's torch threads: the best of ``steps``."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, contract.channels, contract.size, contract.size)
    images = torch.randn(shape, generator=generator)
    labels = (torch.rand(batch_size, classes, generator=generator) < 0.2).float()
    mask = (torch.rand(batch_size, classes, generator=generator) < 0.9).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        logits = model(images)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        ((loss * mask).sum() / mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def make_model(name: str, size: int, classes: int) -> tuple[nn.Module, InputContract]:
    """The model to time and the input contract the loader shapes images to: a medtune
    backbone by registry name with a linear head, or ``timm:NAME`` (one gray channel)."""
    if name.startswith("timm:"):
        contract = InputContract(channels=1, size=size, mean=(0.5,), std=(0.25,))
        return timm_model(name.removeprefix("timm:"), contract, classes), contract
    from medtune.models.registry import create_backbone

    encoder = create_backbone(name, image_size=size)
    return nn.Sequential(encoder, nn.Linear(encoder.dim, classes)), encoder.contract


def loader_section(args: argparse.Namespace, workspace: Path) -> None:
    """Section 1: the loader against the training step of the default model."""
    model, contract = make_model(args.model, args.size, len(FINDINGS))
    loader = loader_throughput(workspace, contract, args.batch, args.workers, args.epochs)
    step = step_throughput(model, contract, len(FINDINGS), args.step_batch, args.steps)
    ratio = loader / step
    print(f"loader: {loader:,.0f} images/s ({args.workers} workers, {args.size} px, default "
          f"augmentation, batch {args.batch})")  # fmt: skip
    print(f"step:   {step:,.1f} images/s ({args.model}, batch {args.step_batch}, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print(f"loader/step: {ratio:.1f}x (target >= {TARGET_LOADER_VS_STEP:.0f}x: "
          f"{'met' if ratio >= TARGET_LOADER_VS_STEP else 'MISSED'})")  # fmt: skip


# Sections run in this order; each takes (args, workspace) and prints its figures.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"loader": loader_section}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--images", type=int, default=2000, help="synthetic images (2,000)")
    parser.add_argument("--size", type=int, default=128, help="model input side, px (128)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (2)")
    parser.add_argument("--batch", type=int, default=64, help="loader batch (64)")
    parser.add_argument("--epochs", type=int, default=4, help="loader epochs, first untimed")
    parser.add_argument("--model", default="medtune-vit-tiny", help="backbone name or timm:NAME")
    parser.add_argument("--step-batch", type=int, default=32, help="training batch (32)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        start = time.perf_counter()
        workspace = build_workspace(Path(tmp), args.images, seed=args.seed)
        print(f"workspace: {args.images:,} images at 256 px in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        for name in args.sections:
            SECTIONS[name](args, workspace)


if __name__ == "__main__":
    main()
