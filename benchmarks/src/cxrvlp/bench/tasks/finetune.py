"""End-to-end fine-tuned classification (BenchX's protocol): the method's image encoder and a linear head
on its pooled feature are trained together on 1/10/100 % of the training labels; the learning rate is
chosen on the validation split's macro AUROC; macro AUROC on the test split with a bootstrap interval.

Needs `adapter.image_encoder` (as segmentation). The adapter's own encoder is never changed: every run
trains a deep copy. Images stream through a DataLoader (preprocessed in the loader, never held as a split).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import accelerator, autocast, progress
from cxrvlp.bench.sources import subset
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped, label_matrix
from cxrvlp.bench.tasks.linear_probe import FRACTIONS, subsample
from cxrvlp.core.zeroshot import adapter_image_encoder
from torch import nn
from torch.utils.data import DataLoader, Dataset

LR_GRID = (1e-5, 1e-4, 1e-3)  # BenchX sweeps the learning rate and keeps the best on validation


class _Labelled(Dataset):
    """Samples -> (preprocessed image, label row with NaN for unknown), preprocessing in the loader."""

    def __init__(self, samples, labels: np.ndarray, preprocess) -> None:
        self.samples, self.labels, self.preprocess = samples, labels, preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.preprocess(self.samples[i].image), torch.from_numpy(self.labels[i])


class EncoderClassifier(nn.Module):
    """The method's image encoder + one linear layer on its pooled feature."""

    def __init__(self, encoder: nn.Module, feat_dim: int, n_classes: int) -> None:
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(feat_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C) logits."""
        return self.head(self.encoder(x).global_feat.float())


def masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE over the known labels only (NaN = uncertain / unknown is left out, not counted as negative)."""
    ok = torch.isfinite(y)
    if not ok.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[ok], y[ok])


def predict(model: nn.Module, loader: DataLoader, desc: str) -> np.ndarray:
    """(N, C) sigmoid scores in loader order."""
    dev = accelerator().device
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in progress(loader, desc, len(loader)):
            with autocast(dev):
                out.append(torch.sigmoid(model(x.to(dev)).float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def train_one(
    ctx: TaskContext, feat_dim: int, n_cls: int, loader: DataLoader, lr: float, epochs: int, max_steps: int
) -> tuple[nn.Module, float | None]:
    """Fine-tune a fresh copy of the encoder + head with AdamW at `lr`; (model, last loss)."""
    dev = accelerator().device
    torch.manual_seed(ctx.seed)
    model = EncoderClassifier(copy.deepcopy(adapter_image_encoder(ctx.adapter)), feat_dim, n_cls).to(dev)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    step, loss_v = 0, None
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            with autocast(dev):
                logits = model(x.to(dev))
            loss = masked_bce(logits.float(), y.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_v, step = float(loss.detach()), step + 1
            if max_steps and step >= max_steps:
                return model, loss_v
    return model, loss_v


def run_finetune(ctx: TaskContext) -> dict[str, Any]:
    """Fine-tune end to end on each label fraction; LR chosen on validation; macro AUROC on test."""
    ds = ctx.dataset
    if adapter_image_encoder(ctx.adapter) is None:
        raise TaskSkipped("the adapter exposes no image_encoder (needed for end-to-end fine-tuning)")
    if ds.train_split is None or ds.val_split is None:
        raise TaskSkipped(f"{ds.name}: no training/validation split for fine-tuning")
    o = ctx.options
    fractions: Sequence[float] = tuple(o.get("fractions", FRACTIONS))
    lrs = tuple(float(v) for v in o.get("ft_lrs", LR_GRID))
    epochs, max_steps = int(o.get("ft_epochs", 10)), int(o.get("ft_max_steps", 0))
    bs, nw = max(2, min(ctx.batch_size, 32)), ctx.num_workers
    splits = {s: ctx.load(s) for s in (ds.train_split, ds.val_split, ds.test_split)}
    labels = {s: label_matrix(v, ds.classes, ds.name) for s, v in splits.items()}
    pre = ctx.adapter.preprocess
    enc = adapter_image_encoder(ctx.adapter)
    with torch.no_grad():  # the pooled feature's width, from one image
        feat_dim = int(
            enc(pre(splits[ds.test_split][0].image)[None].to(accelerator().device)).global_feat.shape[1]
        )

    def loader(split: str, rows=None, shuffle: bool = False) -> DataLoader:
        samples, y = splits[split], labels[split]
        if rows is not None:
            samples, y = subset(samples, rows), y[rows]
        g = torch.Generator().manual_seed(ctx.seed)
        return DataLoader(
            _Labelled(samples, y, pre), batch_size=bs, shuffle=shuffle, num_workers=nw, generator=g
        )

    y_val, y_te = labels[ds.val_split], labels[ds.test_split]
    res: dict[str, Any] = {}
    for frac in fractions:
        rows = subsample(
            len(splits[ds.train_split]), frac, ctx.seed, np.nan_to_num(labels[ds.train_split], nan=-1)
        )
        train = loader(ds.train_split, rows, shuffle=True)
        best: tuple[float, float, nn.Module | None, float | None] = (-np.inf, lrs[0], None, None)
        val_auc = {}
        for lr in lrs:
            model, last = train_one(ctx, feat_dim, len(ds.classes), train, lr, epochs, max_steps)
            sv = predict(model, loader(ds.val_split), f"{ds.name} fine-tune val (lr {lr:g})")
            auc = scoring.classification(y_val, sv, ds.classes)["auroc_macro"]
            val_auc[f"{lr:g}"] = auc
            score = -np.inf if auc is None else auc
            if best[2] is None or score > best[0]:
                best = (score, lr, model, last)
        s = predict(best[2], loader(ds.test_split), f"{ds.name} fine-tune test")
        cls = scoring.classification(y_te, s, ds.classes)
        res[f"{int(round(frac * 100))}%"] = {
            "n_train": int(len(rows)),
            "lr": best[1],
            "val_auroc_macro_by_lr": val_auc,
            "final_train_loss": best[3],
            "auroc_macro": cls["auroc_macro"],
            "auroc": cls["auroc"],
            "auroc_macro_ci95": scoring.auroc_macro_ci(y_te, s, ctx.n_bootstrap, ctx.seed),
        }
    return {
        "metrics": {f"auroc_macro@{k}": v["auroc_macro"] for k, v in res.items()},
        "ci95": {f"auroc_macro@{k}": v["auroc_macro_ci95"] for k, v in res.items()},
        "fractions": res,
        "n": {s: len(v) for s, v in splits.items()},
        "protocol": (
            "end-to-end fine-tuning (BenchX): a copy of adapter.image_encoder + a linear head on its pooled "
            f"feature, AdamW (wd 1e-4), BCE over known labels, {epochs} epochs"
            + (f" (at most {max_steps} steps)" if max_steps else "")
            + f", batch {bs}; LR in {list(lrs)} chosen by validation macro AUROC; label fraction subsampled "
            f"with this seed; 95 % percentile bootstrap over test images ({ctx.n_bootstrap} resamples)"
        ),
    }
