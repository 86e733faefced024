"""The training data path: catalog rows and shard pixels shaped by a backbone's input contract."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as tF

from medtune.dataset.catalog import CATALOG_SCHEMA, read_catalog, write_catalog
from medtune.dataset.shards import ShardWriter
from medtune.errors import MedtuneError
from medtune.models.contract import InputContract
from medtune.train.augment import DEFAULT_AUGMENT, MultiCrop
from medtune.train.data import ImageDataset, SeededSampler, make_loader
from medtune.workspace import Workspace

GRAY64 = InputContract(channels=1, size=64, mean=(0.0,), std=(1.0,))
LABELS = [1, 0, -1, None]  # label_effusion of row i is LABELS[i % 4]


@pytest.fixture(scope="module")
def workspace(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ingested workspace with label columns and a split; one study's report removed."""
    root = tmp_path_factory.mktemp("train-data") / "ws"
    shutil.copytree(ingested_workspace, root)
    ws = Workspace(root)
    table = read_catalog(ws.catalog_path)
    n = table.num_rows
    columns = {
        "label_effusion": pa.array([LABELS[i % 4] for i in range(n)], pa.int8()),
        "label_nodule": pa.array([i % 2 for i in range(n)], pa.int8()),
        "split": ["val" if i % 3 == 0 else "train" for i in range(n)],
    }
    write_catalog(ws.catalog_path, table, columns)
    reports = pq.read_table(ws.reports_path)
    first = table.column("study_id")[0].as_py()
    keep = [s != first for s in reports.column("study_id").to_pylist()]
    pq.write_table(reports.filter(pa.array(keep)), ws.reports_path)
    return root


def _stored(workspace: Path, row: int) -> np.ndarray:
    table = read_catalog(Workspace(workspace).catalog_path, ["shard_file", "index"])
    shard, index = table.column("shard_file")[row].as_py(), table.column("index")[row].as_py()
    return np.load(Workspace(workspace).images_dir / f"{shard}.npy")[index]


def _tiny_workspace(root: Path, images: np.ndarray) -> Path:
    """A workspace of ``images`` (n, size, size) in one shard, written as ingest writes it."""
    ws = Workspace(root).create()
    writer = ShardWriter(ws.shard_path(0), images.shape[1], str(images.dtype))
    indices = [writer.add(image) for image in images]
    writer.finish()
    n = len(images)
    values = {"image_id": [f"I{i}" for i in range(n)], "study_id": [f"S{i}" for i in range(n)],
              "shard": [0] * n, "shard_file": ["shard-00000"] * n, "index": indices}  # fmt: skip
    table = pa.table({f.name: pa.array(values.get(f.name, [None] * n), f.type)
                      for f in CATALOG_SCHEMA})  # fmt: skip
    write_catalog(ws.catalog_path, table)
    return root


# ---------------------------------------------------------------------------------------------
# Pixels and the input contract.


def test_pixels_are_the_stored_values_scaled(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64)
    assert len(data) == read_catalog(Workspace(workspace).catalog_path).num_rows
    for position in (0, 17, 40, len(data) - 1):  # several shards
        item = data[position]
        assert item["index"] == position
        assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
        expected = torch.from_numpy(_stored(workspace, position).astype(np.float32) / 255)
        assert torch.equal(item["image"][0], expected)


def test_uint16_shards_scale_by_their_range(tmp_path: Path) -> None:
    images = np.zeros((2, 16, 16), np.uint16)
    images[0, 0, 0], images[1, 5, 5] = 65535, 1000
    contract = InputContract(1, 16, (0.0,), (1.0,))
    data = ImageDataset(_tiny_workspace(tmp_path, images), contract=contract)
    assert data[0]["image"].max() == 1.0
    assert data[1]["image"][0, 5, 5] == pytest.approx(1000 / 65535)


def test_three_channels_are_the_gray_image_normalised(workspace: Path) -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    data = ImageDataset(workspace, contract=InputContract(3, 64, mean, std))
    image = data[5]["image"]
    gray = torch.from_numpy(_stored(workspace, 5).astype(np.float32) / 255)
    assert image.shape == (3, 64, 64)
    for c in range(3):
        torch.testing.assert_close(image[c] * std[c] + mean[c], gray)


