"""Builders shared by the probe-suite tests: a curated, annotated workspace and tiny exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from medtune.curate.labels import label_workspace
from medtune.curate.splits import SplitSpec, make_split
from medtune.dataset.annotations import import_annotations, synth_truth_annotations
from medtune.models.export import export_model
from medtune.models.registry import create_backbone

TINY_VIT = {"name": "medtune-vit", "image_size": 32, "patch_size": 8, "dim": 32, "depth": 2,
            "heads": 2}  # fmt: skip


def make_probe_workspace(ingested: Path, cohort: Path, root: Path) -> Path:
    """A copy of the ingested workspace with report labels, a patient split, a site split
    (held-out sites "ood") and the cohort's marker and mirroring annotations."""
    shutil.copytree(ingested, root)
    label_workspace(root)
    make_split(root, SplitSpec())
    make_split(root, SplitSpec(method="site"))
    import_annotations(root, synth_truth_annotations(root, cohort), source="synth-truth")
    return root


def make_export(directory: Path, seed: int = 0, nudge: float = 0.0) -> Path:
    """A random tiny ViT (its init seeded by the config) exported as an encoder; ``nudge`` is
    added to one weight, so the config stays the same and only the weights differ."""
    backbone = {**TINY_VIT, "seed": seed}
    encoder = create_backbone(**backbone)
    with torch.no_grad():
        next(encoder.parameters()).view(-1)[0] += nudge
    return export_model(directory, task="encoder", backbone=backbone, encoder=encoder)
