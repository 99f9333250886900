"""What every task receives: the adapter, the dataset entry, split loaders and run options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cxrvlp.bench.datasets import BenchDataset
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.zeroshot import ZeroShotAdapter


class TaskSkipped(Exception):
    """The task cannot run here (no maps, no split with positives, ...); the reason is recorded."""


@dataclass
class TaskContext:
    """Everything a task needs; `load(split)` returns that split's samples (cached by the runner)."""

    method: str
    dataset: BenchDataset
    adapter: ZeroShotAdapter
    load: Callable[[str], Sequence[Sample]]
    seed: int
    batch_size: int = 32
    out_dir: Path | None = None  # where sidecar arrays (scores, maps) go
    sidecar_stem: str = "result"
    options: dict[str, Any] = field(default_factory=dict)  # task options (fractions, epochs, ...)
    record: dict[str, Any] = field(default_factory=dict)  # choices the task adds to the result JSON

    def sidecar(self, suffix: str) -> Path | None:
        """Path of a sidecar file next to the result JSON (None when not writing)."""
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{self.sidecar_stem}{suffix}"


def label_matrix(samples: Sequence[Sample], classes: Sequence[str], dataset: str) -> np.ndarray:
    """(N, C) float32 labels in the benchmark's class order (NaN = uncertain/unknown)."""
    from cxrvlp.bench.datasets import class_index

    if not samples:
        return np.zeros((0, len(classes)), np.float32)
    idx = class_index(samples[0].classes, classes, dataset)
    rows = []
    for s in samples:
        lab = (
            np.full(len(s.classes), np.nan, np.float32)
            if s.labels is None
            else np.asarray(s.labels, np.float32)
        )
        rows.append(lab[idx])
    return np.stack(rows).astype(np.float32)
