"""``medtune ingest``: a folder of DICOM files into the workspace dataset, resumably.

Inputs are processed in a fixed order, in chunks of ``shard_images`` inputs; each chunk's
results (its image shard, catalog rows and the fate of each input) are committed atomically
before the next starts, so after a kill the same command skips finished chunks and redoes only
the interrupted one: the result equals an uninterrupted run's. With ``--shard i/N`` a process
takes every N-th input (by id) and writes its own chunks; the run that completes the last part
merges them into ``catalog.parquet``.

Accounting: every input ends ingested, quarantined (with a one-line reason) or a duplicate
(an instance already ingested); the summary checks that the three add up to the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medtune import __version__
from medtune.config import IngestConfig, dump_yaml
from medtune.dataset.catalog import CATALOG_SCHEMA, INPUTS_SCHEMA
from medtune.dataset.item import ItemContext, ItemResult, process
from medtune.dataset.shards import ShardWriter
from medtune.deid import leak
from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key
from medtune.errors import MedtuneError
from medtune.io.folder import InputFile, check_dicomdir, list_inputs
from medtune.parallel import ordered_map
from medtune.workspace import Workspace, atomic_path, atomic_write_text

STATE_DIR = ".ingest"


@dataclass(frozen=True)
class ShardSpec:
    """This process's part of the inputs: ``index`` of ``count`` (``--shard i/N``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> ShardSpec:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise MedtuneError(f"--shard {text}: expected i/N, e.g. 0/4") from None
        if count < 1 or not 0 <= index < count:
            raise MedtuneError(f"--shard {text}: need 0 <= i < N")
        return cls(index, count)

    @property
    def name(self) -> str:
        return "all" if self.count == 1 else f"{self.index}of{self.count}"

    def takes(self, item: InputFile) -> bool:
        return self.count == 1 or int(item.input_id, 16) % self.count == self.index


@dataclass
class IngestSummary:
    inputs: int = 0
    ingested: int = 0
    quarantined: int = 0
    duplicates: int = 0
    images: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # quarantine reasons, by count
    chunks_skipped: int = 0  # already done by an earlier (interrupted) run
    merged: bool = False  # catalog.parquet written (all shards complete)
    dicomdir: dict[str, int] | None = None

    @property
    def accounted(self) -> bool:
        return self.ingested + self.quarantined + self.duplicates == self.inputs


def ingest(
    source: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    config: IngestConfig,
    key_path: str | os.PathLike[str],
    shard: ShardSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_quarantine: Callable[[InputFile, str], None] | None = None,
) -> IngestSummary:
    """Ingest every file under ``source`` into ``workspace`` (see module docstring)."""
    shard = shard or ShardSpec()
    root = Path(source)
    ws = Workspace(Path(workspace)).create()
    pseudo = Pseudonymizer(load_or_create_key(key_path))
    inputs = [item for item in list_inputs(root) if shard.takes(item)]
    summary = IngestSummary(inputs=len(inputs))
    check = check_dicomdir(root)
    if check is not None:
        summary.dicomdir = {"referenced": check.referenced, "missing": check.missing,
                            "outside": check.outside}  # fmt: skip

    state = ws.dataset_dir / STATE_DIR / shard.name
    state.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(inputs, config, pseudo)
    done = _chunks_done(state, fingerprint)
    chunk_size = config.shard_images
    chunks = [inputs[i : i + chunk_size] for i in range(0, len(inputs), chunk_size)]
    seen = _seen_instances(state, done)

    finished = 0
    for number, chunk in enumerate(chunks):
        if number < done:
            summary.chunks_skipped += 1
            finished += len(chunk)
            if progress:
                progress(finished, len(inputs))
            continue
        results = _run_chunk(chunk, config, pseudo, root)
        _commit_chunk(ws, state, shard, number, chunk, results, seen, config, on_quarantine)
        _write_progress(state, fingerprint, number + 1, len(chunks))
        finished += len(chunk)
        if progress:
            progress(finished, len(inputs))
    _write_progress(state, fingerprint, len(chunks), len(chunks))

    _count(state, len(chunks), summary)
    summary.merged = _merge_if_complete(ws, shard, config)
    if summary.merged:
        ws.save_config(dump_yaml(config, exclude={"workers"}))
    return summary


# ---------------------------------------------------------------------------------------------
# Running a chunk.

_CONTEXT: dict[str, ItemContext] = {}


