"""Training data from a workspace: catalog rows, pixels memory-mapped from the shards.

Training reads only what preparation wrote (STYLE.md item 8): ``catalog.parquet`` for the rows,
labels and splits, ``images/shard-NNNNN.npy`` for the pixels, ``reports.parquet`` for the text;
it never decodes DICOM. Each item is shaped to the backbone's :class:`InputContract` (scaled to
[0, 1] by the stored dtype, augmented, resized, gray repeated to 3 channels when asked,
normalised), so a model never sees pixels it was not built for::

    data = ImageDataset("ws", contract=encoder.contract, split_values="train",
                        label_columns=["pneumothorax"], augment=DEFAULT_AUGMENT)
    for batch in make_loader(data, batch_size=64, workers=2, seed=0):
        batch["image"], batch["labels"], batch["label_mask"]

Determinism: :func:`make_loader`'s sampler hands each sample a seed drawn from (seed, epoch,
catalog row), and augmentations take their randomness only from it; the same seed gives the
same batches with any number of workers, and a run resumed mid-epoch
(:meth:`SeededSampler.set_epoch`) sees what an uninterrupted one would have seen.
"""

from __future__ import annotations

import os
import random
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.models.contract import InputContract
from medtune.train.augment import build_augment, resize
from medtune.workspace import Workspace

Policy = Literal["ignore", "zeros", "ones"]
POLICIES = ("ignore", "zeros", "ones")
LABEL_PREFIX = "label_"
_NULL = -128  # int8 code of a null label (not mentioned, or no report)
_SCALE = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0}
_OPEN_SHARDS = 64  # memory maps kept open per process (each holds a file descriptor)
# Sign-off, attestation and call-back lines at a report's end ("Electronically signed by
# [NAME] MD on ...", "Results were called to Dr. ..."): no finding in them, and a date and a
# name make every report unique, which a text tower or a report decoder would learn instead.
_SIGN_OFF = re.compile(
    r"^\s*(electronically\s+signed|e-?signed|signed|dictated|transcribed|reviewed|verified|"
    r"attested|report\s+(finalized|finalised|verified|approved|signed)|reading\s+radiologist|"
    r"(attending\s+)?radiologist\s*:|read\s+by|"
    r"(critical\s+)?(results?|findings?)\s+((was|were)\s+)?(called|communicated|discussed))\b",
    re.IGNORECASE,
)


