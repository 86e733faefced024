"""``medtune synth``: plan, render and write a whole cohort, streaming, in constant memory.

Layout of the output directory::

    dicom/<site-id>/...          the PACS export: by-patient folders or DICOM-media style names
    reports/<site-id>.csv|jsonl  each site's RIS export, keyed by accession number
    truth/images.parquet         per image: labels, boxes, masks, anatomy, view, marker, mirror,
                                 sex, age, site, vendor, file path
    truth/reports.parquet        per study and finding: what the report text says
    truth/phi.parquet            every identifying value injected, and where
    truth/masks/*.png            one mask per finding per image
    cohort.json                  the config, counts and medtune version (written last)

Patients are planned in this process (cheap) and rendered by worker processes in ordered,
bounded batches, so the output is byte-identical for a seed whatever the number of workers, and
memory does not grow with the cohort.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medtune import __version__
from medtune.config import SynthConfig, dump_yaml
from medtune.errors import MedtuneError
from medtune.parallel import ordered_map
from medtune.synth import patient as patients
from medtune.synth.plan import PatientPlan, plan_patient
from medtune.synth.sites import Site, make_sites
from medtune.synth.writer import CohortWriter
from medtune.workspace import atomic_write_text, flush_to_disk

Progress = Callable[[str, int, int | None], None]
OUTPUTS = ("dicom", "reports", "truth", "cohort.json")
# Every ~700 images a worker restarts (~1.4 s); recycling every 1,000 patients was 8% faster
# but let the heap creep (peak 1.17x from 1,000 to 10,000 images).
RECYCLE_PATIENTS = 250


@dataclass
class Summary:
    """What a command prints at the end: titled tables (header row first) and lines."""

    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def generate_cohort(
    config: SynthConfig,
    out: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """Write the cohort described by ``config`` into ``out``; return counts to print."""
    out = Path(out)
    from medtune.synth.anatomy import ANATOMY_RENDERERS

    missing = [a.value for a in config.anatomies if a not in ANATOMY_RENDERERS]
    if missing:
        have = ", ".join(sorted(a.value for a in ANATOMY_RENDERERS))
        raise MedtuneError(f"no renderer for anatomy '{missing[0]}' yet (available: {have})")
    _prepare(out, force)
    sites = make_sites(config)
    writer = CohortWriter(out, sites)
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("site", "vendor", "anatomy", "view",
                                                             "finding")}  # fmt: skip
    patients_done = images = 0
    # Flush written files to disk in the background as the cohort grows, so the final sync
    # (before cohort.json) has little left: at 1,000 images it had cost ~10% of the run.
    writeback = _BackgroundSync()
    try:
        for result in _rendered(config, sites, out):
            writer.add(result)
            for row in result.images:
                _count(counts, row)
            images += len(result.images)
            patients_done += 1
            if progress:
                progress("patients", patients_done, config.patients)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        writeback.stop()
    manifest = {
        "medtune_version": __version__,
        # Workers decide speed, not content: leave them out so output depends on content alone.
        "config": config.model_dump(mode="json", exclude={"workers"}),
        "patients": patients_done,
        "images": images,
        "studies": writer.studies,
        "sites": [s.site_id for s in sites],
    }
    atomic_write_text(out / "truth" / "config.yaml", dump_yaml(config, exclude={"workers"}))
    flush_to_disk()  # every DICOM and mask durable before cohort.json says the cohort is whole
    atomic_write_text(out / "cohort.json", json.dumps(manifest, indent=2) + "\n")
    return _summary(counts, out, patients_done, writer.studies, images)


class _BackgroundSync:
    """os.sync() every few seconds on a daemon thread (the parent mostly waits on workers)."""

    def __init__(self, every_s: float = 3.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            flush_to_disk()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MedtuneError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            state = (
                "holds a cohort"
                if (out / "cohort.json").exists()
                else "holds an incomplete cohort (no cohort.json: an interrupted run?)"
                if (out / "dicom").exists()
                else "is not empty"
            )
            raise MedtuneError(f"{out}: {state}; pass --force to replace it")
        strangers = [p.name for p in out.iterdir() if p.name not in OUTPUTS]
        if strangers:
            raise MedtuneError(
                f"{out}: holds files that are not a synthetic cohort ({strangers[0]}, ...); "
                "refusing to replace it"
            )
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _planned(config: SynthConfig, sites: list[Site]) -> Iterator[PatientPlan]:
    """Patient plans in order, stopping at ``max_images`` (the last patient may be cut short)."""
    remaining = config.max_images
    for index in range(config.patients):
        plan = plan_patient(config, sites, index)
        if remaining is not None:
            if remaining <= 0:
                return
            plan = patients.truncate(plan, remaining)
            remaining -= plan.n_images
        yield plan


def _rendered(
    config: SynthConfig, sites: list[Site], out: Path
) -> Iterator[patients.PatientRecords]:
    workers = config.workers or os.cpu_count() or 1
    # Workers are replaced every RECYCLE_PATIENTS patients: rendering allocates and frees
    # millions of large temporaries, and a long-lived process's heap creeps up with them.
    yield from ordered_map(patients.render_patient, _planned(config, sites), workers,
                           patients.init_worker, (config, sites, out),
                           max_tasks_per_child=RECYCLE_PATIENTS)  # fmt: skip


def _count(counts: dict[str, Counter[str]], row: dict[str, object]) -> None:
    counts["site"][str(row["site_id"])] += 1
    counts["vendor"][str(row["vendor"])] += 1
    counts["anatomy"][str(row["anatomy"])] += 1
    counts["view"][f"{row['anatomy']} {row['view']}"] += 1
    labels = [k.removeprefix("label_") for k, v in row.items() if k.startswith("label_") and v]
    for label in labels or ["normal"]:
        counts["finding"][label] += 1


def _summary(
    counts: dict[str, Counter[str]], out: Path, patients: int, studies: int, images: int
) -> Summary:
    summary = Summary()
    for key, title in (
        ("site", "Images per site"),
        ("vendor", "Images per vendor"),
        ("anatomy", "Images per anatomy"),
        ("view", "Images per view"),
        ("finding", "Images per finding"),
    ):
        rows: list[list[object]] = [[key, "images"]]
        rows += [[name, n] for name, n in sorted(counts[key].items())]
        summary.tables[title] = rows
    summary.lines.append(f"{patients} patients, {studies} studies, {images} images -> {out}")
    return summary
