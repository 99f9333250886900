"""AFLoc's three alignment losses (spec §4; official `afloc/models/losses.py` + `AFLoc.calc_loss`).

* L_GR (report <-> global): S = temp3 * cos(v_g[i], t_r[j]) (eps 1e-8 on the norm product), CE(S) + CE(S^T).
* L_DS (sentences <-> V3 19x19) and L_SW (words <-> V2 38x38): GLoRIA attention alignment with temp1 = 4,
  temp2 = 5, temp3 = 10, LogSumExp ("sum") over the first `units` columns of each text; CE both ways, summed.
* total = w_GR L_GR + w_DS L_DS + w_SW L_SW (all weights 1).

The official local loss loops over texts in Python and repeats each text B times; core's `local_similarity`
computes all (image, text) pairs in one einsum (optionally `text_chunk` texts at a time): the same numbers.

Distributed semantics (official: PyTorch-Lightning DataParallel on 2 GPUs): every loss sees the local batch
only (in-batch negatives of this process, 64 per GPU in the paper); NOTHING is gathered across processes and
the per-process losses are averaged (DDP's gradient mean is the same thing).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.core.losses.local_alignment import lengths_to_mask, local_alignment_loss
from torch import nn

TERMS = ("global_report_loss", "local_sent_loss", "local_word_loss")


def global_logits(img_emb_g: torch.Tensor, text_emb_r: torch.Tensor, temp3: float, eps: float = 1e-8):
    """(B_img, B_txt) temp3 * cosine, the official norm-product clamp (not per-vector normalisation)."""
    dots = img_emb_g @ text_emb_r.t()
    norms = img_emb_g.norm(dim=1, keepdim=True) * text_emb_r.norm(dim=1, keepdim=True).t()
    return dots / norms.clamp(min=eps) * temp3


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32; float32 / float64 unchanged (an fp64 twin stays fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _flat_regions(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, D, H, W) -> (B, H*W, D), row-major


def local_loss(
    regions_map: torch.Tensor,
    units: torch.Tensor,
    n_units: torch.Tensor,
    temp1: float,
    temp2: float,
    temp3: float,
    text_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i2t, t2i, logits (B_img, B_txt), attention of each text on its own image (B, U, H, W)).

    regions_map (B, D, H, W); units (B, W, D); n_units (B,): the official cap_len (first n columns used).
    Units beyond the batch's largest count are never read, so they are cut before the einsum (exact).
    """
    u = int(n_units.max())
    mask = lengths_to_mask(n_units, u)  # (B, U)
    with torch.autocast(regions_map.device.type, enabled=False):
        i2t, t2i, logits, attn = local_alignment_loss(
            _flat_regions(_fp32(regions_map)),
            _fp32(units[:, :u]),
            mask,
            temp_attention=temp1,
            temp_aggregate=temp2,
            temp_logits=temp3,
            aggregate="sum",
            text_chunk=text_chunk,
        )
    h, w = regions_map.shape[-2:]
    return i2t, t2i, logits, attn.reshape(attn.shape[0], u, h, w)


class AFLocLoss(nn.Module):
    """The three AFLoc losses of a paired batch; no parameters. Losses computed in fp32 (official under AMP
    ran them on fp16 features; the logits are bounded, spec §4 precision note)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, img: Any, txt: Any) -> dict[str, torch.Tensor]:
        """`ImageSide`, `TextSide` -> {"loss", "global_report_loss", "local_sent_loss", "local_word_loss",
        the six directional terms, logits and attention maps}."""
        c = self.cfg
        zero = _fp32(img.emb_g.new_zeros(()))
        out: dict[str, torch.Tensor] = {}
        labels = torch.arange(img.emb_g.shape[0], device=img.emb_g.device)
        total = zero
        if c.use_global_report_loss:
            with torch.autocast(img.emb_g.device.type, enabled=False):
                s = global_logits(_fp32(img.emb_g), _fp32(txt.report_emb), c.temp3)
                i2t, t2i = F.cross_entropy(s, labels), F.cross_entropy(s.t(), labels)
            out.update(global_logits=s, global_i2t=i2t, global_t2i=t2i)
            out["global_report_loss"] = (i2t + t2i) * c.global_report_loss_weight
        else:
            out["global_report_loss"] = zero
        levels = (
            (
                "sent",
                c.use_local_sent_loss,
                img.emb_l,
                txt.sent_emb,
                txt.sent_units,
                c.local_sent_loss_weight,
            ),
            (
                "word",
                c.use_local_word_loss,
                img.emb_l2,
                txt.word_emb,
                txt.word_units,
                c.local_word_loss_weight,
            ),
        )
        for name, used, regions, units, n, weight in levels:
            key = f"local_{name}_loss"
            if not used:
                out[key] = zero
                continue
            i2t, t2i, logits, attn = local_loss(regions, units, n, c.temp1, c.temp2, c.temp3, c.text_chunk)
            out.update(
                {f"{name}_logits": logits, f"{name}_i2t": i2t, f"{name}_t2i": t2i, f"{name}_attn": attn}
            )
            out[key] = (i2t + t2i) * weight
        for k in TERMS:
            total = total + out[k]
        out["loss"] = total
        return out
