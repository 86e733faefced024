"""Leakage between the parts of a split: the units a split may not cut, and the check that fails
loudly when one was cut.

A model evaluated on a patient it was trained on scores too well, and so does one evaluated on
a copy of a training image exported under another patient id (a re-send, a merge of two
records). So the unit is the patient, and images whose perceptual hashes are within
``near_duplicate_bits`` of each other join their patients into one group (dataset/phash.py).
Images without a patient id are each their own group; images without a hash join nothing.

:func:`check_split` finds, for any split column (train/val/test/ood strings, or k-fold numbers):

- ``patient``: a patient with images under two or more split values;
- ``near_duplicate``: two images of different patients (or without one) under different split
  values whose hashes are within ``near_duplicate_bits``. Pairs within one patient are left to
  the ``patient`` kind, which already names them.

Rows whose value is null or ``excluded`` (images a split left out on purpose) take no part. Ids
in a :class:`Leak` are the catalog's pseudonyms, safe to show.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medtune.dataset.catalog import catalog_metadata, read_catalog
from medtune.dataset.phash import NEAR, near_duplicate_pairs
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

EXCLUDED = "excluded"  # a split value for images kept out of every part (see curate/splits.py)
IGNORED_VALUES = frozenset({EXCLUDED})


@dataclass(frozen=True)
class Leak:
    """One leak: ``kind`` is "patient" or "near_duplicate"; ``values`` the split values it
    spans (sorted); the pseudonymous ids involved; ``distance`` in bits for near-duplicates."""

    kind: str
    values: tuple[str, ...]
    patient_ids: tuple[str | None, ...]
    image_ids: tuple[str, ...]  # near_duplicate: the pair; patient: the first image per value
    distance: int | None = None


@dataclass(frozen=True)
class Groups:
    """The units a split may not cut: ``codes[row]`` in 0..count-1."""

    codes: np.ndarray  # (rows,) int64
    count: int
    near_pairs: list[tuple[int, int, int]]  # (row, row, bits) of every near-duplicate pair
    merged_patients: int  # patients joined to another patient by a near-duplicate
    without_patient: int  # rows with a null patient_id, each its own group
    without_hash: int  # rows with no perceptual hash, not compared with any other


def leak_groups(table: pa.Table, near_duplicate_bits: int = NEAR) -> Groups:
    """Group the catalog's rows so that no patient and no near-duplicate pair spans two groups.

    The connected components of a graph whose nodes are rows and patients, with an edge from
    each row to its patient and one between the rows of each near-duplicate pair.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = table.num_rows
    patients = _codes(table.column("patient_id"))
    hashes = _hashes(table)
    near_pairs = near_duplicate_pairs(hashes, near_duplicate_bits)
    pairs = np.array(near_pairs, dtype=np.int64).reshape(-1, 3)
    has_patient = patients >= 0
    rows = np.flatnonzero(has_patient)
    src = np.concatenate([rows, pairs[:, 0]])
    dst = np.concatenate([n + patients[rows], pairs[:, 1]])
    size = n + int(patients.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    _, codes = np.unique(labels[:n], return_inverse=True)
    patient_groups = np.unique(np.stack([patients[rows], codes[rows]], axis=1), axis=0)
    groups_of_patients = Counter(patient_groups[:, 1].tolist())
    return Groups(
        codes=codes.astype(np.int64),
        count=int(codes.max(initial=-1)) + 1,
        near_pairs=near_pairs,
        merged_patients=sum(k for k in groups_of_patients.values() if k > 1),
        without_patient=int((~has_patient).sum()),
        without_hash=sum(h is None for h in hashes),
    )


def check_split(
    table: pa.Table,
    column: str,
    near_duplicate_bits: int = NEAR,
    near_pairs: list[tuple[int, int, int]] | None = None,
) -> list[Leak]:
    """Every leak of split ``column`` of a catalog table (see the module docstring); [] if none.

    ``table`` needs ``column``, ``patient_id`` and ``image_id``; without a ``phash`` column
    only patients are checked. ``near_pairs``: the table's near-duplicate pairs when already
    found (``Groups.near_pairs``), as the search takes seconds on 100,000 images.
    """
    if column not in table.column_names:
        raise MedtuneError(f"catalog: no column '{column}'")
    values = [None if v is None or str(v) in IGNORED_VALUES else str(v)
              for v in table.column(column).to_pylist()]  # fmt: skip
    patients = table.column("patient_id").to_pylist()
    images = table.column("image_id").to_pylist()
    leaks = _patient_leaks(values, patients, images)
    if near_pairs is None:
        near_pairs = near_duplicate_pairs(_hashes(table), near_duplicate_bits)
    for i, j, bits in near_pairs:
        a, b = values[i], values[j]
        same_patient = patients[i] is not None and patients[i] == patients[j]
        if a is None or b is None or a == b or same_patient:
            continue
        (va, pa_, ia), (vb, pb, ib) = sorted([(a, patients[i], images[i]),
                                              (b, patients[j], images[j])])  # fmt: skip
        leaks.append(Leak("near_duplicate", (va, vb), (pa_, pb), (ia, ib), bits))
    return leaks


def check_workspace_split(workspace: str | os.PathLike[str], column: str) -> list[Leak]:
    """:func:`check_split` on a workspace's catalog, with the near-duplicate threshold the
    split was made with (``NEAR`` for a column made outside medtune)."""
    path = Workspace(Path(workspace)).catalog_path
    header = read_catalog(path, columns=[])  # metadata, no data (or the no-catalog error)
    names = pq.read_schema(path).names
    if column not in names:
        made = sorted(catalog_metadata(header).get("splits", {}))
        hint = f"; splits made by medtune: {', '.join(made)}" if made else ""
        raise MedtuneError(f"{path}: no column '{column}'{hint}")
    wanted = [column, "patient_id", "image_id"] + (["phash"] if "phash" in names else [])
    table = read_catalog(path, columns=list(dict.fromkeys(wanted)))
    made_with = catalog_metadata(table).get("splits", {}).get(column, {})
    return check_split(table, column, int(made_with.get("near_duplicate_bits", NEAR)))


def describe(leaks: list[Leak]) -> str:
    """One line of counts by kind: "3 patients in more than one split, 1 near-duplicate pair
    across splits" ("no leaks" when there are none)."""
    patients = sum(leak.kind == "patient" for leak in leaks)
    pairs = sum(leak.kind == "near_duplicate" for leak in leaks)
    parts = []
    if patients:
        parts.append(f"{patients} patient{'s' * (patients != 1)} in more than one split")
    if pairs:
        parts.append(f"{pairs} near-duplicate pair{'s' * (pairs != 1)} across splits")
    return ", ".join(parts) or "no leaks"


def _patient_leaks(
    values: list[str | None], patients: list[str | None], images: list[str]
) -> list[Leak]:
    first_image: dict[str | None, dict[str, str]] = {}
    for value, patient, image in zip(values, patients, images, strict=True):
        if value is not None and patient is not None:
            first_image.setdefault(patient, {}).setdefault(value, image)
    leaks = []
    for patient, by_value in sorted(first_image.items()):
        if len(by_value) > 1:
            spanned = tuple(sorted(by_value))
            shown = tuple(by_value[v] for v in spanned)
            leaks.append(Leak("patient", spanned, (patient,), shown))
    return leaks


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    # Dictionary codes of a string column, -1 for null.
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _hashes(table: pa.Table) -> list[bytes | None]:
    if "phash" not in table.column_names:
        return [None] * table.num_rows
    return table.column("phash").to_pylist()
