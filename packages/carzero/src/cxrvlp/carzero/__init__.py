"""cxrvlp.carzero: CARZero (cross-attention alignment for radiology zero-shot classification, CVPR 2024)."""

from cxrvlp.carzero.official import load_official_checkpoint

__all__ = ["load_official_checkpoint"]