class ImageDataset(Dataset[dict[str, Any]]):
    """Catalog rows of ``workspace`` as training items, shaped by ``contract``.

    Rows: those whose ``split_column`` (default "split" when ``split_values`` is given) is one
    of ``split_values``, that match the DuckDB condition ``where`` (as `medtune query`: "body_part
    = 'CHEST'"), and, with ``text``, that have a report; in catalog order.

    Labels: ``label_columns`` (catalog columns, "label_" optional; None: every label_ column;
    []: none) as floats, positive 1 and negative 0. ``uncertain`` (-1) and ``unmentioned`` (null)
    follow a policy: "ignore" zeroes their ``label_mask`` so losses skip them, "zeros" and
    "ones" set them (CheXpert's U-zeros and U-ones).

    ``augment``: a transform (x, generator) -> tensor or list of views (:class:`MultiCrop`), or
    a config of :func:`build_augment`. One view keeps the augmented size unless it differs from
    the contract's, when it is resized; views of a list keep their sizes (multi-crop).

    Text: with ``text``, the report of the image's study (several joined by a blank line); with
    ``text_sections``, only the parts the report labeler reads (FINDINGS, IMPRESSION, text
    under no header), not the indication or history, which would hand the text tower the
    clinical question.

    Items: {"image", "labels", "label_mask", "text" ("" without text), "index" (catalog row)}.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        contract: InputContract,
        split_column: str | None = None,
        split_values: str | Sequence[str] | None = None,
        label_columns: Sequence[str] | None = None,
        where: str | None = None,
        augment: Callable[..., Any] | Mapping[str, Any] | None = None,
        text: bool = False,
        text_sections: bool = True,
        uncertain: Policy = "ignore",
        unmentioned: Policy = "ignore",
    ) -> None:
        for name, policy in (("uncertain", uncertain), ("unmentioned", unmentioned)):
            if policy not in POLICIES:
                raise MedtuneError(f"{name}: unknown policy {policy!r} (use {', '.join(POLICIES)})")
        self.workspace = Workspace(Path(workspace))
        self.contract = contract
        self.augment = build_augment(augment, contract.size) if isinstance(augment, Mapping) \
            else augment  # fmt: skip
        self.uncertain, self.unmentioned = uncertain, unmentioned
        catalog = self.workspace.catalog_path
        names = _catalog_columns(catalog)
        self.label_columns = _label_columns(catalog, names, label_columns)
        if split_values is not None and split_column is None:
            split_column = "split"
        if split_column is not None and split_column not in names:
            raise MedtuneError(f"{catalog}: no column {split_column!r}; run `medtune split` first")
        wanted = ["shard_file", "index", "study_id", *self.label_columns, split_column]
        table = read_catalog(catalog, columns=list(dict.fromkeys(c for c in wanted if c)))
        keep = np.ones(table.num_rows, bool)
        if split_column is not None:
            keep &= _in(table.column(split_column), split_values)
        if where:
            keep &= _where_mask(self.workspace, where, table.num_rows)
        by_study = _report_texts(self.workspace.reports_path, text_sections) if text else None
        if by_study is not None:
            keep &= np.array([s in by_study for s in table.column("study_id").to_pylist()], bool)
        if not keep.any():
            asked = [f"{split_column} in {split_values}"] * (split_column is not None) + [
                f"where {where!r}"] * bool(where) + ["with a report"] * text  # fmt: skip
            raise MedtuneError(f"{catalog}: no row matches ({', '.join(asked)})")
        self._take(catalog, table, np.flatnonzero(keep), by_study)
        self._mean = torch.tensor(contract.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(contract.std, dtype=torch.float32).view(-1, 1, 1)

    def _take(
        self, catalog: Path, table: pa.Table, rows: np.ndarray, texts: dict[str, str] | None
    ) -> None:
        # Compact per-row arrays: they travel to every worker process.
        self.rows = rows  # catalog row numbers, in catalog order
        table = table.take(pa.array(rows))
        shard_files = table.column("shard_file").to_numpy(False)
        self.shard_names, codes = np.unique(shard_files, return_inverse=True)
        self.shard_codes = codes.astype(np.int32)
        self.shard_index = table.column("index").to_numpy(False).astype(np.int64)
        self.labels = _label_matrix(catalog, table, self.label_columns)
        studies = table.column("study_id").to_pylist()
        self.texts = None if texts is None else [texts[s] for s in studies]
        self._shards: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def label_names(self) -> list[str]:
        """The label columns without their "label_" prefix (the names an export records)."""
        return [c.removeprefix(LABEL_PREFIX) for c in self.label_columns]

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would pickle as full copies of the pixels: each worker maps its own.
        state = self.__dict__.copy()
        state["_shards"] = OrderedDict()
        return state

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``key``: a position, or (position, seed) from :class:`SeededSampler`; without a
        seed, augmentations draw from torch's global generator (seeded per worker)."""
        position, seed = key if isinstance(key, tuple) else (key, None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        image = self.pixels(position)
        if self.augment is not None:
            image = self.augment(image, generator)
        if isinstance(image, list):
            image = [self._normalised(view) for view in image]
        else:
            image = self._normalised(resize(image, self.contract.size))
        return self.item(position, image)

    def item(self, position: int, image: Any) -> dict[str, Any]:
        """Item ``position`` around ``image``: its labels, mask, text and catalog row."""
        labels, mask = self._labels(position)
        return {
            "image": image,
            "labels": labels,
            "label_mask": mask,
            "text": self.texts[position] if self.texts is not None else "",
            "index": int(self.rows[position]),
        }

    def stored(self, position: int) -> np.ndarray:
        """The stored image of item ``position`` as it lies in its shard: (H, W) uint8 or
        uint16, a view of the memory map."""
        code = int(self.shard_codes[position])
        shard = self._shard(code)
        index = int(self.shard_index[position])
        if not 0 <= index < len(shard):
            path = self.workspace.images_dir / f"{self.shard_names[code]}.npy"
            raise MedtuneError(f"{path}: no image {index} (the shard has {len(shard)})")
        return shard[index]

    def pixels(self, position: int) -> torch.Tensor:
        """The stored image of item ``position`` as (1, H, W) float32 in [0, 1]."""
        array = self.stored(position)
        return torch.from_numpy(array.astype(np.float32) / np.float32(_SCALE[array.dtype]))[None]

    def _shard(self, code: int) -> np.ndarray:
        shard = self._shards.get(code)
        if shard is not None:
            self._shards.move_to_end(code)
            return shard
        path = self.workspace.images_dir / f"{self.shard_names[code]}.npy"
        try:
            shard = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise MedtuneError(f"{path}: cannot read the shard ({type(err).__name__})") from None
        if shard.ndim != 3 or shard.dtype not in _SCALE:
            raise MedtuneError(f"{path}: {shard.dtype} {shard.shape}, expected (n, size, size) "
                               "uint8 or uint16")  # fmt: skip
        self._shards[code] = shard
        if len(self._shards) > _OPEN_SHARDS:
            self._shards.popitem(last=False)
        return shard

    def _normalised(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != self.contract.channels:
            image = image.expand(self.contract.channels, -1, -1)
        return (image - self._mean) / self._std

    def _labels(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.labels[position]
        labels = (raw == 1).astype(np.float32)
        mask = np.ones(raw.shape, np.float32)
        for code, policy in ((-1, self.uncertain), (_NULL, self.unmentioned)):
            where = raw == code
            if policy == "ignore":
                mask[where] = 0.0
            elif policy == "ones":
                labels[where] = 1.0
        return torch.from_numpy(labels), torch.from_numpy(mask)


def _in(column: pa.ChunkedArray, values: str | Sequence[str] | None) -> np.ndarray:
    values = [values] if isinstance(values, str) else list(values or [])
    return pc.fill_null(pc.is_in(column, pa.array(values, column.type)), False).to_numpy(False)


def _catalog_columns(path: Path) -> list[str]:
    if not path.exists():
        read_catalog(path)  # raises the one message for a missing catalog
    return pq.read_schema(path).names


def _label_columns(path: Path, names: list[str], asked: Sequence[str] | None) -> list[str]:
    if asked is None:
        return [n for n in names if n.startswith(LABEL_PREFIX)]
    columns = []
    for name in asked:
        column = name if name in names else LABEL_PREFIX + name
        if column not in names:
            known = ", ".join(n for n in names if n.startswith(LABEL_PREFIX)) or "none"
            raise MedtuneError(f"{path}: no label column {name!r} (label columns: {known})")
        columns.append(column)
    return columns


def _label_matrix(path: Path, table: pa.Table, columns: list[str]) -> np.ndarray:
    """(rows, labels) int8: 1, 0, -1, or _NULL for null; other values are an error."""
    matrix = np.full((table.num_rows, len(columns)), _NULL, np.int8)
    for k, name in enumerate(columns):
        column = table.column(name)
        kind = column.type
        if not any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating,
                                           pa.types.is_boolean)):  # fmt: skip
            raise MedtuneError(f"{path}: label column {name!r} is {kind}, not a number")
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # null -> nan
        given = ~np.isnan(values)
        if not np.isin(values[given], (-1.0, 0.0, 1.0)).all():
            raise MedtuneError(f"{path}: label column {name!r} holds values other than 1, 0, -1")
        matrix[given, k] = values[given].astype(np.int8)
    return matrix


def _where_mask(workspace: Workspace, where: str, rows: int) -> np.ndarray:
    """Catalog rows matching the DuckDB condition ``where``, as a boolean mask."""
    from medtune.curate.query import matching_rows

    mask = np.zeros(rows, bool)
    mask[matching_rows(workspace.root, where)] = True
    return mask


def _report_texts(path: Path, sections: bool) -> dict[str, str]:
    """study_id -> its de-identified report text (several reports joined by a blank line)."""
    if not path.exists():
        raise MedtuneError(f"{path}: no reports; ingest them with `medtune ingest --reports`")
    table = pq.read_table(path, columns=["study_id", "text"])
    cut = _report_body() if sections else (lambda text: text.strip())
    texts: dict[str, list[str]] = {}
    for study, text in zip(*(table.column(c).to_pylist() for c in ("study_id", "text")),
                           strict=True):  # fmt: skip
        if study is not None and text and (body := cut(text)):
            texts.setdefault(study, []).append(body)
    return {study: "\n\n".join(parts) for study, parts in texts.items()}


def _report_body() -> Callable[[str], str]:
    """A function giving the parts of a report the labeler reads (curate/labeler.py), without
    sign-off lines."""
    from medtune.curate.labeler import load_rules, report_body

    rules = load_rules()

    def body(text: str) -> str:
        lines = report_body(text, rules).splitlines()
        return "\n".join(line for line in lines if not _SIGN_OFF.match(line)).strip()

    return body


# ---------------------------------------------------------------------------------------------
# Loading: a seeded sampler, and the DataLoader around it.


class SeededSampler(Sampler[tuple[int, int]]):
    """Positions of a dataset of ``size`` items with one seed each, in an order fixed by
    (``seed``, epoch): (position, sample seed) pairs for :meth:`ImageDataset.__getitem__`.

    Each iteration is the next epoch. With ``world_size`` > 1 (DDP), rank ``rank`` takes every
    world_size-th item of the epoch's order, padded by repeats so all ranks take as many."""

    def __init__(
        self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, skipping its first ``start`` items of this
        rank (a resume after ``start`` items of the epoch)."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        """This rank's positions in epoch ``epoch``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0) + 1)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = -(-self.size // self.world_size)
        order += order[: per_rank * self.world_size - self.size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        for position in self.order(epoch)[start:]:
            yield position, sample_seed(self.seed, epoch, position)

    def __len__(self) -> int:
        return -(-self.size // self.world_size) - self.start


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of one sample's augmentation: well mixed, whatever the three numbers."""
    return int(np.random.SeedSequence((seed, epoch, position)).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """Set up a DataLoader worker: Python's and NumPy's generators seeded from torch's (which
    the loader seeds per worker) for third-party transforms; one OpenCV thread, as torch
    gives each worker one (the workers already fill the cores)."""
    import cv2

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(1)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool = True,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` whose batches depend only on ``seed`` and the epoch: the
    order and every sample's augmentation (see :class:`SeededSampler`), with 0 or N
    ``workers``. Workers persist across epochs; they fork when that is safe here, else spawn
    (medtune.parallel.fork_is_safe). ``loader.sampler.set_epoch`` resumes mid-epoch."""
    from medtune.parallel import fork_is_safe

    sampler = SeededSampler(len(dataset), shuffle, seed, rank, world_size)  # type: ignore[arg-type]
    context = None
    if workers > 0:
        context = "fork" if fork_is_safe() else "spawn"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker,
        persistent_workers=workers > 0,
        multiprocessing_context=context,
        pin_memory=torch.cuda.is_available(),
    )
