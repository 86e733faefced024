"""``medtune split``: leakage-free train/val/test splits, grouped k-fold folds and out-of-domain
splits, stored as a catalog column with the way they were made.

Methods (:class:`SplitSpec` ``method``):

- ``patient``: train/val/test by patient group, stratified by labels where possible.
- ``kfold``: ``folds`` grouped, stratified folds for cross-validation (an int8 column 0..k-1).
- ``site``, ``vendor``, ``anatomy``: images whose site, manufacturer or body_part is in
  ``hold_out`` become ``ood``; the others get a ``patient`` split, so that a model's in-domain
  ``test`` score can be compared with its ``ood`` one. A patient group with images on both sides
  keeps its held-out images in ``ood`` and has its in-domain ones set to ``excluded`` (used by
  no part): putting them in ``ood`` would mix domains, putting them in ``train`` would leak.
  Without ``hold_out``, the rarest values (fewest images first, ties by name) are held out until
  they hold at least 15% of the images; null values never are, and one value is always kept.
  If the patients left in-domain are then too few for the parts, the largest chosen values are
  given back, one at a time, down to a single one.

The unit no split cuts is a group from :func:`medtune.curate.leakage.leak_groups`: a patient,
joined with any other patient one of whose images is a near-duplicate of one of theirs; images
without a patient id are each a group. So a split made here passes the leakage check by
construction; it is run anyway, before writing, as a guard.

"Stratified where possible": each group has one stratum, the rarest finding (fewest positive
groups among the images being split) that is positive (label 1) in any of its images, or
``none``; strata with fewer groups than folds are pooled into ``other``. Each stratum's groups
are dealt evenly over the folds (see :func:`_grouped_folds`), so each fold holds about the
same share of every stratum, in groups and in images; a finding too rare to be a stratum of
its own is spread only as part of ``other``. With no label columns there is one stratum.
Train, val and test are made of 20 such folds (one per group when there are fewer groups)
shared out by the fractions, so fractions are met to the nearest 5%. Same catalog and same
spec, same split; another seed, another split.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medtune import __version__
from medtune.curate.leakage import EXCLUDED, Groups, check_split, describe, leak_groups
from medtune.dataset.catalog import CATALOG_SCHEMA, read_catalog, write_catalog
from medtune.dataset.phash import NEAR
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

METHODS = ("patient", "kfold", "site", "vendor", "anatomy")
DOMAIN_COLUMNS = {"site": "site", "vendor": "manufacturer", "anatomy": "body_part"}
PARTS = ("train", "val", "test")
OOD = "ood"
PART_FOLDS = 20  # train/val/test are cut from this many grouped folds: fractions to 5%
HOLD_OUT_SHARE = 0.15  # default hold-out: the rarest values holding at least this share
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class SplitSpec:
    """How to split; checked on creation (MedtuneError), and against the catalog by
    :func:`make_split`. ``stratify`` is "auto" (every ``label_*`` column) or column names."""

    method: str = "patient"
    column: str = ""  # "" means "split", "fold" for kfold, "split_<method>" out of domain
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test
    folds: int = 5
    hold_out: tuple[str, ...] = ()  # sites, manufacturers or body parts held out (ood)
    stratify: tuple[str, ...] | str = "auto"
    seed: int = 0
    near_duplicate_bits: int = NEAR

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "column", self.column or _default_column(self.method))
        set_(self, "fractions", tuple(float(f) for f in self.fractions))
        set_(self, "hold_out", tuple(str(v) for v in self.hold_out))
        if isinstance(self.stratify, str) and self.stratify != "auto":
            set_(self, "stratify", (self.stratify,))  # one column named
        elif not isinstance(self.stratify, str):
            set_(self, "stratify", tuple(self.stratify))
        problem = _spec_problem(self)
        if problem:
            raise MedtuneError(f"split {problem}")


@dataclass
class SplitResult:
    """What was written: the column, its metadata record, and what the CLI prints."""

    column: str
    record: dict[str, Any]  # catalog metadata["splits"][column]
    tables: dict[str, list[list[object]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def _default_column(method: str) -> str:
    # Out-of-domain splits get a column of their own, so they sit beside the patient split.
    return {"patient": "split", "kfold": "fold"}.get(method, f"split_{method}")


def make_split(workspace: str | os.PathLike[str], spec: SplitSpec) -> SplitResult:
    """Split the workspace's catalog as ``spec`` says and store it as column ``spec.column``,
    with the method, seed, counts and version under the catalog metadata's "splits" key.

    Raises MedtuneError for a spec that does not fit the catalog (unknown hold-out value or
    stratify column, too few patients), and if the split would leak (a bug guard).
    """
    ws = Workspace(Path(workspace))
    table = read_catalog(ws.catalog_path)
    labels = _stratify_columns(table, spec.stratify)
    positives = _positives(table, labels)
    groups = leak_groups(table, spec.near_duplicate_bits)
    record: dict[str, Any] = {"method": spec.method, "seed": spec.seed}
    if spec.method == "kfold":
        values: np.ndarray = _folds(positives, labels, groups.codes, spec.folds, spec.seed,
                                    record)  # fmt: skip
        record["folds"] = spec.folds
    elif spec.method == "patient":
        values = _parts(positives, labels, groups.codes, spec.fractions, spec.seed, record)
        record["fractions"] = list(spec.fractions)
    else:
        values = _out_of_domain(table, positives, labels, groups, spec, record)
        record["fractions"] = list(spec.fractions)
    array = pa.array(values, type=pa.int8() if spec.method == "kfold" else pa.string())
    _guard(table, spec, array, groups)
    summary = _summary(table, spec.column, array, labels, positives, record.get("hold_out_column"))
    record.update(summary.pop("record"))
    record.update({
        "stratify": labels,
        "groups": groups.count,
        "near_duplicate_bits": spec.near_duplicate_bits,
        "near_duplicate_pairs": len(groups.near_pairs),
        "medtune_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    write_catalog(ws.catalog_path, table, columns={spec.column: array},
                  metadata={"splits": {spec.column: record}})  # fmt: skip
    lines = _notes(groups, labels, spec, record)
    lines.append(f"written: column '{spec.column}' of {ws.catalog_path}")
    return SplitResult(spec.column, record, tables=summary["tables"], lines=lines)


# ---------------------------------------------------------------------------------------------
# The spec, against itself and against the catalog.


def _spec_problem(spec: SplitSpec) -> str | None:
    if spec.method not in METHODS:
        return f"method '{spec.method}': use one of {', '.join(METHODS)}"
    name = spec.column
    if not _NAME.match(name):
        return f"column '{name}': use lower-case letters, digits and '_', starting with a letter"
    if name in CATALOG_SCHEMA.names or name.startswith("label_"):
        return f"column '{name}': that name is taken by the catalog; choose another"
    fractions = spec.fractions
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        shown = "/".join(f"{f:g}" for f in fractions)
        return f"fractions {shown}: need train/val/test fractions, none negative, summing to 1"
    if fractions[0] <= 0:
        return "fractions: train must be more than 0"
    if not 2 <= spec.folds <= 100:
        return f"folds {spec.folds}: use 2 to 100"
    if spec.hold_out and spec.method not in DOMAIN_COLUMNS:
        return f"hold_out: only for the methods {', '.join(DOMAIN_COLUMNS)}"
    if not 0 <= spec.near_duplicate_bits <= 64:
        return f"near_duplicate_bits {spec.near_duplicate_bits}: use 0 to 64"
    return None


def _stratify_columns(table: pa.Table, stratify: tuple[str, ...] | str) -> list[str]:
    present = [name for name in table.column_names if name.startswith("label_")]
    if stratify == "auto":
        return present
    for name in stratify:
        if name not in table.column_names:
            known = f"label columns: {', '.join(present)}" if present else (
                "no label columns; run `medtune label` first")  # fmt: skip
            raise MedtuneError(f"split stratify: no column '{name}' in the catalog ({known})")
        kind = table.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            raise MedtuneError(f"split stratify: column '{name}' is {kind}, not a label (1/0)")
    return list(dict.fromkeys(stratify))


def _positives(table: pa.Table, labels: list[str]) -> np.ndarray:
    """(rows, labels) bool: label 1 (or true); uncertain, negative and null are not."""
    out = np.zeros((table.num_rows, len(labels)), dtype=bool)
    for k, name in enumerate(labels):
        is_one = pc.equal(pc.cast(table.column(name), pa.int8()), 1).fill_null(False)
        out[:, k] = is_one.to_numpy(zero_copy_only=False)
    return out


# ---------------------------------------------------------------------------------------------
# Methods. Each returns one value per row and adds what it chose to ``record``.


def _folds(
    positives: np.ndarray,
    labels: list[str],
    codes: np.ndarray,
    folds: int,
    seed: int,
    record: dict[str, Any],
) -> np.ndarray:
    codes = np.unique(codes, return_inverse=True)[1]
    groups = int(codes.max(initial=-1)) + 1
    if groups < folds:
        raise MedtuneError(f"split: {groups} patient groups, too few for {folds} folds")
    strata, record["strata"] = _strata(positives, labels, codes, groups, folds)
    return _grouped_folds(strata, np.bincount(codes), folds, seed)[codes]


def _parts(
    positives: np.ndarray,
    labels: list[str],
    codes: np.ndarray,
    fractions: tuple[float, ...],
    seed: int,
    record: dict[str, Any],
) -> np.ndarray:
    codes = np.unique(codes, return_inverse=True)[1]
    groups = int(codes.max(initial=-1)) + 1
    wanted = sum(f > 0 for f in fractions)
    if groups < wanted:
        raise MedtuneError(f"split: {groups} patient groups, too few for {wanted} parts")
    n_folds = min(PART_FOLDS, groups)
    strata, record["strata"] = _strata(positives, labels, codes, groups, n_folds)
    fold = _grouped_folds(strata, np.bincount(codes), n_folds, seed)[codes]
    part_of_fold = np.repeat(np.arange(len(PARTS)), _apportion(fractions, n_folds))
    return np.array(PARTS, dtype=object)[part_of_fold[fold]]


def _out_of_domain(
    table: pa.Table,
    positives: np.ndarray,
    labels: list[str],
    groups: Groups,
    spec: SplitSpec,
    record: dict[str, Any],
) -> np.ndarray:
    domain = DOMAIN_COLUMNS[spec.method]
    values = table.column(domain).to_pylist()
    hold_out = _checked_hold_out(values, spec.hold_out, domain)
    held, touched = _held_and_touched(values, hold_out, groups.codes)
    if not spec.hold_out:
        # The default takes the rarest values; on a small cohort they can hold so many patients
        # that too few are left for the in-domain parts. Give back the largest chosen values
        # (ties between rare sites are ordered by pseudonym, so this depends on the key).
        wanted = sum(f > 0 for f in spec.fractions)
        while len(hold_out) > 1 and len(np.unique(groups.codes[~touched])) < wanted:
            hold_out = hold_out[:-1]
            held, touched = _held_and_touched(values, hold_out, groups.codes)
    inside = ~touched
    if not inside.any():
        raise MedtuneError(f"split hold_out: every patient has images in {', '.join(hold_out)}")
    out = np.full(table.num_rows, OOD, dtype=object)
    out[touched & ~held] = EXCLUDED  # in-domain images of patients with held-out ones
    out[inside] = _parts(positives[inside], labels, groups.codes[inside], spec.fractions,
                         spec.seed, record)  # fmt: skip
    record["hold_out"] = sorted(hold_out)
    record["hold_out_column"] = domain
    return out


def _held_and_touched(
    values: list[str | None], hold_out: list[str], codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a held-out value, and rows of patients who have any such row."""
    held = np.array([v in hold_out for v in values], dtype=bool)
    return held, np.isin(codes, np.unique(codes[held]))


