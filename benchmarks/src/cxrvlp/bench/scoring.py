"""The one place the benchmark turns arrays into numbers.

Classification, threshold choice and segmentation Dice are thin calls into `cxrvlp.core.metrics`.
Grounding uses core's AFLoc aggregation. Retrieval (both directions over de-duplicated texts with several
relevant images per text) is a small private helper, written before core's version landed.
Metrics are computed once on the full arrays (never averaged over batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from cxrvlp.core.metrics import classification as _cls
from cxrvlp.core.metrics import grounding as _gnd
from cxrvlp.core.metrics import segmentation as _seg


def _gnd_thresholds():
    return _gnd.AFLOC_THRESHOLDS


def _opt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def classification(y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """AUROC and AUPRC per class and macro over classes with both outcomes present (NaN labels dropped)."""
    rep = _cls.classification_metrics(y_score, y_true, class_names=list(classes))
    macro = rep.macro()
    return {
        "auroc": {c: _opt(v) for c, v in zip(classes, rep.auroc)},
        "auprc": {c: _opt(v) for c, v in zip(classes, rep.auprc)},
        "auroc_macro": _opt(macro["auroc"]),
        "auprc_macro": _opt(macro["auprc"]),
        "n_classes_scored": int(np.isfinite(rep.auroc).sum()),
    }


def choose_thresholds(y_val: np.ndarray, s_val: np.ndarray) -> np.ndarray:
    """(C,) thresholds that maximise F1 per class on the validation split."""
    return np.asarray(_cls.choose_thresholds(s_val, y_val, criterion="f1"), dtype=np.float64)


def thresholded(y_true: np.ndarray, y_score: np.ndarray, thr: np.ndarray, classes: Sequence[str]) -> dict:
    """F1 and accuracy per class and macro at fixed thresholds (score >= threshold is positive)."""
    rep = _cls.classification_metrics(y_score, y_true, thresholds=thr, class_names=list(classes))
    macro = rep.macro()
    return {
        "f1": {c: _opt(v) for c, v in zip(classes, rep.f1)},
        "accuracy": {c: _opt(v) for c, v in zip(classes, rep.accuracy)},
        "f1_macro": _opt(macro["f1"]),
        "accuracy_macro": _opt(macro["accuracy"]),
    }


def multiclass_accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Accuracy of argmax(score) against argmax(one-hot label)."""
    return float(_cls.multiclass_accuracy(y_score, np.argmax(np.nan_to_num(y_true), 1)))


def _ranks(sim: np.ndarray, gt_sets: list[set[int]]) -> np.ndarray:
    """1-based rank of the best-ranked ground-truth column per row (stable order breaks ties by index)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    out = np.empty(len(sim), np.int64)
    for i, g in enumerate(gt_sets):
        out[i] = int(np.flatnonzero(np.isin(order[i], list(g)))[0]) + 1
    return out


def retrieval_ranks(sim: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of the paired text per image (i2t) and of the best paired image per text (t2i)."""
    r_i2t = _ranks(sim, [{int(t)} for t in gt])
    imgs_of = [set(np.flatnonzero(gt == t).tolist()) for t in range(sim.shape[1])]
    return r_i2t, _ranks(sim.T, imgs_of)


def retrieval(sim: np.ndarray, gt: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Image->text and text->image recall@K from an (N_img, N_txt) similarity and each image's text index."""
    r_i2t, r_t2i = retrieval_ranks(sim, gt)
    out: dict[str, Any] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(r_i2t <= k))
        out[f"t2i_R@{k}"] = float(np.mean(r_t2i <= k))
    out["i2t_mean_rank"] = float(r_i2t.mean())
    out["t2i_mean_rank"] = float(r_t2i.mean())
    return out


