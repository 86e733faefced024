"""The curation verbs on the command line: label, split (and --check), card, query, subset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.dataset.catalog import read_catalog, write_catalog
from medtune.workspace import Workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def curated(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ingested workspace taken through label, split and card by the CLI."""
    ws = tmp_path_factory.mktemp("cli-curate") / "ws"
    shutil.copytree(ingested_workspace, ws, symlinks=True)
    commands = [
        ["label", "-w", str(ws)],
        ["split", "-w", str(ws), "--seed", "3"],
        ["split", "-w", str(ws), "--method", "site"],
        ["card", "-w", str(ws)],
    ]
    for args in commands:
        assert main(args) == 0, args
    return ws


def test_label_split_and_card_write_their_columns_and_files(curated: Path) -> None:
    catalog = read_catalog(Workspace(curated).catalog_path)
    names = set(catalog.column_names)
    assert {"label_pleural_effusion", "label_fracture", "split", "split_site"} <= names
    assert set(catalog.column("split").to_pylist()) <= {"train", "val", "test"}
    assert "ood" in catalog.column("split_site").to_pylist()
    assert (curated / "dataset" / "labels.parquet").is_file()
    assert (curated / "dataset" / "card.md").read_text().startswith("---\n")
    assert (curated / "dataset" / "card.html").is_file()


def test_split_check_passes_a_clean_split_and_fails_a_leaking_one(
    curated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["split", "-w", str(curated), "--check", "split"]) == 0
    assert "no patient and no near-duplicate" in capsys.readouterr().out

    ws = tmp_path / "ws"
    shutil.copytree(curated, ws, symlinks=True)
    path = Workspace(ws).catalog_path
    table = read_catalog(path)
    # One patient's images across two parts: the first image test, the rest train.
    patients = table.column("patient_id").to_pylist()
    patient = next(p for p in patients if patients.count(p) > 1)
    first = patients.index(patient)
    parts = ["test" if i == first else "train" if p == patient else "val"
             for i, p in enumerate(patients)]  # fmt: skip
    write_catalog(path, table, columns={"mine": parts})
    assert main(["split", "-w", str(ws), "--check", "mine"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "medtune: error: split 'mine': 1 patient in more than one split"


def test_query_prints_a_table_and_writes_csv(
    curated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT split, count(*) AS images FROM catalog GROUP BY split ORDER BY split"
    assert main(["query", sql, "-w", str(curated)]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "images" in printed
    out = tmp_path / "counts.csv"
    assert main(["query", sql, "-w", str(curated), "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "split,images"


def test_subset_makes_a_workspace_of_links(curated: Path, tmp_path: Path) -> None:
    target = tmp_path / "train-only"
    assert main(["subset", "-w", str(curated), "--where", "split = 'train'", "--to",
                 str(target)]) == 0  # fmt: skip
    subset = read_catalog(Workspace(target).catalog_path)
    assert set(subset.column("split").to_pylist()) == {"train"}
    assert all(p.is_symlink() for p in Workspace(target).images_dir.iterdir())


def test_label_plain_report_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "ris.csv"
    source.write_text(
        "rid,findings\n"
        "1,Small left pleural effusion. No pneumothorax.\n"
        "2,Lungs are clear. Heart size normal.\n"
    )
    out = tmp_path / "labels.csv"
    args = ["label", "--reports", str(source), "--text-column", "findings", "--id-column", "rid"]
    assert main([*args, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    first = dict(zip(header, lines[1].split(","), strict=True))
    assert header[0] == "rid" and first["pleural_effusion"] == "1"
    assert first["pneumothorax"] == "0"
    assert main(args) == 2  # --out is required with --reports
    assert "--out is required" in capsys.readouterr().err


def test_boxes_imports_a_csv_and_reports_the_rows_it_could_not_match(
    ingested_workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested_workspace, ws, symlinks=True)
    image_id = read_catalog(Workspace(ws).catalog_path).column("image_id")[0].as_py()
    table = tmp_path / "boxes.csv"
    table.write_text(
        "image_id,phrase,x0,y0,x1,y1\n"
        f"{image_id},nodule in the right upper zone,10,12,30,40\n"
        "no-such-image,nodule,1,1,5,5\n"
    )
    assert main(["boxes", str(table), "-w", str(ws), "--source", "reader-1"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 rows imported as 'reader-1'" in out and "1 rows match no image" in out
    from medtune.dataset.boxes import read_boxes

    boxes = read_boxes(ws)
    assert boxes.column("image_id").to_pylist() == [image_id]
    assert boxes.column("source").to_pylist() == ["reader-1"]
    assert main(["boxes", str(tmp_path / "boxes.txt"), "-w", str(ws)]) == 1  # not a table


def test_annotations_imports_marker_and_mirrored_for_the_probe_suite(
    ingested_workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested_workspace, ws, symlinks=True)
    ids = read_catalog(Workspace(ws).catalog_path).column("image_id").to_pylist()[:2]
    table = tmp_path / "annotations.csv"
    table.write_text(f"image_id,marker,mirrored\n{ids[0]},L,false\n{ids[1]},none,true\n")
    assert main(["annotations", str(table), "-w", str(ws), "--source", "reader-1"]) == 0
    assert "2 rows imported as 'reader-1'" in capsys.readouterr().out
    from medtune.dataset.annotations import read_annotations

    stored = read_annotations(ws)
    assert stored is not None
    assert stored.sort_by("image_id").to_pylist() == sorted(
        [{"image_id": ids[0], "marker": "L", "mirrored": False},
         {"image_id": ids[1], "marker": "none", "mirrored": True}],
        key=lambda row: row["image_id"],
    )  # fmt: skip
    table.write_text("image_id,marker\nno-such-image,R\n")
    assert main(["annotations", str(table), "-w", str(ws)]) == 1  # unknown image: refused
    assert "no-such-image" not in capsys.readouterr().err  # counted, not echoed
