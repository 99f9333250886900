"""Reproducible data order: the epoch permutation and per-item RNG are pure functions of (seed, epoch, index).

This is what makes a resumed run (any worker count, any rank) see the same samples with the same
augmentations as an uninterrupted one. Methods' own per-draw random choices (sentence draws, negative
prompts) use the private generators that `SeededSampleDataset` reseeds through `reseed(seed)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class EpochShuffleSampler(Sampler[int]):
    """Permutation of range(n) drawn from (seed, epoch) only, so any rank or a resumed run sees the same."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(_mix_seed(self.seed, self.epoch, 1))
        return iter(torch.randperm(self.n, generator=g).tolist())


class SeededSampleDataset(Dataset):
    """Wraps a dataset so item i of epoch e is drawn under RNG seeded from (seed, e, i).

    torch, numpy and `random` are reseeded for the call and restored afterwards, so random augmentations are
    reproducible whatever the worker count, and loading never moves the training RNG (dropout) — which is
    what makes a mid-epoch resume exact despite the loader prefetching a batch ahead.

    Private generators are reseeded too, by duck typing: the dataset's own `reseed(seed)` if it has one,
    else `dataset.transform.reseed(seed)` (core's `transforms.Compose` draws from its own numpy Generator),
    looking inside ConcatDataset / Subset wrappers.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self._reseed = _find_reseed(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        s = _mix_seed(self.seed, self.epoch, int(index), 2)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU seeding on every item.
            torch.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (2**32))
            if self._reseed is not None:
                self._reseed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def _find_reseed(dataset: Any, depth: int = 0) -> Callable[[int], None] | None:
    """The per-item reseed hook of a dataset: `dataset.reseed`, else `dataset.transform.reseed`, also
    inside ConcatDataset (`.datasets`) and Subset-style wrappers (`.dataset`)."""
    hooks: list[Callable[[int], None]] = []

    def collect(ds: Any, d: int) -> None:
        if ds is None or d > 4:
            return
        for owner in (ds, getattr(ds, "transform", None)):
            fn = getattr(owner, "reseed", None) if owner is not None else None
            if callable(fn):
                hooks.append(fn)
                return
        for child in getattr(ds, "datasets", None) or []:
            collect(child, d + 1)
        collect(getattr(ds, "dataset", None), d + 1)

    collect(dataset, depth)
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def reseed_all(seed: int) -> None:
        for fn in hooks:
            fn(seed)

    return reseed_all
