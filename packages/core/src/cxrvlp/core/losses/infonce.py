"""InfoNCE / CLIP contrastive losses with open_clip semantics: gathered negatives, local loss, rank offsets.

Distributed recipe (open_clip `ClipLoss`, CXR-CLIP): each rank gathers the other ranks' embeddings
(`gather_features`), computes logits of its *local* queries against the *global* keys and uses the label
`rank * B + i` for local row i (`local_loss=True`); or computes the full global-by-global matrix on every rank
(`local_loss=False`). With `gather_with_grad=True` the gather is differentiable: its backward sums the
gradient arriving at every rank's copy, so after DDP averages gradients over ranks the update equals a
single-process step on the concatenated batch (tested in tests/core_model/test_core_infonce_dist.py).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather `x` (B, ...) over ranks along dim 0 with autograd -> (W * B, ...); identity on one process.

    Every rank must pass the same B (use drop_last); the backward sums the gradients of all ranks' copies.
    """
    _, world = world_info()
    if world == 1:
        return x
    import torch.distributed._functional_collectives as fc

    # newest name first; older torch has all_gather_tensor_autograd, then torch.distributed.nn's all_gather
    fn = getattr(fc, "all_gather_single_autograd", None) or getattr(fc, "all_gather_tensor_autograd", None)
    if fn is not None:
        out = fn(x.contiguous(), 0, dist.group.WORLD)
        return fc.wait_tensor(out) if hasattr(fc, "wait_tensor") else out
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


_gather_differentiable = gather_with_grad  # the argument of gather_features shadows the name


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather; gradients flow only into the local slice, not to other ranks (open_clip)."""
    rank, world = world_info()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def gather_features(*features: torch.Tensor, gather_with_grad: bool = True) -> tuple[torch.Tensor, ...]:
    """Gather each (B, D) tensor over ranks -> (W * B, D), in rank order (identity when not distributed)."""
    fn = _gather_differentiable if gather_with_grad else gather_no_grad
    return tuple(fn(f) for f in features)


def contrastive_labels(
    batch_size: int, device: torch.device | None = None, local_loss: bool = True, rank: int | None = None
) -> torch.Tensor:
    """Target index of each query row: `rank * B + i` for local queries against global keys, else `i`."""
    if rank is None:
        rank = world_info()[0] if local_loss else 0
    offset = rank * batch_size if local_loss else 0
    return torch.arange(batch_size, device=device) + offset


def contrastive_loss(
    query: torch.Tensor,
    keys: torch.Tensor,
    logit_scale: float | torch.Tensor = 1.0,
    *,
    labels: torch.Tensor | None = None,
    label_offset: int = 0,
    soft_targets: torch.Tensor | None = None,
    class_reduction: str = "sum",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """One-way InfoNCE: mean over query rows of CE(logit_scale * query @ keys.T, target).

    query (Bq, D), keys (Bk, D): already normalised if cosine logits are wanted. `logit_scale` is the
    multiplier (1 / temperature), a float or a tensor (learned: pass `LogitScale()()`).
    Targets: `labels` (Bq,) if given, else `arange(Bq) + label_offset` (rank * B for local queries against
    gathered keys). `soft_targets` (Bq, Bk) replace the hard targets: loss = -sum_k t * log_softmax
    (`class_reduction="mean"` divides by Bk, as MAVL's multi-label loss).
    """
    logits = logit_scale * (query @ keys.t())  # (Bq, Bk)
    return cross_entropy_from_logits(
        logits,
        labels=labels,
        label_offset=label_offset,
        soft_targets=soft_targets,
        class_reduction=class_reduction,
        label_smoothing=label_smoothing,
    )


def cross_entropy_from_logits(
    logits: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    label_offset: int = 0,
    soft_targets: torch.Tensor | None = None,
    class_reduction: str = "sum",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean-over-rows CE of a (Bq, Bk) logit matrix; diagonal (+ offset) targets unless given otherwise."""
    if soft_targets is not None:
        if class_reduction not in ("sum", "mean"):
            raise ValueError(f"class_reduction must be 'sum' or 'mean', got '{class_reduction}'")
        per_row = -(soft_targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1)
        if class_reduction == "mean":
            per_row = per_row / logits.shape[-1]
        return per_row.mean()
    if labels is None:
        labels = torch.arange(logits.shape[0], device=logits.device) + label_offset
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: float | torch.Tensor = 1.0,
    *,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CLIP loss of local batches a, b (B, D) with negatives gathered over all ranks.

    reduction: "mean" -> (L_ab + L_ba) / 2 (CLIP, CARZero), "sum" -> L_ab + L_ba (MGCA, AFLoc),
    "none" -> (L_ab, L_ba). Single process: plain in-batch loss.
    """
    rank, world = world_info()
    scale = logit_scale
    if world > 1:
        all_a, all_b = gather_features(a, b, gather_with_grad=gather_with_grad)
    else:
        all_a, all_b = a, b
    if local_loss or world == 1:
        logits_ab = scale * (a @ all_b.t())  # (B, W*B)
        logits_ba = scale * (b @ all_a.t())
        labels = contrastive_labels(a.shape[0], a.device, local_loss=True, rank=rank)
    else:
        logits_ab = scale * (all_a @ all_b.t())  # (W*B, W*B), identical on every rank
        logits_ba = logits_ab.t()
        labels = torch.arange(all_a.shape[0], device=a.device)
    l_ab = F.cross_entropy(logits_ab, labels, label_smoothing=label_smoothing)
    l_ba = F.cross_entropy(logits_ba, labels, label_smoothing=label_smoothing)
    if reduction == "none":
        return l_ab, l_ba
    if reduction == "sum":
        return l_ab + l_ba
    if reduction == "mean":
        return (l_ab + l_ba) / 2
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got '{reduction}'")


class LogitScale(nn.Module):
    """A temperature: learned (CLIP: log(1/0.07) parameter, returns its exp) or fixed.

    `max_scale` clamps the returned multiplier (open_clip clamps at 100); CXR-CLIP never clamps (None).
    """

    def __init__(
        self, init_temperature: float = 0.07, learnable: bool = True, max_scale: float | None = None
    ):
        super().__init__()
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("logit_scale", value)
        self.max_scale = max_scale

    def forward(self) -> torch.Tensor:
        """The multiplier exp(logit_scale), clamped to max_scale when set."""
        scale = self.logit_scale.exp()
        return scale.clamp(max=self.max_scale) if self.max_scale is not None else scale
