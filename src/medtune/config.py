"""Typed recipes: every YAML under ``configs/`` is validated here, at the edge.

A recipe is plain YAML holding values and registry names, never code. Its top-level ``kind``
names the schema (``RECIPES`` below). Errors are precise and one line each: the file (and line),
the dotted key, and either the closest valid key or the expected type::

    configs/demo.yaml:5: unknown key 'synth.patiens' (did you mean 'synth.patients'?)
    --set synth.size: expected an integer, got 'big'

Overrides from the command line (``--set a.b=value``) are parsed as YAML scalars and validated
with the file, so a typo there is caught the same way.
"""

from __future__ import annotations

import types
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from medtune.config_base import Recipe
from medtune.config_base import close_matches as _close_matches
from medtune.config_train import FinetuneConfig, PretrainConfig
from medtune.errors import MedtuneError

# ---------------------------------------------------------------------------------------------
# Vocabulary shared by recipes and the synthetic cohort.


class Anatomy(StrEnum):
    CHEST = "chest"
    HAND = "hand"
    KNEE = "knee"
    PELVIS = "pelvis"
    LUMBAR_SPINE = "lumbar_spine"
    SKULL = "skull"
    FOOT = "foot"
    SHOULDER = "shoulder"


class Finding(StrEnum):
    NODULE = "nodule"
    PLEURAL_EFFUSION = "pleural_effusion"
    CARDIOMEGALY = "cardiomegaly"
    PNEUMOTHORAX = "pneumothorax"
    CONSOLIDATION = "consolidation"
    FRACTURE = "fracture"


CHEST_FINDINGS = (
    Finding.NODULE,
    Finding.PLEURAL_EFFUSION,
    Finding.CARDIOMEGALY,
    Finding.PNEUMOTHORAX,
    Finding.CONSOLIDATION,
)


class Prevalence(Recipe):
    """Cohort-wide prevalence per finding, per image of an anatomy where the finding can occur.

    Each site multiplies these by its own factor (see ``site_variation``), as real sites differ.
    """

    nodule: float = Field(0.08, ge=0, le=1)
    pleural_effusion: float = Field(0.12, ge=0, le=1)
    cardiomegaly: float = Field(0.12, ge=0, le=1)
    pneumothorax: float = Field(0.05, ge=0, le=1)
    consolidation: float = Field(0.10, ge=0, le=1)
    fracture: float = Field(0.20, ge=0, le=1)

    def of(self, finding: Finding) -> float:
        return float(getattr(self, finding.value))


def _default_anatomy_mix() -> dict[Anatomy, float]:
    # Roughly the mix of a general radiology department: chests dominate.
    return {
        Anatomy.CHEST: 0.40,
        Anatomy.HAND: 0.08,
        Anatomy.KNEE: 0.10,
        Anatomy.PELVIS: 0.08,
        Anatomy.LUMBAR_SPINE: 0.09,
        Anatomy.SKULL: 0.06,
        Anatomy.FOOT: 0.10,
        Anatomy.SHOULDER: 0.09,
    }


