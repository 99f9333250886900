"""The zero-shot adapter protocol that every method implements and the benchmark consumes.

The benchmark knows methods only through this protocol: it never imports a method's model classes.
An adapter wraps a trained model (ours or an imported official checkpoint) with the method's own
preprocessing, tokenizer and official scoring protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class ClassPrompts:
    """Prompts for one class: positive prompts and, for protocols that use them, negative prompts."""

    name: str
    positive: Sequence[str]
    negative: Sequence[str] = ()


@dataclass
class AdapterInfo:
    """What a result JSON records about the adapter: every choice that moves results."""

    method: str
    model_name: str
    image_size: int
    normalisation: str  # e.g. "imagenet", "mean0.5-std0.5", "cxr-mean-std"
    zero_shot_protocol: str  # e.g. "official: softmax(pos, neg)", "ours (not from the paper): cosine mean"
    grounding: str | None = None  # None when the adapter has no localisation maps
    checkpoint_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # `localize` maps are NaN on a border this many pixels wide (pixels the method's protocol leaves out,
    # e.g. AFLoc's 14 px at 224); NaN anywhere else is an error for the caller
    excluded_border_px: int = 0


@runtime_checkable
class ZeroShotAdapter(Protocol):
    """Encode a batch of images once, score any prompts for them, and localise where the method can.

    Optional attribute (read with `adapter_image_encoder`): `image_encoder`, the trained image encoder as an
    `nn.Module` whose forward returns `core.encoders.base.ImageEncoderOutput` (segmentation fine-tunes a
    decoder over it; an adapter without it is skipped by that task with this reason).
    """

    info: AdapterInfo

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float32 grayscale in [0, 1] -> (3, S, S) normalised eval-time tensor."""
        ...

    def encode_images(self, images: torch.Tensor) -> Any:
        """(B, 3, S, S) -> the method's image embedding (opaque to the caller)."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> Any:
        """P strings -> the method's text embedding (opaque to the caller)."""
        ...

    def similarity(self, image_emb: Any, text_emb: Any) -> torch.Tensor:
        """Raw image-text scores (B, P), for retrieval."""
        ...

    def classify(self, image_emb: Any, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """Per-class scores (B, C) under the method's zero-shot protocol; higher = more likely positive."""
        ...

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) frozen backbone features for linear probing."""
        ...

    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor | None:
        """(B, 3, S, S), P prompts -> (B, P, S, S) maps (higher = more likely), or None if unsupported.

        NaN only on the `info.excluded_border_px` border (excluded from every metric)."""
        ...


def adapter_image_encoder(adapter: Any) -> torch.nn.Module | None:
    """The adapter's optional `image_encoder` module (see `ZeroShotAdapter`), or None when it has none."""
    enc = getattr(adapter, "image_encoder", None)
    if enc is not None and not isinstance(enc, torch.nn.Module):
        raise TypeError(f"{type(adapter).__name__}.image_encoder is {type(enc).__name__}, not an nn.Module")
    return enc
