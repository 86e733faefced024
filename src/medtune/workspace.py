"""The workspace layout (see ARCHITECTURE.md) and the atomic-write helpers every writer uses.

A workspace is a directory holding one dataset and the runs and evaluations made from it, so that
every stage can be re-run, resumed or inspected alone. Every file in it is written through
:func:`atomic_path` (temp file + fsync + rename), so a killed job never leaves a half-written file
under a final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path. A rename is durable only once the directory entry
    itself reaches the disk, so writers sync the directory after renaming into it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``.

    Use it for writers that want a filename (pyarrow, pydicom, cv2)::

        with atomic_path(out / "catalog.parquet") as tmp:
            pq.write_table(table, tmp)

    On an exception the temporary file is removed and ``path`` is left as it was. The rename
    alone already means a killed process never leaves a partial file under ``path``;
    ``durable=False`` skips the fsyncs (about 5 ms a file) for bulk output whose writer calls
    :func:`flush_to_disk` once before it records the batch as complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename never crosses a filesystem; a dot-name so globs skip it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if durable:
            fsync_path(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def flush_to_disk() -> None:
    """Make every file written so far durable (one sync instead of an fsync per file)."""
    os.sync()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; creating the object touches nothing on disk."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "medtune.yaml"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def catalog_path(self) -> Path:
        return self.dataset_dir / "catalog.parquet"

    @property
    def reports_path(self) -> Path:
        return self.dataset_dir / "reports.parquet"

    @property
    def images_dir(self) -> Path:
        return self.dataset_dir / "images"

    @property
    def deid_dir(self) -> Path:
        return self.dataset_dir / "deid"

    @property
    def card_md_path(self) -> Path:
        return self.dataset_dir / "card.md"

    @property
    def card_html_path(self) -> Path:
        return self.dataset_dir / "card.html"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def sources_dir(self) -> Path:
        """Inputs medtune generated itself (the synthetic cohort of `medtune demo`)."""
        return self.root / "sources"

    def shard_path(self, index: int) -> Path:
        return self.images_dir / f"shard-{index:05d}.npy"

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / _checked_name(name)

    def eval_run_dir(self, name: str) -> Path:
        return self.eval_dir / _checked_name(name)

    def create(self) -> Workspace:
        """Make the directory skeleton (idempotent) and return self."""
        for directory in (
            self.dataset_dir,
            self.images_dir,
            self.deid_dir,
            self.runs_dir,
            self.eval_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        return self

    def save_config(self, yaml_text: str) -> None:
        """Record the config that produced this workspace (written once per stage run)."""
        atomic_write_text(self.config_path, yaml_text)


def _checked_name(name: str) -> str:
    # Run names become directory names: refuse anything that could climb out of the workspace.
    if not _RUN_NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"bad run name {name!r}: use letters, digits, '.', '_' or '-'")
    return name
