"""MGCA's three losses: ITA (instance), CTA (token), CPA (prototype). Spec §4.

Distributed semantics (as the official DDP run): NOTHING is gathered across processes. ITA negatives are the
local batch, CTA is intra-sample, and the Sinkhorn codes of CPA are computed on the local batch (the official
`distributed_sinkhorn` is never selected). Only gradients are averaged by DDP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from cxrvlp.core.losses.sinkhorn import sinkhorn
from cxrvlp.mgca.config import MGCAConfig

if TYPE_CHECKING:
    from cxrvlp.mgca.model import ImageSide, TextSide
from torch import nn


def ita_loss(v: torch.Tensor, t: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """Image-report InfoNCE on the local batch: CE(rows) + CE(columns), a SUM (not a mean). v, t (B, E)."""
    logits = v @ t.t() / temperature  # (B, B) row = image
    labels = torch.arange(v.shape[0], device=v.device)
    i2t = F.cross_entropy(logits, labels)
    t2i = F.cross_entropy(logits.t(), labels)
    return {"ita_logits": logits, "loss_ita_i2t": i2t, "loss_ita_t2i": t2i, "loss_ita": i2t + t2i}


@torch.no_grad()
def topk_accuracy(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of i2t and t2i in-batch top-k accuracy in percent (k is capped at B)."""
    k = min(k, logits.shape[0])
    labels = torch.arange(logits.shape[0], device=logits.device)[:, None]
    acc = [
        (lg.topk(k, dim=1).indices == labels).any(dim=1).float().mean() * 100 for lg in (logits, logits.t())
    ]
    return (acc[0] + acc[1]) / 2


@torch.no_grad()
def clip_to_quantiles(
    w: torch.Tensor, valid: torch.Tensor, low: float = 0.1, high: float = 0.9
) -> torch.Tensor:
    """Clamp each row's valid entries to [q_low, q_high] of those entries (torch.quantile 'linear'); others
    unchanged. w, valid (B, N). Vectorised replacement of the official per-sample quantile loop."""
    n = valid.sum(dim=1)  # (B,)
    inf = torch.finfo(w.dtype).max
    sorted_w = torch.where(valid, w, torch.full_like(w, inf)).sort(dim=1).values  # valid values first

    def quantile(q: float) -> torch.Tensor:
        rank = torch.tensor(q, dtype=w.dtype, device=w.device) * (n - 1).clamp(min=0).to(w.dtype)  # (B,)
        below = rank.floor().long()
        above = rank.ceil().long()
        lo = sorted_w.gather(1, below[:, None])
        hi = sorted_w.gather(1, above[:, None])
        return torch.lerp(lo, hi, (rank - below.to(w.dtype))[:, None])  # (B, 1)

    clipped = torch.minimum(torch.maximum(w, quantile(low)), quantile(high))
    return torch.where(valid, clipped, w)


@torch.no_grad()
def word_weights(word_attn: torch.Tensor) -> torch.Tensor:
    """omega: non-zero word attentions clipped to their [q10, q90], divided by the row sum. (B, N_w)."""
    w = clip_to_quantiles(word_attn, word_attn != 0)
    return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


@torch.no_grad()
def vit_patch_weights(cls_attn: torch.Tensor) -> torch.Tensor:
    """pi for ViT: mean-over-heads [CLS]->patch attention (B, H, N+1) clipped to [q10, q90], normalised."""
    a = cls_attn[:, :, 1:].mean(dim=1)  # (B, N_p)
    w = clip_to_quantiles(a, torch.ones_like(a, dtype=torch.bool))
    return w / w.sum(dim=1, keepdim=True)


