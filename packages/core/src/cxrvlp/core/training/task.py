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
