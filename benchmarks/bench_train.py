"""Benchmark training: the data path, the loop and a GPU step, ratios measured in this run.

1. loader: images/s of medtune's loader (shards memory-mapped, default augmentation, images
   shaped to the model's input contract as training shapes them, ``--workers`` processes)
   against training steps/s x batch of the default model on the same machine (forward, masked
   BCE loss, backward, AdamW), at ``--size`` px. Each figure is the best of its timed epochs or
   steps: other work on the machine only ever slows them. Target: the loader at least 10x the
   step, so training never waits for data.
2. loop: medtune's ``fit`` against a plain hand-written PyTorch loop (AdamW with the same
   parameter groups, the same cosine rate, clipping, the loss read every 10 steps, model and
   optimizer saved at the end) on the same model and the same batches of medtune's loader
   (held in memory, so neither waits for the other's workers), fp32, no EMA, log_every 10 as
   the default recipe. Runs alternate, ``--repeats`` each after an untimed warm-up; the figure
   is the median of the ratios of back-to-back pairs. Target: at least 0.95x.
3. gpu (CUDA only, not in the default run): ViT-B/16 at 224 px (``--gpu-model``, default
   medtune-vit-base, 1 gray channel) with a linear head, bf16 autocast, fused AdamW, batch
   ``--gpu-batch``: images/s and model FLOPs utilisation (FLOPs of forward and backward counted
   by FlopCounterMode, over the device's peak dense bf16 rate) of (a) the bare step compiled
   with torch.compile on a device-resident batch, (b) medtune's fit with ``compile=True`` on
   the same, (c) fit end to end: stored uint8 pixels from the shards (the loader only copies
   and collates) augmented on the GPU (train/gpu_augment.py). Target: at least 40% MFU.
   Measured on an H100 80GB HBM3 (torch 2.11), with the residual stream in bf16 and the
   patch embedding as one matrix product: batch 512: (a) 3,733 images/s, 39.8% MFU; (b) 0.97x
   of (a), 38.8%; (c) 3,535 images/s, 37.7%, 0.95x. Batch 768: (a) 3,754 images/s, 40.0%;
   (b) 39.2%; (c) 3,567 images/s, 38.1%. (Before those two changes, batch 512: (a) 36.5%.)
   What is left is memory-bound work around the matrix products (layer norms, GELU).

The workspace is synthetic, written as ingest writes it (ShardWriter shards of 1,024 images,
write_catalog with label and split columns): ``--images`` smooth random 256 px images in a
temporary folder. The model: ``--model``, a backbone of medtune's registry with a linear head
(default ``medtune-vit-tiny``), or ``timm:NAME`` (random weights, one gray channel). Each
section is a function of (args, workspace) in :data:`SECTIONS`.

    python benchmarks/bench_train.py                       # loader and loop, 2,000 images, 128 px
    python benchmarks/bench_train.py --section gpu --images 8192      # on a GPU machine
    python benchmarks/bench_train.py --images 500 --size 224 --model timm:vit_tiny_patch16_224
"""

from __future__ import annotations

import argparse
import dataclasses
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
TARGET_FIT_VS_PLAIN = 0.95
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


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The multi-label loss of fine-tuning: BCE over the labels the mask keeps."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def classify_step(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """medtune's step function for the benchmark: masked BCE of the model's logits."""
    return {"loss": masked_bce(model(batch["image"]), batch["labels"], batch["label_mask"])}


def loader_batches(workspace: Path, contract: InputContract, args: argparse.Namespace) -> list:
    """``args.loop_steps`` batches of medtune's loader (default augmentation), held in memory so
    both loops train on the same batches and neither waits for the other's workers."""
    from medtune.train.augment import DEFAULT_AUGMENT
    from medtune.train.data import ImageDataset, make_loader

    data = ImageDataset(workspace, contract=contract, augment=DEFAULT_AUGMENT)
    loader = make_loader(data, args.step_batch, workers=args.workers, seed=args.seed,
                         drop_last=True)  # fmt: skip
    batches = []
    while len(batches) < args.loop_steps:
        for batch in loader:
            batches.append(batch)
            if len(batches) == args.loop_steps:
                break
    return batches


