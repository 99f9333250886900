"""The MAVL loss (spec mavl.md §4): presence CE + location CE + aspect-wise multi-label global contrastive.

    L = ce * CE(presence logits over pairs with label in {0, 1})
      + CE(location logits over pairs with label 1, target = candidate 0)
      + cl_global * (mean_k L_i2t^k + mean_k L_t2i^k)

    L_i2t^k = 1/B sum_b 1/E sum_e -c_be log softmax_e(tau_k S^k)_be      (softmax over the E entities)
    L_t2i^k = 1/E sum_e 1/B sum_b -c_be log softmax_b(tau_k S^k)_be      (softmax over the B local images)

with c = labels with -1 (and 2) set to 0, S^k the (B, E) cosines of aspect k, tau_k = exp(temp[k]).

Distributed semantics (as the official code): NOTHING is gathered. Each process computes its loss on its
local batch (the t2i negatives are the other images of the local batch); DDP averages the gradients.

Deviations that do not change the math: one log-softmax per direction over the (B, E, A) tensor instead of
a Python loop over the 9 aspects, computed in the similarities' dtype (the official code promotes to
float64 through its float64 labels); masked means instead of boolean indexing (no host sync).
Ours (named): an empty mask gives 0 instead of the official NaN (a batch without a present entity).

MedKLIP (`medklip-r50`, spec §3.6): the same presence and location terms and no global term; pass
`global_sim=None` / `temp=None` (its model has neither).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def soft_target_ce(logits: torch.Tensor, targets: torch.Tensor, dim: int) -> torch.Tensor:
    """Official SoftTargetCrossEntropy along `dim`, per trailing aspect: mean over `dim`, mean over the other.

    logits, targets (B, E, A) -> (A,)
    """
    per = -targets * F.log_softmax(logits, dim=dim)  # (B, E, A)
    return per.mean(dim=dim).mean(dim=0)  # (B or E, A) -> (A,)


class MavlLoss(nn.Module):
    """Returns {"presence_loss", "location_loss", "global_loss", "global_i2t", "global_t2i", "loss"}."""

    def __init__(self, ce_weight: float = 1.0, location_weight: float = 1.0, cl_global: float = 0.1) -> None:
        super().__init__()
        self.ce_weight, self.location_weight, self.cl_global = ce_weight, location_weight, cl_global

    def forward(
        self,
        cls_logits: torch.Tensor,  # (B, E, 2)
        labels: torch.Tensor,  # (B, E) in {-1, 0, 1}
        location_logits: torch.Tensor | None,  # (B, E, K), candidate 0 = the positive landmark
        global_sim: torch.Tensor | None,  # (B, E, A) cosines (None: MedKLIP, no global term)
        temp: torch.Tensor | None,  # (A,) log logit scales
    ) -> dict[str, torch.Tensor]:
        valid = (labels != -1) & (labels != 2)  # (B, E)
        target = (labels == 1).long()
        ce = F.cross_entropy(cls_logits.flatten(0, 1), target.flatten(), reduction="none")  # (B*E,)
        presence = self.ce_weight * _masked_mean(ce, valid.flatten())
        terms: dict[str, torch.Tensor] = {"presence_loss": presence}
        if location_logits is not None and self.location_weight:
            loc = torch.logsumexp(location_logits, -1) - location_logits[..., 0]  # CE with target 0, (B, E)
            terms["location_loss"] = self.location_weight * _masked_mean(loc, labels == 1)
        if global_sim is None or temp is None:  # MedKLIP: L = CE + location CE
            terms["loss"] = sum(v for k, v in terms.items() if k.endswith("_loss"))
            return terms
        c = (labels == 1).to(global_sim.dtype).unsqueeze(-1).expand_as(global_sim)  # (B, E, A)
        logits = global_sim * temp.exp().to(global_sim.dtype)  # (B, E, A)
        i2t = soft_target_ce(logits, c, dim=1)  # (A,)
        t2i = soft_target_ce(logits, c, dim=0)  # (A,)
        terms["global_loss"] = self.cl_global * (i2t.mean() + t2i.mean())
        terms["loss"] = sum(v for k, v in terms.items() if k.endswith("_loss"))
        terms["global_i2t"], terms["global_t2i"] = i2t, t2i
        return terms
