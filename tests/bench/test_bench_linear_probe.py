"""The benchmark's linear probe: C per class by validation AUROC; exact path for fewer rows than features."""

from __future__ import annotations

import numpy as np
from cxrvlp.bench.tasks.linear_probe import C_GRID, fit_predict, row_space_coordinates
from sklearn.linear_model import LogisticRegression


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :5] += 1.5 * y[:, :1]  # class 0: five informative features
    x[:, 5:10] += 0.8 * y[:, 1:]  # class 1: weaker
    return x, y


def test_row_space_coordinates_give_the_full_space_optimum():
    x_tr, y_tr = _data(60, 300, 0)
    x_te, _ = _data(50, 300, 2)
    x_tr, x_te = x_tr.astype(np.float64), x_te.astype(np.float64)  # the claim is exact; float32 fits are not
    z_tr, z_te = row_space_coordinates(x_tr, x_te)
    assert z_tr.shape == (60, 60) and z_te.shape == (50, 60)
    for C in (0.01, 1.0):
        fit = {
            k: LogisticRegression(C=C, max_iter=20_000, tol=1e-10).fit(a, y_tr[:, 0])
            for k, a in (("full", x_tr), ("rows", z_tr))
        }
        p_full = fit["full"].predict_proba(x_te)[:, 1]
        p_rows = fit["rows"].predict_proba(z_te)[:, 1]
        assert np.abs(p_full - p_rows).max() < 1e-9, C


def test_fewer_rows_than_features_gives_the_full_space_solution():
    # 60 training rows, 300 features: the probe fits in the span of the rows; its probabilities must match a
    # fit on the full standardised features with the C it chose, to the probe's solver tolerance (tol 1e-4)
    x_tr, y_tr = _data(60, 300, 0)
    x_val, y_val = _data(80, 300, 1)
    x_te, _ = _data(50, 300, 2)
    probs, chosen = fit_predict(x_tr, y_tr, x_val, y_val, x_te, seed=0)
    assert probs.shape == (50, 2) and all(c in C_GRID for c in chosen)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    for c in range(2):
        full = LogisticRegression(C=chosen[c], max_iter=10_000, tol=1e-8).fit((x_tr - mu) / sd, y_tr[:, c])
        ref = full.predict_proba((x_te - mu) / sd)[:, 1]
        assert np.abs(probs[:, c] - ref).max() < 5e-3, c


def test_probe_separates_the_informative_class_better():
    x_tr, y_tr = _data(400, 40, 3)
    x_val, y_val = _data(200, 40, 4)
    x_te, y_te = _data(400, 40, 5)
    from sklearn.metrics import roc_auc_score

    probs, _ = fit_predict(x_tr, y_tr, x_val, y_val, x_te, seed=0)
    auc = [roc_auc_score(y_te[:, c], probs[:, c]) for c in range(2)]
    assert auc[0] > 0.95 and 0.6 < auc[1] < auc[0]