class SynthConfig(Recipe):
    """The synthetic multi-site, multi-anatomy X-ray cohort (``medtune synth``)."""

    kind: Literal["synth"] = "synth"
    patients: int = Field(200, ge=1, le=10_000_000, description="number of patients")
    sites: int = Field(5, ge=1, le=64, description="number of hospitals")
    size: int = Field(1024, ge=128, le=4096, description="long side of each image, px")
    seed: int = Field(0, ge=0, description="same seed, byte-identical output")
    anatomies: list[Anatomy] = Field(default_factory=lambda: list(Anatomy), min_length=1)
    anatomy_mix: dict[Anatomy, float] = Field(default_factory=_default_anatomy_mix)
    max_images: int | None = Field(None, ge=1, description="stop after this many images")
    max_studies_per_patient: int = Field(4, ge=1, le=50)
    first_year: int = Field(2012, ge=1990, le=2100)
    last_year: int = Field(2024, ge=1990, le=2100)
    prevalence: Prevalence = Field(default_factory=Prevalence)
    site_variation: float = Field(
        0.7, ge=0, le=3, description="log-normal sigma of each site's prevalence multipliers"
    )
    mirror_rate: float = Field(0.05, ge=0, le=1, description="images flipped left-right")
    marker_missing_rate: float = Field(0.10, ge=0, le=1, description="images with no lead marker")
    compressed_fraction: float = Field(
        0.7, ge=0, le=1, description="files in a compressing site's own transfer syntax"
    )
    workers: int = Field(0, ge=0, le=256, description="processes; 0 = one per core")

    @field_validator("anatomies")
    @classmethod
    def _unique(cls, value: list[Anatomy]) -> list[Anatomy]:
        if len(set(value)) != len(value):
            raise ValueError("anatomies are listed more than once")
        return value

    @field_validator("anatomy_mix")
    @classmethod
    def _positive_mix(cls, value: dict[Anatomy, float]) -> dict[Anatomy, float]:
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("anatomy_mix weights must be >= 0 and not all zero")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.last_year < self.first_year:
            raise ValueError("last_year is before first_year")


DEID_OPTION_NAMES = (
    "retain-long-full-dates",
    "retain-long-modified-dates",
    "retain-patient-chars",
    "retain-device-id",
    "retain-institution-id",
    "retain-uids",
    "clean-descriptors",
    "retain-safe-private",
)


