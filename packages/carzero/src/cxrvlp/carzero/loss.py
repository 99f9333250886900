"""The CARZero loss (`loss/dqn_cos_loss.py` DQNCOSLoss, spec §4): symmetric cross-entropy on both B x B logit
matrices, no temperature (the MLP output is the logit), weight 1 each.

    L(M) = (CE(M, arange) + CE(M^T, arange)) / 2;   total = w_i2t * L(i2t) + w_t2i * L(t2i)

Distributed semantics: nothing is gathered. The official run is single-GPU (Lightning `dp`), so the negatives
are the other pairs of the local batch; under DDP each process scores its own B x B pairs and the gradients
are averaged (gathering features across processes would change the method: it is not done). Gradient
accumulation does not enlarge the set of negatives either: each micro-batch is its own B x B problem.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_ce(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, B) logits (diagonal = positives) -> (mean of both, row CE, column CE)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    row = F.cross_entropy(logits, target)
    col = F.cross_entropy(logits.t(), target)
    return (row + col) / 2, row, col


def carzero_loss(
    i2t: torch.Tensor, t2i: torch.Tensor, i2t_weight: float = 1.0, t2i_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Named terms: `i2t_loss`, `t2i_loss` (weighted) and their sum `loss`, plus the four CE halves."""
    # at least float32 (fp16 autocast logits are upcast; a float64 run stays float64)
    li, ri, ci = symmetric_ce(i2t.to(torch.promote_types(i2t.dtype, torch.float32)))
    lt, rt, ct = symmetric_ce(t2i.to(torch.promote_types(t2i.dtype, torch.float32)))
    terms = {"i2t_loss": i2t_weight * li, "t2i_loss": t2i_weight * lt}
    terms["loss"] = terms["i2t_loss"] + terms["t2i_loss"]
    terms.update(i2t_row_ce=ri, i2t_col_ce=ci, t2i_row_ce=rt, t2i_col_ce=ct)
    return terms


class CarzeroLoss(torch.nn.Module):
    """`carzero_loss` with the configured weights."""

    def __init__(self, i2t_weight: float = 1.0, t2i_weight: float = 1.0) -> None:
        super().__init__()
        self.i2t_weight, self.t2i_weight = i2t_weight, t2i_weight

    def forward(self, i2t: torch.Tensor, t2i: torch.Tensor) -> dict[str, torch.Tensor]:
        return carzero_loss(i2t, t2i, self.i2t_weight, self.t2i_weight)
