"""MS-CXR (Boecking et al. 2022, PhysioNet): phrase-grounding boxes over MIMIC-CXR-JPG images.

Expected layout (the official release next to, or pointing at, MIMIC-CXR-JPG)::

    <root>/MS_CXR_Local_Alignment_v1.0.0.csv     one row per (image, phrase, box); columns
        dicom_id, category_name, label_text, path, x, y, w, h, image_width, image_height
    <root>/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg   (or `mimic_root=<MIMIC-CXR-JPG folder>`)

`path` is the image path relative to the MIMIC-CXR-JPG root as released ("files/p1x/.../<dicom>.jpg"; the
.dcm suffix of the DICOM-based path is read as .jpg). Boxes are x, y, w, h in the pixels of the full-size
image (image_width x image_height) and are returned as xyxy. One Sample per image: labels are multi-hot
over the 8 MS-CXR categories, `box_labels` names each box's category and `meta["phrases"]` holds the
phrase of each box (same order).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import validate_boxes, xywh_to_xyxy
from cxrvlp.core.errors import MalformedRecordError

NAME = "ms-cxr"
MSCXR_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)
CSV_NAMES = ("MS_CXR_Local_Alignment_v1.0.0.csv", "ms_cxr.csv")
COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h")


class MSCXRDataset(CxrDataset):
    """MS-CXR test images with their phrase boxes (the whole release is an evaluation set)."""

    name = NAME
    classes = MSCXR_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        mimic_root: str | Path | None = None,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        if split != "test":
            from cxrvlp.core.errors import ConfigError

            raise ConfigError(f"ms-cxr has one split, 'test' (the whole release), got {split!r}")
        path = find_file(NAME, self.root, CSV_NAMES, CSV_NAMES[0])
        df = read_table(path, COLUMNS, skipped=self.skipped, on_error=on_error)
        img_root = str(Path(mimic_root) if mimic_root is not None else self.root)
        cidx = {c.lower(): j for j, c in enumerate(self.classes)}
        by_image: dict[str, Record] = {}
        for k, row in enumerate(df.itertuples(index=False), start=2):
            r = row._asdict()
            try:
                cat = str(r["category_name"]).strip()
                if cat.lower() not in cidx:
                    raise MalformedRecordError(path, k, f"unknown category {cat!r}; known: {self.classes}")
                try:
                    xywh = np.array([[float(r[c]) for c in "xywh"]], np.float32)
                except (TypeError, ValueError) as exc:
                    raise MalformedRecordError(path, k, f"box x, y, w, h not numeric: {exc}") from exc
                box = validate_boxes(xywh_to_xyxy(xywh), path, k)
            except MalformedRecordError as err:
                self._skip(err)
                continue
            rel = str(r["path"]).strip()
            rel = rel[: -len(".dcm")] + ".jpg" if rel.endswith(".dcm") else rel
            rec = by_image.get(rel)
            if rec is None:
                rec = Record(
                    image_path=os.path.join(img_root, rel),
                    labels=np.zeros(len(self.classes), np.float32),
                    boxes=np.zeros((0, 4), np.float32),
                    patient_id=next((p for p in rel.split("/") if p.startswith("p") and len(p) > 3), None),
                    study_id=str(r["dicom_id"]),
                    meta={"phrases": []},
                )
                by_image[rel] = rec
            rec.labels[cidx[cat.lower()]] = 1.0
            rec.boxes = np.concatenate([rec.boxes, box])
            rec.box_labels.append(self.classes[cidx[cat.lower()]])
            rec.meta["phrases"].append(str(r["label_text"]))
        self.records = list(by_image.values())
