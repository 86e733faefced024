"""A trained model as a self-describing directory: weights as safetensors, the rest as JSON.

::

    export/
      medtune.json            # what the model is: task, backbone config, input contract, labels,
                              #   the head's and decoder's configs, medtune version, metrics
      encoder.safetensors     # the image backbone (LoRA merged in), loadable by the registry
      head.safetensors, ...   # one file per named part (classifier head, decoder, projections)
      adapter/                # optional extras a task writes (a PEFT adapter, a tokenizer)

Everything needed to rebuild the model is in ``medtune.json``; nothing in the directory is
executed when it is loaded. The directory is written whole to a temporary sibling and renamed
into place, so a reader never sees half an export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, InputContract
from medtune.models.weights import load_weights, save_weights
from medtune.workspace import fsync_path

EXPORT_FILE = "medtune.json"
FORMAT = "medtune-model"
FORMAT_VERSION = 1
# Backbone keys that point at the weights the model started from: an export carries its own.
_WEIGHT_KEYS = ("pretrained_path",)


def export_model(
    directory: str | os.PathLike[str],
    *,
    task: str,
    backbone: Mapping[str, Any],
    encoder: Encoder,
    parts: Mapping[str, nn.Module] | None = None,
    info: Mapping[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``encoder`` (built from the registry config ``backbone``) and the named ``parts``
    as ``directory``, replacing an earlier export there; return the directory.

    ``task`` says what the model does ("encoder", "classify", "report", "ground"); ``info``
    adds JSON values (labels, head config, metrics, the recipe). ``write_extra(tmp_dir)`` may
    add files (an adapter, a tokenizer) before the directory is moved into place. A LoRA
    encoder must be merged first: ``encoder.safetensors`` holds plain backbone weights."""
    from medtune import __version__

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        meta = {"medtune_version": __version__, "task": task}
        save_weights(encoder, tmp / "encoder.safetensors", metadata=meta)
        for name, module in (parts or {}).items():
            save_weights(module, tmp / f"{name}.safetensors", metadata=meta)
        if write_extra is not None:
            write_extra(tmp)
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "medtune_version": __version__,
            "task": task,
            "backbone": _portable(backbone),
            "family": encoder.family,
            "dim": encoder.dim,
            "contract": _contract_json(encoder.contract),
            "parts": sorted(parts or {}),
            **dict(info or {}),
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        for path in tmp.rglob("*"):
            fsync_path(path)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_export(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``medtune.json`` of an export, checked for format; MedtuneError if it is not one."""
    path = Path(directory) / EXPORT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedtuneError(f"{directory}: not a medtune export (no {EXPORT_FILE})") from None
    except (OSError, ValueError) as exc:
        raise MedtuneError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MedtuneError(f"{path}: not a medtune model description")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise MedtuneError(
            f"{path}: written by a newer medtune ({record.get('medtune_version')}); upgrade medtune"
        )
    return record


def resolve_export(path: str | os.PathLike[str]) -> Path:
    """An export directory from ``path``: the export itself, or a run directory holding one
    (``runs/<name>/export``)."""
    path = Path(path)
    for candidate in (path, path / "export"):
        if (candidate / EXPORT_FILE).is_file():
            return candidate
    raise MedtuneError(f"{path}: neither an export nor a run with an export/ directory")


def contract_of(record: Mapping[str, Any]) -> InputContract:
    """The input contract an export records."""
    c = record["contract"]
    return InputContract(int(c["channels"]), int(c["size"]), tuple(c["mean"]), tuple(c["std"]))


def load_encoder(directory: str | os.PathLike[str]) -> Encoder:
    """Rebuild an export's backbone from its recorded config and load ``encoder.safetensors``.

    Families whose architecture lives in a directory (Hugging Face, open_clip) need that
    directory (the ``path`` key) to still exist; the weights come from the export."""
    from medtune.models.registry import backbone_from_config

    directory = resolve_export(directory)
    record = read_export(directory)
    encoder = backbone_from_config(record["backbone"])
    load_weights(encoder, directory / "encoder.safetensors")
    if encoder.contract != contract_of(record):
        raise MedtuneError(
            f"{directory}: the rebuilt backbone's input contract {encoder.contract} differs "
            f"from the recorded one"
        )
    return encoder


def load_part(directory: str | os.PathLike[str], name: str, module: nn.Module) -> nn.Module:
    """Load the export's ``<name>.safetensors`` into ``module`` (built by the caller from the
    config in ``medtune.json``); return the module."""
    directory = resolve_export(directory)
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        raise MedtuneError(f"{directory}: the export has no part {name!r}")
    load_weights(module, path)
    return module


def _portable(backbone: Mapping[str, Any]) -> dict[str, Any]:
    # The export holds the weights: the file the backbone started from is not needed to load it.
    return {k: v for k, v in backbone.items() if k not in _WEIGHT_KEYS}


def _contract_json(contract: InputContract) -> dict[str, Any]:
    return {"channels": contract.channels, "size": contract.size,
            "mean": list(contract.mean), "std": list(contract.std)}  # fmt: skip


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an existing ``final`` is moved aside first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
