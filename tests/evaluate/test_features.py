"""Feature extraction: one row per catalog row in catalog order, the encoder's own output; the
cache is keyed by weights and data and a hit never loads the model; flipped features are the
encoder's features of the mirrored images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import medtune.models.export as export_module
from medtune.dataset.catalog import read_catalog, write_catalog
from medtune.evaluate.features import (
    data_digest,
    encoder_dataset,
    extract_features,
    features_path,
    model_digest,
)
from medtune.models.export import load_encoder
from tests.evaluate.probe_builders import TINY_VIT, make_export, make_probe_workspace


@pytest.fixture(scope="module")
def probe_workspace(
    ingested_workspace: Path, synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Read-only: copy it before changing it."""
    root = tmp_path_factory.mktemp("features") / "ws"
    return make_probe_workspace(ingested_workspace, synth_cohort, root)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export") / "export")


def direct_features(export: Path, workspace: Path, rows: list[int], flipped: bool) -> np.ndarray:
    """The encoder run on catalog rows ``rows``, one image at a time."""
    encoder = load_encoder(export).eval()
    dataset = encoder_dataset(encoder, workspace, flipped)
    with torch.no_grad():
        return np.stack([encoder(dataset[r]["image"][None])[0].numpy() for r in rows])


def test_features_are_the_encoders_in_catalog_order_and_cached(
    export: Path, probe_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(probe_workspace, ws)
    first = extract_features(export, ws, batch_size=16)
    rows = read_catalog(ws / "dataset" / "catalog.parquet").num_rows
    assert first.features.shape == (rows, TINY_VIT["dim"]) and first.features.dtype == np.float32
    assert (first.model, first.data) == (model_digest(export), data_digest(ws))
    picked = [0, 17, rows - 1]  # across shards of 16
    np.testing.assert_allclose(
        first.features[picked], direct_features(export, ws, picked, False), atol=1e-5
    )
    path = features_path(ws, first.model, first.data, flipped=False)
    assert path.is_file() and path.name.endswith("-orig.npy")

    def no_model(directory: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(export_module, "load_encoder", no_model)
    again = extract_features(export, ws)
    assert np.array_equal(again.features, first.features)
    with pytest.raises(AssertionError, match="cache was not used"):
        extract_features(export, ws, cache=False)  # the patch is what a miss would call


def test_flipped_features_are_those_of_the_mirrored_images(
    export: Path, probe_workspace: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(probe_workspace, ws)
    orig = extract_features(export, ws, cache=False)
    flip = extract_features(export, ws, flipped=True)
    assert flip.flipped and not orig.flipped
    assert np.abs(flip.features - orig.features).max() > 1e-3
    np.testing.assert_allclose(flip.features[[3, 40]], direct_features(export, ws, [3, 40], True),
                               atol=1e-5)  # fmt: skip
    assert features_path(ws, flip.model, flip.data, flipped=True).is_file()
    assert not features_path(ws, orig.model, orig.data, flipped=False).exists()  # cache=False


def test_keys_change_with_the_weights_and_the_data(
    export: Path, probe_workspace: Path, tmp_path: Path
) -> None:
    same = make_export(tmp_path / "same")  # the same weights, saved again
    nudged = make_export(tmp_path / "nudged", nudge=1e-3)
    other = make_export(tmp_path / "other", seed=1)
    digests = {model_digest(p) for p in (export, nudged, other)}
    assert model_digest(same) == model_digest(export) and len(digests) == 3
    assert len(model_digest(export)) == 16 and int(model_digest(export), 16) >= 0

    ws = tmp_path / "ws"
    shutil.copytree(probe_workspace, ws)
    before = data_digest(ws)
    assert data_digest(ws) == before
    shard = next((ws / "dataset" / "images").glob("shard-*.npy"))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a rewritten shard
    touched = data_digest(ws)
    assert touched != before
    catalog_path = ws / "dataset" / "catalog.parquet"
    catalog = read_catalog(catalog_path)
    write_catalog(catalog_path, catalog.slice(1))  # one image fewer
    assert data_digest(ws) not in (before, touched)
    shorter = extract_features(export, ws)
    assert len(shorter.features) == catalog.num_rows - 1
