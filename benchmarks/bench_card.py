"""Benchmark `medtune card`: seconds to write the dataset card of a 100,000-image workspace.

Builds a synthetic workspace in a temporary folder (fixed seed): catalog rows over 20 sites of
skewed sizes, 4 manufacturers, 8 anatomies and about 30,000 patients, 15 label columns, a split
column, random 256-bit hashes with 300 planted near-duplicate pairs, and 4 shards of 256x256
uint8 images that the rows point into. Then times the `medtune card` command end to end
(start-up, statistics, plots, card.md, card.html, CSVs; best of --repeats). Target: under 60 s.

    python benchmarks/bench_card.py                 # 100,000 rows
    python benchmarks/bench_card.py --rows 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from medtune.workspace import Workspace

TARGET_S = 60.0
SITES = 20
VENDORS = {  # manufacturer -> (models, original rows x cols, pixel spacing mm)
    "Helios Imaging": (["Aurora DR 700", "Aurora Mobile 2"], (3000, 2500), 0.139),
    "Kestrel Radiography": (["KR-CR 120", "KR-DR 9"], (2500, 2048), 0.15),
    "Norland Medical Systems": (["NX-Flex 4343"], (3072, 3072), 0.14),
    "Orvane Healthcare": (["OrvaScan 43", "OrvaScan 35"], (2800, 2300), 0.16),
}
ANATOMY = {  # body part -> (share of images, views)
    "CHEST": (0.5, ["PA", "AP", "LL"]),
    "KNEE": (0.1, ["AP", "LL"]),
    "HAND": (0.08, ["PA", "LLO"]),
    "FOOT": (0.07, ["AP", "LLO"]),
    "LSPINE": (0.07, ["AP", "LL"]),
    "SHOULDER": (0.07, ["AP", "RLO"]),
    "PELVIS": (0.06, ["AP"]),
    "SKULL": (0.05, ["PA", "LL"]),
}
FINDINGS = (
    "nodule", "pleural_effusion", "cardiomegaly", "pneumothorax", "consolidation", "fracture",
    "no_finding", "enlarged_cardiomediastinum", "lung_opacity", "lung_lesion", "edema",
    "pneumonia", "atelectasis", "pleural_other", "support_devices",
)  # fmt: skip
SIDE = 256
SHARDS = 4
PER_SHARD = 256


def build_workspace(root: Path, rows: int, seed: int = 0) -> Path:
    """A workspace of ``rows`` catalog rows under ``root``; returns its path."""
    from medtune.config import IngestConfig, dump_yaml
    from medtune.dataset.catalog import CATALOG_SCHEMA, write_catalog

    rng = np.random.default_rng(seed)
    ws = Workspace(root / "ws").create()
    _write_shards(ws, rng)
    columns = _catalog_columns(rows, rng)
    labels = _label_columns(columns["site"], rng)
    split = _split_column(columns["patient_id"])
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in CATALOG_SCHEMA})
    metadata = {
        "labels": {"findings": list(FINDINGS), "columns": [f"label_{f}" for f in FINDINGS],
                   "rules": ["findings.yaml", "modifiers.yaml"], "medtune_version": "0.1.0"},
        "splits": {"split": {"method": "random", "seed": seed, "by": "patient_id"}},
    }  # fmt: skip
    write_catalog(ws.catalog_path, table, {**labels, "split": split}, metadata)
    _write_inputs(ws, rows, rng)
    ws.save_config(dump_yaml(IngestConfig(size=SIDE), exclude={"workers"}))
    return ws.root


def _write_shards(ws: Workspace, rng: np.random.Generator) -> None:
    # Smooth random images (a blurred field, like a radiograph's soft gradients) with a border.
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    for shard in range(SHARDS):
        images = np.empty((PER_SHARD, SIDE, SIDE), np.uint8)
        for k in range(PER_SHARD):
            a, b, c = rng.uniform(0.5, 3, 3)
            field = np.sin(a * x * 3 + b) * np.cos(c * y * 3) * 90 + 128
            images[k] = np.clip(field + rng.normal(0, 8, (SIDE, SIDE)), 0, 255)
            images[k, :, :20] = 0  # letterbox padding
            images[k, :, -20:] = 0
        np.save(ws.shard_path(shard), images)


def _catalog_columns(rows: int, rng: np.random.Generator) -> dict[str, object]:
    patients = max(1, rows * 3 // 10)  # ~3.3 images per patient
    site_weights = 1 / np.arange(1, SITES + 1) ** 0.8  # a few large sites, a long tail
    patient_site = rng.choice(SITES, patients, p=site_weights / site_weights.sum())
    vendors = list(VENDORS)
    site_vendor = rng.integers(0, len(vendors), SITES)
    patient = rng.integers(0, patients, rows)
    site = patient_site[patient]
    vendor = np.where(rng.random(rows) < 0.9, site_vendor[site], rng.integers(0, 4, rows))
    parts = list(ANATOMY)
    share = np.array([ANATOMY[p][0] for p in parts])
    part = rng.choice(len(parts), rows, p=share / share.sum())
    study = rng.integers(0, 3, rows)
    age = np.clip(rng.normal(55, 18, patients), 0, 90).astype(np.int16)
    sex = rng.choice(np.array(["F", "M", "O"]), patients, p=[0.52, 0.47, 0.01])
    origin = np.array([VENDORS[vendors[v]][1] for v in vendor])
    spacing = np.array([VENDORS[vendors[v]][2] for v in vendor], dtype=np.float32)
    scale = SIDE / origin.max(axis=1)
    names = [f"{i:07d}" for i in range(rows)]
    return {
        "image_id": [f"I{n}" for n in names], "input_id": [f"{i:016x}" for i in range(rows)],
        "frame": np.zeros(rows, np.int32), "patient_id": [f"P{p:06d}" for p in patient],
        "study_id": [f"S{p:06d}-{s}" for p, s in zip(patient, study, strict=True)],
        "series_uid": [f"2.25.{i}" for i in range(rows)],
        "sop_uid": [f"2.25.9{i}" for i in range(rows)], "site": [f"site-{s:02d}" for s in site],
        "manufacturer": [vendors[v] for v in vendor],
        "model": [VENDORS[vendors[v]][0][i % len(VENDORS[vendors[v]][0])]
                  for i, v in enumerate(vendor)],
        "modality": ["DX"] * rows, "body_part": [parts[p] for p in part],
        "view": [ANATOMY[parts[p]][1][i % len(ANATOMY[parts[p]][1])] for i, p in enumerate(part)],
        "laterality": ["U"] * rows, "sex": sex[patient].tolist(),
        "age": [None if i % 50 == 0 else int(a) for i, a in enumerate(age[patient])],
        "study_date": (np.datetime64("2015-01-01") + rng.integers(0, 3000, rows)).tolist(),
        "photometric": ["MONOCHROME2"] * rows, "bits_stored": np.full(rows, 12, np.int16),
        "transfer_syntax": ["1.2.840.10008.1.2.1"] * rows, "pixel_spacing_mm": spacing,
        "rows": origin[:, 0].astype(np.int32), "cols": origin[:, 1].astype(np.int32),
        "scale": scale.astype(np.float32),
        "pad_x": ((SIDE - origin[:, 1] * scale) // 2).astype(np.int32),
        "pad_y": ((SIDE - origin[:, 0] * scale) // 2).astype(np.int32),
        "burned_in_text": rng.random(rows) < 0.05, "phash": _hashes(rows, patient, rng),
        "shard": (np.arange(rows) % SHARDS).astype(np.int32),
        "shard_file": [f"shard-{i % SHARDS:05d}" for i in range(rows)],
        "index": (np.arange(rows) // SHARDS % PER_SHARD).astype(np.int32),
    }  # fmt: skip


def _hashes(rows: int, patient: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    # Random hashes, then 300 planted near-duplicates: a copy with up to 8 bits flipped.
    bits = rng.integers(0, 2, (rows, 256), dtype=np.uint8)
    for _ in range(min(300, rows // 2)):
        source, target = rng.integers(0, rows, 2)
        bits[target] = bits[source]
        bits[target, rng.integers(0, 256, rng.integers(0, 9))] ^= 1
    return [row.tobytes() for row in np.packbits(bits, axis=1)]


def _label_columns(sites: list[str], rng: np.random.Generator) -> dict[str, pa.Array]:
    rows = len(sites)
    out = {}
    for k, finding in enumerate(FINDINGS):
        p_pos = 0.02 + 0.25 * (k % 5) / 4
        draw = rng.random(rows)
        values = np.select([draw < p_pos, draw < p_pos + 0.03, draw < 0.6], [1, -1, 0], 2)
        if finding == "pneumothorax":  # planted: positives concentrated at one site
            values = np.where(np.array(sites) == "site-07", np.where(draw < 0.3, 1, 0), 0)
        out[f"label_{finding}"] = pa.array(values, pa.int8(), mask=values == 2)
    return out


def _split_column(patients: list[str]) -> list[str]:
    # By patient (a multiplicative hash of its number), so no patient straddles splits: 70/10/20.
    bucket = np.array([int(p[1:]) * 2654435761 % 2**32 * 10 >> 32 for p in patients])
    return np.select([bucket < 7, bucket < 8], ["train", "val"], "test").tolist()


def _write_inputs(ws: Workspace, rows: int, rng: np.random.Generator) -> None:
    import pyarrow.parquet as pq

    from medtune.dataset.catalog import INPUTS_SCHEMA

    quarantined = rows // 100
    status = ["ingested"] * rows + ["quarantined"] * quarantined + ["duplicate"] * 50
    stage = [""] * rows + rng.choice(["read", "pixels", "deid"], quarantined).tolist() + [""] * 50
    n = len(status)
    table = pa.table({
        "input_id": [f"{i:016x}" for i in range(n)], "status": status, "stage": stage,
        "reason": [""] * n, "images": [1] * rows + [0] * (n - rows), "deid": ["{}"] * n,
    }, schema=INPUTS_SCHEMA)  # fmt: skip
    pq.write_table(table, ws.deid_dir / "inputs.parquet")


def card_seconds(rows: int, repeats: int = 1, seed: int = 0) -> float:
    """Seconds `write_card` takes on a synthetic workspace of ``rows`` rows (best of
    ``repeats``; the workspace is built first, outside the timing)."""
    return card_times(rows, repeats, seed)[0]


def card_times(rows: int, repeats: int = 1, seed: int = 0) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the best of ``repeats`` runs of the `medtune card`
    command, start-up included. CPU time says what the card costs when other work shares the
    machine and stretches the wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-card-") as tmp:
        root = build_workspace(Path(tmp), rows, seed)
        command = [sys.executable, "-m", "medtune", "card", "-w", str(root)]
        best = (float("inf"), float("inf"))
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            best = min(best, (wall, cpu))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="catalog rows (100,000)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    wall, cpu = card_times(args.rows, args.repeats, args.seed)
    print(
        f"card: {args.rows:,} catalog rows in {wall:.1f} s ({cpu:.1f} s CPU) "
        f"(target {TARGET_S:.0f} s: {wall / TARGET_S:.2f}x of the budget)"
    )


if __name__ == "__main__":
    main()
