"""The CXR-CLIP loss (`cxrclip/loss/cxr_clip.py`, spec §4): 4-pairing image-text InfoNCE + ICL + TCL.

What is gathered: the four L2-normalised embedding sets (I1 = images, I2 = image views, T1 = texts,
T2 = second texts), each (B, D) per process, are all-gathered WITH gradients into (W*B, D) in rank order.
Queries are this process's B local rows, keys are the W*B gathered rows; the positive of local row i is
global row rank*B + i. Every CE is the mean over the B local rows. Because the gather's backward sums the
gradients of all ranks, the per-rank losses averaged by DDP give the gradient of the full-batch loss.

    L_i2t = 1/4 sum_{(I,T) in P} CE(t I T_all^T),   L_t2i = 1/4 sum_{(I,T) in P} CE(t T I_all^T)
    P = {(I1,T1), (I2,T1), (I1,T2), (I2,T2)}
    L_i2i = 1/2 [CE(t I1 I2_all^T) + CE(t I2 I1_all^T)],  L_t2t = 1/2 [CE(t T2 T1_all^T) + CE(t T1 T2_all^T)]
    total = loss_ratio * ((L_i2t + L_t2i)/2 + i2i_weight L_i2i + t2t_weight L_t2t)

Label smoothing (0 in the paper) applies only to the image-text terms and only in training, as officially.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from cxrvlp.core.losses.infonce import gather_with_grad, world_info
from torch import nn

# The 12 cross-entropies in the order of the parity fixture's `ce_terms_order`: (query, key) names.
CE_TERMS = (
    ("I1", "T1"), ("T1", "I1"), ("I2", "T1"), ("T1", "I2"), ("I1", "T2"), ("T2", "I1"),
    ("I2", "T2"), ("T2", "I2"), ("I1", "I2"), ("I2", "I1"), ("T2", "T1"), ("T1", "T2"),
)  # fmt: skip


class CxrClipLoss(nn.Module):
    """ICL/TCL-augmented CLIP loss; returns every term (`loss` is the one to backpropagate)."""

    def __init__(
        self,
        i2i_weight: float = 1.0,
        t2t_weight: float = 0.5,
        loss_ratio: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.i2i_weight, self.t2t_weight = i2i_weight, t2t_weight
        self.loss_ratio, self.label_smoothing = loss_ratio, label_smoothing

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_view_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        text_embeddings2: torch.Tensor,
        logit_scale: torch.Tensor,
        is_train: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Four (B, D) unit-norm embedding sets and t = exp(logit_scale) -> dict of loss terms."""
        local = {
            "I1": image_embeddings,
            "I2": image_view_embeddings,
            "T1": text_embeddings,
            "T2": text_embeddings2,
        }
        keys = {k: gather_with_grad(v) for k, v in local.items()}  # (W*B, D) each
        b = image_embeddings.shape[0]
        labels = torch.arange(b, device=image_embeddings.device) + world_info()[0] * b
        smooth = self.label_smoothing if is_train else 0.0

        ce = []
        for q, k in CE_TERMS:
            logits = logit_scale * local[q] @ keys[k].t()  # (B, W*B)
            cross_modal = q[0] != k[0]
            ce.append(F.cross_entropy(logits, labels, label_smoothing=smooth if cross_modal else 0.0))
        ce_terms = torch.stack(ce)  # (12,)
        loss_i2t = (ce[0] + ce[2] + ce[4] + ce[6]) / 4
        loss_t2i = (ce[1] + ce[3] + ce[5] + ce[7]) / 4
        loss_i2i = (ce[8] + ce[9]) / 2
        loss_t2t = (ce[10] + ce[11]) / 2
        contrastive = (loss_i2t + loss_t2i) / 2 + self.i2i_weight * loss_i2i + self.t2t_weight * loss_t2t
        return {
            "loss": self.loss_ratio * contrastive,
            "loss_contrastive": contrastive,
            "loss_i2t": loss_i2t,
            "loss_t2i": loss_t2i,
            "loss_i2i": loss_i2i,
            "loss_t2t": loss_t2t,
            "ce_terms": ce_terms,
        }