def test_images_resize_to_the_contract(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=InputContract(1, 32, (0.0,), (1.0,)))
    image = data[3]["image"]
    assert image.shape == (1, 32, 32)
    gray = torch.from_numpy(_stored(workspace, 3).astype(np.float32) / 255)
    pooled = tF.avg_pool2d(gray[None, None], 2)[0]
    assert (image - pooled).abs().mean() < 0.02  # an anti-aliased downscale, not a subsample


def test_batches_answer_the_contract(workspace: Path) -> None:
    contract = InputContract(3, 48, (0.5,) * 3, (0.25,) * 3)
    data = ImageDataset(workspace, contract=contract, augment=DEFAULT_AUGMENT)
    batch = next(iter(make_loader(data, batch_size=8, seed=0)))
    contract.check(batch["image"])
    assert batch["labels"].shape == (8, 2) and batch["label_mask"].shape == (8, 2)
    assert batch["index"].shape == (8,)


def test_multi_crop_views_are_normalised_per_view(workspace: Path) -> None:
    contract = InputContract(3, 64, (0.5,) * 3, (0.5,) * 3)
    data = ImageDataset(workspace, contract=contract, augment=MultiCrop(64, 32, n_local=2))
    views = next(iter(make_loader(data, batch_size=4, seed=0)))["image"]
    assert [tuple(v.shape) for v in views] == [(4, 3, 64, 64)] * 2 + [(4, 3, 32, 32)] * 2
    assert all(v.min() >= -1.0 and v.max() <= 1.0 for v in views)  # (x - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------
# Labels, splits, selections and text.


@pytest.mark.parametrize(
    ("uncertain", "unmentioned", "labels", "mask"),
    [
        ("ignore", "ignore", [1, 0, 0, 0], [1, 1, 0, 0]),
        ("zeros", "ignore", [1, 0, 0, 0], [1, 1, 1, 0]),
        ("ones", "ignore", [1, 0, 1, 0], [1, 1, 1, 0]),
        ("ignore", "zeros", [1, 0, 0, 0], [1, 1, 0, 1]),
        ("ones", "ones", [1, 0, 1, 1], [1, 1, 1, 1]),
    ],
)
def test_label_policies(
    workspace: Path, uncertain: str, unmentioned: str, labels: list[int], mask: list[int]
) -> None:
    data = ImageDataset(
        workspace,
        contract=GRAY64,
        label_columns=["effusion"],
        uncertain=uncertain,  # type: ignore[arg-type]
        unmentioned=unmentioned,  # type: ignore[arg-type]
    )
    items = [data[i] for i in range(4)]  # rows 0..3 hold 1, 0, -1, null
    assert [float(item["labels"][0]) for item in items] == labels
    assert [float(item["label_mask"][0]) for item in items] == mask


def test_label_columns_default_to_every_label_column(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64)
    assert data.label_columns == ["label_effusion", "label_nodule"]
    assert data.label_names == ["effusion", "nodule"]
    assert ImageDataset(workspace, contract=GRAY64, label_columns=[]).label_columns == []


def test_bad_label_columns_are_errors(workspace: Path, tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match="no label column 'edema'"):
        ImageDataset(workspace, contract=GRAY64, label_columns=["edema"])
    with pytest.raises(MedtuneError, match="not a number"):
        ImageDataset(workspace, contract=GRAY64, label_columns=["split"])
    with pytest.raises(MedtuneError, match="unknown policy"):
        ImageDataset(workspace, contract=GRAY64, uncertain="half")  # type: ignore[arg-type]
    root = _tiny_workspace(tmp_path / "ws", np.zeros((2, 8, 8), np.uint8))
    table = read_catalog(Workspace(root).catalog_path)
    write_catalog(Workspace(root).catalog_path, table, {"label_x": pa.array([1, 2], pa.int8())})
    with pytest.raises(MedtuneError, match="other than 1, 0, -1"):
        ImageDataset(root, contract=InputContract(1, 8, (0.0,), (1.0,)))


