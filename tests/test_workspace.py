"""Atomic writes and the workspace layout."""

import pytest

from medtune.workspace import Workspace, atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "file.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_failed_write_leaves_old_content_and_no_temp(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_workspace_layout(tmp_path):
    ws = Workspace(tmp_path / "ws").create()
    assert ws.catalog_path == tmp_path / "ws" / "dataset" / "catalog.parquet"
    assert ws.shard_path(3).name == "shard-00003.npy"
    for directory in (ws.dataset_dir, ws.images_dir, ws.deid_dir, ws.runs_dir, ws.eval_dir):
        assert directory.is_dir()
    ws.save_config("kind: demo\n")
    assert ws.config_path.read_text() == "kind: demo\n"


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_run_names_cannot_leave_the_workspace(tmp_path, name):
    with pytest.raises(ValueError):
        Workspace(tmp_path).run_dir(name)
