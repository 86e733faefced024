"""``medtune subset``: a new workspace holding some rows of another, sharing its image shards.

    medtune subset -w ws --where "body_part = 'CHEST'" --to ws-chest

The new workspace's catalog keeps the chosen rows (in their order, with every column and the
labels and splits metadata), its reports and label evidence keep the studies of those rows, and
its ``images/`` holds symbolic links to the source's shard files: no pixel is copied, so a subset
of a million-image dataset costs a few megabytes. Moving or deleting the source breaks the links;
the catalog metadata records where they point.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medtune import __version__
from medtune.curate.query import matching_rows
from medtune.dataset.catalog import catalog_metadata, read_catalog, write_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path


@dataclass
class SubsetSummary:
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def make_subset(
    source: str | os.PathLike[str], where: str, target: str | os.PathLike[str]
) -> SubsetSummary:
    """Write the workspace ``target`` with the catalog rows of ``source`` matching ``where``."""
    src, dst = Workspace(Path(source)), Workspace(Path(target))
    _check_target(src, dst)
    catalog = read_catalog(src.catalog_path)
    rows = matching_rows(src.root, where)
    subset = catalog.take(pa.array(rows, pa.int64()))
    if subset.num_rows == 0:
        raise MedtuneError(f"subset: no catalog row matches {where!r}")

    dst.create()
    shards = _link_shards(src, dst, subset)
    studies = pc.unique(subset.column("study_id"))
    reports = _copy_by_study(src.reports_path, dst.reports_path, studies)
    _copy_by_study(src.dataset_dir / "labels.parquet", dst.dataset_dir / "labels.parquet", studies)
    _copy_provenance(src, dst)
    record = {
        "from": str(src.root.resolve()),
        "where": where,
        "rows": subset.num_rows,
        "of": catalog.num_rows,
        "created": _now(),
        "medtune_version": __version__,
    }
    previous = catalog_metadata(catalog).get("subset")
    if previous:  # a subset of a subset: keep the chain
        record["parent"] = previous
    write_catalog(dst.catalog_path, subset, metadata={"subset": record})

    summary = SubsetSummary()
    summary.tables["subset"] = [
        ["images", "of", "patients", "studies", "reports", "shards linked"],
        [subset.num_rows, catalog.num_rows, len(pc.unique(subset.column("patient_id"))),
         len(studies), reports, shards],
    ]  # fmt: skip
    summary.lines.append(f"workspace: {dst.root} (images are links into {src.images_dir})")
    return summary


def _check_target(src: Workspace, dst: Workspace) -> None:
    if dst.root.resolve() == src.root.resolve():
        raise MedtuneError(f"{dst.root}: the subset needs a new workspace, not its source")
    if dst.root.exists() and any(dst.root.iterdir()):
        raise MedtuneError(f"{dst.root}: not empty; give a new workspace directory")


def _link_shards(src: Workspace, dst: Workspace, subset: pa.Table) -> int:
    names = sorted(pc.unique(subset.column("shard_file")).to_pylist())
    for name in names:
        # Resolve, so a subset of a subset points at the real file, not at another link.
        real = (src.images_dir / f"{name}.npy").resolve()
        if not real.is_file():
            raise MedtuneError(f"{src.images_dir / name}.npy: shard missing from the source")
        link = dst.images_dir / f"{name}.npy"
        tmp = link.with_name(f".{link.name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        os.replace(tmp, link)  # atomic, as every other write
    return len(names)


def _copy_by_study(path: Path, out: Path, studies: pa.Array) -> int:
    if not path.is_file():
        return 0
    table = pq.read_table(path)
    kept = table.filter(pc.is_in(table.column("study_id"), value_set=studies))
    with atomic_path(out) as tmp:
        pq.write_table(kept, tmp, compression="zstd")
    return kept.num_rows


def _copy_provenance(src: Workspace, dst: Workspace) -> None:
    # How the source was made (its config and the fate of its inputs) still describes the subset.
    pairs = [(src.config_path, dst.config_path)]
    pairs += [(p, dst.deid_dir / p.name) for p in sorted(src.deid_dir.glob("*")) if p.is_file()]
    for source_file, target_file in pairs:
        if source_file.is_file():
            with atomic_path(target_file) as tmp:
                shutil.copyfile(source_file, tmp)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
