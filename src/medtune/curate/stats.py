"""Dataset statistics for the card: who and what is in a workspace's catalog, in plain tables.

Every figure is a :class:`Table` (column names and rows of plain Python values) so that card.md,
card.html and the CSV exports all render from the same numbers. Group-bys run in DuckDB over the
catalog's Arrow table (about 0.1 s at 100,000 rows); pixel statistics read a seeded sample of
stored images per site from the shards.

How findings are counted: a ``label_<finding>`` column holds 1 (positive), 0 (negative), -1
(uncertain) or null (the report did not mention it). Prevalence is positives over *all* images,
so "not mentioned" counts as not known positive, never as negative; the uncertain share is shown
beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medtune.curate.provenance import Provenance, read_provenance
from medtune.curate.shortcuts import (
    MIN_SITE_PATIENTS,
    DatasetWarning,
    shortcut_warnings,
)
from medtune.curate.stats_leakage import duplicate_tables, hashes, split_table
from medtune.curate.stats_pixels import PixelStats, pixel_statistics
from medtune.curate.tables import Table, groups, ident, key
from medtune.dataset.catalog import catalog_metadata, read_catalog
from medtune.dataset.phash import NEAR, near_duplicate_pairs
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

SEED = 0  # the pixel sample is the same on every run of one catalog
# (label, lowest age, highest age); ages are whole years, 90 means 90 and over.
AGE_BANDS = (
    ("0-17", 0, 17),
    ("18-39", 18, 39),
    ("40-59", 40, 59),
    ("60-79", 60, 79),
    ("80+", 80, 200),
)


@dataclass
class DatasetStats:
    """Everything the card shows, computed once. ``tables`` keys are file-name slugs."""

    tables: dict[str, Table]
    findings: list[str]  # findings with a label column; [] before `medtune label`
    labels: dict[str, Any]  # the catalog's "labels" metadata
    splits: dict[str, Any]  # split column -> how it was made ({} when not recorded)
    warnings: list[DatasetWarning]
    provenance: Provenance
    pixels: PixelStats  # also the sampled thumbnails, stored shape and dtype

    def count(self, what: str) -> int:
        """A figure of the overview table: images, studies, patients, sites, ..."""
        return int(dict(self.tables["overview"].rows)[what])

    @property
    def images(self) -> int:
        return self.count("images")

    @property
    def studies(self) -> int:
        return self.count("studies")

    @property
    def patients(self) -> int:
        return self.count("patients")

    @property
    def sites(self) -> int:
        return self.count("sites")


def dataset_stats(
    workspace: Path,
    sample_per_site: int = 64,
    near_duplicate_bits: int = NEAR,
    min_site_patients: int = MIN_SITE_PATIENTS,
) -> DatasetStats:
    """Compute the card's statistics for the workspace at ``workspace``.

    ``sample_per_site`` stored images per site (seeded) give the pixel statistics;
    hashes at most ``near_duplicate_bits`` apart count as near-duplicates; a site with fewer
    than ``min_site_patients`` patients is too small to be its own test split.
    """
    import duckdb

    ws = Workspace(Path(workspace))
    table = read_catalog(ws.catalog_path)
    if table.num_rows == 0:
        raise MedtuneError(f"{ws.catalog_path}: no images; nothing to describe")
    meta = catalog_metadata(table)
    findings = label_findings(table, meta.get("labels", {}))
    splits = {c: meta.get("splits", {}).get(c, {}) for c in find_split_columns(table, meta)}
    con = duckdb.connect(":memory:")
    con.register("catalog", table)
    tables = composition_tables(con)
    tables["missing"] = missing_values(table)
    tables |= prevalence_tables(con, findings)
    tables["size"] = size_table(con)
    pixels = pixel_statistics(ws, table, sample_per_site, SEED)
    tables["intensity"] = pixels.table
    pairs = near_duplicate_pairs(hashes(table), near_duplicate_bits)
    patients = groups(table, "patient_id")
    cross = [p for p in pairs if patients.codes[p[0]] != patients.codes[p[1]]]  # leakage risk
    tables |= duplicate_tables(con, table, pairs, cross, near_duplicate_bits)
    for column in splits:
        tables[f"split_{column}"] = split_table(con, table, column, cross)
    provenance = read_provenance(ws)
    warnings = shortcut_warnings(
        sites=groups(table, "site"),
        vendors=groups(table, "manufacturer"),
        patients=patients,
        positives={f: _positive(table, f) for f in findings},
        cross_patient_pairs=len(cross),
        near_duplicate_bits=near_duplicate_bits,
        deid=provenance.deid,
        min_site_patients=min_site_patients,
    )
    labels = meta.get("labels", {})
    return DatasetStats(tables, findings, labels, splits, warnings, provenance, pixels)


# ---------------------------------------------------------------------------------------------
# Columns: which hold labels and splits; values as NumPy arrays.


def _positive(table: pa.Table, finding: str) -> np.ndarray:
    column = table.column(f"label_{finding}")
    return pc.fill_null(pc.equal(column, 1), False).to_numpy(zero_copy_only=False)


def label_findings(table: pa.Table, labels_meta: dict[str, Any]) -> list[str]:
    """Findings with an integer ``label_<finding>`` column, in the labeller's order."""
    present = [
        name.removeprefix("label_")
        for name, kind in zip(table.column_names, table.schema.types, strict=True)
        if name.startswith("label_") and pa.types.is_integer(kind)
    ]
    order = [f for f in labels_meta.get("findings", []) if f in present]
    return order + [f for f in present if f not in order]