def _checked_hold_out(values: list[str | None], asked: tuple[str, ...], domain: str) -> list[str]:
    counts = Counter(v for v in values if v is not None)
    if len(counts) < 2:
        raise MedtuneError(f"split: the catalog has {len(counts)} {domain} value(s); "
                           "an out-of-domain split needs at least 2")  # fmt: skip
    if not asked:
        return _default_hold_out(counts, len(values))
    for value in asked:
        if value not in counts:
            known = ", ".join(sorted(counts)[:10]) + (", ..." if len(counts) > 10 else "")
            raise MedtuneError(f"split hold_out: '{value}' is not a {domain} in the catalog "
                               f"({domain} values: {known})")  # fmt: skip
    if set(asked) >= set(counts) and None not in values:
        raise MedtuneError(f"split hold_out: holds out every {domain}; keep at least one")
    return sorted(set(asked))


def _default_hold_out(counts: Counter[str], rows: int) -> list[str]:
    rarest_first = sorted(counts, key=lambda v: (counts[v], v))[:-1]  # never every value
    chosen, held = [], 0
    for value in rarest_first:
        if held >= HOLD_OUT_SHARE * rows:
            break
        chosen.append(value)
        held += counts[value]
    return chosen  # rarest first: _out_of_domain gives back from the end