def class_retrieval(
    sim: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, np.ndarray]:
    """Label-conditioned retrieval (BenchX): per query, Hit@K (a top-K candidate is relevant) and
    Precision@K (share of the top K that is relevant). sim and relevant are (N_query, N_candidate)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    out = {}
    for k in ks:
        top = np.take_along_axis(relevant, order[:, :k], axis=1)  # (N_query, k)
        out[f"hit@{k}"] = top.any(1).astype(np.float64)
        out[f"P@{k}"] = top.sum(1) / float(min(k, sim.shape[1]))
    return out


def class_match(
    sim: np.ndarray, img_labels: np.ndarray, txt_labels: np.ndarray, ks=(1, 5, 10)
) -> dict[str, Any]:
    """Class-match Hit@K: a retrieved text counts when it shares a positive class with the image."""
    share = (img_labels > 0).astype(np.int64) @ (txt_labels > 0).astype(np.int64).T > 0  # (N_img, N_txt)
    has = (img_labels > 0).any(1)
    hits = class_retrieval(sim, share, ks)
    return {f"class_hit@{k}": float(hits[f"hit@{k}"][has].mean()) if has.any() else None for k in ks}


def grounding(heatmaps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """AFLoc's protocol via core: each (S, S) map min-max normalised to [-1, 1], IoU / Dice averaged over
    thresholds 0.1..0.5, signed CNR, pointing game; (N, S, S) maps and masks of one class."""
    hm = np.stack([_gnd.minmax_normalize(h) for h in np.asarray(heatmaps, np.float64)])
    return _gnd.grounding_metrics(hm, np.asarray(masks, np.float64))


THRESHOLDS = tuple(float(t) for t in _gnd_thresholds())


def dice(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image hard Dice (empty ground truth scores 1 when the prediction is empty, else 0)."""
    return np.asarray(_seg.dice_per_image(pred.astype(np.float32), gt.astype(np.float32)), dtype=np.float64)


BOOTSTRAP = 1000  # resamples behind every 95 % interval (`run --bootstrap`)


def _weighted_auroc(groups: np.ndarray, pos: np.ndarray, n_groups: int, w: np.ndarray) -> float:
    """AUROC of one class when row i counts w[i] times; `groups` ranks the scores (ties share a group)."""
    p = np.bincount(groups[pos], w[pos], n_groups)
    n = np.bincount(groups[~pos], w[~pos], n_groups)
    sp, sn = p.sum(), n.sum()
    if sp == 0 or sn == 0:
        return float("nan")
    below = np.cumsum(n) - n  # negatives strictly below each score group
    return float((p * (below + 0.5 * n)).sum() / (sp * sn))


def bootstrap_draws(n_rows: int, n: int, seed: int):
    """n resamples with replacement, each as (n_rows,) row multiplicities (one at a time: memory O(rows))."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.bincount(rng.integers(0, n_rows, n_rows), minlength=n_rows).astype(np.float64)


def auroc_macro_ci(
    y_true: np.ndarray, y_score: np.ndarray, n: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the macro AUROC over images (NaN labels dropped per class;
    a resample's macro averages the classes with both outcomes in it, as the point figure does)."""
    y_true, y_score = np.asarray(y_true, np.float64), np.asarray(y_score, np.float64)
    if len(y_true) < 2 or n <= 0:
        return None
    cls = []  # per scorable class: its rows, positives and score groups (ranked once)
    for c in range(y_true.shape[1]):
        ok = np.isfinite(y_true[:, c])
        pos = y_true[ok, c] > 0.5
        if pos.all() or not pos.any():
            continue
        _, groups = np.unique(y_score[ok, c], return_inverse=True)
        cls.append((ok, pos, groups, int(groups.max()) + 1))
    if not cls:
        return None
    macro = []
    for d in bootstrap_draws(len(y_true), n, seed):
        vals = [_weighted_auroc(g, p, k, d[ok]) for ok, p, g, k in cls]
        vals = [v for v in vals if np.isfinite(v)]
        macro.append(np.mean(vals) if vals else np.nan)
    return _interval(np.asarray(macro))


def mean_ci(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the mean of per-item values (Dice per image, hits per query)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2 or n <= 0:
        return None
    return _interval(np.asarray([d @ v / len(v) for d in bootstrap_draws(len(v), n, seed)]))


def macro_mean_ci(
    groups: Sequence[np.ndarray], n: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float] | None:
    """95 % interval of a macro mean (the mean over groups of each group's mean), resampling the items of
    every group independently (pointing game: images within each class)."""
    groups = [np.asarray(g, np.float64) for g in groups if len(g)]
    if not groups or n <= 0:
        return None
    rng = np.random.default_rng(seed)
    vals = [np.mean([g[rng.integers(0, len(g), len(g))].mean() for g in groups]) for _ in range(n)]
    return _interval(np.asarray(vals))


def _interval(vals: np.ndarray) -> tuple[float, float] | None:
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)
