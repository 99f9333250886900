"""Switches that trade compute for memory or speed without changing a method, and what accumulation does.

- `gradient_checkpointing`: the activations of the model's repeated transformer blocks are recomputed in
  the backward pass instead of kept (non-reentrant `torch.utils.checkpoint`, RNG state preserved, so the
  dropout masks, the loss and the gradients are the same as without).
- `compile`: the task module (model + loss, what DDP wraps) is compiled in place with `nn.Module.compile`,
  so its parameter names, `state_dict` and saved folders do not change.
- `grad_accum_steps > 1` sums the gradients of independent micro-batches: every method's contrastive terms
  see the negatives of ONE micro-batch (and, where the loss all-gathers, of the same micro-batch on the
  other processes), never the k x larger batch the optimizer step covers. `accumulation_warning` says so
  with the numbers of the run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_WRAPPED = "_cxrvlp_checkpointed"


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _checkpoint_forward(block: nn.Module) -> None:
    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not (block.training and torch.is_grad_enabled()):
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward
    setattr(block, _WRAPPED, True)


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Checkpoint every block of the model's stacks of identical blocks; returns how many were wrapped.

    A stack is an `nn.ModuleList` of two or more modules of one class (transformer layers: ViT blocks, BERT
    layers, decoder layers). Stacks holding a BatchNorm are left alone: recomputing a BatchNorm forward in
    training mode would update its running statistics twice. A stack inside a wrapped block is not wrapped
    again.
    """
    count = 0

    def visit(module: nn.Module) -> None:
        nonlocal count
        if getattr(module, _WRAPPED, False):
            return
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and len({type(m) for m in module}) == 1:
            if not any(_has_batchnorm(b) for b in module):
                for block in module:
                    if not getattr(block, _WRAPPED, False):  # a second call wraps nothing twice
                        _checkpoint_forward(block)
                        count += 1
                return
        for child in module.children():
            visit(child)

    visit(model)
    return count


def compile_task_module(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> nn.Module:
    """`model.compile(...)` in place (parameter names and saved folders unchanged); returns `model`."""
    model.compile(backend=backend, mode=mode)
    return model


def accumulation_warning(task: Any, cfg: Any, processes: int) -> str | None:
    """What `grad_accum_steps > 1` does to the task's in-batch negatives, or None when nothing changes.

    A task says how its loss finds negatives with `in_batch_negatives`: "local" (this process's micro-batch
    only) or "gathered" (all-gathered over the processes); without it nothing is said.
    """
    kind = getattr(task, "in_batch_negatives", None)
    k = int(cfg.grad_accum_steps)
    if k <= 1 or kind is None:
        return None
    per = "the scheduled per-process batch" if cfg.batch_size_schedule else f"{cfg.batch_size} per process"
    if kind == "gathered":
        negatives = f"one micro-batch gathered over the {processes} processes ({per} x {processes})"
    else:
        negatives = f"one micro-batch of this process ({per}; nothing is gathered)"
    return (
        f"grad_accum_steps={k}: each optimizer step adds the gradients of {k} independent micro-batch "
        f"losses; the in-batch negatives of every contrastive term are those of {negatives}, NOT of the "
        f"{k}x larger batch the step covers. Accumulation saves memory but does not reproduce a larger "
        "batch of this method: more negatives need a larger batch_size or more processes."
    )