# ---------------------------------------------------------------------------------------------
# Strata and folds.


def _strata(
    positives: np.ndarray, labels: list[str], codes: np.ndarray, groups: int, min_groups: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Each group's stratum (its rarest positive finding, "none" or "other"), and the number
    of groups in each stratum by name."""
    k = positives.shape[1]
    group_positive = np.zeros((groups, k), dtype=bool)
    for j in range(k):
        group_positive[codes[positives[:, j]], j] = True
    prevalence = group_positive.sum(axis=0)
    rank = np.where(group_positive, prevalence, np.iinfo(np.int64).max)
    key = np.where(group_positive.any(axis=1), rank.argmin(axis=1) if k else 0, k)  # k: none
    sizes = np.bincount(key, minlength=k + 2)
    key = np.where(sizes[key] < min_groups, k + 1, key)  # k + 1: other
    names = [name.removeprefix("label_") for name in labels] + ["none", "other"]
    sizes = np.bincount(key, minlength=k + 2)
    return key, {names[s]: int(n) for s, n in enumerate(sizes) if n}


def _grouped_folds(strata: np.ndarray, sizes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each group's fold: within each stratum the groups, largest first (equal sizes in random
    order), are dealt to the folds in serpentine order (0..k-1, then k-1..0, ...), with the
    folds in a random order per stratum. Each fold gets a stratum's groups to within one, and
    close to the same number of its images.

    This is what scikit-learn's StratifiedGroupKFold aims at, but its greedy pass runs in
    Python per group (about 3 ms a group at 20 folds: a minute for 20,000 patients) and
    importing scikit-learn takes seconds; this deal is a sort.
    """
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(strata)), -sizes, strata))  # by stratum, size down
    ranked = strata[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, lengths)  # rank within the stratum
    lap, offset = np.divmod(position, folds)
    slot = np.where(lap % 2 == 0, offset, folds - 1 - offset)
    fold_order = np.argsort(rng.random((int(strata.max(initial=0)) + 1, folds)), axis=1)
    fold = np.empty(len(strata), dtype=np.int8)
    fold[order] = fold_order[ranked, slot]
    return fold


