"""Interleaved side-by-side runs and the ratios they give (no timing in here: runners are injected).

A comparison has arms (e.g. "official" and "ours"); `interleave` runs them in rounds, official then ours,
each call a fresh process in practice, so slow drift of a shared machine hits both arms alike. A ratio is
only ever formed inside one round: official seconds / our seconds of the same round (> 1: ours faster).
`summarise` gives the median ratio and its min/max over the rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Runner = Callable[[str, int], Mapping[str, Any]]  # (arm, round) -> record with the metrics below


def interleave(arms: Sequence[str], rounds: int, runner: Runner, log: Callable[[str], None] | None = None):
    """[{arm: record} per round]: every arm once per round, in the given order, round after round."""
    if rounds < 1 or not arms:
        raise ValueError("need at least one round and one arm")
    out: list[dict[str, Mapping[str, Any]]] = []
    for r in range(rounds):
        row: dict[str, Mapping[str, Any]] = {}
        for arm in arms:
            if log:
                log(f"round {r + 1}/{rounds}: {arm}")
            row[arm] = runner(arm, r)
        out.append(row)
    return out


def _get(rec: Mapping[str, Any], path: str) -> float | None:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, (int, float)) and math.isfinite(float(cur)) and float(cur) > 0:
        return float(cur)
    return None


def pair_ratios(
    rounds: Sequence[Mapping[str, Mapping[str, Any]]], base: str, other: str, metric: str
) -> list[float]:
    """Per round: base's `metric` seconds / other's (rounds lacking a positive value are skipped)."""
    out = []
    for row in rounds:
        a, b = row.get(base), row.get(other)
        if a is None or b is None:
            continue
        ta, tb = _get(a, metric), _get(b, metric)
        if ta is not None and tb is not None:
            out.append(ta / tb)
    return out


def summarise(ratios: Sequence[float]) -> dict[str, Any]:
    """{"n", "median", "min", "max", "per_pair"} of per-round ratios (None fields when there are none)."""
    if not ratios:
        return {"n": 0, "median": None, "min": None, "max": None, "per_pair": []}
    return {
        "n": len(ratios),
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "per_pair": list(ratios),
    }


def verdict(summary: Mapping[str, Any], target: float | None) -> str:
    """'met' / 'unmet' by the median ratio against `target`, '-' without a target or a ratio."""
    if target is None or summary.get("median") is None:
        return "-"
    return "met" if summary["median"] >= target else "unmet"


def compare(
    rounds: Sequence[Mapping[str, Mapping[str, Any]]],
    ours: str,
    officials: Sequence[str],
    metrics: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """{f"{official}/{name}": summary} of official ÷ ours per metric (metric name -> record path)."""
    return {
        f"{off}/{name}": summarise(pair_ratios(rounds, off, ours, path))
        for off in officials
        for name, path in metrics.items()
    }
