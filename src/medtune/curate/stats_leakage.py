"""Where images or patients could cross from training to test: duplicate and near-duplicate
images (perceptual hash), and how each split column divides sites and patients."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from medtune.curate.tables import UNKNOWN, Table, groups, ident, key

PAIR_LIMIT = 50  # near-duplicate pairs listed by image id (all are counted)
SPLIT_ORDER = ("train", "val", "test", "ood")
Pair = tuple[int, int, int]  # near-duplicates: (row, row, bits apart)


def hashes(table: pa.Table) -> list[bytes | None]:
    """The catalog's perceptual hashes (None where an image has none)."""
    if "phash" not in table.column_names:
        return [None] * table.num_rows
    return table.column("phash").to_pylist()


def _without_hash(table: pa.Table) -> int:
    if "phash" not in table.column_names:
        return table.num_rows
    return table.column("phash").null_count


def duplicate_tables(
    con: Any, table: pa.Table, pairs: list[Pair], cross: list[Pair], bits: int
) -> dict[str, Table]:
    """Counts of exact and near-duplicate images, and the ``cross``-patient pairs by image id."""
    exact_groups, exact_images = (0, 0)
    if "phash" in table.column_names:
        exact_groups, exact_images = con.execute(
            "select count(*), coalesce(sum(n), 0) from (select count(*) as n from catalog "
            "where phash is not null group by phash having n > 1)"
        ).fetchone()
    sites = groups(table, "site")
    counts = [
        ["exact duplicate groups (identical hash)", exact_groups],
        ["images in exact duplicate groups", int(exact_images)],
        ["near-duplicate pairs across patients", len(cross)],
        ["near-duplicate pairs within a patient", len(pairs) - len(cross)],
        [
            "near-duplicate pairs across sites",
            sum(sites.codes[i] != sites.codes[j] for i, j, _ in pairs),
        ],
        ["images without a hash", _without_hash(table)],
    ]
    note = (
        "Pairs across patients are the leakage risk: one image under two patients can sit "
        "in train and test at once."
    )
    title = f"Duplicates (perceptual hash, near = at most {bits} of 256 bits apart)"
    return {
        "duplicates": Table(title, ["what", "count"], counts, note),
        "duplicate_pairs": pair_table(table, cross),
    }


def pair_table(table: pa.Table, cross: list[Pair]) -> Table:
    """The closest ``PAIR_LIMIT`` pairs across patients, by image id, patient and site."""
    listed = sorted(cross, key=lambda p: (p[2], p[0], p[1]))[:PAIR_LIMIT]
    rows_at = sorted({row for i, j, _ in listed for row in (i, j)})
    names = [c for c in ("image_id", "patient_id", "site") if c in table.column_names]
    picked = table.select(names).take(pa.array(rows_at, pa.int64())).to_pylist()
    at = dict(zip(rows_at, picked, strict=True))
    rows = []
    for i, j, bits in listed:
        a, b = at[i], at[j]
        rows.append([a.get("image_id"), b.get("image_id"), bits, a.get("patient_id"),
                     b.get("patient_id"), a.get("site"), b.get("site")])  # fmt: skip
    note = f"{len(listed)} of {len(cross)} pairs, closest first." if cross else ""
    columns = ["image a", "image b", "bits apart", "patient a", "patient b", "site a", "site b"]
    return Table("Near-duplicate pairs across patients", columns, rows, note)


def split_table(con: Any, table: pa.Table, column: str, cross: list[Pair]) -> Table:
    """Images per site and split value, with total images and patients per value; the note
    counts patients in two values and near-duplicate ``cross``-patient pairs across values."""
    c = ident(column)
    where = f"from catalog where {c} is not null"
    cells = con.execute(
        f"select {key('site')}, cast({c} as varchar), count(*) {where} group by all"
    ).fetchall()
    totals = con.execute(
        f"select cast({c} as varchar), count(*), count(distinct patient_id) {where} group by all"
    ).fetchall()
    values = sorted((v for v, _, _ in totals), key=_split_order)
    images = {(s, v): n for s, v, n in cells}
    rows = [[s, *(images.get((s, v), 0) for v in values)] for s in sorted({s for s, _, _ in cells})]
    by_value = {v: (n, people) for v, n, people in totals}
    rows += [
        ["all images", *(by_value[v][0] for v in values)],
        ["all patients", *(by_value[v][1] for v in values)],
    ]
    shared = con.execute(
        f"select count(*) from (select patient_id {where} group by patient_id "
        f"having count(distinct {c}) > 1)"
    ).fetchone()[0]
    split = groups(table, column)
    unknown = split.names.index(UNKNOWN) if UNKNOWN in split.names else -1
    straddling = sum(
        split.codes[i] != split.codes[j] and unknown not in (split.codes[i], split.codes[j])
        for i, j, _ in cross
    )
    note = (
        f"Patients in more than one {column} value: {shared}. Near-duplicate pairs across "
        f"patients and {column} values: {straddling}."
    )
    return Table(f"Images per site and {column}", ["site", *values], rows, note)


def _split_order(value: str) -> tuple[int, int, str]:
    if value in SPLIT_ORDER:
        return (0, SPLIT_ORDER.index(value), value)
    return (1, int(value), "") if value.lstrip("-").isdigit() else (2, 0, value)
