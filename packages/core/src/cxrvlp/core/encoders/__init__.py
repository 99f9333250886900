"""Image and text encoders with one output type; importing this registers the built-in ones."""

import importlib

from cxrvlp.core.encoders.base import (
    ImageEncoderOutput,
    TextEncoderOutput,
    create_image_encoder,
    create_text_encoder,
    list_image_encoders,
    list_text_encoders,
    register_image_encoder,
    register_text_encoder,
)

# Each module registers its encoders on import; a module not written yet is simply absent.
for _mod in ("resnet", "vit", "swin", "text", "efficientnet", "minilm"):
    try:
        importlib.import_module(f"cxrvlp.core.encoders.{_mod}")
    except ModuleNotFoundError as err:  # only tolerate the module itself missing, not its imports failing
        if err.name != f"cxrvlp.core.encoders.{_mod}":
            raise

__all__ = [
    "ImageEncoderOutput",
    "TextEncoderOutput",
    "create_image_encoder",
    "create_text_encoder",
    "list_image_encoders",
    "list_text_encoders",
    "register_image_encoder",
    "register_text_encoder",
]
