"""Batched, distributed inference through the adapter protocol (bf16 autocast on GPU, Accelerate gather)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.zeroshot import ZeroShotAdapter
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

_ACCELERATOR = None


def accelerator():
    """The process-wide `accelerate.Accelerator` (created on first use; CPU-only runs get one process)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        _ACCELERATOR = Accelerator()
    return _ACCELERATOR


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere (CPU bf16 would move results for no speed-up here)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Preprocessed(Dataset):
    """Samples -> (index, preprocessed image tensor); preprocessing runs in the loader."""

    def __init__(self, samples: Sequence[Sample], preprocess: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.samples, self.preprocess = samples, preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.preprocess(self.samples[i].image)


class LogProgress:
    """Progress for a log file: one line at start, every ~10 % (at most every `every_s`), and at the end.

    tqdm writes carriage-return updates that pile up into a few giant lines when stderr is a file.
    """

    def __init__(self, iterable, desc: str, total: int, every_s: float = 30.0) -> None:
        self.iterable, self.desc, self.total, self.every_s = iterable, desc or "pass", total, every_s

    def __iter__(self):
        import sys
        import time

        t0 = last = time.perf_counter()
        step = max(1, self.total // 10)
        print(f"{self.desc}: 0/{self.total} batches", file=sys.stderr, flush=True)
        for k, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if k == self.total or (k % step == 0 and now - last >= min(self.every_s, 5.0)):
                last = now
                print(
                    f"{self.desc}: {k}/{self.total} batches, {now - t0:.0f} s", file=sys.stderr, flush=True
                )


def progress(iterable, desc: str, total: int, enabled: bool = True):
    """tqdm on a terminal, LogProgress lines otherwise (nothing when not enabled)."""
    import sys

    if not enabled:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, leave=False)
    return LogProgress(iterable, desc, total)


def map_images(
    adapter: ZeroShotAdapter,
    samples: Sequence[Sample],
    fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 32,
    desc: str = "",
    num_workers: int = 0,
) -> np.ndarray:
    """Run `fn` ((B, 3, S, S) -> (B, ...)) over all samples on every process; (N, ...) float32 in order.

    Every process sees a shard; `gather_for_metrics` drops the padding of the last shard, and the indices
    gathered alongside put rows back in sample order.
    """
    acc = accelerator()
    loader = DataLoader(
        _Preprocessed(samples, adapter.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    loader = acc.prepare_data_loader(loader)
    idx_all, out_all = [], []
    bar = progress(loader, desc, len(loader), enabled=acc.is_local_main_process)
    with torch.no_grad():
        for idx, images in bar:
            images = images.to(acc.device)
            with autocast(acc.device):
                out = fn(images)
            out = out.float().contiguous()
            idx, out = acc.gather_for_metrics((idx.to(acc.device), out))
            idx_all.append(idx.cpu())
            out_all.append(out.cpu())
    if not out_all:
        return np.zeros((0,), np.float32)
    idx = torch.cat(idx_all).numpy()
    out = torch.cat(out_all).numpy()
    order = np.argsort(idx, kind="stable")
    return out[order].astype(np.float32)


def class_scores(
    adapter: ZeroShotAdapter, samples: Sequence[Sample], classes: Sequence[Any], **kw
) -> np.ndarray:
    """(N, C) zero-shot scores under the adapter's protocol."""
    return map_images(adapter, samples, lambda x: adapter.classify(adapter.encode_images(x), classes), **kw)


def text_similarities(
    adapter: ZeroShotAdapter, samples: Sequence[Sample], texts: Sequence[str], **kw
) -> np.ndarray:
    """(N, P) raw image-text similarities; the texts are encoded once."""
    with torch.no_grad():
        text_emb = adapter.encode_texts(list(texts))
    return map_images(
        adapter, samples, lambda x: adapter.similarity(adapter.encode_images(x), text_emb), **kw
    )


def features(adapter: ZeroShotAdapter, samples: Sequence[Sample], **kw) -> np.ndarray:
    """(N, D) frozen backbone features for linear probing."""
    return map_images(adapter, samples, adapter.image_features, **kw)
