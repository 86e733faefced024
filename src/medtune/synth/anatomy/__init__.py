"""Anatomy renderers; importing this package registers every one of them.

Worker processes import only this package, so every renderer must be imported here: a module
imported elsewhere would be registered in one process and missing in the others.
"""

from medtune.synth.anatomy import (  # noqa: F401  (each registers itself on import)
    chest,
    foot,
    hand,
    knee,
    pelvis,
    shoulder,
    skull,
    spine,
)
from medtune.synth.anatomy.base import ANATOMY_RENDERERS, AnatomyResult, Lesion, Subject

__all__ = ["ANATOMY_RENDERERS", "AnatomyResult", "Lesion", "Subject"]
