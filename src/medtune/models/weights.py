"""Model weights on disk: safetensors only, because a pickle checkpoint can run code when loaded.

Every weight file medtune reads or writes goes through these helpers, so the refusal of pickles
(``.pt``, ``.pth``, ``.bin``, ``.ckpt``) lives in one place and errors read the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from medtune.errors import MedtuneError
from medtune.workspace import atomic_path

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"})
_SHOWN_KEYS = 4  # keys named in an error before "..."; the rest are counted


def require_safetensors(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is an existing ``.safetensors`` file, else raise MedtuneError.

    Pickle checkpoints are refused by name before any byte is read: unpickling can execute
    arbitrary code, and medtune loads checkpoints from hospitals' shared drives.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise MedtuneError(
            f"{path}: refusing a pickle checkpoint ({path.suffix}), because loading a pickle can "
            "execute code; convert it to .safetensors once, in a trusted environment"
        )
    if path.suffix.lower() != ".safetensors":
        raise MedtuneError(
            f"{path}: not a .safetensors file (medtune reads weights only as safetensors)"
        )
    if not path.is_file():
        raise MedtuneError(f"{path}: no such weights file")
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a CPU state dict (for callers that rename or filter keys)."""
    path = require_safetensors(path)
    try:
        return load_file(path, device="cpu")
    except SafetensorError as exc:
        raise MedtuneError(f"{path}: not a readable safetensors file ({exc})") from exc


def save_weights(
    module: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``module``'s state dict to ``path`` (``.safetensors``) atomically; return the path.

    Tied weights are stored once (safetensors' ``save_model``); ``metadata`` is a small
    string-to-string header, for example the medtune version.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise MedtuneError(f"{path}: weights are written only as .safetensors")
    with atomic_path(path) as tmp:
        save_model(module, str(tmp), metadata=metadata)
    return path


def load_weights(
    module: nn.Module, path: str | os.PathLike[str], strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load a safetensors file into ``module``; return the (missing, unexpected) key lists.

    With ``strict`` any missing or unexpected key raises a one-line MedtuneError naming them
    (the module may then be partly loaded: discard it). Shape mismatches always raise.
    """
    path = require_safetensors(path)
    with _load_errors(path, module):
        # safetensors' load_model, not load_file: it accounts for tied weights stored once.
        missing, unexpected = load_model(module, path, strict=False)
    return _checked(sorted(missing), sorted(unexpected), path, module, strict)


def apply_state_dict(
    module: nn.Module, state_dict: dict[str, torch.Tensor], source: object, strict: bool = True
) -> tuple[list[str], list[str]]:
    """``module.load_state_dict`` with :func:`load_weights`' one-line errors naming ``source``."""
    with _load_errors(source, module):
        result = module.load_state_dict(state_dict, strict=False)
    return _checked(result.missing_keys, result.unexpected_keys, source, module, strict)


@contextlib.contextmanager
def _load_errors(source: object, module: nn.Module) -> Iterator[None]:
    try:
        yield
    except SafetensorError as exc:
        raise MedtuneError(f"{source}: not a readable safetensors file ({exc})") from exc
    except RuntimeError as exc:  # torch's size-mismatch report spans many lines
        lines = str(exc).splitlines()
        first = next((line.strip() for line in lines if "size mismatch" in line), lines[0])
        raise MedtuneError(
            f"{source}: weights do not fit {type(module).__name__}: {first}"
        ) from exc


def _checked(
    missing: list[str], unexpected: list[str], source: object, module: nn.Module, strict: bool
) -> tuple[list[str], list[str]]:
    if strict and (missing or unexpected):
        raise MedtuneError(
            f"{source}: weights do not fit {type(module).__name__}: "
            f"{describe_keys(missing, 'missing')}; {describe_keys(unexpected, 'unexpected')}"
        )
    return missing, unexpected


def describe_keys(keys: list[str], what: str) -> str:
    """``"2 missing keys (a, b)"``: a short, one-line account of a key list for error messages."""
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")
    return f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''}" + (
        f" ({shown})" if keys else ""
    )