def _apportion(fractions: tuple[float, ...], folds: int) -> np.ndarray:
    """Folds per part: largest remainders, and at least one for each non-zero fraction."""
    exact = np.asarray(fractions) * folds
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: folds - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((exact > 0) & (counts == 0)):
        counts[i] += 1
        counts[np.argmax(counts)] -= 1
    return counts


# ---------------------------------------------------------------------------------------------
# The guard, the summary and the notes.


def _guard(table: pa.Table, spec: SplitSpec, array: pa.Array, groups: Groups) -> None:
    probe = table.select(["patient_id", "image_id"]).append_column(spec.column, array)
    leaks = check_split(probe, spec.column, spec.near_duplicate_bits, groups.near_pairs)
    if leaks:  # cannot happen unless grouping has a bug; never write a leaking split
        raise MedtuneError(f"split '{spec.column}': {describe(leaks)}; not written "
                           "(a bug in medtune: please report it)")  # fmt: skip


def _summary(
    table: pa.Table,
    column: str,
    array: pa.Array,
    labels: list[str],
    positives: np.ndarray,
    domain: str | None,
) -> dict[str, Any]:
    values = [str(v) for v in array.to_pylist()]
    order = sorted(set(values), key=_value_order)
    images = Counter(values)
    by_value = pa.table({"value": values, "patient_id": table.column("patient_id")})
    distinct = by_value.group_by("value").aggregate([("patient_id", "count_distinct")])
    people = dict(zip(distinct["value"].to_pylist(),
                      distinct["patient_id_count_distinct"].to_pylist(), strict=True))  # fmt: skip
    tables: dict[str, list[list[object]]] = {
        column: [[column, "images", "patients"]] + [[v, images[v], people[v]] for v in order]
    }
    if labels:
        value_array = np.array(values, dtype=object)
        tables[f"positives by {column}"] = [["finding", *order]] + [
            [name.removeprefix("label_"), *(int(positives[value_array == v, k].sum())
                                            for v in order)]
            for k, name in enumerate(labels)
        ]  # fmt: skip
    if domain:
        by_domain = Counter(zip(table.column(domain).to_pylist(), values, strict=True))
        rows = Counter(table.column(domain).to_pylist())
        tables[f"images by {domain}"] = [[domain, *order]] + [
            [d if d is not None else "(none)", *(by_domain[d, v] for v in order)]
            for d, _ in rows.most_common()
        ]
    record = {"counts": {v: images[v] for v in order}, "patients": people}
    return {"tables": tables, "record": record}


