"""Fixtures shared by the tests of every stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medtune.config import SynthConfig
from medtune.synth.cohort import generate_cohort

# A small cohort with every site, syntax and kind of identifier: 5 sites (explicit VR LE, JPEG
# Lossless, JPEG 2000, RLE, JPEG-LS), burned-in text at some, reports with injected PHI.
SMALL_COHORT = SynthConfig(patients=24, sites=5, size=256, seed=11, workers=1)


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist every core already runs a worker process; torch's own intra-op threads
    # on top oversubscribe the cores, and training tests ran 5-7x slower on 2 cores. Set before
    # torch is imported, which reads it once.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic cohort (read-only: copy it before changing it): dicom/, reports/, truth/."""
    out = tmp_path_factory.mktemp("synth-cohort") / "cohort"
    generate_cohort(SMALL_COHORT, out)
    return out


@pytest.fixture(scope="session")
def ingested_workspace(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small cohort ingested with its reports (read-only: copy it before changing it).

    64 px images in shards of 16, so multi-shard code paths run; the root holds ``ws/`` (the
    workspace) and ``key`` (its pseudonym key).
    """
    from medtune.config import IngestConfig
    from medtune.dataset.ingest import ingest_with_reports

    root = tmp_path_factory.mktemp("ingested")
    config = IngestConfig(size=64, workers=1, shard_images=16)
    ingest_with_reports(
        synth_cohort / "dicom", root / "ws", config, root / "key", [synth_cohort / "reports"]
    )
    return root / "ws"
