"""`medtune query` (DuckDB over the workspace) and `medtune subset` (shards shared, not copied)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medtune.curate.query import format_table, run_query, write_result
from medtune.curate.subset import make_subset
from medtune.dataset.catalog import catalog_metadata, read_catalog, write_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace


@pytest.fixture
def ws(ingested_workspace: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(ingested_workspace, copy, symlinks=True)
    return copy


def test_query_counts_match_the_catalog(ingested_workspace: Path) -> None:
    catalog = read_catalog(Workspace(ingested_workspace).catalog_path)
    result = run_query(
        ingested_workspace,
        "SELECT site, count(*) AS images, count(DISTINCT patient_id) AS patients "
        "FROM catalog GROUP BY site ORDER BY site",
    )
    sites = catalog.column("site").to_pylist()
    assert result.column("site").to_pylist() == sorted(set(sites))
    assert result.column("images").to_pylist() == [sites.count(s) for s in sorted(set(sites))]
    assert sum(result.column("patients").to_pylist()) >= len(set(catalog["patient_id"].to_pylist()))


def test_query_joins_reports_and_inputs(ingested_workspace: Path) -> None:
    joined = run_query(
        ingested_workspace,
        "SELECT count(*) AS n FROM catalog c JOIN reports r USING (study_id)",
    )
    assert joined.column("n")[0].as_py() > 0
    fates = run_query(ingested_workspace, "SELECT status, count(*) AS n FROM inputs GROUP BY 1")
    assert dict(zip(*fates.to_pydict().values(), strict=True))["ingested"] > 0


def test_query_error_is_one_line_and_names_the_problem(ingested_workspace: Path) -> None:
    with pytest.raises(MedtuneError, match=r"^query: .*no_such_column") as info:
        run_query(ingested_workspace, "SELECT no_such_column FROM catalog")
    assert "\n" not in str(info.value)


def test_query_without_a_catalog_says_so(tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match="no catalog here"):
        run_query(tmp_path, "SELECT 1")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_write_result_formats(ingested_workspace: Path, tmp_path: Path, suffix: str) -> None:
    table = run_query(ingested_workspace, "SELECT image_id, age FROM catalog ORDER BY image_id")
    out = tmp_path / f"result{suffix}"
    write_result(table, out)
    if suffix == ".csv":
        with out.open() as fh:
            rows = list(csv.DictReader(fh))
        ids = [row["image_id"] for row in rows]
    elif suffix == ".parquet":
        ids = pq.read_table(out).column("image_id").to_pylist()
    else:
        ids = [json.loads(line)["image_id"] for line in out.read_text().splitlines()]
    assert ids == table.column("image_id").to_pylist()
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed


def test_write_result_refuses_unknown_suffix(tmp_path: Path, ingested_workspace: Path) -> None:
    table = run_query(ingested_workspace, "SELECT 1 AS one")
    with pytest.raises(MedtuneError, match=r"result\.xlsx: unknown output type"):
        write_result(table, tmp_path / "result.xlsx")


def test_format_table_elides_long_results(ingested_workspace: Path) -> None:
    table = run_query(ingested_workspace, "SELECT image_id FROM catalog")
    text = format_table(table, max_rows=6)
    shown = [line for line in text.splitlines() if line.startswith("│ I")]
    assert len(shown) == 6 and f"{table.num_rows} rows" in text


# ---------------------------------------------------------------------------------------------
# Subsets.


def test_subset_keeps_matching_rows_and_links_shards(ws: Path, tmp_path: Path) -> None:
    src = Workspace(ws)
    catalog = read_catalog(src.catalog_path)
    write_catalog(src.catalog_path, catalog, metadata={"labels": {"findings": ["x"]}})
    target = tmp_path / "chest"
    summary = make_subset(ws, "body_part = 'CHEST'", target)

    dst = Workspace(target)
    subset = read_catalog(dst.catalog_path)
    expected = catalog.filter(pc.equal(catalog.column("body_part"), "CHEST"))
    assert 0 < subset.num_rows < catalog.num_rows
    assert subset.column("image_id").to_pylist() == expected.column("image_id").to_pylist()
    assert subset.schema.names == catalog.schema.names
    meta = catalog_metadata(subset)
    assert meta["labels"] == {"findings": ["x"]}  # curation metadata travels with the rows
    assert meta["subset"]["where"] == "body_part = 'CHEST'" and meta["subset"]["of"] == 68
    assert summary.tables["subset"][1][0] == subset.num_rows

    shards = sorted(dst.images_dir.iterdir())
    assert shards and all(p.is_symlink() for p in shards)
    assert {p.stem for p in shards} == set(subset.column("shard_file").to_pylist())
    for row in subset.to_pylist():  # every row's pixels read through the links, unchanged
        here = np.load(dst.images_dir / f"{row['shard_file']}.npy", mmap_mode="r")
        there = np.load(src.images_dir / f"{row['shard_file']}.npy", mmap_mode="r")
        assert np.array_equal(here[row["index"]], there[row["index"]])

    reports = pq.read_table(dst.reports_path)
    studies = set(subset.column("study_id").to_pylist())
    assert set(reports.column("study_id").to_pylist()) <= studies
    assert dst.config_path.is_file() and (dst.deid_dir / "inputs.parquet").is_file()


def test_subset_of_a_subset_links_the_real_files(ws: Path, tmp_path: Path) -> None:
    make_subset(ws, "sex = 'F'", tmp_path / "f")
    make_subset(tmp_path / "f", "age >= 40", tmp_path / "f40")
    links = list(Workspace(tmp_path / "f40").images_dir.iterdir())
    assert links and all(not link.resolve().is_relative_to(tmp_path / "f") for link in links)
    meta = catalog_metadata(read_catalog(Workspace(tmp_path / "f40").catalog_path))
    assert meta["subset"]["where"] == "age >= 40"
    assert meta["subset"]["parent"]["where"] == "sex = 'F'"


def test_subset_refuses_bad_where_empty_result_and_used_target(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match=r"where .*nope"):
        make_subset(ws, "nope = 1", tmp_path / "a")
    with pytest.raises(MedtuneError, match="no catalog row matches"):
        make_subset(ws, "age > 200", tmp_path / "b")
    used = tmp_path / "used"
    used.mkdir()
    (used / "file").write_text("x")
    with pytest.raises(MedtuneError, match="not empty"):
        make_subset(ws, "age > 1", used)
    with pytest.raises(MedtuneError, match="new workspace"):
        make_subset(ws, "age > 1", ws)
