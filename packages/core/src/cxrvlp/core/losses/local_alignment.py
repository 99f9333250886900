"""GLoRIA-style word <-> region attention alignment (AFLoc L_SW / L_DS), batched over all image-text pairs.

For text t (units q_u, u valid) and image i (regions c_r):
  A = c_r . q_u (raw dot products, (R, U)); softmax over units; x temp_attention; softmax over regions
  -> alpha
  attended_u = sum_r alpha[u, r] c_r;  r_u = cos(q_u, attended_u) (eps 1e-8 on the norm product)
  s(i, t) = log sum_u exp(temp_aggregate * r_u)   ("sum"; "mean" divides the sum by the unit count)
logits[i, t] = temp_logits * s(i, t); loss = CE(logits, diag) + CE(logits.T, diag) (AFLoc §4.2).
The official code loops over texts in Python; one einsum over (images, texts) gives the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lengths_to_mask(lengths: torch.Tensor, max_len: int, start: int = 0) -> torch.Tensor:
    """(B,) unit counts -> (B, max_len) bool mask of positions start .. start+len-1.

    AFLoc uses start=0 ([CLS] counted as a unit); GLoRIA uses words 1..n (start=1).
    """
    pos = torch.arange(max_len, device=lengths.device)
    return (pos >= start) & (pos < start + lengths[:, None])


def _pair_similarity(
    regions: torch.Tensor,
    units: torch.Tensor,
    unit_mask: torch.Tensor,
    temp_attention: float,
    temp_aggregate: float,
    aggregate: str,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    # regions (I, R, D), units (T, U, D), unit_mask (T, U) -> s (I, T), alpha (I, T, U, R)
    neg = torch.finfo(regions.dtype).min
    scores = torch.einsum("ird,tud->itru", regions, units)  # (I, T, R, U)
    scores = scores.masked_fill(~unit_mask[None, :, None, :], neg)
    attn = torch.softmax(scores, dim=-1)  # over units, per region
    attn = torch.softmax(attn * temp_attention, dim=2)  # over regions, per unit
    attended = torch.einsum("itru,ird->itud", attn, regions)  # (I, T, U, D)
    dot = (units[None] * attended).sum(-1)  # (I, T, U)
    norms = units.norm(dim=-1)[None] * attended.norm(dim=-1)
    cos = dot / norms.clamp(min=eps)
    sim = torch.exp(cos * temp_aggregate) * unit_mask[None]  # padded units contribute 0
    sim = sim.sum(-1)
    if aggregate == "mean":
        sim = sim / unit_mask.sum(-1)[None]
    elif aggregate != "sum":
        raise ValueError(f"aggregate must be 'sum' or 'mean', got '{aggregate}'")
    return torch.log(sim), attn.transpose(2, 3)


def local_similarity(
    regions: torch.Tensor,
    units: torch.Tensor,
    unit_mask: torch.Tensor,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    eps: float = 1e-8,
    text_chunk: int | None = None,
    attention: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """s (I, T) before temp_logits: images regions (I, R, D), texts units (T, U, D), unit_mask (T, U).

    regions are row-major flattened maps ((B, D, H, W) -> `x.flatten(2).transpose(1, 2)`). Each text needs at
    least one valid unit. `text_chunk` bounds memory (the (I, T, R, U) attention) by processing that many
    texts at a time (same numbers). attention="all" also returns alpha (I, T, U, R); attention="paired"
    returns alpha of text t on image t (T, U, R), for paired batches (I == T). Masked units are included.
    """
    if attention not in (None, "all", "paired"):
        raise ValueError(f"attention must be None, 'all' or 'paired', got '{attention}'")
    unit_mask = unit_mask.bool()
    if regions.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(regions.device.type):
        # exp(temp * cos) and the two softmaxes want fp32 (the official losses ran fp32 under AMP too)
        with torch.autocast(regions.device.type, enabled=False):
            return local_similarity(
                regions.float(),
                units.float(),
                unit_mask,
                temp_attention,
                temp_aggregate,
                aggregate,
                eps,
                text_chunk,
                attention,
            )
    chunk = text_chunk or units.shape[0]
    sims, attns = [], []
    for start in range(0, units.shape[0], chunk):
        s, a = _pair_similarity(
            regions,
            units[start : start + chunk],
            unit_mask[start : start + chunk],
            temp_attention,
            temp_aggregate,
            aggregate,
            eps,
        )
        sims.append(s)
        if attention == "all":
            attns.append(a)
        elif attention == "paired":
            idx = torch.arange(a.shape[1], device=a.device)
            attns.append(a[start + idx, idx])  # (chunk, U, R)
    sim = torch.cat(sims, dim=1)
    if attention is None:
        return sim
    return sim, torch.cat(attns, dim=1 if attention == "all" else 0)


def local_alignment_loss(
    regions: torch.Tensor,
    units: torch.Tensor,
    unit_mask: torch.Tensor,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    temp_logits: float = 10.0,
    aggregate: str = "sum",
    eps: float = 1e-8,
    text_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss_i2t, loss_t2i, logits (B, B) rows = images, attention of text i on image i (B, U, R)).

    Paired batches: regions[i] belongs with units[i]. loss_i2t = CE over each image's row of logits,
    loss_t2i = CE over each text's column; AFLoc sums them. Temperatures default to AFLoc's 4 / 5 / 10.
    """
    sim, attn = local_similarity(
        regions,
        units,
        unit_mask,
        temp_attention,
        temp_aggregate,
        aggregate,
        eps,
        text_chunk=text_chunk,
        attention="paired",
    )
    logits = temp_logits * sim  # (B_img, B_txt)
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss_i2t = F.cross_entropy(logits, labels)
    loss_t2i = F.cross_entropy(logits.t(), labels)
    return loss_i2t, loss_t2i, logits, attn
