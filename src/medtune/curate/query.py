"""``medtune query``: SQL over a workspace's tables, with DuckDB.

The workspace's Parquet files are views under short names, read where they lie (nothing is
loaded until a query needs it)::

    medtune query -w ws "SELECT site, count(*) FROM catalog GROUP BY site"
    medtune query -w ws "SELECT c.image_id, r.text FROM catalog c JOIN reports r USING (study_id)"

Names: ``catalog`` (one row per image), ``reports`` (de-identified text per study), ``labels``
(the labeller's evidence, once `medtune label` ran) and ``inputs`` (the fate of every input).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path

if TYPE_CHECKING:
    import duckdb

OUTPUT_SUFFIXES = (".csv", ".parquet", ".jsonl")


def workspace_tables(workspace: Workspace) -> dict[str, Path]:
    """The tables a query may name, and their files (only those that exist)."""
    files = {
        "catalog": workspace.catalog_path,
        "reports": workspace.reports_path,
        "labels": workspace.dataset_dir / "labels.parquet",
        "inputs": workspace.deid_dir / "inputs.parquet",
    }
    return {name: path for name, path in files.items() if path.is_file()}


def connect(workspace: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the workspace's tables as views."""
    import duckdb

    ws = Workspace(Path(workspace))
    tables = workspace_tables(ws)
    if "catalog" not in tables:
        raise MedtuneError(f"{ws.catalog_path}: no catalog here; run `medtune ingest` first")
    con = duckdb.connect(":memory:")
    for name, path in tables.items():
        quoted = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{quoted}')")
    return con


def run_query(workspace: str | os.PathLike[str], sql: str) -> pa.Table:
    """The result of ``sql`` over the workspace's tables, as an Arrow table."""
    import duckdb

    con = connect(workspace)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (CREATE, SET, ...)
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as err:
        raise MedtuneError(f"query: {_first_line(str(err))}") from None
    finally:
        con.close()


def matching_rows(workspace: str | os.PathLike[str], where: str) -> list[int]:
    """Row numbers of the catalog rows matching the DuckDB condition ``where``, in catalog
    order (``"body_part = 'CHEST' AND age >= 18"``; other tables are there to join)."""
    import duckdb

    ws = Workspace(Path(workspace))
    con = connect(ws.root)
    try:
        # file_row_number numbers rows as they lie in the file, so the result keeps their order.
        quoted = str(ws.catalog_path).replace("'", "''")
        sql = (f"SELECT file_row_number FROM read_parquet('{quoted}', file_row_number = true) "
               f"AS catalog WHERE {where} ORDER BY file_row_number")  # fmt: skip
        return [int(n) for n in con.sql(sql).to_arrow_table().column(0).to_pylist()]
    except duckdb.Error as err:
        raise MedtuneError(f"where {where!r}: {_first_line(str(err))}") from None
    finally:
        con.close()


def write_result(table: pa.Table, out: str | os.PathLike[str]) -> None:
    """Write a query result as CSV, Parquet or JSON lines (by suffix), atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise MedtuneError(f"{out}: unknown output type (expected {', '.join(OUTPUT_SUFFIXES)})")
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("result", table)
        with atomic_path(out) as tmp:
            target = str(tmp).replace("'", "''")
            options = {".csv": "FORMAT csv, HEADER", ".parquet": "FORMAT parquet",
                       ".jsonl": "FORMAT json"}[suffix]  # fmt: skip
            con.execute(f"COPY result TO '{target}' ({options})")
    finally:
        con.close()


def format_table(table: pa.Table, max_rows: int = 40, max_width: int = 120) -> str:
    """A result as a text table (DuckDB's box rendering), middle rows elided past ``max_rows``."""
    import contextlib
    import io

    import duckdb

    if table.num_columns == 0:
        return "(no result)"
    con = duckdb.connect(":memory:")
    buffer = io.StringIO()
    try:
        con.register("result", table)
        with contextlib.redirect_stdout(buffer):
            con.sql("SELECT * FROM result").show(max_rows=max_rows, max_width=max_width)
    finally:
        con.close()
    return buffer.getvalue().rstrip("\n")


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[:1]) or "failed"
