"""VinDr-CXR: radiologist boxes and image labels, DICOM images.

Accepted layouts (unmodified)::

    PhysioNet 1.0.0: <root>/annotations/image_labels_{train,test}.csv  (image_id, rad_ID, labels)
                     <root>/annotations/annotations_{train,test}.csv   (image_id, rad_id, class_name, box)
                     <root>/{train,test}/<image_id>.dicom
    Kaggle (VinBigData): <root>/train.csv (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max)
                     <root>/train/<image_id>.dicom

Labels: per class, 1 when any radiologist marked it (CXR-CLIP's aggregation: `groupby(image_id).sum() > 0`).
Classes: the label columns of image_labels_*.csv (PhysioNet) or the 14 abnormalities of the Kaggle CSV in
class_id order ("No finding" is not a class: all zeros). Boxes: every radiologist's box (xyxy, DICOM pixels),
`box_labels` = class names, `meta["box_rads"]` = who drew each.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from cxrvlp.core.data.base import CxrDataset, Record, find_file, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import BoxPolicy, validate_boxes
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError

NAME = "vindr-cxr"
KAGGLE_CLASSES = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)


class VinDrCXRDataset(CxrDataset):
    """VinDr-CXR images with radiologist-aggregated labels and all radiologists' boxes."""

    name = NAME

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "test"] = "test",
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        box_policy: BoxPolicy = "reject",
    ) -> None:
        # image sizes vary (DICOMs up to ~3000 px): at construction only x, y >= 0 and positive size are
        # checked, the image's own size when it is read (CxrDataset.make_sample)
        super().__init__(
            root, load_images=load_images, on_error=on_error, cache_dir=cache_dir, box_policy=box_policy
        )
        if split not in ("train", "test"):
            raise ConfigError(f"split must be train / test, got {split!r}")
        labels_csv = self.root / "annotations" / f"image_labels_{split}.csv"
        boxes_csv = self.root / "annotations" / f"annotations_{split}.csv"
        per_label: dict[str, np.ndarray] = {}
        if labels_csv.is_file():
            df = read_table(
                labels_csv,
                ("image_id",),
                on_error=self.on_error,
                skipped=self.skipped,
                nonblank=("image_id",),
            )
            cols = [c for c in df.columns if c not in ("image_id", "rad_id", "rad_ID")]
            self.classes = tuple(cols)
            num = df[cols].apply(pd.to_numeric, errors="coerce")
            bad = np.argwhere((num.isna() & df[cols].notna()).to_numpy())
            if len(bad):
                i, j = bad[0]
                raise MalformedRecordError(
                    labels_csv, int(i) + 2, f"{cols[j]}: not a number: {df[cols[j]].iloc[i]!r}"
                )
            vals = num.fillna(0).to_numpy(np.float32)
            for iid, v in zip(df["image_id"].astype(str), vals):
                per_label[iid] = np.maximum(per_label.get(iid, 0), (v > 0).astype(np.float32))
            box_path = boxes_csv if boxes_csv.is_file() else None
        else:
            try:
                box_path = find_file(
                    NAME, self.root, [f"{split}.csv"], f"annotations/image_labels_{split}.csv"
                )
            except DatasetNotFoundError as err:
                raise DatasetNotFoundError(
                    NAME, labels_csv, f"image_labels_{split}.csv or {split}.csv"
                ) from err
            self.classes = KAGGLE_CLASSES
        boxes: dict[str, list] = defaultdict(list)
        if box_path is not None:
            df = read_table(
                box_path,
                ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max"),
                on_error=self.on_error,
                skipped=self.skipped,
                nonblank=("image_id", "class_name"),
            )
            rad_col = "rad_id" if "rad_id" in df.columns else ("rad_ID" if "rad_ID" in df.columns else None)
            cidx = {c: j for j, c in enumerate(self.classes)}
            for i, row in enumerate(df.itertuples(index=False)):
                iid, cname = str(row.image_id), str(row.class_name)
                per_label.setdefault(iid, np.zeros(len(self.classes), np.float32))
                coords = [row.x_min, row.y_min, row.x_max, row.y_max]
                try:
                    try:
                        c = [float(v) for v in coords]
                    except (TypeError, ValueError) as exc:
                        raise MalformedRecordError(box_path, i + 2, f"box is not numeric: {coords}") from exc
                    if all(np.isnan(c)):
                        continue  # "No finding" rows have no box
                    b = validate_boxes(
                        np.array(c, np.float32), box_path, i + 2, None, self.box_policy, self.clipped
                    )[0]
                except MalformedRecordError as err:
                    self._skip(err)
                    continue
                rad = getattr(row, rad_col) if rad_col else None
                boxes[iid].append((cname, b, rad))
                if not labels_csv.is_file() and cname in cidx:
                    per_label[iid][cidx[cname]] = 1.0
        img_dir = os.path.join(self.root_str, split)
        for iid, lab in per_label.items():
            bx = boxes.get(iid, [])
            self.records.append(
                Record(
                    image_path=os.path.join(img_dir, f"{iid}.dicom"),
                    labels=np.asarray(lab, np.float32),
                    boxes=np.stack([b for _, b, _ in bx]) if bx else np.zeros((0, 4), np.float32),
                    box_labels=[c for c, _, _ in bx],
                    study_id=iid,
                    meta={"image_id": iid, "box_rads": [r for _, _, r in bx]},
                )
            )
