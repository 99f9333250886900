"""One output type for every image encoder and a registry of encoder builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ImageEncoderOutput:
    """What every image encoder returns."""

    global_feat: torch.Tensor  # (B, D_g) pooled / [CLS] / avg-pooled vector
    local_feat: torch.Tensor | None = None  # (B, N, D_l) patch tokens or flattened feature map (row-major)
    grid_size: tuple[int, int] | None = None  # (h, w) with h * w == N
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. {"layer2": (B,C,H,W), ...}
    attentions: torch.Tensor | None = None  # (B, heads, N+1, N+1) of the last block, when requested


@dataclass
class TextEncoderOutput:
    """What every text encoder returns."""

    last_hidden_state: torch.Tensor  # (B, L, D)
    attention_mask: torch.Tensor  # (B, L)
    pooled: torch.Tensor | None = None  # (B, D) per the encoder's pooling mode
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: torch.Tensor | None = None  # (B, heads, L, L) of the last layer, when requested


_IMAGE_ENCODERS: dict[str, Callable[..., nn.Module]] = {}
_TEXT_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_image_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register an image-encoder builder under `name`."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _IMAGE_ENCODERS:
            raise KeyError(f"image encoder '{name}' is registered twice")
        _IMAGE_ENCODERS[name] = fn
        return fn

    return deco


def register_text_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a text-encoder builder under `name`."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _TEXT_ENCODERS:
            raise KeyError(f"text encoder '{name}' is registered twice")
        _TEXT_ENCODERS[name] = fn
        return fn

    return deco


def create_image_encoder(name: str, **kwargs) -> nn.Module:
    """Build a registered image encoder (`pretrained=` a hub name, a local file, True/False)."""
    _import_builtin_encoders()
    if name not in _IMAGE_ENCODERS:
        raise KeyError(f"unknown image encoder '{name}'; registered: {sorted(_IMAGE_ENCODERS)}")
    return _IMAGE_ENCODERS[name](**kwargs)


def create_text_encoder(name: str, **kwargs) -> nn.Module:
    """Build a registered text encoder."""
    _import_builtin_encoders()
    if name not in _TEXT_ENCODERS:
        raise KeyError(f"unknown text encoder '{name}'; registered: {sorted(_TEXT_ENCODERS)}")
    return _TEXT_ENCODERS[name](**kwargs)


def list_image_encoders() -> list[str]:
    """Names of the registered image encoders."""
    _import_builtin_encoders()
    return sorted(_IMAGE_ENCODERS)


def list_text_encoders() -> list[str]:
    """Names of the registered text encoders."""
    _import_builtin_encoders()
    return sorted(_TEXT_ENCODERS)


def _import_builtin_encoders() -> None:
    # Importing the package registers every built-in encoder module (see encoders/__init__.py).
    import cxrvlp.core.encoders  # noqa: F401
