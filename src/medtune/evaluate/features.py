"""Pooled features of every catalog image, extracted once per (model, data) and cached.

Probing trains small heads on a frozen encoder's features; running the encoder again for every
head and epoch would cost thousands of forward passes for the same numbers. The cache key is a
digest of the weights and the input contract (:func:`model_digest`) and of which pixels the
catalog points at (:func:`data_digest`), so new weights or a re-ingested dataset never reuse
stale features::

    orig = extract_features("runs/pretrain/export", "ws", device="cuda")
    flip = extract_features("runs/pretrain/export", "ws", flipped=True, device="cuda")
    orig.features.shape  # (catalog rows, encoder dim), catalog order

Files: ``<ws>/eval/features/<model>-<data>-{orig|flip}.npy``, float32.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtune.dataset.catalog import read_catalog
from medtune.errors import MedtuneError
from medtune.workspace import Workspace, atomic_path

_CHUNK = 1 << 20  # bytes hashed per read


@dataclass(frozen=True)
class FeatureSet:
    """One feature row per catalog row, in catalog order."""

    features: np.ndarray  # (N, dim) float32
    flipped: bool  # features of horizontally flipped images
    model: str  # model_digest
    data: str  # data_digest


def hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The image mirrored left-right: the ``augment`` of flipped features (module level so
    that DataLoader workers can pickle it)."""
    return x.flip(-1)


def model_digest(export_dir: str | os.PathLike[str]) -> str:
    """16 hex characters naming an export's weights, backbone config and input contract."""
    from medtune.models.export import read_export, resolve_export

    directory = resolve_export(export_dir)
    record = read_export(directory)
    digest = hashlib.sha256()
    _hash_tensors(directory / "encoder.safetensors", digest)
    described = {"backbone": record.get("backbone"), "contract": record.get("contract")}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _hash_tensors(path: Path, digest: Any) -> None:
    """Hash a safetensors file's tensors (name, dtype, shape, bytes) in name order. Not the raw
    file: safetensors writes its metadata header in a random key order, so saving the same
    weights twice gives different bytes."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            length = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + length])
            start = 8 + length
            for name in sorted(k for k in header if k != "__metadata__"):
                entry = header[name]
                digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
                begin, end = entry["data_offsets"]
                for at in range(start + begin, start + end, _CHUNK):
                    digest.update(data[at : min(at + _CHUNK, start + end)])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedtuneError(f"{path}: not readable as safetensors ({type(err).__name__})") from None


def data_digest(workspace: str | os.PathLike[str]) -> str:
    """16 hex characters naming which pixels each catalog row points at: its image_id,
    shard_file and index, and each used shard's name, size and modification time."""
    ws = Workspace(Path(workspace))
    table = read_catalog(ws.catalog_path, columns=["image_id", "shard_file", "index"])
    digest = hashlib.sha256()
    for name in ("image_id", "shard_file"):
        values = table.column(name).to_pylist()
        digest.update("\0".join(str(v) for v in values).encode() + b"\1")
    digest.update(table.column("index").to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    for shard in sorted(set(table.column("shard_file").to_pylist())):
        path = ws.images_dir / f"{shard}.npy"
        try:
            stat = path.stat()
        except OSError:
            raise MedtuneError(f"{path}: the shard is missing; re-run `medtune ingest`") from None
        digest.update(f"{shard}\0{stat.st_size}\0{stat.st_mtime_ns}\1".encode())
    return digest.hexdigest()[:16]


def features_path(workspace: str | os.PathLike[str], model: str, data: str, flipped: bool) -> Path:
    """Where the features of (model, data, flip) are cached."""
    name = f"{model}-{data}-{'flip' if flipped else 'orig'}.npy"
    return Workspace(Path(workspace)).eval_dir / "features" / name


def extract_features(
    export_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    *,
    flipped: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    cache: bool = True,
) -> FeatureSet:
    """The export's pooled features of every catalog image (mirrored left-right with
    ``flipped``); read from the cache when there, else computed and (with ``cache``) saved."""
    ws = Workspace(Path(workspace))
    model, data = model_digest(export_dir), data_digest(ws.root)
    path = features_path(ws.root, model, data, flipped)
    if cache and path.is_file():
        try:
            return FeatureSet(np.load(path), flipped, model, data)
        except (OSError, ValueError):
            pass  # unreadable (a foreign file): computed again and replaced below
    features = _compute(export_dir, ws.root, flipped, batch_size, workers, device)
    if cache:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, features)
    return FeatureSet(features, flipped, model, data)


def encoder_dataset(
    encoder: torch.nn.Module, workspace: str | os.PathLike[str], flipped: bool
) -> torch.utils.data.Dataset:
    """Every catalog row (item position = catalog row), shaped for ``encoder``."""
    from medtune.train.data import ImageDataset

    return ImageDataset(
        workspace,
        contract=encoder.contract,  # type: ignore[arg-type]
        split_column=None,
        label_columns=[],
        augment=hflip if flipped else None,
    )


def _compute(
    export_dir: str | os.PathLike[str],
    workspace: Path,
    flipped: bool,
    batch_size: int,
    workers: int,
    device: str,
) -> np.ndarray:
    from medtune.models.export import load_encoder
    from medtune.train.data import make_loader

    encoder = load_encoder(export_dir).eval().to(device)
    dataset = encoder_dataset(encoder, workspace, flipped)
    features = np.zeros((len(dataset), encoder.dim), np.float32)  # type: ignore[arg-type]
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers)
    with torch.inference_mode():
        for batch in loader:
            pooled = encoder(batch["image"].to(device, non_blocking=True))
            features[batch["index"].numpy()] = pooled.float().cpu().numpy()
    return features