def test_boolean_and_float_label_columns(tmp_path: Path) -> None:
    # Label columns from elsewhere (a CheXpert CSV: 1.0, 0.0, -1.0, blank; a yes/no flag).
    root = _tiny_workspace(tmp_path / "ws", np.zeros((3, 8, 8), np.uint8))
    table = read_catalog(Workspace(root).catalog_path)
    columns = {"chexpert": pa.array([1.0, -1.0, None]), "flag": pa.array([False, True, None])}
    write_catalog(Workspace(root).catalog_path, table, columns)
    data = ImageDataset(root, contract=InputContract(1, 8, (0.0,), (1.0,)),
                        label_columns=["chexpert", "flag"], uncertain="ones")  # fmt: skip
    assert [data[i]["labels"].tolist() for i in range(3)] == [[1, 0], [1, 1], [0, 0]]
    assert [data[i]["label_mask"].tolist() for i in range(3)] == [[1, 1], [1, 1], [0, 0]]


def test_split_values_select_rows(workspace: Path) -> None:
    val = ImageDataset(workspace, contract=GRAY64, split_values="val")
    train = ImageDataset(workspace, contract=GRAY64, split_column="split", split_values=["train"])
    assert all(row % 3 == 0 for row in val.rows)
    assert all(row % 3 != 0 for row in train.rows)
    assert len(val) + len(train) == len(ImageDataset(workspace, contract=GRAY64))
    assert val[1]["index"] == 3
    with pytest.raises(MedtuneError, match="no row matches"):
        ImageDataset(workspace, contract=GRAY64, split_values="test")
    with pytest.raises(MedtuneError, match="no column 'fold'"):
        ImageDataset(workspace, contract=GRAY64, split_column="fold", split_values="1")


def test_where_selects_rows_in_catalog_order(workspace: Path) -> None:
    parts = read_catalog(Workspace(workspace).catalog_path, ["body_part"]).column(0).to_pylist()
    data = ImageDataset(workspace, contract=GRAY64, where="body_part = 'CHEST'")
    assert data.rows.tolist() == [i for i, part in enumerate(parts) if part == "CHEST"]
    assert 0 < len(data) < len(parts)
    with pytest.raises(MedtuneError, match="where"):
        ImageDataset(workspace, contract=GRAY64, where="no_such_column = 1")


def test_text_is_the_report_of_the_study(workspace: Path) -> None:
    ws = Workspace(workspace)
    studies = read_catalog(ws.catalog_path, ["study_id"]).column(0).to_pylist()
    reports = pq.read_table(ws.reports_path).to_pylist()
    text_of = {r["study_id"]: r["text"] for r in reports}
    whole = ImageDataset(workspace, contract=GRAY64, text=True, text_sections=False)
    # Images of the study without a report are left out; the others carry their report.
    assert whole.rows.tolist() == [i for i, s in enumerate(studies) if s in text_of]
    assert whole[0]["index"] != 0
    for position in (0, 9, len(whole) - 1):
        item = whole[position]
        assert item["text"] == text_of[studies[item["index"]]].strip()
    body = ImageDataset(workspace, contract=GRAY64, text=True)
    texts = [body[i]["text"] for i in range(len(body))]
    assert all(texts) and not any("history" in t.lower() for t in texts)
    assert any("history" in whole[i]["text"].lower() for i in range(len(whole)))
    # No sign-off or call-back line (a name placeholder and a date make each report unique).
    signed = ("signed", "dictated", "radiologist", "[name]", "finalized")
    assert not any(word in t.lower() for t in texts for word in signed)
    assert any(word in whole[i]["text"].lower() for i in range(len(whole)) for word in signed)
    batch = next(iter(make_loader(body, batch_size=4, seed=0)))
    assert len(batch["text"]) == 4 and all(isinstance(t, str) and t for t in batch["text"])