def _value_order(value: str) -> tuple[int, str]:
    named = [*PARTS, OOD, EXCLUDED]
    if value in named:
        return (named.index(value), "")
    return (len(named), value.zfill(8))  # fold numbers in numeric order


def _notes(groups: Groups, labels: list[str], spec: SplitSpec, record: dict) -> list[str]:
    lines = []
    if groups.without_patient:
        lines.append(f"{groups.without_patient} images without a patient id: each is its "
                     "own group")  # fmt: skip
    if groups.merged_patients:
        lines.append(f"{groups.merged_patients} patients grouped with others by near-duplicate "
                     f"images (within {spec.near_duplicate_bits} bits)")  # fmt: skip
    if groups.without_hash:
        lines.append(f"{groups.without_hash} images without a perceptual hash: not checked "
                     "for near-duplicates")  # fmt: skip
    if labels:
        lines.append(f"stratified on {len(labels)} label columns "
                     f"({len(record.get('strata', {}))} strata)")  # fmt: skip
    elif spec.stratify == "auto":
        lines.append("not stratified: no label columns (run `medtune label` first)")
    else:
        lines.append("not stratified (stratify: none)")
    if "hold_out" in record:
        lines.append(f"held out ({record['hold_out_column']}): {', '.join(record['hold_out'])}")
        excluded = record["counts"].get(EXCLUDED, 0)
        if excluded:
            lines.append(f"{excluded} images excluded: their patients also have held-out images")
    return lines
