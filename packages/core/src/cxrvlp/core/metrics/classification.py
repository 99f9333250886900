"""Classification metrics on full score/label arrays: AUROC, AUPRC, F1 and accuracy at validation thresholds.

Labels are (N, C) with 1 / 0 and NaN for "not labelled" (excluded per class). A class whose labelled rows are
all one value has no AUROC / AUPRC: it is NaN and left out of the macro mean (reported in `skipped`).
A score is predicted positive when score >= threshold (the convention of sklearn's curve thresholds).
Thresholds are chosen on validation predictions with `choose_thresholds`, never on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def _as_2d(x) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    bad = np.isfinite(labels) & ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or NaN; found {np.unique(labels[bad])[:5]}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or Inf")


def _columns(scores: np.ndarray, labels: np.ndarray):
    for c in range(scores.shape[1]):
        keep = np.isfinite(labels[:, c])
        yield c, scores[keep, c], labels[keep, c].astype(int)


def best_f1_threshold(scores, labels) -> float:
    """Threshold maximising F1 on one class (PR-curve thresholds, NaN labels dropped); NaN if no positive."""
    s, y = _as_2d(scores)[:, 0], _as_2d(labels)[:, 0]
    keep = np.isfinite(y)
    s, y = s[keep], y[keep].astype(int)
    if y.sum() == 0:
        return float("nan")
    precision, recall, thr = precision_recall_curve(y, s)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thr[int(np.argmax(f1))])


def best_youden_threshold(scores, labels) -> float:
    """Threshold maximising TPR - FPR on one class; NaN when a class value is missing."""
    s, y = _as_2d(scores)[:, 0], _as_2d(labels)[:, 0]
    keep = np.isfinite(y)
    s, y = s[keep], y[keep].astype(int)
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    fpr, tpr, thr = roc_curve(y, s)
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], s.max()))  # roc_curve's first threshold is +inf


def choose_thresholds(val_scores, val_labels, criterion: str = "f1") -> np.ndarray:
    """Per-class thresholds (C,) chosen on validation predictions: criterion "f1" (max F1) or "youden"."""
    s, y = _as_2d(val_scores), _as_2d(val_labels)
    _check(s, y)
    pick = {"f1": best_f1_threshold, "youden": best_youden_threshold}.get(criterion)
    if pick is None:
        raise ValueError(f"criterion must be 'f1' or 'youden', got '{criterion}'")
    return np.array([pick(s[:, c], y[:, c]) for c in range(s.shape[1])])


@dataclass
class ClassificationReport:
    """Per-class and macro metrics; NaN where undefined."""

    auroc: np.ndarray  # (C,)
    auprc: np.ndarray  # (C,)
    f1: np.ndarray | None = None  # (C,) at the given thresholds
    accuracy: np.ndarray | None = None  # (C,)
    thresholds: np.ndarray | None = None
    n_pos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_labelled: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_names: list[str] | None = None

    @property
    def skipped(self) -> list[int]:
        """Classes without both label values (no AUROC)."""
        return [int(i) for i in np.flatnonzero(np.isnan(self.auroc))]

    def macro(self) -> dict[str, float]:
        """Unweighted means over classes where each metric is defined."""
        out = {"auroc": _nanmean(self.auroc), "auprc": _nanmean(self.auprc)}
        if self.f1 is not None:
            out["f1"] = _nanmean(self.f1)
            out["accuracy"] = _nanmean(self.accuracy)
        return out

    def per_class(self) -> dict[str, dict[str, float]]:
        """{class name: {metric: value}}."""
        names = self.class_names or [str(i) for i in range(len(self.auroc))]
        rows = {}
        for i, n in enumerate(names):
            row = {"auroc": float(self.auroc[i]), "auprc": float(self.auprc[i])}
            if self.f1 is not None:
                row.update(
                    f1=float(self.f1[i]),
                    accuracy=float(self.accuracy[i]),
                    threshold=float(self.thresholds[i]),
                )
            row.update(n_pos=int(self.n_pos[i]), n_labelled=int(self.n_labelled[i]))
            rows[n] = row
        return rows


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def classification_metrics(
    scores, labels, thresholds=None, class_names: list[str] | None = None
) -> ClassificationReport:
    """AUROC / AUPRC per class (+ F1 and accuracy at `thresholds` (C,) when given) on (N, C) arrays."""
    s, y = _as_2d(scores), _as_2d(labels)
    _check(s, y)
    n_cls = s.shape[1]
    if class_names is not None and len(class_names) != n_cls:
        raise ValueError(f"{len(class_names)} class names for {n_cls} score columns")
    auroc, auprc = np.full(n_cls, np.nan), np.full(n_cls, np.nan)
    n_pos, n_lab = np.zeros(n_cls, int), np.zeros(n_cls, int)
    f1 = acc = thr = None
    if thresholds is not None:
        thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_cls,)).copy()
        f1, acc = np.full(n_cls, np.nan), np.full(n_cls, np.nan)
    for c, sc, yc in _columns(s, y):
        n_pos[c], n_lab[c] = int(yc.sum()), len(yc)
        if 0 < yc.sum() < len(yc):
            auroc[c] = roc_auc_score(yc, sc)
            auprc[c] = average_precision_score(yc, sc)
        if thr is not None and len(yc) and np.isfinite(thr[c]):
            pred = sc >= thr[c]
            tp = np.sum(pred & (yc == 1))
            denom = pred.sum() + yc.sum()
            f1[c] = 2 * tp / denom if denom else float("nan")
            acc[c] = float(np.mean(pred == (yc == 1)))
    return ClassificationReport(auroc, auprc, f1, acc, thr, n_pos, n_lab, class_names)


def multiclass_accuracy(scores, labels) -> float:
    """Top-1 accuracy of (N, C) scores against (N,) integer labels (CheXpert 5x200)."""
    s = _as_2d(scores)
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(int).ravel()
    if len(y) != len(s):
        raise ValueError(f"{len(s)} score rows for {len(y)} labels")
    return float(np.mean(s.argmax(1) == y))