class DeidConfig(Recipe):
    """De-identification: the Annex E profile and its options, burned-in text, reports."""

    enabled: bool = Field(True, description="off only with an explicit flag; recorded in the card")
    options: list[str] = Field(
        default_factory=lambda: ["retain-long-modified-dates", "retain-patient-chars"],
        description="Annex E options (PS3.15 E.3): " + ", ".join(DEID_OPTION_NAMES),
    )
    ocr: Literal["off", "flagged", "all"] = Field(
        "flagged",
        description="burned-in text: OCR images flagged Burned In Annotation YES or from a "
        "device with known text regions ('flagged'), every image ('all') or none ('off')",
    )

    @field_validator("ocr", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false; the user meant the word.
        return "off" if value is False else value

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in DEID_OPTION_NAMES:
                near = _close_matches(name, DEID_OPTION_NAMES, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise ValueError(f"unknown de-identification option '{name}'{hint}")
        if {"retain-long-full-dates", "retain-long-modified-dates"} <= set(value):
            raise ValueError("choose one of retain-long-full-dates and retain-long-modified-dates")
        return value


class IngestConfig(Recipe):
    """``medtune ingest``: DICOM files (and reports) into a workspace dataset."""

    kind: Literal["ingest"] = "ingest"
    size: int = Field(256, ge=16, le=4096, description="side of the square output images (px)")
    dtype: Literal["uint8", "uint16"] = "uint8"
    frames: Literal["first", "middle", "all"] = Field(
        "middle", description="which frames of a multi-frame image become images"
    )
    shard_images: int = Field(1024, ge=1, le=1_000_000, description="images per shard file")
    workers: int = Field(0, ge=0, le=256, description="processes; 0 = one per core")
    deid: DeidConfig = Field(default_factory=DeidConfig)


class CurateConfig(Recipe):
    """Curation after ingest: report labels, splits and the dataset card."""

    seed: int = Field(0, description="seed of the splits (same seed, same splits)")
    fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="train, val and test shares of the patient split"
    )
    hold_out: Literal["site", "vendor", "anatomy"] | None = Field(
        "site", description="also make an out-of-domain split holding out this; null for none"
    )
    card_sample_per_site: int = Field(
        64, ge=1, le=10_000, description="images per site for pixel statistics and sample grids"
    )


class DemoTrainConfig(Recipe):
    """The demo's training and evaluation stage (medtune.demo_train): random, chest-only and
    full-body backbones under one pretraining budget, the probe suite on all three, report
    generation and grounding fine-tuned from some, one HTML report."""

    enabled: bool = Field(True, description="false: stop after curation")
    image_size: int = Field(64, ge=32, le=512, description="the tiny ViT's input side, px")
    pretrain_steps: int = Field(
        100, ge=1, description="DINO steps of each of chest-only and full-body pretraining"
    )
    pretrain_batch: int = Field(32, ge=2, description="DINO batch size (the same for both)")
    finetune_steps: int = Field(120, ge=1, description="steps of each fine-tuning run")
    tasks: list[Literal["probe", "report", "ground"]] = Field(
        default_factory=lambda: ["probe", "report", "ground"]
    )
    finetune_from: list[Literal["random", "chest", "full"]] = Field(
        default_factory=lambda: ["random", "chest", "full"],
        description="backbones that report generation and grounding are fine-tuned from",
    )
    bootstrap: int = Field(1000, ge=0, description="patient-bootstrap resamples for the CIs")
    meteor: bool = Field(
        True, description="score METEOR too (pycocoevalcap's Java scorer, when Java is there)"
    )


class DemoConfig(Recipe):
    """``medtune demo``: the whole pipeline on the embedded synthetic cohort."""

    kind: Literal["demo"] = "demo"
    workspace: Path = Path("medtune-demo")
    key: Path = Field(
        Path("medtune-demo.key"),
        description="pseudonym key; outside the workspace, as a real user would keep it",
    )
    synth: SynthConfig = Field(default_factory=lambda: SynthConfig(patients=120, sites=5, size=512))
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: DemoTrainConfig = Field(default_factory=DemoTrainConfig)


# Registry of recipe kinds: adding a recipe type is one model and one line here.
RECIPES: dict[str, type[Recipe]] = {
    "ingest": IngestConfig,
    "synth": SynthConfig,
    "demo": DemoConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
}

# ---------------------------------------------------------------------------------------------
# Finding and reading recipe files.


def recipe_dirs() -> list[Path]:
    """Where named recipes are looked up: ./configs, then the copy shipped with the package."""
    package = Path(__file__).resolve().parent
    candidates = [Path.cwd() / "configs", package / "configs", package.parents[1] / "configs"]
    seen: list[Path] = []
    for directory in candidates:
        if directory.is_dir() and directory.resolve() not in [s.resolve() for s in seen]:
            seen.append(directory)
    return seen


def available_recipes() -> list[str]:
    """Names of every shipped recipe, such as ``demo`` or ``synth/default``."""
    names: set[str] = set()
    for directory in recipe_dirs():
        for path in directory.rglob("*.yaml"):
            names.add(path.relative_to(directory).with_suffix("").as_posix())
    return sorted(names)


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file from a path, or from a name such as ``demo`` or ``synth/default``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for directory in recipe_dirs():
        for candidate in (directory / path, directory / path.with_suffix(".yaml")):
            if candidate.is_file():
                return candidate
    known = ", ".join(available_recipes()) or "none"
    raise MedtuneError(f"no recipe named '{name_or_path}' (known recipes: {known})")


def load_recipe(
    source: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    expect: type[Recipe] | None = None,
    flags: dict[str, str] | None = None,
) -> Recipe:
    """Load, override and validate a recipe; raise :class:`MedtuneError` with a precise message.

    ``expect`` checks the recipe's kind (``medtune demo`` refuses a ``synth`` recipe).
    ``flags`` names the command-line option an override came from (``{"patients":
    "--patients"}``), so an error about it names the option the user typed.
    """
    path = resolve_recipe(source)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise MedtuneError(f"{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MedtuneError(f"{path}: a recipe must be a mapping of keys to values")
    lines = _key_lines(text)
    set_keys = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        set_keys.add(key)

    kind = data.get("kind", expect.model_fields["kind"].default if expect else None)
    if kind not in RECIPES:
        where = f"{path}:{lines.get(('kind',), 1)}" if "kind" in data else str(path)
        close = _close_matches(str(kind), RECIPES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (one of {', '.join(RECIPES)})"
        raise MedtuneError(f"{where}: unknown recipe kind '{kind}'{hint}")
    model = RECIPES[kind]
    if expect is not None and model is not expect:
        wanted = expect.model_fields["kind"].default
        raise MedtuneError(
            f"{path}: this is a '{kind}' recipe; this command needs a '{wanted}' one"
        )
    labels = {key: f"--set {key}" for key in set_keys} | (flags or {})
    return validate(model, data, str(path), lines, labels)


def validate(
    model: type[Recipe],
    data: dict[str, Any],
    source: str = "<config>",
    lines: dict[tuple[str, ...], int] | None = None,
    labels: dict[str, str] | None = None,
) -> Recipe:
    """Validate ``data`` against ``model``; turn pydantic's errors into one precise line.

    ``labels`` maps dotted keys that came from the command line to what the user typed.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Unknown keys first: a misspelt key also explains the "missing" error it causes.
        errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
        first = _describe(model, errors[0], source, lines or {}, labels or {})
        more = (
            f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})"
            if len(errors) > 1
            else ""
        )
        raise MedtuneError(first + more) from None
    except ValueError as exc:  # raised by model_post_init
        raise MedtuneError(f"{source}: {exc}") from None


def dump_yaml(recipe: Recipe, exclude: set[str] | None = None) -> str:
    """The resolved recipe as YAML, every default filled in (what ``config show`` prints)."""
    data = recipe.model_dump(mode="json", exclude=exclude)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# Overrides.


def parse_override(item: str) -> tuple[str, Any]:
    """``'synth.patients=20'`` -> ``('synth.patients', 20)``; values are YAML scalars or lists."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise MedtuneError(f"--set {item!r}: expected KEY=VALUE, such as synth.patients=20")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# Error messages.

_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "path_type": "a path",
}


def _describe(
    model: type[Recipe],
    error: Any,
    source: str,
    lines: dict[tuple[str, ...], int],
    labels: dict[str, str],
) -> str:
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc) if loc else "(top level)"
    # An override of "anatomies" answers for "anatomies.1" too: match the longest prefix.
    label = next(
        (labels[".".join(loc[:end])] for end in range(len(loc), 0, -1)
         if ".".join(loc[:end]) in labels),
        None,
    )  # fmt: skip
    line = _nearest_line(lines, loc)
    where = label or (f"{source}:{line}: {dotted}" if line else f"{source}: {dotted}")
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        close = _close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f" (did you mean '{'.'.join((*loc[:-1], close[0]))}'?)" if close else ""
        if not close and valid:
            hint = f" (valid keys here: {', '.join(valid)})"
        prefix = "--set" if label else (f"{source}:{line}" if line else source)
        return f"{prefix}: unknown key '{dotted}'{hint}"
    if kind == "missing":
        return f"{where}: required key is missing"
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {_short(error.get('input'))}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in {"enum", "literal_error"}:
        expected = str(error.get("ctx", {}).get("expected", ""))
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip()]
        close = _close_matches(str(error.get("input")), choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{where}: expected one of {expected}, got {_short(error.get('input'))}{hint}"
    return f"{where}: {message}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _nearest_line(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _valid_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """Field names of the model reached by following ``loc`` through nested recipe fields."""
    current: Any = model
    for part in loc:
        sub = _submodel(current, part)
        if sub is None:
            return []
        current = sub
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _submodel(model: Any, part: str) -> type[BaseModel] | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    field = model.model_fields.get(part)
    if field is None:
        return None
    return _first_model(field.annotation)


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, Annotated):
        for arg in typing.get_args(annotation):
            found = _first_model(arg)
            if found is not None:
                return found
    return None


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each dotted key path of a YAML mapping to its 1-based line number."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, str(key_node.value))
                found[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    walk(root, ())
    return found