def test_missing_shard_is_an_error(tmp_path: Path) -> None:
    root = _tiny_workspace(tmp_path / "ws", np.zeros((2, 8, 8), np.uint8))
    Workspace(root).shard_path(0).unlink()
    data = ImageDataset(root, contract=InputContract(1, 8, (0.0,), (1.0,)))
    with pytest.raises(MedtuneError, match=r"shard-00000\.npy"):
        data[0]


def test_missing_catalog_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MedtuneError, match="no catalog"):
        ImageDataset(tmp_path, contract=GRAY64)


# ---------------------------------------------------------------------------------------------
# Loading: order, seeds, workers, pickling, ranks, resume.


def _indices(loader: torch.utils.data.DataLoader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


def test_loader_order_is_fixed_by_the_seed(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64, label_columns=[])
    first = make_loader(data, batch_size=16, seed=3)
    epoch0, epoch1 = _indices(first), _indices(first)
    assert sorted(epoch0) == list(range(len(data)))
    assert epoch0 != epoch1  # each iteration is the next epoch
    again = make_loader(data, batch_size=16, seed=3)
    assert (_indices(again), _indices(again)) == (epoch0, epoch1)
    assert _indices(make_loader(data, batch_size=16, seed=4)) != epoch0
    assert _indices(make_loader(data, batch_size=16, shuffle=False)) == list(range(len(data)))


def test_augmentations_follow_the_seed(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64, augment=DEFAULT_AUGMENT)
    a = next(iter(make_loader(data, batch_size=8, seed=1)))["image"]
    b = next(iter(make_loader(data, batch_size=8, seed=1)))["image"]
    c = next(iter(make_loader(data, batch_size=8, seed=1, shuffle=False)))
    assert torch.equal(a, b)
    plain = torch.stack([data.pixels(int(i)) for i in c["index"]])
    assert not torch.allclose(c["image"], plain, atol=1e-3)  # augmented
    loader = make_loader(data, batch_size=8, seed=1, shuffle=False)
    epoch0, epoch1 = next(iter(loader))["image"], next(iter(loader))["image"]
    assert not torch.allclose(epoch0, epoch1, atol=1e-3)  # same images, new augmentations


def test_dataset_pickles_without_its_memory_maps(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64, text=True)
    before = pickle.dumps(data)
    for position in range(len(data)):
        data[position]  # opens every shard
    after = pickle.dumps(data)
    assert len(after) == len(before) < 64 * 64 * 4  # less than one image's pixels
    copy = pickle.loads(after)
    assert torch.equal(copy[7]["image"], data[7]["image"]) and copy[7]["text"] == data[7]["text"]


def test_workers_give_the_same_batches(workspace: Path) -> None:
    data = ImageDataset(workspace, contract=GRAY64, augment=DEFAULT_AUGMENT)
    alone = list(make_loader(data, batch_size=8, seed=5, workers=0))
    pooled = list(make_loader(data, batch_size=8, seed=5, workers=2))
    assert len(alone) == len(pooled)
    for a, b in zip(alone, pooled, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
        assert torch.equal(a["labels"], b["labels"])


def test_ranks_share_an_epoch_without_overlap() -> None:
    ranks = [SeededSampler(10, shuffle=True, seed=0, rank=r, world_size=3) for r in range(3)]
    orders = [[p for p, _ in sampler] for sampler in ranks]
    assert [len(o) for o in orders] == [4, 4, 4] == [len(s) for s in ranks]
    assert set().union(*orders) == set(range(10))
    assert sum(len(o) for o in orders) == 12  # padded by two repeats
    single = [p for p, _ in SeededSampler(10, shuffle=True, seed=0)]
    assert sorted(single) == list(range(10))


def test_resume_mid_epoch_continues_the_epoch() -> None:
    whole = SeededSampler(20, shuffle=True, seed=9)
    list(whole)
    epoch1 = list(whole)
    resumed = SeededSampler(20, shuffle=True, seed=9)
    resumed.set_epoch(1, start=6)
    assert len(resumed) == 14
    assert list(resumed) == epoch1[6:]  # same positions with the same sample seeds
    fresh = SeededSampler(20, shuffle=True, seed=9)
    fresh.set_epoch(2)
    assert list(resumed) == list(fresh)  # after the resumed epoch, the next whole one
