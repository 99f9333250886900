"""The dataset contract: what every reader yields.

Every dataset in `cxrvlp.core.data` yields `Sample` objects. Images are float32 grayscale arrays of shape
(H, W) in [0, 1] (0 = black = air for a standard radiograph; MONOCHROME1 DICOMs are inverted on read).
Labels are a float32 vector over the dataset's `classes` with 1 = positive, 0 = negative and NaN = uncertain
or not mentioned; each reader documents how it maps the source's own codes (e.g. CheXpert's -1) through a
`uncertain_policy` argument ("nan" | "zeros" | "ones" | "keep").
Boxes are float32 (K, 4) arrays in xyxy pixel coordinates of the returned image with `box_labels` naming the
class of each; masks are uint8 (H, W) (or (C, H, W)) arrays, 1 inside the finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

OnError = Literal["raise", "skip"]
"""What a reader does with a corrupt image or malformed row: raise the library's error, or skip it,
log it and count it in `Dataset.skipped` (never drop silently)."""


@dataclass
class Sample:
    """One image of a dataset with everything the source says about it."""

    image: np.ndarray | None  # (H, W) float32 in [0, 1]; None when the reader was asked for metadata only
    image_path: str
    dataset: str
    classes: Sequence[str] = ()
    labels: np.ndarray | None = None  # (C,) float32: 1 / 0 / NaN
    report: str | None = None  # full report text when the source has one
    sections: Mapping[str, str] = field(default_factory=dict)  # e.g. {"findings": ..., "impression": ...}
    boxes: np.ndarray | None = None  # (K, 4) float32 xyxy in this image's pixels
    box_labels: Sequence[str] = ()
    mask: np.ndarray | None = None  # (H, W) or (C, H, W) uint8
    patient_id: str | None = None
    study_id: str | None = None
    view: str | None = None  # "PA", "AP", "LATERAL", ... as the source writes it, upper-case
    meta: Mapping[str, Any] = field(default_factory=dict)  # the aligned source row(s), unmodified values