def plain_loop(model: nn.Module, batches: list, config, out: Path) -> None:
    """What a hand-written PyTorch loop does: AdamW with the same parameter groups, the same
    cosine rate, gradient clipping, the loss read every ``log_every`` steps, and the model and
    optimizer saved at the end (torch.save)."""
    from medtune.train.schedule import cosine_lr

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    model.train()
    losses = []
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.lr, config.warmup_steps, config.max_steps)
        batch = batches[step % len(batches)]
        loss = classify_step(model, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % config.log_every == 0:
            losses.append(loss.item())
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out)


def loop_section(args: argparse.Namespace, workspace: Path) -> None:
    """Section 2: medtune's ``fit`` against the plain loop, same model, batches and settings,
    alternating; medians of ``--repeats`` runs each after one untimed warm-up run each."""
    import copy
    import statistics

    from medtune.train.loop import LoopConfig, fit

    initial, contract = make_model(args.model, args.size, len(FINDINGS))
    batches = loader_batches(workspace, contract, args)
    # The default recipe's loop (config_train.LoopSection): log every 10 steps, clip at 1.0,
    # checkpoint at the end only; fp32 and no EMA on a CPU.
    config = LoopConfig(max_steps=args.loop_steps, lr=1e-3, warmup_steps=args.loop_steps // 10,
                        precision="fp32", log_every=10, checkpoint_every=10**6)  # fmt: skip

    def timed(name: str, run: int, cfg: LoopConfig, root: Path) -> float:
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        if name == "fit":
            fit(model, classify_step, batches, cfg, root / f"fit-{run}", progress=False)
        else:
            plain_loop(model, batches, cfg, root / f"plain-{run}.pt")
        return cfg.max_steps * args.step_batch / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {"fit": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        warm = dataclasses.replace(config, max_steps=2)
        for name in rates:
            timed(name, -1, warm, Path(tmp))
        for run in range(args.repeats):
            for name in ("fit", "plain") if run % 2 == 0 else ("plain", "fit"):
                rates[name].append(timed(name, run, config, Path(tmp)))
    fit_rate, plain_rate = (statistics.median(rates[n]) for n in ("fit", "plain"))
    # Each pair ran back to back: its ratio cancels the load that other processes put on the
    # machine at that moment, which the medians of rates alone do not.
    ratio = statistics.median(f / p for f, p in zip(rates["fit"], rates["plain"], strict=True))
    print(f"loop: fit {fit_rate:.1f} images/s, plain loop {plain_rate:.1f} images/s (medians of "
          f"{args.repeats}; {args.loop_steps} steps of {args.step_batch}, {args.model}, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print(f"  fit runs {', '.join(f'{r:.1f}' for r in rates['fit'])}; plain runs "
          f"{', '.join(f'{r:.1f}' for r in rates['plain'])}")  # fmt: skip
    met = "met" if ratio >= TARGET_FIT_VS_PLAIN else "MISSED"
    print(f"fit/plain: {ratio:.3f}x, median of the pairs' ratios "
          f"(target >= {TARGET_FIT_VS_PLAIN}x: {met})")  # fmt: skip


# Peak dense bf16 tensor-core rate, TFLOP/s, by device name (the first match wins).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0))  # fmt: skip
TARGET_MFU = 0.40
NO_CUDA = "gpu section: no CUDA device here; run it on a GPU machine (--section gpu --images 8192)"


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """The device's peak bf16 rate and where it came from."""
    if override:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value, f"{key} datasheet, dense bf16"
    return None, "unknown device: pass --peak-tflops"


def train_flops_per_image(model: nn.Module, batch: dict, device: torch.device) -> float:
    """FLOPs of one forward and backward of ``batch`` under bf16 autocast, counted by torch's
    FlopCounterMode (matrix products, convolutions, attention), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.autocast(device.type, torch.bfloat16):
        classify_step(model, batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["image"])


def attention_kernels(model: nn.Module, batch: dict) -> list[str]:
    """Names of the CUDA kernels that ran attention in one eager bf16 step (flash or
    memory-efficient SDPA, or a plain matmul-softmax fallback)."""
    from torch.profiler import ProfilerActivity, profile

    small = {k: v[:8] for k, v in batch.items()}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", torch.bfloat16):
            classify_step(model, small)["loss"].backward()
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    words = ("flash", "fmha", "attention", "efficient", "softmax")
    names = {e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)}
    return sorted(names)


def model_step_rate(
    model: nn.Module, batch: dict, steps: int, warmup: int, device: torch.device, top: int = 0
) -> float:
    """(a) Images/s of the bare step: torch.compile'd model, bf16 autocast, masked BCE,
    backward, gradient clipping, fused AdamW, on one device-resident batch."""
    compiled = torch.compile(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16):
            loss = classify_step(compiled, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    rate = steps * len(batch["image"]) / (time.perf_counter() - start)
    if top:
        print_top_kernels(step, device, top)
    return rate


def print_top_kernels(step: Callable[[], None], device: torch.device, top: int) -> None:
    """Where the device time of three steps goes: the ``top`` kernels by total time."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(3):
            step()
        _synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=70))


