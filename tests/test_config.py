"""Recipes: every shipped YAML validates; errors name the file, line, key and a fix."""

from pathlib import Path

import pytest

from medtune.config import (
    RECIPES,
    DemoConfig,
    SynthConfig,
    available_recipes,
    load_recipe,
    parse_override,
    recipe_dirs,
)
from medtune.errors import MedtuneError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_shipped_yaml_validates():
    paths = sorted(REPO_CONFIGS.rglob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        recipe = load_recipe(path)
        assert type(recipe) in RECIPES.values(), path


def test_named_recipes_resolve():
    names = available_recipes()
    assert "demo" in names and "synth/default" in names
    assert isinstance(load_recipe("demo"), DemoConfig)
    assert REPO_CONFIGS.resolve() in [d.resolve() for d in recipe_dirs()]


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_names_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, "kind: demo\nsynth:\n  patients: 3\n  mirorr_rate: 0.1\n")
    with pytest.raises(MedtuneError) as err:
        load_recipe(path)
    message = str(err.value)
    assert f"{path}:4" in message
    assert "'synth.mirorr_rate'" in message
    assert "did you mean 'synth.mirror_rate'" in message


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, "kind: synth\npatients: many\n")
    with pytest.raises(MedtuneError, match=r"r\.yaml:2: patients: expected an integer, got 'many'"):
        load_recipe(path)


def test_bad_choice_suggests_the_closest(tmp_path):
    path = write(tmp_path, "kind: synth\nanatomies: [chest, kne]\n")
    with pytest.raises(MedtuneError, match="did you mean 'knee'"):
        load_recipe(path)


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "kind: synth\nmirror_rate: 1.5\n")
    with pytest.raises(MedtuneError, match="mirror_rate: Input should be less than or equal to 1"):
        load_recipe(path)


def test_unknown_kind(tmp_path):
    path = write(tmp_path, "kind: synthh\n")
    with pytest.raises(MedtuneError, match="did you mean 'synth'"):
        load_recipe(path)


def test_wrong_kind_for_command(tmp_path):
    path = write(tmp_path, "kind: synth\n")
    with pytest.raises(MedtuneError, match="needs a 'demo' one"):
        load_recipe(path, expect=DemoConfig)


def test_set_overrides_nested_values_and_types():
    recipe = load_recipe("demo", ["synth.patients=9", "synth.anatomies=[chest, hand]"])
    assert isinstance(recipe, DemoConfig)
    assert recipe.synth.patients == 9
    assert [a.value for a in recipe.synth.anatomies] == ["chest", "hand"]


def test_set_errors_point_at_the_override():
    unknown = r"--set: unknown key 'synth\.patiens'.*'synth\.patients'"
    with pytest.raises(MedtuneError, match=unknown):
        load_recipe("demo", ["synth.patiens=3"])
    with pytest.raises(MedtuneError, match=r"--set synth\.size: expected an integer"):
        load_recipe("demo", ["synth.size=big"])
    with pytest.raises(MedtuneError, match="expected KEY=VALUE"):
        parse_override("synth.patients")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "kind: synth\npatients: [1, 2\nsites: 3\n")
    with pytest.raises(MedtuneError, match=r"r\.yaml:\d+"):
        load_recipe(path)


def test_no_code_is_evaluated(tmp_path):
    # PyYAML's safe loader refuses Python tags; the error is a clean one-liner.
    path = write(tmp_path, "kind: synth\npatients: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(MedtuneError):
        load_recipe(path)


def test_year_order_is_checked():
    with pytest.raises(MedtuneError, match="last_year is before first_year"):
        from medtune.config import validate

        validate(SynthConfig, {"first_year": 2020, "last_year": 2010})