def _init_worker(config: IngestConfig, key: bytes, root: Path) -> None:
    import cv2

    cv2.setNumThreads(1)
    _CONTEXT["ctx"] = ItemContext(config, Pseudonymizer(key), root)


def _work(item: InputFile) -> ItemResult:
    return process(item, _CONTEXT["ctx"])


def _run_chunk(
    chunk: list[InputFile], config: IngestConfig, pseudo: Pseudonymizer, root: Path
) -> Iterator[ItemResult]:
    """Results in input order (see medtune.parallel)."""
    workers = config.workers or os.cpu_count() or 1
    key = pseudo._key  # workers rebuild the pseudonymizer from the key, never from files
    workers = 1 if len(chunk) < 4 else workers
    # The parent only writes shards and Parquet tables: forking it is safe (see medtune.parallel).
    # Arrow's native thread pool, which Python's thread count does not show, re-creates itself
    # in a forked child, and the workers never call Arrow anyway.
    yield from ordered_map(_work, chunk, workers, _init_worker, (config, key, root), start="fork",
                          batch=4)  # fmt: skip


def _commit_chunk(
    ws: Workspace,
    state: Path,
    shard: ShardSpec,
    number: int,
    chunk: list[InputFile],
    results: Iterator[ItemResult],
    seen: set[str],
    config: IngestConfig,
    on_quarantine: Callable[[InputFile, str], None] | None,
) -> None:
    shard_name = f"shard-{number:05d}" if shard.count == 1 else f"shard-{shard.name}-{number:05d}"
    writer = ShardWriter(ws.images_dir / f"{shard_name}.npy", config.size, config.dtype)
    rows: list[dict[str, object]] = []
    fates: list[dict[str, object]] = []
    try:
        for item, result in zip(chunk, results, strict=True):
            deid = json.dumps(result.deid, sort_keys=True) if result.deid else None
            fate = {"input_id": item.input_id, "status": result.status, "stage": result.stage,
                    "reason": result.reason, "images": 0, "deid": deid}  # fmt: skip
            if result.status == "ingested" and result.dedup_key in seen:
                fate.update(status="duplicate", stage="", reason="instance already ingested")
            elif result.status == "ingested":
                if result.dedup_key:
                    seen.add(result.dedup_key)
                for row, image in zip(result.rows, result.images, strict=True):
                    row.update(shard=_shard_number(shard, number), index=writer.add(image),
                               shard_file=shard_name)  # fmt: skip
                    rows.append(row)
                fate["images"] = len(result.rows)
            elif on_quarantine is not None:
                on_quarantine(item, result.reason)
            fates.append(fate)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    _write_table(state / f"catalog-{number:05d}.parquet", rows, CATALOG_SCHEMA)
    _write_table(state / f"inputs-{number:05d}.parquet", fates, INPUTS_SCHEMA)


def _shard_number(shard: ShardSpec, number: int) -> int:
    # Unique across --shard parts: part i's chunk k.
    return number * shard.count + shard.index


def _write_table(path: Path, rows: list[dict[str, object]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# ---------------------------------------------------------------------------------------------
# Resume and merge.


def _fingerprint(inputs: list[InputFile], config: IngestConfig, pseudo: Pseudonymizer) -> str:
    """Changes when the inputs, the settings that shape the output, or the key change."""
    digest = hashlib.sha256()
    for item in inputs:
        digest.update(item.input_id.encode())
    digest.update(dump_yaml(config, exclude={"workers"}).encode())
    digest.update(pseudo.pseudonym("fingerprint", "key").encode())  # the key, not revealing it
    digest.update(__version__.encode())
    # Parts written for another catalog layout cannot be merged with new ones: start over.
    digest.update(str(CATALOG_SCHEMA).encode())
    return digest.hexdigest()


def _chunks_done(state: Path, fingerprint: str) -> int:
    path = state / "progress.json"
    if not path.exists():
        return 0
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    if progress.get("fingerprint") != fingerprint:
        # Different inputs, settings or key: start over, removing the old parts.
        for old in state.glob("*.parquet"):
            old.unlink()
        return 0
    return int(progress.get("chunks_done", 0))


def _write_progress(state: Path, fingerprint: str, done: int, total: int) -> None:
    atomic_write_text(state / "progress.json", json.dumps(
        {"fingerprint": fingerprint, "chunks_done": done, "chunks": total}))  # fmt: skip


def _seen_instances(state: Path, done: int) -> set[str]:
    seen: set[str] = set()
    for number in range(done):
        table = pq.read_table(state / f"catalog-{number:05d}.parquet", columns=["sop_uid"])
        seen.update(v for v in table.column("sop_uid").to_pylist() if v)
    return seen


def _count(state: Path, chunks: int, summary: IngestSummary) -> None:
    for number in range(chunks):
        # Not the de-identification log column: it is most of the bytes, and not counted.
        table = pq.read_table(state / f"inputs-{number:05d}.parquet",
                              columns=["status", "images", "reason"])  # fmt: skip
        for fate in table.to_pylist():
            status = fate["status"]
            if status == "ingested":
                summary.ingested += 1
                summary.images += fate["images"]
            elif status == "duplicate":
                summary.duplicates += 1
            else:
                summary.quarantined += 1
                summary.reasons[_reason_kind(fate["reason"])] += 1


def _reason_kind(reason: str) -> str:
    return reason.split(" (", 1)[0]


def _concatenate(parts: list[Path], schema: pa.Schema, out: Path) -> None:
    """The parts' rows, in order, as one Parquet file (one row group per part)."""
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part).cast(schema))


