"""Frozen features of the bare image encoder (core EfficientNet-Lite0), ImageNet or random init."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.bench.inference import progress

ENCODER = "efficientnet-lite0"
NORMALISATION = "ImageNet mean/std on [0, 1] grey replicated to 3 channels"
RESIZE = "long side to the dataset's size, zero-padded to a square"


def dataset_size(rows: Sequence[dict[str, str]], image_size: int) -> int:
    """`image_size`, or less for a dataset of smaller images (long side rounded up to 32): never upsampled
    further (the NIH thumbnails stay at 64 px instead of costing 12x the compute at 224)."""
    sides = [max(int(r.get("width") or 0), int(r.get("height") or 0)) for r in rows]
    longest = max(sides, default=0)
    return image_size if longest <= 0 else min(image_size, 32 * math.ceil(longest / 32))


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file -> (1, size, size) float in [0, 1], aspect kept by zero-padding to a square."""
    from cxrvlp.core.data import read_image

    img = torch.from_numpy(read_image(path))[None, None]  # (1, 1, H, W)
    h, w = img.shape[-2:]
    s = size / max(h, w)
    img = F.interpolate(
        img, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False
    )
    ph, pw = size - img.shape[-2], size - img.shape[-1]
    return F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))[0]


class ImageCache:
    """Each (file, size) is decoded once and kept as uint8 (all encoders and seeds reuse it)."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, int], torch.Tensor] = {}

    def get(self, path: Path, size: int) -> torch.Tensor:
        key = (str(path), size)
        if key not in self._store:
            self._store[key] = (load_image(path, size) * 255).round().to(torch.uint8)
        return self._store[key]

    def batch(self, paths: Sequence[Path], size: int) -> torch.Tensor:
        """(B, 3, size, size) ImageNet-normalised float32."""
        x = torch.stack([self.get(p, size) for p in paths]).float().div_(255)  # (B, 1, S, S)
        mean = torch.tensor((0.485, 0.456, 0.406))[None, :, None, None]
        std = torch.tensor((0.229, 0.224, 0.225))[None, :, None, None]
        return (x.expand(-1, 3, -1, -1) - mean) / std


def build_encoder(pretrained: bool, seed: int) -> torch.nn.Module:
    """Core EfficientNet-Lite0: the packaged ImageNet weights, or the same architecture at a seeded init."""
    from cxrvlp.core.encoders.base import create_image_encoder

    torch.manual_seed(seed)
    return create_image_encoder(ENCODER, pretrained=pretrained).eval()


def encode(
    enc: torch.nn.Module, paths: Sequence[Path], size: int, cache: ImageCache, batch_size: int, desc: str = ""
) -> np.ndarray:
    """(N, 1280) global average-pooled features; a non-finite feature raises naming the image."""
    out = []
    with torch.inference_mode():
        starts = range(0, len(paths), batch_size)
        for i in progress(starts, desc, len(starts), enabled=bool(desc)):  # line-based in a log file
            out.append(enc(cache.batch(paths[i : i + batch_size], size)).global_feat.float().numpy())
    f = np.concatenate(out) if out else np.zeros((0, 1280), np.float32)
    bad = np.flatnonzero(~np.isfinite(f).all(1))
    if len(bad):
        raise FloatingPointError(f"non-finite features for {[str(paths[i]) for i in bad[:5]]}")
    return f
