"""Label vocabularies and the uncertainty policies applied to CheXpert-style codes (1 / 0 / -1 / blank)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from cxrvlp.core.errors import ConfigError

CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert labeler classes in the order of CheXpert's train.csv (MIMIC's CSV is alphabetical)."""

CHEXPERT5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The 5 competition classes (GLoRIA / MGCA / CARZero order)."""

CHESTXRAY14_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""ChestX-ray14's 14 findings in the NIH order (the order of MAVL's xray14/test.csv columns)."""

Policy = Literal["nan", "zeros", "ones", "keep"]

MGCA_UNCERTAIN_POLICY: dict[str, Policy] = {
    "Atelectasis": "ones",
    "Edema": "ones",
    "Pleural Effusion": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
}
"""MGCA's `CHEXPERT_UNCERTAIN_MAPPINGS` (U-Ones / U-Zeros per class; use with blank_policy="zeros")."""

AFLOC_UNCERTAIN_POLICY: dict[str, Policy] = {"Edema": "ones", "Atelectasis": "ones"}
"""AFLoc's pretraining labels: Edema and Atelectasis -1 -> 1, every other -1 -> 0 (default "zeros")."""

_POLICY_VALUE = {"nan": np.nan, "zeros": 0.0, "ones": 1.0, "keep": -1.0}


def apply_uncertain_policy(
    raw: np.ndarray,
    classes: Sequence[str],
    policy: Policy | Mapping[str, Policy] = "nan",
    blank_policy: Literal["nan", "zeros"] = "nan",
    default: Policy = "zeros",
) -> np.ndarray:
    """(N, C) raw codes (1, 0, -1, NaN=blank) -> float32 labels (1 / 0 / NaN, or -1 with "keep").

    `policy` is one policy for all classes or a mapping class -> policy (classes not named use `default`).
    """
    out = np.array(raw, dtype=np.float32, copy=True)
    if out.ndim == 1:
        out = out[None]
    if out.shape[-1] != len(classes):
        raise ConfigError(f"label matrix has {out.shape[-1]} columns for {len(classes)} classes")
    for j, c in enumerate(classes):
        p = policy if isinstance(policy, str) else policy.get(c, default)
        if p not in _POLICY_VALUE:
            raise ConfigError(f"unknown uncertain policy {p!r} for class {c!r}")
        col = out[:, j]
        col[col == -1] = _POLICY_VALUE[p]
    if blank_policy == "zeros":
        blank = np.isnan(np.asarray(raw, dtype=np.float32).reshape(out.shape))
        out[blank] = 0.0
    elif blank_policy != "nan":
        raise ConfigError(f"unknown blank policy {blank_policy!r}")
    return out if np.ndim(raw) > 1 else out[0]
