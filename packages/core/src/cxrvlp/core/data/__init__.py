"""Chest X-ray data: image decoding, official-format readers, transforms, cache (see docs/design.md)."""

from cxrvlp.core.data.contract import OnError, Sample
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.data.transforms import PRESETS, build_transform

__all__ = ["OnError", "Sample", "read_image", "PRESETS", "build_transform"]
