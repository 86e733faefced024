"""Anatomy renderers; importing this package registers every one of them."""

from medtune.synth.anatomy import chest  # noqa: F401  (registers on import)
from medtune.synth.anatomy.base import ANATOMY_RENDERERS, AnatomyResult, Lesion, Subject

__all__ = ["ANATOMY_RENDERERS", "AnatomyResult", "Lesion", "Subject"]
