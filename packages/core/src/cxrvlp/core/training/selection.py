"""Validation passes and checkpoint selection: `best/`, the k best epochs, early stopping.

The official recipes keep the checkpoint with the best validation metric (MGCA: min val_loss, patience 5;
CXR-CLIP: mean validation contrastive loss; CARZero: min val_loss, patience 10), so `final/` (the last
epoch) is not what their papers evaluate. The tracker's state travels in every training checkpoint, so a
resumed run selects exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import ConfigError
from torch.utils.data import DataLoader

logger = logging.getLogger("cxrvlp.training")

BEST_DIR = "best"
TOP_K_DIR = "top_k"


def validation_loader(
    dataset, batch_size: int, collate, rank: int, world: int, num_workers: int
) -> DataLoader:
    """This rank's share of the validation set (rows rank, rank + world, ...), in order, nothing padded.

    Unlike accelerate's even-batches sharding, no row is duplicated to even out the ranks, so the reduced
    mean is over exactly the validation rows.
    """
    indices = list(range(rank, len(dataset), world))
    subset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(
        subset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers
    )


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict) and "sample_ids" in batch:
        return len(batch["sample_ids"])
    raise TypeError("validation batches must be dicts with 'sample_ids' (the collate contract)")


def run_validation(task, model, loader: DataLoader, accelerator, state) -> dict[str, float]:
    """Mean of every named loss term over the validation rows of all ranks, as {"val_<term>": value}.

    Uses the task's `validation_step(model, batch) -> dict[str, Tensor]` when it has one, else its
    `training_step` under no_grad (its loss is reported as `val_loss`, its logs as `val_<name>`).
    Terms are weighted by batch size; batch-level losses (contrastive) depend on the batch composition,
    so they are comparable across epochs of one run, not across batch sizes.
    """
    from accelerate.utils import send_to_device

    step = getattr(task, "validation_step", None)
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = send_to_device(batch, accelerator.device)
            n = _batch_len(batch)
            with accelerator.autocast():
                if callable(step):
                    terms = dict(step(model, batch))
                else:
                    loss, logs = task.training_step(model, batch, state)
                    terms = {"loss": loss, **(logs or {})}
            for k, v in terms.items():
                v = v.detach().double() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                v = v.to(accelerator.device).reshape(()) * n
                sums[k] = sums[k] + v if k in sums else v
            count += n
    model.train(was_training)
    names = sorted(sums)
    if not names:
        return {}
    packed = torch.stack([sums[k] for k in names] + [count])
    if accelerator.num_processes > 1:
        packed = accelerator.reduce(packed, reduction="sum")
    total = float(packed[-1])
    if total == 0:
        return {}
    return {f"val_{k}": float(packed[i]) / total for i, k in enumerate(names)}


@dataclass
class BestTracker:
    """Which evaluated epoch is best under `monitor`/`mode`, the k best, and early-stopping patience."""

    monitor: str
    mode: str = "min"
    keep_k: int = 1
    patience: int | None = None
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    top: list[tuple[float, int]] = field(default_factory=list)  # (value, epoch), best first

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def observe(self, metrics: dict[str, float], epoch: int) -> tuple[bool, bool]:
        """(is the new best, enters the top k) for this epoch's metrics; ConfigError if monitor is absent."""
        if self.monitor not in metrics:
            raise ConfigError(
                f"monitor='{self.monitor}' is not among this run's validation metrics {sorted(metrics)}"
            )
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            self.bad_epochs += 1
            return False, False
        is_best = self.best is None or self._better(value, self.best)
        if is_best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        entered = len(self.top) < self.keep_k or self._better(value, self.top[-1][0])
        if entered:
            self.top.append((value, epoch))
            self.top.sort(key=lambda t: t[0], reverse=self.mode == "max")
            del self.top[self.keep_k :]
        return is_best, entered

    def should_stop(self) -> bool:
        """True once `patience` evaluated epochs in a row brought no improvement."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "top": self.top,
        }

    def load_state_dict(self, st: dict[str, Any] | None) -> None:
        st = st or {}
        self.best, self.best_epoch = st.get("best"), st.get("best_epoch")
        self.bad_epochs = int(st.get("bad_epochs", 0))
        self.top = [(float(v), int(e)) for v, e in st.get("top", [])]


def top_k_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def prune_top_k(out: Path, tracker: BestTracker) -> None:
    """Remove top_k/ folders of epochs that fell out of the k best."""
    root = out / TOP_K_DIR
    keep = {top_k_name(e) for _, e in tracker.top}
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
