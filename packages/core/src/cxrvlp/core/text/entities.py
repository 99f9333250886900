"""MedKLIP/MAVL entity and landmark vocabularies, and a rule-based report -> label-matrix extractor.

MedKLIP and MAVL do not train on report text: each study becomes a (51 landmarks x 75 entities) matrix with
1 (present), 0 (absent) and -1 (not mentioned or uncertain), built offline from RadGraph annotations
(spec mavl.md §2.2). The vocabularies below are the official ones, in the official order (entity i is query
group i; landmark j is anatomy prompt j).

`extract_label_matrix(report)` is OURS (not the paper's): a rule-based, negation- and uncertainty-aware
extractor that builds the same matrix from raw report text with the same vocabularies, for users without
RadGraph. See the function docstring for what it does and does not do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Official order (`disease_name` in the official model files). 0..7 are the "normal" terms.
ENTITIES: tuple[str, ...] = (
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free",
    "effusion", "opacity", "pneumothorax", "edema", "atelectasis", "tube", "consolidation", "process",
    "abnormality", "enlarge", "tip", "low", "pneumonia", "line", "congestion", "catheter", "cardiomegaly",
    "fracture", "air", "tortuous", "lead", "disease", "calcification", "prominence", "device", "engorgement",
    "picc", "clip", "elevation", "expand", "nodule", "wire", "fluid", "degenerative", "pacemaker", "thicken",
    "marking", "scar", "hyperinflate", "blunt", "loss", "widen", "collapse", "density", "emphysema", "aerate",
    "mass", "crowd", "infiltrate", "obscure", "deformity", "hernia", "drainage", "distention", "shift", "stent",
    "pressure", "lesion", "finding", "borderline", "hardware", "dilation", "chf", "redistribution",
    "aspiration", "tail_abnorm_obs", "excluded_obs",
)  # fmt: skip
NORMAL_ENTITIES = ENTITIES[:8]

# Official order (`DICT_ANATOMICAL_LANDMARKS` keys as used by adj_matrix.py and the anatomy prompts).
LANDMARKS: tuple[str, ...] = (
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural", "pleural_unspec",
    "heart_size", "heart_border", "left_diaphragm", "right_diaphragm", "diaphragm_unspec", "retrocardiac",
    "lower_left_lobe", "upper_left_lobe", "lower_right_lobe", "middle_right_lobe", "upper_right_lobe",
    "left_lower_lung", "left_mid_lung", "left_upper_lung", "left_apical_lung", "left_lung_unspec",
    "right_lower_lung", "right_mid_lung", "right_upper_lung", "right_apical_lung", "right_lung_unspec",
    "lung_apices", "lung_bases", "left_costophrenic", "right_costophrenic", "costophrenic_unspec",
    "cardiophrenic_sulcus", "mediastinal", "spine", "clavicle", "rib", "stomach", "right_atrium",
    "right_ventricle", "aorta", "svc", "interstitium", "parenchymal", "cavoatrial_junction", "cardiopulmonary",
    "pulmonary", "lung_volumes", "unspecified", "other",
)  # fmt: skip

# MAVL's aspect order: k = 0 is the entity description, then the 8 GPT-4 aspects in the JSON's order.
ASPECTS: tuple[str, ...] = (
    "description", "border", "fluid", "location", "opacity", "other", "patterns", "shape", "texture",
)  # fmt: skip


def anatomy_prompts(landmarks: Sequence[str] = LANDMARKS) -> list[str]:
    """The official anatomy prompts: "It is located at " + landmark (underscores kept)."""
    return [f"It is located at {name}" for name in landmarks]


def presence_labels(matrix: np.ndarray) -> np.ndarray:
    """(..., L, E) matrix of -1/0/1 -> (..., E) labels: 1 if any landmark is 1, else 0 if any is 0, else -1."""
    m = np.asarray(matrix)
    return np.where((m == 1).any(-2), 1.0, np.where((m == 0).any(-2), 0.0, -1.0))
