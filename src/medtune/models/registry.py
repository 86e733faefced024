"""The backbone registry: a plain dict from name to factory, filled by a decorator (as timm's
``register_model``). Adding a backbone is one decorated function in one file; everything else
(probing, LoRA, heads, evaluation) builds backbones only through :func:`create_backbone`.

Built-in names: ``medtune-vit`` (the default; ``-tiny``, ``-small``, ``-base`` presets),
``timm``, ``hf`` and ``open_clip``. A config section maps onto a call directly::

    backbone_from_config({"name": "timm", "model_name": "vit_small_patch16_224", "image_size": 224})

The text towers' registry (``medtune.models.text``) works the same way, through
:func:`registrar` and :func:`build`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from medtune.errors import MedtuneError
from medtune.models.contract import Encoder

DEFAULT_BACKBONE = "medtune-vit"

BACKBONES: dict[str, Callable[..., Encoder]] = {}

# Modules whose import registers the built-in families. Imported on first use, not at package
# import: each is light, and each imports its heavy library (timm, transformers, open_clip)
# only inside the factory, so `medtune --help` never pays for them.
_BUILTIN_MODULES = (
    "medtune.models.vit",
    "medtune.models.timm_backbone",
    "medtune.models.hf_backbone",
    "medtune.models.openclip_backbone",
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def registrar(table: dict[str, Callable[..., Any]], kind: str) -> Callable[[str], Callable[[F], F]]:
    """A ``register_*(name)`` decorator that files factories into ``table``."""

    def register(name: str) -> Callable[[F], F]:
        def decorate(factory: F) -> F:
            if name in table and table[name] is not factory:
                raise MedtuneError(f"{kind} {name!r}: registered twice")
            table[name] = factory
            return factory

        return decorate

    return register


def register_backbone(name: str) -> Callable[[F], F]:
    """Register a backbone factory under ``name``; its keyword arguments are the backbone's
    config keys. Example::

        @register_backbone("my-vit")
        def my_vit(image_size: int = 224) -> Encoder: ...
    """
    return registrar(BACKBONES, "backbone")(name)


def build(
    table: Mapping[str, Callable[..., T]], kind: str, name: str, kwargs: Mapping[str, Any]
) -> T:
    """Call ``table[name](**kwargs)``; an unknown name or key raises MedtuneError with the close
    matches, so a typo in a YAML recipe is a one-line fix."""
    factory = table.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(table))}"
        )
        raise MedtuneError(f"{kind} {name!r}: unknown name; {hint}")
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                close = difflib.get_close_matches(key, params, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(params)}"
                raise MedtuneError(f"{kind} {name!r}: unknown key {key!r}; {hint}")
    return factory(**kwargs)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def backbone_names() -> list[str]:
    """Every registered backbone name, sorted."""
    _load_builtins()
    return sorted(BACKBONES)


def create_backbone(name: str = DEFAULT_BACKBONE, **kwargs: Any) -> Encoder:
    """Build the backbone registered as ``name`` with ``kwargs`` as its config."""
    _load_builtins()
    return build(BACKBONES, "backbone", name, kwargs)


def backbone_from_config(config: Mapping[str, Any]) -> Encoder:
    """Build a backbone from a plain mapping (a YAML section): ``name`` plus the factory's keys."""
    config = dict(config)
    return create_backbone(config.pop("name", DEFAULT_BACKBONE), **config)
