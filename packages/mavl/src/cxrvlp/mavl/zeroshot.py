"""MAVL zero-shot scoring (spec §6.1) and grounding maps (§6.2)."""

from __future__ import annotations

import torch


def score_feature(cls_logits: torch.Tensor) -> torch.Tensor:
    """'feature' mode (seen classes): softmax over the presence head's 2 logits, class 1. (B, E, 2) -> (B, E)."""
    return cls_logits.softmax(-1)[..., 1]


def score_text(global_sim: torch.Tensor, references: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """'text' mode (unseen classes): cosines (B, E, A) -> (B, E).

    Per aspect and reference entity r (normal = 0, clear = 1): softmax([s_r, s_d])[1] = sigmoid(s_d - s_r), no
    temperature (the official code discards `temp`); averaged over the references, then over the aspects.
    """
    ref = global_sim[:, list(references)]  # (B, R, A)
    p = torch.sigmoid(global_sim.unsqueeze(1) - ref.unsqueeze(2))  # (B, R, E, A)
    return p.mean(1).mean(-1)