def _merge_if_complete(ws: Workspace, shard: ShardSpec, config: IngestConfig) -> bool:
    """Write catalog.parquet and deid/inputs.parquet once every part is complete."""
    base = ws.dataset_dir / STATE_DIR
    names = ["all"] if shard.count == 1 else [f"{i}of{shard.count}" for i in range(shard.count)]
    parts: list[Path] = []
    for name in names:
        progress_path = base / name / "progress.json"
        if not progress_path.exists():
            return False
        progress = json.loads(progress_path.read_text())
        if progress["chunks_done"] < progress["chunks"]:
            return False
        parts.extend(base / name / f"catalog-{n:05d}.parquet" for n in range(progress["chunks"]))
    # Part by part, so memory does not grow with the number of inputs.
    inputs_parts = [p.with_name(p.name.replace("catalog-", "inputs-")) for p in parts]
    _concatenate(parts, CATALOG_SCHEMA, ws.catalog_path)
    _concatenate(inputs_parts, INPUTS_SCHEMA, ws.deid_dir / "inputs.parquet")
    # The quarantine list a person reads: opaque input ids (see io/folder.py) and reasons.
    lines = ["input_id,stage,reason"]
    for part in inputs_parts:
        table = pq.read_table(part, columns=["input_id", "status", "stage", "reason"])
        lines += [f'{f["input_id"]},{f["stage"]},"{f["reason"].replace(chr(34), chr(39))}"'
                  for f in table.to_pylist() if f["status"] == "quarantined"]  # fmt: skip
    atomic_write_text(ws.deid_dir / "quarantine.csv", "\n".join(lines) + "\n")
    return True


# ---------------------------------------------------------------------------------------------
# Reports, and the command's summary.


@dataclass
class ReportsSummary:
    rows: int = 0
    written: int = 0
    rejected: int = 0
    unmatched: int = 0  # reports of studies with no ingested image (kept: text is still useful)
    withheld: int = 0  # an identifier survived scrubbing: not written (the leak scan)
    scrubbed: Counter[str] = field(default_factory=Counter)


REPORTS_SCHEMA = pa.schema(
    [
        ("study_id", pa.string()),
        ("patient_id", pa.string()),
        ("text", pa.string()),  # de-identified
        ("has_images", pa.bool_()),
        ("source", pa.string()),  # opaque id of the report file and row
    ]
)


