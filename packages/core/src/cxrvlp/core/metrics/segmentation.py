"""Segmentation metrics per image, averaged over images (MGCA / MAVL fine-tuning protocol)."""

from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def _binary(pred, gt, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    p, g = _np(pred), _np(gt)
    if p.shape != g.shape:
        raise ValueError(f"predictions {p.shape} and masks {g.shape} differ in shape")
    if p.ndim == 2:
        p, g = p[None], g[None]
    return (p > threshold).reshape(len(p), -1), (g > 0.5).reshape(len(g), -1)


def dice_per_image(pred, gt, threshold: float = 0.5, empty_score: float = 1.0) -> np.ndarray:
    """(N,) hard Dice of (pred > threshold) vs gt; an empty gt scores `empty_score` if the prediction is empty
    too, else 0 (MGCA and MAVL count it 1 / 0)."""
    p, g = _binary(pred, gt, threshold)
    inter = (p & g).sum(1)
    total = p.sum(1) + g.sum(1)
    out = 2 * inter / np.where(total > 0, total, 1)
    empty_gt = g.sum(1) == 0
    return np.where(empty_gt, np.where(p.sum(1) == 0, empty_score, 0.0), out)


def iou_per_image(pred, gt, threshold: float = 0.5, empty_score: float = 1.0) -> np.ndarray:
    """(N,) hard IoU, with the same empty-mask rule as `dice_per_image`."""
    p, g = _binary(pred, gt, threshold)
    inter = (p & g).sum(1)
    union = (p | g).sum(1)
    out = inter / np.where(union > 0, union, 1)
    empty_gt = g.sum(1) == 0
    return np.where(empty_gt, np.where(p.sum(1) == 0, empty_score, 0.0), out)


def segmentation_metrics(pred, gt, threshold: float = 0.5) -> dict[str, float]:
    """Mean Dice and IoU over images (probabilities or logits with a suitable threshold)."""
    return {
        "dice": float(dice_per_image(pred, gt, threshold).mean()),
        "iou": float(iou_per_image(pred, gt, threshold).mean()),
    }