def find_split_columns(table: pa.Table, meta: dict[str, Any]) -> list[str]:
    """Split columns: those the catalog's "splits" metadata names, else "split" and "fold"."""
    names = list(meta.get("splits", {})) or ["split", "fold"]
    return [name for name in names if name in table.column_names]


# ---------------------------------------------------------------------------------------------
# Composition: images, studies and patients per site, vendor, model, anatomy, view, sex, age.

_COUNTS = "count(*), count(distinct study_id), count(distinct patient_id)"
_SITES = {"sites": "count(distinct site)"}
# (slug, title, key columns, {extra column: SQL}): images, studies, patients per key.
GROUPINGS: tuple[tuple[str, str, list[str], dict[str, str]], ...] = (
    ("sites", "Per site", ["site"],
     {"manufacturers": "count(distinct manufacturer)", "anatomies": "count(distinct body_part)"}),
    ("vendors", "Per manufacturer", ["manufacturer"], _SITES),
    ("models", "Per manufacturer and model", ["manufacturer", "model"], _SITES),
    ("anatomy", "Per anatomy (Body Part Examined)", ["body_part"], _SITES),
    ("views", "Per view", ["view"], {}),
    ("sex", "Per sex", ["sex"], {}),
)  # fmt: skip


def composition_tables(con: Any) -> dict[str, Table]:
    """Overview, and images/studies/patients per site, vendor, model, anatomy, view, sex and
    age band; images per site and anatomy; patients per age decade and sex."""
    images, studies, patients, sites, vendors, models, parts = con.execute(
        f"select {_COUNTS}, count(distinct site), count(distinct manufacturer), "
        "count(distinct (manufacturer, model)), count(distinct body_part) from catalog"
    ).fetchone()
    overview = Table(
        "Overview",
        ["what", "count"],
        [
            ["images", images],
            ["studies", studies],
            ["patients", patients],
            ["sites", sites],
            ["manufacturers", vendors],
            ["models", models],
            ["anatomies", parts],
        ],
    )
    tables = {"overview": overview}
    for slug, title, keys, extra in GROUPINGS:
        tables[slug] = _grouped(con, title, keys, extra)
    tables["age_bands"] = age_band_table(con)
    tables["site_anatomy"] = site_anatomy_table(con)
    tables["age_sex"] = age_sex_table(con)
    return tables


def _grouped(con: Any, title: str, keys: list[str], extra: dict[str, str]) -> Table:
    key_sql = ", ".join(key(k) for k in keys)
    extra_sql = "".join(f", {sql}" for sql in extra.values())
    rows = con.execute(
        f"select {key_sql}, {_COUNTS}{extra_sql} from catalog group by all "
        f"order by {len(keys) + 1} desc, {key_sql}"
    ).fetchall()
    columns = [*keys, "images", "studies", "patients", *extra]
    return Table(title, columns, [list(row) for row in rows])


def _age_band_sql(column: str = "age") -> str:
    cases = " ".join(f"when {column} <= {hi} then '{label}'" for label, _, hi in AGE_BANDS)
    return f"case when {column} is null then 'unknown' {cases} end"


def age_band_table(con: Any) -> Table:
    """Images, studies and patients per age band (a patient may appear in two bands)."""
    sql = f"select {_age_band_sql()} as band, {_COUNTS} from catalog group by band"
    rows = {row[0]: list(row) for row in con.execute(sql).fetchall()}
    order = [label for label, _, _ in AGE_BANDS] + ["unknown"]
    return Table(
        "Per age band (years at the study)",
        ["age band", "images", "studies", "patients"],
        [rows.get(b, [b, 0, 0, 0]) for b in order],
        "A patient imaged at two ages can count in two bands.",
    )


def site_anatomy_table(con: Any) -> Table:
    """Images per site (rows) and anatomy (columns)."""
    cells = con.execute(
        f"select {key('site')}, {key('body_part')}, count(*) from catalog group by all"
    ).fetchall()
    sites = _by_total(cells, 0)
    parts = _by_total(cells, 1)
    counts = {(s, p): n for s, p, n in cells}
    rows = [
        [s, *(counts.get((s, p), 0) for p in parts), sum(counts.get((s, p), 0) for p in parts)]
        for s in sites
    ]
    return Table("Images per site and anatomy", ["site", *parts, "total"], rows)