def ingest_reports(
    paths: list[Path], ws: Workspace, pseudo: Pseudonymizer, deid: bool = True
) -> ReportsSummary:
    """De-identify report exports into reports.parquet, joined to the catalog by study."""
    from medtune.deid.text import scrub_report
    from medtune.io.reports import ReportRecord, read_reports

    patients_of_study: dict[str, str] = {}
    if ws.catalog_path.exists():
        table = pq.read_table(ws.catalog_path, columns=["study_id", "patient_id"])
        patients_of_study = dict(
            zip(table.column("study_id").to_pylist(), table.column("patient_id").to_pylist(),
                strict=True)
        )  # fmt: skip
    summary = ReportsSummary()
    rows: list[dict[str, object]] = []
    for path in _report_files(paths):
        file_id = hashlib.sha256(str(path.name).encode()).hexdigest()[:8]
        for record in read_reports(path):
            summary.rows += 1
            if not isinstance(record, ReportRecord):
                summary.rejected += 1
                continue
            study = pseudo.study(record.id)
            # The images' patient first: their pseudonym includes the Issuer of Patient ID,
            # which RIS exports rarely carry; so a report shifts exactly as its images do.
            patient = patients_of_study.get(study) or (
                pseudo.patient(record.patient) if record.patient else None
            )
            text = record.text
            if deid:
                shift = (lambda day, p=patient: pseudo.shift_date(p, day)) if patient else None
                scrubbed = scrub_report(record.text, record.identifiers, shift)
                text = scrubbed.text
                summary.scrubbed.update(scrubbed.counts)
                # Fail closed: an identifier of the row (or a real date of it) left in the text
                # withholds the report; the study keeps its images.
                if leak.scan_texts([("report", text)], record.identifiers):
                    summary.withheld += 1
                    continue
            has_images = study in patients_of_study
            summary.unmatched += not has_images
            line = record.source.rsplit(":", 1)[-1]
            rows.append({"study_id": study, "patient_id": patient, "text": text,
                         "has_images": has_images, "source": f"{file_id}:{line}"})  # fmt: skip
    rows.sort(key=lambda r: (str(r["study_id"]), str(r["source"])))
    _write_table(ws.reports_path, rows, REPORTS_SCHEMA)
    summary.written = len(rows)
    return summary


def _report_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            suffixes = (".csv", ".jsonl", ".json", ".ndjson")
            found = (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            files.extend(sorted(found))
        elif path.is_file():
            files.append(path)
        else:
            raise MedtuneError(f"{path}: no such report file or folder")
    return files


@dataclass
class CommandSummary:
    """What the CLI prints: tables (title -> rows, header first) and lines."""

    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ingest: IngestSummary | None = None
    reports: ReportsSummary | None = None


def ingest_with_reports(
    source: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    config: IngestConfig,
    key_path: str | os.PathLike[str],
    reports: list[Path],
    shard: ShardSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_quarantine: Callable[[InputFile, str], None] | None = None,
) -> CommandSummary:
    """Images, then reports (once every image shard is merged), then a summary."""
    result = ingest(source, workspace, config, key_path, shard, progress, on_quarantine)
    out = CommandSummary(ingest=result)
    out.tables["inputs"] = [
        ["inputs", "ingested", "quarantined", "duplicates", "images"],
        [result.inputs, result.ingested, result.quarantined, result.duplicates, result.images],
    ]
    if result.reasons:
        out.tables["quarantined, by reason"] = [["reason", "files"]] + [
            [reason, n] for reason, n in result.reasons.most_common()
        ]
    if not result.accounted:
        raise MedtuneError("accounting failed: ingested + quarantined + duplicates != inputs")
    if result.dicomdir and (result.dicomdir["outside"] or result.dicomdir["missing"]):
        out.lines.append(f"DICOMDIR: {result.dicomdir['outside']} references outside the source "
                         f"ignored, {result.dicomdir['missing']} missing")  # fmt: skip
    if result.chunks_skipped:
        out.lines.append(f"resumed: {result.chunks_skipped} finished chunks kept")
    ws = Workspace(Path(workspace))
    if not result.merged:
        out.lines.append("this part is done; the catalog is written when every --shard part is")
        return out
    if reports:
        pseudo = Pseudonymizer(load_or_create_key(key_path))
        rs = ingest_reports(reports, ws, pseudo, deid=config.deid.enabled)
        out.reports = rs
        out.tables["reports"] = [
            ["rows", "written", "rejected", "withheld (leak scan)", "without images"],
            [rs.rows, rs.written, rs.rejected, rs.withheld, rs.unmatched],
        ]
    out.lines.append(f"dataset: {ws.dataset_dir}")
    return out


def stage_from_pacs(spec: str, query: object, staging: Path) -> dict[str, int]:
    """Retrieve every instance ``query`` finds on the PACS at ``spec`` into ``staging``
    (resumable: staged instances are not fetched again); counts by outcome."""
    from medtune.io.pacs import open_source, summarize

    source = open_source(spec)
    studies = source.find(query)  # type: ignore[arg-type]
    staging.mkdir(parents=True, exist_ok=True)
    return summarize(source.retrieve(studies, staging))
