"""The run's final leak check: every identifying value seen in the inputs, looked for in every
text the workspace holds (catalog, reports, de-identification log, quarantine list, config).

Item-level checks (each header after de-identification, each image's pixels after blanking)
happen during ingest; this one covers what the pipeline wrote around them. For the synthetic
cohort the identifiers come from its PHI manifest, so the check is complete by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from medtune.deid.identifiers import Identifiers
from medtune.deid.leak import Hit, Needles, scan_texts
from medtune.workspace import Workspace

# UIDs are replaced wholesale; a time of day or an age under 90 identifies no one; 5-digit ZIP
# codes are checked in the report scrubber's own tests (as numbers alone they match by chance).
_NOT_CHECKED = frozenset({"uid", "time", "age", "age_over_89", "zip"})


# Department names ("Radiology Department") leave the header under Annex E, but they name no
# one and reports use the same words.
_GENERIC_FIELDS = frozenset({"InstitutionalDepartmentName"})


def identifiers_from_phi_manifest(path: str | Path) -> Identifiers:
    """A synthetic cohort's injected identifiers (truth/phi.parquet), UIDs excluded."""
    known = Identifiers()
    table = pq.read_table(path, columns=["value", "kind", "field"])
    columns = (table.column(name).to_pylist() for name in ("value", "kind", "field"))
    for value, kind, where in zip(*columns, strict=True):
        if not value or kind in _NOT_CHECKED or where in _GENERIC_FIELDS:
            continue
        if "name" in kind:
            known.add("names", value)
        elif kind in ("phone", "fax", "email", "url", "ip"):
            known.add("contacts", value)
        elif kind in ("institution", "address", "station"):
            known.add("places", value)
        else:
            known.add("ids", value)  # ids, and dates as written (matched without separators)
    return known


def workspace_texts(ws: Workspace) -> Iterator[tuple[str, str]]:
    """(where, text) for every text the dataset holds."""
    if ws.catalog_path.exists():
        table = pq.read_table(ws.catalog_path)
        for name in table.column_names:
            if str(table.schema.field(name).type) == "string":
                for value in table.column(name).to_pylist():
                    if value:
                        yield f"catalog column {name}", value
    if ws.reports_path.exists():
        for value in pq.read_table(ws.reports_path, columns=["text"]).column("text").to_pylist():
            yield "reports", value or ""
    inputs = ws.deid_dir / "inputs.parquet"
    if inputs.exists():
        table = pq.read_table(inputs, columns=["reason", "deid"])
        for name in ("reason", "deid"):
            for value in table.column(name).to_pylist():
                if value:
                    yield f"de-identification log {name}", value
    for path in (ws.deid_dir / "quarantine.csv", ws.config_path):
        if path.exists():
            yield path.name, path.read_text(encoding="utf-8")


def check_workspace(ws: Workspace, known: Identifiers) -> list[Hit]:
    """Hits of ``known`` in the workspace's texts (kinds and places only)."""
    return scan_texts(workspace_texts(ws), Needles.of(known))
