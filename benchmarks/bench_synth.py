"""Benchmark `medtune synth`: images per second and peak memory at 1024 px, 1,000 and 10,000 images.

Targets (issue 2): at least 20 images/s on 2 cores, and peak memory that does not grow with the
number of images. Each size runs in a fresh process so its peak RSS is its own; the cohort is
written to a temporary directory and deleted afterwards.

    python benchmarks/bench_synth.py                 # 1,000 and 10,000 images (~10 minutes)
    python benchmarks/bench_synth.py --counts 200 1000 --size 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

TARGET_IMAGES_PER_S = 20.0


def run_one(count: int, size: int, workers: int, anatomies: list[str]) -> dict[str, float]:
    """Generate ``count`` images in this process; report speed and peak memory."""
    from medtune.config import SynthConfig
    from medtune.synth.cohort import generate_cohort

    config = SynthConfig(
        patients=count, size=size, max_images=count, workers=workers, seed=0,
        **({"anatomies": anatomies} if anatomies else {}),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as out:
        start = time.perf_counter()
        generate_cohort(config, os.path.join(out, "cohort"))
        seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"images": count, "seconds": seconds, "images_per_s": count / seconds,
            "peak_parent_mib": own, "peak_worker_mib": children}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--anatomies", nargs="*", default=[], help="default: all")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.size, args.workers, args.anatomies)))
        return
    results = []
    for count in args.counts:
        child = [sys.executable, __file__, "--one", str(count), "--size", str(args.size),
                 "--workers", str(args.workers), "--anatomies", *args.anatomies]  # fmt: skip
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"medtune synth at {args.size} px, {args.workers} workers, {os.cpu_count()} cores")
    print(f"{'images':>8} {'seconds':>9} {'images/s':>9} {'vs target':>10} "
          f"{'parent MiB':>11} {'worker MiB':>11}")  # fmt: skip
    for r in results:
        print(f"{r['images']:>8} {r['seconds']:>9.1f} {r['images_per_s']:>9.1f} "
              f"{r['images_per_s'] / TARGET_IMAGES_PER_S:>9.2f}x "
              f"{r['peak_parent_mib']:>11.0f} {r['peak_worker_mib']:>11.0f}")  # fmt: skip
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = (last["peak_parent_mib"] + last["peak_worker_mib"]) / (
            first["peak_parent_mib"] + first["peak_worker_mib"]
        )
        print(f"peak memory {last['images']} vs {first['images']} images: {growth:.2f}x "
              "(flat is about 1.0x)")  # fmt: skip


if __name__ == "__main__":
    main()
