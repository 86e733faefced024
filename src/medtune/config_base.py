"""The base of every recipe model, in its own module so that the recipe modules
(medtune.config, medtune.config_train) can all build on it without importing each other."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


def close_matches(word: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Spelling hints for an error message."""
    import difflib  # only for error hints: kept off every command's start-up

    return difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)


class Recipe(BaseModel):
    """Base of every recipe: unknown keys are errors, values are checked, nothing is executed."""

    # defer_build: a model's validator is built when first used, so a command pays only for
    # the recipes it reads (every model built at import cost each command ~30 ms).
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, defer_build=True)
