"""Prompt ensembles shared by several methods' zero-shot protocols."""

from __future__ import annotations

import itertools

# Attribute lists of the CheXpert 5x200 prompt ensemble (GLoRIA/MedCLIP `CHEXPERT_CLASS_PROMPTS`), in the
# dict order the official generator iterates them (Pleural Effusion lists location before subtype).
CHEXPERT_5X200_ATTRIBUTES: dict[str, list[list[str]]] = {
    "Atelectasis": [
        ["", "mild", "minimal"],
        [
            "subsegmental atelectasis",
            "linear atelectasis",
            "trace atelectasis",
            "bibasilar atelectasis",
            "retrocardiac atelectasis",
            "bandlike atelectasis",
            "residual atelectasis",
        ],
        [
            "at the mid lung zone",
            "at the upper lung zone",
            "at the right lung zone",
            "at the left lung zone",
            "at the lung bases",
            "at the right lung base",
            "at the left lung base",
            "at the bilateral lung bases",
            "at the left lower lobe",
            "at the right lower lobe",
        ],
    ],
    "Cardiomegaly": [
        [""],
        [
            "cardiac silhouette size is upper limits of normal",
            "cardiomegaly which is unchanged",
            "mildly prominent cardiac silhouette",
            "portable view of the chest demonstrates stable cardiomegaly",
            "portable view of the chest demonstrates mild cardiomegaly",
            "persistent severe cardiomegaly",
            "heart size is borderline enlarged",
            "cardiomegaly unchanged",
            "heart size is at the upper limits of normal",
            "redemonstration of cardiomegaly",
            "ap erect chest radiograph demonstrates the heart size is the upper limits of normal",
            "cardiac silhouette size is mildly enlarged",
            "mildly enlarged cardiac silhouette, likely left ventricular enlargement. "
            "other chambers are less prominent",
            "heart size remains at mildly enlarged",
            "persistent cardiomegaly with prominent upper lobe vessels",
        ],
        [""],
    ],
    "Consolidation": [
        ["", "increased", "improved", "appearance of"],
        [
            "bilateral consolidation",
            "reticular consolidation",
            "retrocardiac consolidation",
            "patchy consolidation",
            "airspace consolidation",
            "partial consolidation",
        ],
        [
            "at the lower lung zone",
            "at the upper lung zone",
            "at the left lower lobe",
            "at the right lower lobe",
            "at the left upper lobe",
            "at the right uppper lobe",
            "at the right lung base",
            "at the left lung base",
        ],
    ],
    "Edema": [
        ["", "mild", "improvement in", "persistent", "moderate", "decreased"],
        ["pulmonary edema", "trace interstitial edema", "pulmonary interstitial edema"],
        [""],
    ],
    "Pleural Effusion": [
        ["", "small", "stable", "large", "decreased", "increased"],
        ["left", "right", "tiny"],
        ["bilateral pleural effusion", "subpulmonic pleural effusion", "bilateral pleural effusion"],
    ],
}


def chexpert_5x200_prompts() -> dict[str, list[str]]:
    """Every prompt of each class: '{a} {b} {c}'.strip() over the attribute lists (210/15/192/18/54)."""
    return {
        cls: [f"{a} {b} {c}".strip() for a, b, c in itertools.product(*attrs)]
        for cls, attrs in CHEXPERT_5X200_ATTRIBUTES.items()
    }
