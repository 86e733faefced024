"""The `medtune` command: help without heavy imports, one-line errors, exit codes."""

import subprocess
import sys

from medtune import __version__
from medtune.cli import main

HEAVY = ("torch", "numpy", "pydicom", "cv2", "pyarrow", "pydantic")


def test_help_lists_every_verb_without_heavy_imports():
    code = (
        "import sys\n"
        "from medtune.cli import main\n"
        "rc = main(['--help'])\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for verb in ("synth", "demo", "config"):
        assert f"  {verb} " in done.stdout
    assert "LOADED []" in done.stdout


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"medtune {__version__}"


def test_usage_error_is_one_line_exit_2(capsys):
    assert main(["synth", "--no-such-option"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--no-such-option" in err


def test_unknown_command_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_failure_is_one_line_without_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: synth\npatiens: 3\n")
    assert main(["config", "show", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert "bad.yaml:2" in err and "patients" in err


def test_config_show_resolves_overrides(capsys):
    assert main(["config", "show", "demo", "--set", "synth.patients=7"]) == 0
    out = capsys.readouterr().out
    assert "patients: 7" in out
    assert "mirror_rate:" in out  # defaults are filled in


def test_synth_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "something.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path), "--patients", "1", "--anatomies", "chest"]) == 1
    assert "is not empty" in capsys.readouterr().err
    (tmp_path / "something.txt").unlink()
    (tmp_path / "dicom").mkdir()
    assert main(["synth", "--out", str(tmp_path), "--patients", "1", "--anatomies", "chest"]) == 1
    assert "incomplete cohort" in capsys.readouterr().err


def test_bad_flag_values_name_the_flag(capsys):
    assert main(["synth", "--out", "x", "--patients", "0"]) == 1
    assert capsys.readouterr().err.startswith("medtune: error: --patients: ")
    assert main(["synth", "--out", "x", "--anatomies", "chest,hnd"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medtune: error: --anatomies: ") and "did you mean 'hand'" in err


def test_summary_to_a_pipe_is_plain_aligned_text(capsys):
    from types import SimpleNamespace

    from medtune.cli_output import print_summary as _print_summary

    summary = SimpleNamespace(
        tables={"files": [["inputs", "written"], [12, 9]]}, lines=["log: somewhere"]
    )
    _print_summary(summary)  # pytest's capture is not a terminal
    out = capsys.readouterr().out.splitlines()
    assert out == ["files", "  inputs  written", "  12            9", "log: somewhere"]
