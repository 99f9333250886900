"""Retrieval metrics on a full (queries, candidates) similarity matrix.

Relevance is either one ground-truth candidate per query (CXR-CLIP: the query's own report) or a boolean
(Q, K) matrix (several relevant candidates, e.g. the class-match protocol where every candidate of the
query's class counts). Rank of a query = 1 + number of candidates scoring strictly higher than its best
relevant candidate (ties resolved in the query's favour).
"""

from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def _relevance(sim: np.ndarray, relevant) -> np.ndarray:
    rel = _np(relevant)
    if rel.ndim == 1:  # one ground-truth candidate index per query
        if len(rel) != sim.shape[0]:
            raise ValueError(f"{len(rel)} targets for {sim.shape[0]} queries")
        if rel.min() < 0 or rel.max() >= sim.shape[1]:
            raise ValueError(f"target indices must lie in [0, {sim.shape[1]})")
        mat = np.zeros(sim.shape, dtype=bool)
        mat[np.arange(len(rel)), rel.astype(int)] = True
        return mat
    if rel.shape != sim.shape:
        raise ValueError(f"relevance {rel.shape} and similarity {sim.shape} differ in shape")
    return rel.astype(bool)


def retrieval_ranks(sim, relevant) -> np.ndarray:
    """(Q,) rank (1 = best) of each query's best relevant candidate; NaN for a query with none relevant."""
    s = _np(sim).astype(np.float64)
    rel = _relevance(s, relevant)
    best = np.where(rel, s, -np.inf).max(1)  # (Q,) score of the best relevant candidate
    ranks = 1 + (s > best[:, None]).sum(1)
    return np.where(rel.any(1), ranks, np.nan).astype(np.float64)


def retrieval_metrics(sim, relevant, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (= Hit@K: a relevant candidate within the top K), Precision@K, mean and median rank.

    Precision@K is the mean fraction of relevant candidates among each query's top K (ties broken by a
    stable sort on the negated scores).
    """
    s = _np(sim).astype(np.float64)
    rel = _relevance(s, relevant)
    ranks = retrieval_ranks(s, rel)
    valid = np.isfinite(ranks)
    order = np.argsort(-s, axis=1, kind="stable")
    rel_sorted = np.take_along_axis(rel, order, axis=1)  # (Q, K) relevance in ranked order
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks[valid] <= k))
        out[f"precision@{k}"] = float(rel_sorted[valid, :k].sum(1).mean() / min(k, s.shape[1]))
    out["mean_rank"] = float(np.mean(ranks[valid]))
    out["median_rank"] = float(np.median(ranks[valid]))
    out["n_queries"] = int(valid.sum())
    return out


def relevance_from_targets(targets, n_candidates: int) -> np.ndarray:
    """(Q, K) bool relevance from each query's target index; its transpose serves the other direction.

    Text->image with de-duplicated texts (several images per text): `retrieval_metrics(sim.T, rel.T)`.
    """
    t = _np(targets).astype(int)
    rel = np.zeros((len(t), n_candidates), dtype=bool)
    rel[np.arange(len(t)), t] = True
    return rel


def class_match_relevance(query_labels, candidate_labels, mode: str = "exact") -> np.ndarray:
    """(Q, K) relevance: candidates whose class equals the query's (BenchX-style class-match Hit@K).

    Labels are (N,) class ids or (N, C) multi-hot; for multi-hot, mode "exact" needs equal label vectors,
    "any" one shared positive label.
    """
    q, c = _np(query_labels), _np(candidate_labels)
    if q.ndim == 1:
        return q[:, None] == c[None, :]
    if mode == "exact":
        return (q[:, None, :] == c[None, :, :]).all(-1)
    if mode == "any":
        return (q.astype(bool)[:, None, :] & c.astype(bool)[None, :, :]).any(-1)
    raise ValueError(f"mode must be 'exact' or 'any', got '{mode}'")


def dedupe_texts(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts (first-seen order) and each input's index into them (CXR-CLIP's retrieval pool)."""
    index: dict[str, int] = {}
    target = np.array([index.setdefault(t, len(index)) for t in texts], dtype=np.int64)
    return list(index), target
