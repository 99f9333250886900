"""AUROC with percentile-bootstrap intervals, paired differences, and the logistic-regression probe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata


@dataclass
class Figure:
    """One AUROC on the probe-test rows of a task, with its 95 % bootstrap interval."""

    task: str
    model: str  # "efficientnet-lite0" (the bare encoder) or a method name
    init: str  # "imagenet" / "pretrained" / "random" / "checkpoint"
    evaluation: str  # "zero-shot" | "linear probe" | "linear probe, K per class"
    seed: int
    auroc: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    n_pos_test: int
    extra: dict[str, Any] = field(default_factory=dict)


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count one half); equals sklearn's roc_auc_score."""
    y = np.asarray(y) > 0.5
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError(f"AUROC needs both classes (positives {n1}, negatives {n0})")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _resamples(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, N) bootstrap index draws that each contain both classes (a draw lacking one is redrawn)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        idx = rng.integers(0, len(y), (n, len(y)))
        pos = (y[idx] > 0.5).sum(1)
        out.extend(idx[(pos > 0) & (pos < len(y))])
    return np.stack(out[:n])


def bootstrap_auroc(y: np.ndarray, s: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    """AUROC and its 95 % percentile bootstrap interval over the rows."""
    vals = [auroc(y[i], s[i]) for i in _resamples(y, n, seed)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return auroc(y, s), float(lo), float(hi)


def paired_difference(
    y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray, n: int, seed: int
) -> tuple[float, float, float]:
    """AUROC(a) - AUROC(b) on the same rows, with a 95 % paired bootstrap interval (same draws for both)."""
    vals = [auroc(y[i], s_a[i]) - auroc(y[i], s_b[i]) for i in _resamples(y, n, seed)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return auroc(y, s_a) - auroc(y, s_b), float(lo), float(hi)


def probe_name(shots: int | None) -> str:
    """Evaluation label of a probe trained on all probe-train rows (None) or `shots` rows per class."""
    return "linear probe" if shots is None else f"linear probe, {shots} per class"


def probe_train_rows(train_mask: np.ndarray, y: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """Indices of the probe-train rows used: all of them, or `shots` per class drawn by seed (label
    efficiency: pretrained features matter most when labels are few)."""
    rows = np.flatnonzero(train_mask)
    if shots is None:
        return rows
    rng = np.random.default_rng(seed)
    pick = [
        rng.choice(rows[y[rows] == c], min(shots, int((y[rows] == c).sum())), replace=False) for c in (0, 1)
    ]
    return np.sort(np.concatenate(pick))


def probes(
    f: np.ndarray, y: np.ndarray, train_mask: np.ndarray, seed: int, shots: Sequence[int | None]
) -> dict[str, tuple[np.ndarray, int]]:
    """{evaluation label: (probe-test scores, number of probe-train rows used)} for every shot setting."""
    out = {}
    for k in shots:
        tr = probe_train_rows(train_mask, y, k, seed)
        out[probe_name(k)] = (probe_scores(f[tr], y[tr], f[~train_mask], seed), len(tr))
    return out


def probe_scores(
    f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, seed: int, c: float = 0.1
) -> np.ndarray:
    """Logistic regression (L2, C) on standardised frozen features; probe-test probabilities."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_tr)) < 2:
        raise ValueError(f"probe-train rows hold one class only ({len(y_tr)} rows)")
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit((f_tr - mu) / sd, y_tr)
    return clf.predict_proba((f_te - mu) / sd)[:, 1]