def fit_rate(model: nn.Module, step_fn, batches, steps: int, warmup: int, run_dir: Path) -> float:
    """Images/s of medtune's fit (compile on, bf16), from its own metrics.jsonl: the median of
    the logging windows after ``warmup`` steps (the first ones include compilation)."""
    import statistics

    from medtune.train.loop import LoopConfig, fit
    from medtune.train.tracking import read_metrics

    window = max(1, steps // 4)
    config = LoopConfig(max_steps=warmup + steps, lr=1e-4, compile=True, log_every=window,
                        checkpoint_every=10**6)  # fmt: skip
    fit(model, step_fn, batches, config, run_dir, progress=False)
    rates = [r["samples_per_s"] for r in read_metrics(run_dir / "metrics.jsonl")
             if r["kind"] == "train" and r["step"] > warmup + window - 1]  # fmt: skip
    return statistics.median(rates)


def stored_loader(workspace: Path, contract: InputContract, args: argparse.Namespace):
    """(c)'s loader: stored uint8 pixels, memory-mapped and collated by ``--gpu-workers``."""
    from medtune.train.data import make_loader
    from medtune.train.gpu_augment import StoredPixels

    data = StoredPixels(workspace, contract=contract)
    return make_loader(data, args.gpu_batch, workers=args.gpu_workers, seed=args.seed,
                       drop_last=True)  # fmt: skip


def loader_rate(loader, batches: int) -> float:
    """Images/s the loader hands over (pinned uint8 batches), after one batch of warm-up."""
    it = iter(loader)
    next(it)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        count += len(next(it)["image"])
    return count / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_section(args: argparse.Namespace, workspace: Path) -> None:
    """Section 3 (CUDA only): ViT-B/16 at 224 px training in bf16: images/s and MFU of (a) the
    bare compiled step, (b) medtune's fit with compile, (c) fit end to end from the shards with
    the augmentation on the GPU."""
    if not torch.cuda.is_available():
        raise SystemExit(NO_CUDA)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the loss) on tensor cores
    gpu_figures(args, workspace, torch.device("cuda"))


