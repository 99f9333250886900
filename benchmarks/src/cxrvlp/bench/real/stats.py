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
    f: np.ndarray,
    y: np.ndarray,
    train_mask: np.ndarray,
    seed: int,
    shots: Sequence[int | None],
    groups: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, int, float]]:
    """{evaluation label: (probe-test scores, number of probe-train rows used, C)} for every shot setting;
    with `groups` (patient per row), C is chosen by grouped cross-validation on the probe-train rows."""
    out = {}
    for k in shots:
        tr = probe_train_rows(train_mask, y, k, seed)
        s, c = probe_scores(f[tr], y[tr], f[~train_mask], seed, None if groups is None else groups[tr])
        out[probe_name(k)] = (s, len(tr), c)
    return out


C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strength of the probe, searched by cross-validation
DEFAULT_C = 0.1  # when no grouping is given, or too few patients for two folds with both classes
CV_FOLDS = 5


def choose_c(f: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[float, dict[float, float]]:
    """C of the probe by patient-grouped k-fold cross-validation on its own training rows (k = 5, or the
    number of patients if fewer): the C with the highest mean held-out-fold AUROC (ties: the smaller C);
    folds whose training or held-out part holds one class are not used. (DEFAULT_C, {}) if no fold is
    usable. Returns (C, {C: mean AUROC})."""
    from cxrvlp.bench.tasks.linear_probe import c_path
    from sklearn.model_selection import GroupKFold

    k = min(CV_FOLDS, len(np.unique(groups)))
    if k < 2:
        return DEFAULT_C, {}
    per_c: dict[float, list[float]] = {c: [] for c in C_GRID}
    for tr, va in GroupKFold(n_splits=k).split(f, y, groups):
        if len(np.unique(y[tr])) < 2 or len(np.unique(y[va])) < 2:
            continue
        mu, sd = f[tr].mean(0), f[tr].std(0) + 1e-6
        for c, clf in c_path((f[tr] - mu) / sd, y[tr], C_GRID, seed, max_iter=5000):
            per_c[c].append(auroc(y[va], clf.predict_proba((f[va] - mu) / sd)[:, 1]))
    means = {c: float(np.mean(v)) for c, v in per_c.items() if v}
    if not means:
        return DEFAULT_C, {}
    return max(means, key=lambda c: (means[c], -c)), means


def probe_scores(
    f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Logistic regression (L2) on standardised frozen features: (probe-test probabilities, C). C is chosen
    by patient-grouped cross-validation when `groups` is given (`choose_c`), else DEFAULT_C."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_tr)) < 2:
        raise ValueError(f"probe-train rows hold one class only ({len(y_tr)} rows)")
    c = DEFAULT_C if groups is None else choose_c(f_tr, y_tr, np.asarray(groups), seed)[0]
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit((f_tr - mu) / sd, y_tr)
    return clf.predict_proba((f_te - mu) / sd)[:, 1], c
