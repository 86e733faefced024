"""Models: the image backbone registry (medtune's ViT, timm, Hugging Face, open_clip), the
encoder contract they all answer, text towers, and safetensors-only weight files.

Heavy libraries (timm, transformers, open_clip) are imported only when a backbone of their
family is built.
"""

from medtune.models.contract import Encoder, Features, InputContract
from medtune.models.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    backbone_from_config,
    backbone_names,
    create_backbone,
    register_backbone,
)
from medtune.models.text import (
    DEFAULT_TEXT_ENCODER,
    TEXT_ENCODERS,
    TextEncoder,
    create_text_encoder,
    register_text_encoder,
    text_encoder_from_config,
)
from medtune.models.weights import load_weights, save_weights

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_TEXT_ENCODER",
    "TEXT_ENCODERS",
    "Encoder",
    "Features",
    "InputContract",
    "TextEncoder",
    "backbone_from_config",
    "backbone_names",
    "create_backbone",
    "create_text_encoder",
    "load_weights",
    "register_backbone",
    "register_text_encoder",
    "save_weights",
    "text_encoder_from_config",
]