def gpu_figures(args: argparse.Namespace, workspace: Path, device: torch.device) -> None:
    """The figures of :func:`gpu_section` on ``device`` (a CPU runs it too, slowly, for a
    check of the code path; MFU then needs --peak-tflops)."""
    from medtune.train.gpu_augment import BatchAugment

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak, source = peak_tflops(name, args.peak_tflops)
    classes, b = len(FINDINGS), args.gpu_batch
    generator = torch.Generator(device).manual_seed(args.seed)
    model, contract = make_model(args.gpu_model, 224, classes)
    shape = (b, contract.channels, contract.size, contract.size)
    batch = {"image": torch.randn(shape, device=device, generator=generator),
             "labels": (torch.rand(b, classes, device=device, generator=generator) < 0.2).float(),
             "label_mask": torch.ones(b, classes, device=device)}  # fmt: skip
    model.to(device)
    flops = train_flops_per_image(model, batch, device)
    params = sum(p.numel() for p in model.parameters())
    print(f"gpu: {name}, torch {torch.__version__}, peak {peak} TFLOP/s ({source})")
    print(f"model: {args.gpu_model} + linear head at 224 px, {contract.channels} channel(s), "
          f"{params / 1e6:.1f} M parameters, {flops / 1e9:.1f} GFLOP per image forward+backward "
          f"(FlopCounterMode); batch {b}, bf16 autocast, fused AdamW")  # fmt: skip
    if device.type == "cuda":
        print(f"attention kernels (eager bf16): {'; '.join(attention_kernels(model, batch))}")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps, warmup = args.gpu_steps, args.gpu_warmup
    results = {"a": model_step_rate(model, batch, steps, warmup, device, args.gpu_profile)}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model.load_state_dict(initial)
        # The same batch each step, as (a); one list item per step, so the loop's epochs
        # (a reshuffle and a look at the generators each) do not come into it.
        same = [batch] * (steps + warmup)
        results["b"] = fit_rate(model, classify_step, same, steps, warmup, Path(tmp) / "b")
        loader = stored_loader(workspace, contract, args)
        results["loader"] = loader_rate(loader, min(len(loader) - 1, 20))
        augment = BatchAugment(contract)

        def augmented_step(m: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
            return classify_step(m, {**batch, "image": augment(batch["image"])})

        model.load_state_dict(initial)
        results["c"] = fit_rate(model, augmented_step, loader, steps, warmup, Path(tmp) / "c")
    print_gpu_results(results, flops, peak, args.gpu_workers)


def print_gpu_results(results: dict[str, float], flops: float, peak: float | None, workers: int):
    """Images/s, MFU and the ratio to (a) of each measurement, and the loader's own rate."""
    labels = {"a": "(a) compiled step, device-resident batch", "b": "(b) fit, compile=True",
              "c": "(c) fit from shards, GPU augment"}  # fmt: skip
    for key, label in labels.items():
        rate = results[key]
        mfu = f"MFU {rate * flops / (peak * 1e12):.1%}" if peak else "MFU n/a"
        print(f"{label:44s} {rate:8,.0f} images/s  {mfu}  ({rate / results['a']:.2f}x of a)")
    print(f"loader alone: {results['loader']:,.0f} images/s of uint8 256 px "
          f"({workers} workers, pinned)")  # fmt: skip
    if peak:
        best = results["c"] * flops / (peak * 1e12)
        print(f"end-to-end MFU {best:.1%} (target >= {TARGET_MFU:.0%}: "
              f"{'met' if best >= TARGET_MFU else 'MISSED'})")  # fmt: skip


# Sections run in this order; each takes (args, workspace) and prints its figures. The default
# run takes the CPU sections; "gpu" runs when named (--section gpu).
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "loader": loader_section,
    "loop": loop_section,
    "gpu": gpu_section,
}
CPU_SECTIONS = ("loader", "loop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", "--section", nargs="+", choices=list(SECTIONS),
                        default=list(CPU_SECTIONS), help="default: the CPU sections")  # fmt: skip
    parser.add_argument("--images", type=int, default=2000, help="synthetic images (2,000)")
    parser.add_argument("--size", type=int, default=128, help="model input side, px (128)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes (2)")
    parser.add_argument("--batch", type=int, default=64, help="loader batch (64)")
    parser.add_argument("--epochs", type=int, default=4, help="loader epochs, first untimed")
    parser.add_argument("--model", default="medtune-vit-tiny", help="backbone name or timm:NAME")
    parser.add_argument("--step-batch", type=int, default=32, help="training batch (32)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (5)")
    parser.add_argument("--loop-steps", type=int, default=12, help="steps per loop run (12)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each loop (5)")
    parser.add_argument("--gpu-model", default="medtune-vit-base", help="ViT-B/16, 1 channel")
    parser.add_argument("--gpu-batch", type=int, default=512, help="GPU training batch (512)")
    parser.add_argument("--gpu-steps", type=int, default=40, help="timed GPU steps (40)")
    parser.add_argument("--gpu-warmup", type=int, default=10, help="untimed GPU steps (10)")
    parser.add_argument("--gpu-workers", type=int, default=8, help="loader processes for (c)")
    parser.add_argument("--gpu-profile", type=int, default=0, help="print the N top kernels of (a)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "gpu" in args.sections and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA)  # before spending time on the workspace
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        start = time.perf_counter()
        workspace = build_workspace(Path(tmp), args.images, seed=args.seed)
        print(f"workspace: {args.images:,} images at 256 px in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        for name in args.sections:
            SECTIONS[name](args, workspace)


if __name__ == "__main__":
    main()
