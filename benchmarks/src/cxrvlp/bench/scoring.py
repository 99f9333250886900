"""The one place the benchmark turns arrays into numbers.

Tasks call these helpers so that a change in the metric API is absorbed here. Metrics are computed once
on the full arrays (never averaged over batches). `cxrvlp.core.metrics` had not landed when this was
written, so the helpers are minimal private versions (scikit-learn for ranking metrics); they are meant
to become thin calls into core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _valid(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    ok = np.isfinite(y) & np.isfinite(s)
    if len(np.unique(y[ok])) < 2:
        return None
    return y[ok], s[ok]


def classification(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """AUROC and AUPRC per class and macro over classes with both outcomes present (NaN labels dropped)."""
    auroc, auprc = {}, {}
    for c, name in enumerate(classes):
        v = _valid(y_true[:, c], y_score[:, c])
        auroc[name] = None if v is None else float(roc_auc_score(*v))
        auprc[name] = None if v is None else float(average_precision_score(*v))
    a = [x for x in auroc.values() if x is not None]
    p = [x for x in auprc.values() if x is not None]
    return {
        "auroc": auroc,
        "auprc": auprc,
        "auroc_macro": float(np.mean(a)) if a else None,
        "auprc_macro": float(np.mean(p)) if p else None,
        "n_classes_scored": len(a),
    }


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0


def choose_thresholds(y_val: np.ndarray, s_val: np.ndarray) -> np.ndarray:
    """(C,) thresholds that maximise F1 per class on the validation split (0.5 where it has one outcome)."""
    thr = np.full(y_val.shape[1], 0.5)
    for c in range(y_val.shape[1]):
        v = _valid(y_val[:, c], s_val[:, c])
        if v is None:
            continue
        y, s = v
        cands = np.unique(s)
        f1 = [_f1(y, s >= t) for t in cands]
        thr[c] = float(cands[int(np.argmax(f1))])
    return thr


def thresholded(
    y_true: np.ndarray, y_score: np.ndarray, thr: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """F1 and accuracy per class and macro at fixed thresholds (score >= threshold is positive)."""
    f1, acc = {}, {}
    for c, name in enumerate(classes):
        ok = np.isfinite(y_true[:, c])
        y, pred = y_true[ok, c], y_score[ok, c] >= thr[c]
        f1[name] = _f1(y, pred) if len(y) else None
        acc[name] = float(np.mean(pred == (y == 1))) if len(y) else None
    fv = [x for x in f1.values() if x is not None]
    av = [x for x in acc.values() if x is not None]
    return {
        "f1": f1,
        "accuracy": acc,
        "f1_macro": float(np.mean(fv)) if fv else None,
        "accuracy_macro": float(np.mean(av)) if av else None,
    }


def multiclass_accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Accuracy of argmax(score) against argmax(one-hot label)."""
    return float(np.mean(np.argmax(y_score, 1) == np.argmax(np.nan_to_num(y_true), 1)))


def _ranks(sim: np.ndarray, gt_sets: list[set[int]]) -> np.ndarray:
    """1-based rank of the best-ranked ground-truth column per row (stable order breaks ties by index)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    out = np.empty(len(sim), np.int64)
    for i, g in enumerate(gt_sets):
        out[i] = int(np.flatnonzero(np.isin(order[i], list(g)))[0]) + 1
    return out


def retrieval(sim: np.ndarray, gt: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Image->text and text->image recall@K from an (N_img, N_txt) similarity and each image's text index."""
    r_i2t = _ranks(sim, [{int(t)} for t in gt])
    imgs_of = [set(np.flatnonzero(gt == t).tolist()) for t in range(sim.shape[1])]
    r_t2i = _ranks(sim.T, imgs_of)
    out: dict[str, Any] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(r_i2t <= k))
        out[f"t2i_R@{k}"] = float(np.mean(r_t2i <= k))
    out["i2t_mean_rank"] = float(r_i2t.mean())
    out["t2i_mean_rank"] = float(r_t2i.mean())
    return out


def class_match(
    sim: np.ndarray, img_labels: np.ndarray, txt_labels: np.ndarray, ks=(1, 5, 10)
) -> dict[str, Any]:
    """Class-match Hit@K: a retrieved text counts when it shares a positive class with the image."""
    order = np.argsort(-sim, axis=1, kind="stable")
    share = (img_labels > 0).astype(np.int64) @ (txt_labels > 0).astype(np.int64).T > 0  # (N_img, N_txt)
    has = (img_labels > 0).any(1)
    out = {}
    for k in ks:
        hit = np.take_along_axis(share, order[:, :k], axis=1).any(1)
        out[f"class_hit@{k}"] = float(hit[has].mean()) if has.any() else None
    return out


def grounding(heatmap: np.ndarray, mask: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
    """Pointing-game hit, IoU and Dice averaged over thresholds, and CNR, of one (S, S) map vs one mask.

    The map is min-max normalised to [0, 1]; CNR is AFLoc's signed (mu_in - mu_out) / sqrt(var_in + var_out).
    """
    hm = np.asarray(heatmap, np.float64)
    gt = np.asarray(mask).astype(bool)
    hm = (hm - hm.min()) / (hm.max() - hm.min()) if hm.max() > hm.min() else np.zeros_like(hm)
    hit = float(gt.flat[int(np.argmax(hm))])
    ious, dices = [], []
    for t in thresholds:
        p = hm > t
        inter, union, tot = (p & gt).sum(), (p | gt).sum(), p.sum() + gt.sum()
        ious.append(inter / union if union else np.nan)
        dices.append(2 * inter / tot if tot else np.nan)
    inside, outside = hm[gt], hm[~gt]
    den = np.sqrt(inside.var() + outside.var()) if len(inside) and len(outside) else 0.0
    cnr = float((inside.mean() - outside.mean()) / den) if den > 0 else 0.0
    return {
        "pointing_game": hit,
        "iou": float(np.nanmean(ious)) if np.isfinite(ious).any() else 0.0,
        "dice": float(np.nanmean(dices)) if np.isfinite(dices).any() else 0.0,
        "cnr": cnr,
    }


def dice(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image hard Dice (empty ground truth scores 1 when the prediction is empty, else 0)."""
    p = pred.reshape(len(pred), -1).astype(bool)
    g = gt.reshape(len(gt), -1).astype(bool)
    inter, tot = (p & g).sum(1), p.sum(1) + g.sum(1)
    return np.where(tot == 0, 1.0, 2 * inter / np.maximum(tot, 1))
