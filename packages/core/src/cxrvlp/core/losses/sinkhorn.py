"""Sinkhorn-Knopp soft cluster assignments (SwAV), as MGCA uses for its prototype loss."""

from __future__ import annotations

import torch
import torch.distributed as dist
from cxrvlp.core.losses.infonce import world_info


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    epsilon: float = 0.05,
    n_iters: int = 3,
    distributed: bool = False,
    subtract_max: bool = False,
) -> torch.Tensor:
    """Codes q (B, K) from prototype scores (B, K): equipartition over prototypes, rows sum to 1.

    Exactly MGCA's local `sinkhorn` when distributed=False: Q = exp(scores / eps).T (K, B); Q /= sum(Q);
    n_iters x { Q *= (1/K) / rowsum(Q); Q *= (1/B) / colsum(Q) }; return (Q / colsum(Q)).T.
    distributed=True is SwAV's `distributed_sinkhorn`: the total and the per-prototype sums are all-reduced
    and the column target is 1/(W*B), so the equipartition holds over the global batch.
    subtract_max=True subtracts the global max score first (guards exp overflow for small eps; the result is
    mathematically identical, not bit-identical, so it is off by default).
    """
    z = scores.to(torch.promote_types(scores.dtype, torch.float32)) / epsilon  # float32 at least
    world = world_info()[1] if distributed else 1
    if subtract_max:
        m = z.max()
        if world > 1:
            dist.all_reduce(m, op=dist.ReduceOp.MAX)
        z = z - m
    q = torch.exp(z).t()  # (K, B)
    k, b = q.shape
    total = q.sum()
    if world > 1:
        dist.all_reduce(total)
    q /= total
    r = torch.full((k,), 1.0 / k, dtype=q.dtype, device=q.device)
    c = torch.full((b,), 1.0 / (world * b), dtype=q.dtype, device=q.device)
    for _ in range(n_iters):
        u = q.sum(dim=1)  # (K,) mass per prototype
        if world > 1:
            dist.all_reduce(u)
        q *= (r / u).unsqueeze(1)
        q *= (c / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).t()  # (B, K)


def swapped_prediction_loss(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    temperature: float = 0.2,
    epsilon: float = 0.05,
    n_iters: int = 3,
    distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SwAV swapped prediction: (-mean sum q_a log p_b, -mean sum q_b log p_a) with Sinkhorn codes q.

    p = softmax(scores / temperature); MGCA's CPA loss is the mean of the two terms.
    """
    q_a = sinkhorn(scores_a, epsilon, n_iters, distributed)
    q_b = sinkhorn(scores_b, epsilon, n_iters, distributed)
    p_a = torch.softmax(scores_a / temperature, dim=1)
    p_b = torch.softmax(scores_b / temperature, dim=1)
    # log(softmax) rather than log_softmax: the official computation, identical up to rounding
    l_ab = -torch.mean(torch.sum(q_a * torch.log(p_b), dim=1))
    l_ba = -torch.mean(torch.sum(q_b * torch.log(p_a), dim=1))
    return l_ab, l_ba
