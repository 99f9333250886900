"""Linear probe on cached frozen features with 1/10/100 % of the training labels (one seed per record)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import features
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped, label_matrix
from sklearn.linear_model import LogisticRegression

FRACTIONS = (0.01, 0.1, 1.0)
C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strength, chosen per class on the validation split


def subsample(n: int, frac: float, seed: int, y: np.ndarray | None = None) -> np.ndarray:
    """Indices of a `frac` share of n rows (one positive and one negative per class where possible)."""
    rng = np.random.default_rng(seed)
    k = max(int(round(frac * n)), 2)
    idx = np.sort(rng.permutation(n)[:k])
    if y is not None:  # a tiny fraction can miss a class entirely; add one example of each missing outcome
        extra = []
        for c in range(y.shape[1]):
            for v in (0.0, 1.0):
                if not (y[idx, c] == v).any():
                    cand = np.flatnonzero(y[:, c] == v)
                    if len(cand):
                        extra.append(int(rng.choice(cand)))
        idx = np.unique(np.concatenate([idx, np.asarray(extra, dtype=np.int64)]))
    return idx


def row_space_coordinates(x_tr: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """(x_tr, *others) in float64 coordinates of an orthonormal basis of the span of x_tr's rows (N, D -> r).

    An L2-penalised linear model's optimum lies in that span (a weight component orthogonal to every training
    row changes no training logit and only adds to the penalty), so a fit on these coordinates gives the same
    logits on any rows as a fit on the full features, at a fraction of the cost per solver iteration when
    N < D."""
    _, sv, vt = np.linalg.svd(np.asarray(x_tr, np.float64), full_matrices=False)  # vt: (min(N, D), D)
    basis = vt[sv > sv.max() * 1e-10].T  # (D, rank)
    return tuple(np.asarray(x, np.float64) @ basis for x in (x_tr, *others))


def c_path(
    x: np.ndarray, y: np.ndarray, grid: Sequence[float], seed: int, max_iter: int = 2000
) -> Iterator[tuple[float, LogisticRegression]]:
    """(C, fitted L2 logistic regression) for each C of an ascending grid: one estimator walks the grid, each
    fit starting from the previous optimum (the loss is strictly convex, so warm starts reach the same
    solution; lbfgs on 2048-d features took ~5x longer from zero). The estimator is refitted in place: use
    it before the next item."""
    clf = LogisticRegression(max_iter=max_iter, random_state=seed, warm_start=True)
    for C in grid:
        yield C, clf.set_params(C=C).fit(x, y)


def fit_predict(
    x_tr: np.ndarray, y_tr: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_te: np.ndarray, seed: int
) -> tuple[np.ndarray, list[float]]:
    """One logistic regression per class (C chosen by validation AUROC); returns (N_test, C) probabilities."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6  # standardise with training statistics only
    x_tr, x_val, x_te = (x_tr - mu) / sd, (x_val - mu) / sd, (x_te - mu) / sd
    if len(x_tr) < x_tr.shape[1]:  # fewer rows than features (AFLoc's 2048-d features, a 1 % fraction)
        x_tr, x_val, x_te = row_space_coordinates(x_tr, x_val, x_te)
    n_cls = y_tr.shape[1]
    probs, chosen = np.zeros((len(x_te), n_cls), np.float32), []
    for c in range(n_cls):
        ok = np.isfinite(y_tr[:, c])
        yc = y_tr[ok, c]
        if len(np.unique(yc)) < 2:
            probs[:, c] = np.nan
            chosen.append(float("nan"))
            continue
        okv = np.isfinite(y_val[:, c])
        grid = C_GRID if len(np.unique(y_val[okv, c])) == 2 else C_GRID[2:3]
        # the best C's fitted weights are kept, not refitted
        best: tuple[float, float, np.ndarray | None] = (-np.inf, grid[0], None)
        for C, clf in c_path(x_tr[ok], yc, grid, seed):
            if len(grid) == 1:
                best = (0.0, C, clf.predict_proba(x_te)[:, 1])
                break
            auc = scoring.classification(y_val[okv, c : c + 1], clf.predict_proba(x_val[okv])[:, 1:], ["c"])[
                "auroc_macro"
            ]
            if auc > best[0]:
                best = (auc, C, clf.predict_proba(x_te)[:, 1])
        probs[:, c] = best[2]
        chosen.append(best[1])
    return probs, chosen


