"""RSNA Pneumonia Detection mirror: stage_2_train_labels.csv (one row per box), the detailed class file
and 8-bit MONOCHROME2 DICOMs under stage_2_train_images/."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
from cxrvlp.core.data.synthetic.cases import sample_case
from cxrvlp.core.data.synthetic.files import (
    csv_text,
    dataset_rng,
    dicom_uid,
    write_dicom,
    write_meta,
    write_text,
)
from cxrvlp.core.data.synthetic.phantom import render_phantom

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")


def component_boxes(mask: np.ndarray, min_frac: float = 0.0015) -> list[tuple[float, float, float, float]]:
    """(x, y, w, h) boxes of a mask's opacities: one per lung (components grouped by the side of their
    centroid, as a reader would draw one box around a patchy region), specks under min_frac dropped."""
    n, _, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = max(12, min_frac * mask.size)
    sides: dict[bool, list[int]] = {}
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= min_area:
            sides.setdefault(bool(cents[i][0] >= mask.shape[1] / 2), []).append(i)
    out = []
    for comps in sides.values():
        x0 = min(stats[i, 0] for i in comps)
        y0 = min(stats[i, 1] for i in comps)
        x1 = max(stats[i, 0] + stats[i, 2] for i in comps)
        y1 = max(stats[i, 1] + stats[i, 3] for i in comps)
        out.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return sorted(out)


def write_rsna(
    root: str | Path, n_images: int = 200, seed: int = 0, image_size: int = 256, jpeg: bool = True
) -> Path:
    """Write an RSNA pneumonia mirror under root; returns root.

    About a third of the images have pneumonia (one box per opacity, two for bilateral disease); of the
    rest about half have another finding ("No Lung Opacity / Not Normal") and half none ("Normal").
    Boxes are in the pixels of the written DICOM. jpeg: JPEG Baseline pixel data, as in the real files.
    """
    root = Path(root)
    rng = dataset_rng(seed, "rsna-pneumonia")
    rows, classes = [], []
    n_pos = 0
    for _ in range(n_images):
        pid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        r = rng.random()
        if r < 0.35:
            case = sample_case(
                rng, force=("pneumonia",), only=("pneumonia", "pleural_effusion", "support_devices")
            )
            if rng.random() < 0.25:
                case.findings["pneumonia"]["side"] = "bilateral"
            case.findings["pneumonia"]["severity"] = str(rng.choice(["moderate", "large"]))
        elif r < 0.67:
            case = sample_case(
                rng, only=("pleural_effusion", "cardiomegaly", "nodule", "mass", "pneumothorax")
            )
        else:
            case = sample_case(rng, only=())
        view = str(rng.choice(["PA", "AP"]))
        img, masks = render_phantom(case.findings, rng, image_size, view=view)
        boxes = component_boxes(masks["pneumonia"]) if "pneumonia" in masks else []
        if boxes:
            n_pos += 1
            for b in boxes:
                rows.append([pid, *(f"{v:.1f}" for v in b), 1])
                classes.append([pid, "Lung Opacity"])
        else:
            rows.append([pid, "", "", "", "", 0])
            classes.append([pid, "No Lung Opacity / Not Normal" if case.findings else "Normal"])
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            img,
            sop_uid=dicom_uid(rng, 4),
            study_uid=dicom_uid(rng, 2),
            series_uid=dicom_uid(rng, 3),
            patient_id=pid,
            sex=case.sex,
            age=case.age,
            view=view,
            jpeg=jpeg,
        )
    write_text(root / "stage_2_train_labels.csv", csv_text(LABEL_COLUMNS, rows))
    write_text(root / "stage_2_detailed_class_info.csv", csv_text(CLASS_COLUMNS, classes))
    write_meta(
        root,
        "rsna-pneumonia",
        seed,
        {"images": n_images, "positive": n_pos, "boxes": sum(r[-1] for r in rows)},
        image_size=image_size,
    )
    return root
