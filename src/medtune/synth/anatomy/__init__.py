"""Anatomy renderers; importing this package registers every one of them."""

from medtune.synth.anatomy.base import ANATOMY_RENDERERS, AnatomyResult, Lesion, Subject

__all__ = ["ANATOMY_RENDERERS", "AnatomyResult", "Lesion", "Subject"]
