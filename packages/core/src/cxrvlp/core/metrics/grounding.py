"""Grounding metrics of heatmaps against ground-truth masks: pointing game, IoU / Dice at thresholds, CNR.

Heatmaps are (N, H, W) floats; NaN pixels are "outside the evaluated area" (AFLoc's 14-px border) and are
ignored by every metric. Masks are (N, H, W); a pixel is inside when mask >= 1 (AFLoc sums overlapping boxes,
so 2 also counts as inside for IoU/Dice) and CNR uses mask == 1 vs mask == 0 as AFLoc does.
"""

from __future__ import annotations

import numpy as np

AFLOC_THRESHOLDS = np.arange(
    0.1, 0.6, 0.1
)  # 0.1 .. 0.5, numpy's own values (the third is 0.30000000000000004)


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def _check(h: np.ndarray, m: np.ndarray) -> None:
    if h.shape != m.shape:
        raise ValueError(f"heatmaps {h.shape} and masks {m.shape} differ in shape")


def border_mask(height: int, width: int, margin: int) -> np.ndarray:
    """(H, W) bool, False on a `margin`-pixel border (AFLoc: 14 px at 224, from BioViL's 448/512 crop)."""
    valid = np.zeros((height, width), dtype=bool)
    valid[margin : height - margin, margin : width - margin] = True
    return valid


def minmax_normalize(heatmap, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Scale the finite pixels of one heatmap to [low, high] (NaN kept); a constant map gives all `low`."""
    h = _np(heatmap).copy()
    fin = np.isfinite(h)
    lo, hi = h[fin].min(), h[fin].max()
    if hi == lo:
        h[fin] = low
        return h
    h[fin] = (h[fin] - lo) / (hi - lo) * (high - low) + low
    return h


def _overlap(heatmaps, masks, thresholds):
    # counts for all thresholds from sorted pixel values: |P| = #valid > t, |P & G| = #gt > t (no (N, T, H, W)
    # boolean stack, so sweeps over thousands of thresholds (MAVL) stay cheap)
    h, m = _np(heatmaps), _np(masks)
    _check(h, m)
    if h.ndim == 2:
        h, m = h[None], m[None]
    thr = np.asarray(thresholds, dtype=np.float64)
    inter = np.zeros((len(h), len(thr)))
    n_pred = np.zeros((len(h), len(thr)))
    n_gt = np.zeros((len(h), 1))
    for i in range(len(h)):
        valid = np.isfinite(h[i])
        vals = np.sort(h[i][valid])
        gt_vals = np.sort(h[i][valid & (m[i] >= 1)])
        n_pred[i] = len(vals) - np.searchsorted(vals, thr, side="right")
        inter[i] = len(gt_vals) - np.searchsorted(gt_vals, thr, side="right")
        n_gt[i] = len(gt_vals)
    return inter, n_pred, n_gt


def iou_at_thresholds(heatmaps, masks, thresholds=AFLOC_THRESHOLDS) -> np.ndarray:
    """(N, T) IoU of (heatmap > t) and mask on valid pixels; NaN if prediction or mask is empty (AFLoc)."""
    inter, n_pred, n_gt = _overlap(heatmaps, masks, thresholds)
    union = n_pred + n_gt - inter
    out = inter / np.where(union > 0, union, 1)
    return np.where((n_pred > 0) & (n_gt > 0), out, np.nan)


def dice_at_thresholds(heatmaps, masks, thresholds=AFLOC_THRESHOLDS) -> np.ndarray:
    """(N, T) Dice 2|P∩G| / (|P| + |G|) of (heatmap > t), NaN when prediction or mask is empty."""
    inter, n_pred, n_gt = _overlap(heatmaps, masks, thresholds)
    out = 2 * inter / np.where(n_pred + n_gt > 0, n_pred + n_gt, 1)
    return np.where((n_pred > 0) & (n_gt > 0), out, np.nan)


def cnr(heatmaps, masks) -> np.ndarray:
    """(N,) signed contrast-to-noise ratio (mu_in - mu_out) / sqrt(var_in + var_out), AFLoc's definition.

    in = mask == 1, out = mask == 0, finite pixels only; population variances; 0 when both variances are 0.
    """
    h, m = _np(heatmaps), _np(masks)
    _check(h, m)
    if h.ndim == 2:
        h, m = h[None], m[None]
    out = np.full(len(h), np.nan)
    for i in range(len(h)):
        fin = np.isfinite(h[i])
        a, b = h[i][fin & (m[i] == 1)], h[i][fin & (m[i] == 0)]
        if a.size == 0 or b.size == 0:
            continue
        denom = np.sqrt(a.var() + b.var())
        out[i] = 0.0 if denom == 0 else (a.mean() - b.mean()) / denom
    return out


def pointing_game(heatmaps, masks, ties: str = "first") -> np.ndarray:
    """(N,) bool: the heatmap's maximum falls inside the mask (NaN ignored).

    ties="first": the first maximal pixel in row-major order (numpy argmax); "any": any maximal pixel.
    """
    h, m = _np(heatmaps), _np(masks)
    _check(h, m)
    if h.ndim == 2:
        h, m = h[None], m[None]
    flat = np.where(np.isfinite(h), h, -np.inf).reshape(len(h), -1)
    inside = (m >= 1).reshape(len(m), -1)
    if ties == "first":
        return inside[np.arange(len(h)), flat.argmax(1)]
    if ties == "any":
        return ((flat == flat.max(1, keepdims=True)) & inside).any(1)
    raise ValueError(f"ties must be 'first' or 'any', got '{ties}'")


def grounding_metrics(
    heatmaps, masks, thresholds=AFLOC_THRESHOLDS, categories: list[str] | None = None
) -> dict[str, float]:
    """Summary as AFLoc aggregates it: per threshold nanmean (per category, then mean over categories),
    then the mean over thresholds; CNR and pointing accuracy likewise macro-averaged over categories.
    """
    iou = iou_at_thresholds(heatmaps, masks, thresholds)  # (N, T)
    dice = dice_at_thresholds(heatmaps, masks, thresholds)
    c = cnr(heatmaps, masks)
    hit = pointing_game(heatmaps, masks).astype(np.float64)
    cats = np.asarray(categories if categories is not None else ["all"] * len(iou))
    if len(cats) != len(iou):
        raise ValueError(f"{len(cats)} categories for {len(iou)} samples")

    def macro(values: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            per_cat = [np.nanmean(values[cats == k], axis=0) for k in np.unique(cats)]
        return np.nanmean(np.stack(per_cat), axis=0)

    out = {
        "iou": float(np.mean(macro(iou))),
        "dice": float(np.mean(macro(dice))),
        "cnr": float(macro(c)),
        "pointing_game": float(macro(hit)),
        "n": int(len(iou)),
    }
    for t, v in zip(np.asarray(thresholds), macro(iou)):
        out[f"iou@{t:.2f}"] = float(v)
    return out
