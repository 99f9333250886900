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
    bar = tqdm(loader, desc=desc, disable=not acc.is_local_main_process, leave=False)
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
