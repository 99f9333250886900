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
    cache_dir: Path | None = None  # on-disk feature cache shared by tasks, seeds and label fractions
    fingerprint: Callable[[str], str] | None = None  # split -> what identifies its images (cache key)
    first_seed: int | None = None  # seed-independent results (the 100 % probe) are reported at this seed

    @property
    def n_bootstrap(self) -> int:
        """Resamples behind every 95 % interval (`run --bootstrap`; 0 = no intervals)."""
        from cxrvlp.bench.scoring import BOOTSTRAP

        return int(self.options.get("bootstrap", BOOTSTRAP))

    @property
    def num_workers(self) -> int:
        """DataLoader workers that read and preprocess images (`run --workers`; 0 = in this process)."""
        return int(self.options.get("num_workers", 0))

    def pass_kw(self, desc: str) -> dict[str, Any]:
        """Keyword arguments of one image pass (inference.map_images): batch, workers, progress label."""
        return {"batch_size": self.batch_size, "num_workers": self.num_workers, "desc": desc}

    def cache_key(self, kind: str, split: str) -> str | None:
        """Hash of (kind, model + checkpoint + preprocessing, the split's images); None without a cache."""
        if self.cache_dir is None or self.fingerprint is None:
            return None
        import hashlib
        import json

        from cxrvlp.bench.record import adapter_record

        info = json.dumps(adapter_record(self.adapter.info), sort_keys=True, default=str)
        return hashlib.sha256("\n".join([kind, info, self.fingerprint(split)]).encode()).hexdigest()[:20]

    @staticmethod
    def content_key(obj: Any) -> str:
        """A short hash of what a cached array also depends on (prompts, texts) for `cached`'s kind."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def cached(self, kind: str, split: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """`compute()` once per (model, checkpoint, preprocessing, dataset, split, kind), then from disk."""
        key = self.cache_key(kind, split)
        if key is None:
            return compute()
        path = self.cache_dir / f"{self.method}__{self.dataset.name}__{split}__{kind}__{key}.npy"
        if path.is_file():
            self.record.setdefault("cache_hits", []).append(path.name)
            return np.load(path)
        arr = compute()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
        return arr

    def sidecar(self, suffix: str) -> Path | None:
        """Path of a sidecar file next to the result JSON (None when not writing)."""
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{self.sidecar_stem}{suffix}"


def label_matrix(samples: Sequence[Sample], classes: Sequence[str], dataset: str) -> np.ndarray:
    """(N, C) float32 labels in the benchmark's class order (NaN = uncertain/unknown)."""
    from cxrvlp.bench.datasets import class_index
    from cxrvlp.bench.sources import light_samples

    if not len(samples):
        return np.zeros((0, len(classes)), np.float32)
    samples = light_samples(samples)  # labels without decoding a single image
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
