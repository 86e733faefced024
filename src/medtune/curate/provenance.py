"""Where a workspace's dataset came from: inputs and their fates, reports, de-identification.

Read for the dataset card from the workspace alone: ``dataset/deid/inputs.parquet`` (one row per
input: ingested, quarantined or duplicate), ``dataset/reports.parquet`` and ``medtune.yaml`` (the
config that made the workspace). Nothing here shows a file path or a value from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
import yaml

import medtune
from medtune.errors import MedtuneError
from medtune.workspace import Workspace

PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
# Config keys left out of the card: where the pseudonym key lives is for its keeper only.
PRIVATE_KEYS = ("key",)


@dataclass
class Provenance:
    """The card's provenance section, as plain values."""

    inputs: dict[str, int] = field(default_factory=dict)  # status -> inputs
    quarantined_by_stage: dict[str, int] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)  # {} when there are none
    config_kind: str | None = None  # "ingest", "demo", ...; None when medtune.yaml is missing
    config_text: str = ""  # medtune.yaml, less PRIVATE_KEYS
    deid: dict[str, Any] | None = None  # {"enabled", "options", "ocr"}; None when unknown
    medtune_version: str = medtune.__version__


def read_provenance(ws: Workspace) -> Provenance:
    """The provenance of the dataset in ``ws`` (missing files leave their part empty)."""
    out = Provenance()
    out.inputs, out.quarantined_by_stage = input_counts(ws)
    out.reports = report_counts(ws)
    config = read_config(ws)
    if config is not None:
        out.config_kind = str(config.get("kind", "")) or None
        shown = {k: v for k, v in config.items() if k not in PRIVATE_KEYS}
        out.config_text = yaml.safe_dump(shown, sort_keys=False, allow_unicode=True)
        out.deid = deid_settings(config)
    return out


def input_counts(ws: Workspace) -> tuple[dict[str, int], dict[str, int]]:
    """Inputs per status, and quarantined inputs per stage where they stopped."""
    path = ws.deid_dir / "inputs.parquet"
    if not path.is_file():
        return {}, {}
    table = pq.read_table(path, columns=["status", "stage"])
    statuses, stages = table.column("status").to_pylist(), table.column("stage").to_pylist()
    by_status: dict[str, int] = {}
    by_stage: dict[str, int] = {}
    for status, stage in zip(statuses, stages, strict=True):
        by_status[status] = by_status.get(status, 0) + 1
        if status == "quarantined":
            key = stage or "unknown"
            by_stage[key] = by_stage.get(key, 0) + 1
    return by_status, by_stage


def report_counts(ws: Workspace) -> dict[str, int]:
    """Report rows, those matched to images, and the report files they came from."""
    if not ws.reports_path.is_file():
        return {}
    table = pq.read_table(ws.reports_path, columns=["has_images", "source"])
    with_images = sum(bool(v) for v in table.column("has_images").to_pylist())
    # `source` is "<file id>:<line>": opaque ids, no paths; the file ids count the files.
    files = {str(s).rsplit(":", 1)[0] for s in table.column("source").to_pylist()}
    return {
        "reports": table.num_rows,
        "with images": with_images,
        "without images": table.num_rows - with_images,
        "report files": len(files),
    }


def read_config(ws: Workspace) -> dict[str, Any] | None:
    """medtune.yaml as a mapping, or None when the workspace has none."""
    path = ws.config_path
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise MedtuneError(f"{path}: not valid YAML ({type(err).__name__})") from err
    if not isinstance(data, dict):
        raise MedtuneError(f"{path}: expected a mapping at the top level")
    return data


def deid_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``deid`` settings of an ingest config (top level) or a demo config (under
    ``ingest:``), with defaults filled in; None when the config holds none."""
    section = config.get("deid")
    if section is None and isinstance(config.get("ingest"), dict):
        section = config["ingest"].get("deid")
    if not isinstance(section, dict):
        return None
    ocr = section.get("ocr", "flagged")
    return {
        "enabled": section.get("enabled", True) is not False,
        "options": [str(o) for o in section.get("options") or []],
        "ocr": "off" if ocr is False else str(ocr),  # YAML 1.1 reads a bare `off` as false
    }