def _weighted_diag_ce(sim: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """sim (B, N, N): per-token CE of row i -> target i and of column j -> target j, weighted sums / B."""
    B = sim.shape[0]
    diag = sim.diagonal(dim1=1, dim2=2)  # (B, N)
    ce_rows = torch.logsumexp(sim, dim=2) - diag
    ce_cols = torch.logsumexp(sim, dim=1) - diag
    l1 = (ce_rows * weights).sum() / B
    l2 = (ce_cols * weights).sum() / B
    return {"ce_rows": ce_rows, "ce_cols": ce_cols, "l1": l1, "l2": l2, "loss": (l1 + l2) / 2}


def cta_loss(img: ImageSide, txt: TextSide, cfg: MGCAConfig) -> dict[str, torch.Tensor]:
    """Token-wise alignment (word side + patch side when bidirectional), per sample, local batch only."""
    tau = cfg.local_temperature
    W, P = txt.word_emb, img.patch_emb  # (B, N_w, E), (B, N_p, E)
    out: dict[str, torch.Tensor] = {}
    # word -> patches: no padding mask (official)
    att = torch.softmax(W @ P.transpose(1, 2) / tau, dim=-1)  # (B, N_w, N_p)
    w_hat = F.normalize(att @ P, dim=-1)  # (B, N_w, E)
    word_sim = W @ w_hat.transpose(1, 2) / tau  # (B, N_w, N_w), computed once
    omega = word_weights(txt.word_attn)
    wl = _weighted_diag_ce(word_sim, omega)
    out.update(
        word_attended=w_hat,
        word_sim=word_sim,
        word_weights=omega,
        word_ce_rows=wl["ce_rows"],
        word_ce_cols=wl["ce_cols"],
        loss_word_1=wl["l1"],
        loss_word_2=wl["l2"],
        loss_word=wl["loss"],
    )
    loss = wl["loss"]
    if cfg.bidirectional:
        logits = P @ W.transpose(1, 2)  # (B, N_p, N_w)
        logits = logits.masked_fill(txt.word_pad_mask[:, None, :], float("-inf"))
        p_hat = torch.softmax(logits / tau, dim=-1) @ W  # (B, N_p, E)
        if cfg.is_vit:
            pi = vit_patch_weights(img.cls_attn)  # P-hat stays un-normalised for ViT (official quirk)
        else:
            p_hat = F.normalize(p_hat, dim=-1)
            pi = torch.full(P.shape[:2], 1.0 / P.shape[1], dtype=P.dtype, device=P.device)
        patch_sim = P @ p_hat.transpose(1, 2) / tau  # (B, N_p, N_p)
        pl = _weighted_diag_ce(patch_sim, pi)
        out.update(
            patch_attended=p_hat,
            patch_sim_diag=patch_sim.diagonal(dim1=1, dim2=2),
            patch_weights=pi,
            patch_ce_rows=pl["ce_rows"],
            patch_ce_cols=pl["ce_cols"],
            loss_patch_1=pl["l1"],
            loss_patch_2=pl["l2"],
            loss_patch=pl["loss"],
        )
        loss = loss + pl["loss"]
    out["loss_cta"] = loss
    return out


def cpa_loss(
    img: ImageSide, txt: TextSide, prototypes: nn.Linear, cfg: MGCAConfig
) -> dict[str, torch.Tensor]:
    """Prototype-level swapped prediction with local-batch Sinkhorn codes. Normalises the prototype rows in
    place first (as the official forward does before every use)."""
    with torch.no_grad():
        prototypes.weight.copy_(F.normalize(prototypes.weight, dim=1, p=2))
    z_v = prototypes(img.img_emb)  # (B, K)
    z_t = prototypes(txt.report_emb)
    q_v = sinkhorn(z_v.detach(), cfg.epsilon, cfg.sinkhorn_iterations)  # local batch, no all-reduce
    q_t = sinkhorn(z_t.detach(), cfg.epsilon, cfg.sinkhorn_iterations)
    p_v = torch.softmax(z_v / cfg.proto_temperature, dim=1)
    p_t = torch.softmax(z_t / cfg.proto_temperature, dim=1)
    # log(softmax) rather than log_softmax: the official computation
    i2t = -torch.mean(torch.sum(q_v * torch.log(p_t), dim=1))
    t2i = -torch.mean(torch.sum(q_t * torch.log(p_v), dim=1))
    return {
        "img_proto_logits": z_v,
        "report_proto_logits": z_t,
        "img_code": q_v,
        "report_code": q_t,
        "img_proto_prob": p_v,
        "report_proto_prob": p_t,
        "loss_proto_i2t": i2t,
        "loss_proto_t2i": t2i,
        "loss_cpa": (i2t + t2i) / 2,
    }


@dataclass
class MGCALossOutput:
    """Total loss, its three terms and (optionally) every intermediate."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    details: dict[str, torch.Tensor] = field(default_factory=dict)


class MGCALoss(nn.Module):
    """lambda_1 * ITA + lambda_2 * CTA + lambda_3 * CPA on the LOCAL batch (no cross-process gather)."""

    def __init__(self, cfg: MGCAConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, img: ImageSide, txt: TextSide, prototypes: nn.Linear) -> MGCALossOutput:
        cfg = self.cfg
        ita = ita_loss(img.img_emb, txt.report_emb, cfg.softmax_temperature)
        cta = cta_loss(img, txt, cfg)
        cpa = cpa_loss(img, txt, prototypes, cfg)
        total = (
            cfg.lambda_1 * ita["loss_ita"] + cfg.lambda_2 * cta["loss_cta"] + cfg.lambda_3 * cpa["loss_cpa"]
        )
        terms = {"loss_ita": ita["loss_ita"], "loss_cta": cta["loss_cta"], "loss_cpa": cpa["loss_cpa"]}
        details = {**ita, **cta, **cpa, "loss_total": total}
        return MGCALossOutput(loss=total, terms=terms, details=details)
