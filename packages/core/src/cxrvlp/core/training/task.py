"""The training task module: a method's model and its loss as ONE `nn.Module` (open_clip's pattern).

It is what `accelerator.prepare` (DDP, FSDP) wraps, so parameters the loss owns (learned temperatures,
prototypes used only by a loss) are synchronised like any other, without running the loss inside the
model's `forward`. `forward(batch)` returns a dict of named tensors: every key ending in `_loss` is a
weighted term of the training objective (`sum_losses` adds them: the one logging convention of every
method); other keys are diagnostics (logits for accuracy, unweighted terms).

`final/` and `best/` hold `task_module.model` only (the importable, evaluable model); the loss's own
parameters travel in the training checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class TaskModule(nn.Module):
    """model + loss; subclasses implement `forward(batch) -> dict[str, Tensor]`."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Mapping[str, object]) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


def sum_losses(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: the sum of the terms whose name ends in `_loss` (ValueError when there is none)."""
    parts = [v for k, v in terms.items() if k.endswith("_loss")]
    if not parts:
        raise ValueError(f"no '*_loss' term among {sorted(terms)}")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def scalar_logs(terms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 0-d terms, detached, for the loop's logging (logits and maps are left out)."""
    return {k: v.detach() for k, v in terms.items() if isinstance(v, torch.Tensor) and v.ndim == 0}


def exported_model(module: nn.Module) -> nn.Module:
    """What a pretrained folder holds: the task module's `model`, or the module itself."""
    return module.model if isinstance(module, TaskModule) else module


def batch_bookkeeping(samples: list[Mapping[str, object]]) -> dict[str, list]:
    """The loop's per-batch bookkeeping a collate adds: `sample_ids` and the records `skipped` for them."""
    return {
        "sample_ids": [s["sample_id"] for s in samples],
        "skipped": [x for s in samples for x in s.get("skipped", ())],
    }


class MethodTask:
    """Defaults shared by the methods' `TrainingTask`s (a task overrides what it does differently).

    `training_step`: the task module's `*_loss` terms summed, its 0-d terms logged. `save_resources`: the
    run's tokenizer (`self.tokenizer`, if any) into `tokenizer/` beside the weights (final/, best/), where the
    method's zero-shot adapter reads it.
    """

    method = ""  # the method's name: messages and the data-root check
    tokenizer = None
    TOKENIZER_DIR = "tokenizer"

    def __init__(self, cfg) -> None:
        from cxrvlp.core.data.pretraining import resolve_mimic_root
        from cxrvlp.core.training.loop import process_state

        self.cfg = cfg
        self.model_name = cfg.model_name
        # before anything heavy: a paper recipe without data.root stops here, naming the key; the
        # synthetic mirror (when asked for) is written once, by the main process
        with process_state(cfg).main_process_first():
            self.data_root = resolve_mimic_root(cfg.data, self.method)

    def build_train_dataset(self):
        """The training dataset, built once by `make_train_dataset` (a tokenizer trained on its texts asks
        for it before the loop does)."""
        if getattr(self, "_train_dataset", None) is None:
            self._train_dataset = self.make_train_dataset()
        return self._train_dataset

    def make_train_dataset(self):  # pragma: no cover - a task overrides this or build_train_dataset
        raise NotImplementedError(f"{type(self).__name__} builds no training dataset")

    def val_images(self, preset: str):
        """(images of `data.val_split`, the `preset` eval transform at the run's size and normalisation),
        or None when the run has no validation split or the split is empty."""
        from cxrvlp.core.data.pretraining import mimic_images
        from cxrvlp.core.data.transforms import build_transform

        d = self.cfg.data
        if d.val_split is None:
            return None
        base = mimic_images(d, self.data_root, d.val_split)
        if not base.records:
            return None
        norm = self.cfg.model.normalisation
        return base, build_transform(preset, train=False, image_size=d.image_size, normalisation=norm)

    def training_step(self, model: nn.Module, batch: Mapping[str, object], state: object):
        """Sum of the `*_loss` terms of `model(batch)`, and its scalar terms for logging."""
        terms = model(batch)
        return sum_losses(terms), scalar_logs(terms)

    def save_resources(self, folder) -> None:
        """The tokenizer next to the weights (HF tokenizers: save_pretrained; the methods' wrappers: save)."""
        from pathlib import Path

        tok = self.tokenizer
        if tok is None:
            return
        out = Path(folder) / self.TOKENIZER_DIR
        if hasattr(tok, "save"):
            tok.save(out)
        else:
            tok.save_pretrained(str(out))
