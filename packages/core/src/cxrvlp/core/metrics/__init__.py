"""Evaluation metrics computed once on full arrays: classification, retrieval, grounding, segmentation."""

from cxrvlp.core.metrics.classification import (
    ClassificationReport,
    choose_thresholds,
    classification_metrics,
    multiclass_accuracy,
)
from cxrvlp.core.metrics.grounding import (
    AFLOC_THRESHOLDS,
    border_mask,
    cnr,
    dice_at_thresholds,
    grounding_metrics,
    iou_at_thresholds,
    minmax_normalize,
    pointing_game,
)
from cxrvlp.core.metrics.retrieval import (
    class_match_relevance,
    dedupe_texts,
    relevance_from_targets,
    retrieval_metrics,
    retrieval_ranks,
)
from cxrvlp.core.metrics.segmentation import dice_per_image, iou_per_image, segmentation_metrics

__all__ = [
    "AFLOC_THRESHOLDS",
    "ClassificationReport",
    "border_mask",
    "choose_thresholds",
    "class_match_relevance",
    "classification_metrics",
    "cnr",
    "dedupe_texts",
    "dice_at_thresholds",
    "dice_per_image",
    "grounding_metrics",
    "iou_at_thresholds",
    "iou_per_image",
    "minmax_normalize",
    "multiclass_accuracy",
    "pointing_game",
    "relevance_from_targets",
    "retrieval_metrics",
    "retrieval_ranks",
    "segmentation_metrics",
]