def _by_total(cells: list[tuple[Any, ...]], position: int) -> list[Any]:
    totals: dict[Any, int] = {}
    for cell in cells:
        totals[cell[position]] = totals.get(cell[position], 0) + cell[-1]
    return sorted(totals, key=lambda k: (-totals[k], str(k)))


def age_sex_table(con: Any) -> Table:
    """Patients per age decade (at their first imaged study) and sex: the age pyramid."""
    cells = con.execute(
        "select case when age is null then 'unknown' when age >= 90 then '90+' "
        "else (age // 10 * 10)::int || '-' || (age // 10 * 10 + 9)::int end, sex, count(*) "
        f"from (select patient_id, {key('sex')} as sex, arg_min(age, study_date) as age "
        "from catalog group by patient_id, sex) group by all"
    ).fetchall()
    decades = [f"{d}-{d + 9}" for d in range(0, 90, 10)] + ["90+", "unknown"]
    sexes = ["F", "M", *sorted({s for _, s, _ in cells} - {"F", "M"})]
    counts = {(a, s): n for a, s, n in cells}
    rows = [[d, *(counts.get((d, s), 0) for s in sexes)] for d in decades]
    return Table(
        "Patients per age decade and sex",
        ["age", *sexes],
        rows,
        "Age at the patient's first imaged study.",
    )


# ---------------------------------------------------------------------------------------------
# Missing values, findings, sizes.


def missing_values(table: pa.Table) -> Table:
    """Rows with a null or empty value, per column (label columns excluded: there null means
    "not mentioned"); only columns with something missing are listed."""
    rows = []
    for name in table.column_names:
        if name.startswith("label_"):
            continue
        column = table.column(name)
        missing = column.null_count
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            missing += int(pc.sum(pc.equal(column, "")).as_py() or 0)
        if missing:
            rows.append([name, missing, round(100 * missing / table.num_rows, 1)])
    return Table(
        "Missing values (null or empty)",
        ["column", "missing", "%"],
        rows,
        "Columns not listed have a value in every row.",
    )


PREVALENCE_COLUMNS = ["finding", "positive", "uncertain", "negative", "not mentioned",
                      "positive %", "uncertain %"]  # fmt: skip


def prevalence_tables(con: Any, findings: list[str]) -> dict[str, Table]:
    """Counts per finding, and the positive share per site and per manufacturer."""
    if not findings:
        return {}
    parts = []
    for f in findings:
        c = ident(f"label_{f}")
        parts.append(
            f"count(*) filter ({c} = 1), count(*) filter ({c} = -1), "
            f"count(*) filter ({c} = 0), count(*) filter ({c} is null)"
        )
    row = con.execute(f"select count(*), {', '.join(parts)} from catalog").fetchone()
    total, counts = row[0], row[1:]
    rows = []
    for i, f in enumerate(findings):
        pos, unc, neg, unmentioned = counts[4 * i : 4 * i + 4]
        rows.append([f, pos, unc, neg, unmentioned, _pct(pos, total), _pct(unc, total)])
    note = (
        "Positive % and uncertain % are of all images; 'not mentioned' (no label) is not "
        "counted as negative."
    )
    return {
        "prevalence": Table("Findings", PREVALENCE_COLUMNS, rows, note),
        "prevalence_site": _prevalence_by(con, "site", "Positive % per site", findings),
        "prevalence_vendor": _prevalence_by(
            con, "manufacturer", "Positive % per manufacturer", findings
        ),
    }


def _prevalence_by(con: Any, column: str, title: str, findings: list[str]) -> Table:
    shares = ", ".join(
        f"round(100.0 * count(*) filter ({ident('label_' + f)} = 1) / count(*), 1)"
        for f in findings
    )
    rows = con.execute(
        f"select {key(column)} as k, count(*), {shares} from catalog group by k order by k"
    ).fetchall()
    return Table(
        title,
        [column, "images", *findings],
        [list(r) for r in rows],
        "Positives over all images of the row.",
    )


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def size_table(con: Any) -> Table:
    """Original matrix size and pixel spacing per site: median, min, max."""
    stats = []
    for column, digits in (("rows", 0), ("cols", 0), ("pixel_spacing_mm", 3)):
        c = ident(column)
        stats.append(f"round(median({c}), {digits}), min({c}), max({c})")
    rows = con.execute(
        f"select {key('site')} as k, count(*), {', '.join(stats)} from catalog "
        "group by k order by k"
    ).fetchall()
    heads = [f"{c} {s}" for c in ("rows", "cols", "spacing mm") for s in ("median", "min", "max")]
    return Table(
        "Original size per site",
        ["site", "images", *heads],
        [[_round(v) for v in r] for r in rows],
        "Rows and columns of the original matrix, before resizing.",
    )


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value
