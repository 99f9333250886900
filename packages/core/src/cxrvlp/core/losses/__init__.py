"""Losses shared by the methods: InfoNCE with gathered negatives, GLoRIA local alignment, Sinkhorn codes."""

from cxrvlp.core.losses.infonce import (
    LogitScale,
    clip_loss,
    contrastive_labels,
    contrastive_loss,
    cross_entropy_from_logits,
    gather_features,
    gather_no_grad,
    gather_with_grad,
    world_info,
)
from cxrvlp.core.losses.local_alignment import lengths_to_mask, local_alignment_loss, local_similarity
from cxrvlp.core.losses.sinkhorn import sinkhorn, swapped_prediction_loss

__all__ = [
    "LogitScale",
    "clip_loss",
    "contrastive_labels",
    "contrastive_loss",
    "cross_entropy_from_logits",
    "gather_features",
    "gather_no_grad",
    "gather_with_grad",
    "lengths_to_mask",
    "local_alignment_loss",
    "local_similarity",
    "sinkhorn",
    "swapped_prediction_loss",
    "world_info",
]