def probe(
    f_tr: np.ndarray,
    y_tr: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    f_te: np.ndarray,
    y_te: np.ndarray,
    classes: Sequence[str],
    seed: int,
    fractions: Sequence[float] = FRACTIONS,
    n_bootstrap: int = 0,
) -> dict[str, Any]:
    """AUROC macro/per class on the test features for each label fraction."""
    out: dict[str, Any] = {}
    for frac in fractions:
        idx = subsample(len(f_tr), frac, seed, np.nan_to_num(y_tr, nan=-1.0))
        p, chosen = fit_predict(f_tr[idx], y_tr[idx], f_val, y_val, f_te, seed)
        cls = scoring.classification(y_te, np.nan_to_num(p, nan=0.5), classes)
        out[f"{int(round(frac * 100))}%"] = {
            "n_train": int(len(idx)),
            "auroc_macro": cls["auroc_macro"],
            "auprc_macro": cls["auprc_macro"],
            "auroc": cls["auroc"],
            "auroc_macro_ci95": scoring.auroc_macro_ci(y_te, np.nan_to_num(p, nan=0.5), n_bootstrap, seed),
            "C": dict(zip(classes, chosen)),
        }
    return out


def run_linear_probe(ctx: TaskContext) -> dict[str, Any]:
    """Cache frozen features of train/val/test once, then fit probes on label fractions with this seed."""
    ds = ctx.dataset
    if ds.train_split is None or ds.val_split is None:
        raise TaskSkipped(f"{ds.name}: no training/validation split for a linear probe")
    splits = {s: ctx.load(s) for s in (ds.train_split, ds.val_split, ds.test_split)}
    feats = {  # extracted once per model and split, then read from the on-disk cache by every seed
        s: ctx.cached(
            "features",
            s,
            lambda v=v, s=s: features(
                ctx.adapter,
                v,
                **ctx.pass_kw(f"{ds.name} {s} features"),
            ),
        )
        for s, v in splits.items()
    }
    labels = {s: label_matrix(v, ds.classes, ds.name) for s, v in splits.items()}
    for s, f in feats.items():
        if not np.isfinite(f).all():
            raise FloatingPointError(f"{ctx.method} on {ds.name}/{s}: non-finite features")
    fractions = tuple(ctx.options.get("fractions", FRACTIONS))
    once = ""
    if ctx.first_seed is not None and ctx.seed != ctx.first_seed and 1.0 in fractions:
        # 100 % of the labels: no subsample, deterministic solver -> the same figure at every seed; it is
        # reported once (at the first seed) instead of a fake "± 0.000"
        fractions = tuple(f for f in fractions if f != 1.0)
        once = f"; 100 % is seed-independent and reported once, at seed {ctx.first_seed}"
    res = probe(
        feats[ds.train_split],
        labels[ds.train_split],
        feats[ds.val_split],
        labels[ds.val_split],
        feats[ds.test_split],
        labels[ds.test_split],
        ds.classes,
        ctx.seed,
        fractions,
        ctx.n_bootstrap,
    )
    metrics = {f"auroc_macro@{k}": v["auroc_macro"] for k, v in res.items()}
    return {
        "metrics": metrics,
        "ci95": {f"auroc_macro@{k}": v["auroc_macro_ci95"] for k, v in res.items()},
        "fractions": res,
        "feature_dim": int(feats[ds.test_split].shape[1]),
        "n": {s: len(v) for s, v in splits.items()},
        "protocol": (
            "scikit-learn LogisticRegression per class on standardised frozen adapter.image_features; "
            f"C in {list(C_GRID)} chosen by validation AUROC; label fraction subsampled with this "
            f"seed{once}; "
            f"95 % percentile bootstrap over test images ({ctx.n_bootstrap} resamples)"
        ),
    }
