"""SIIM-ACR Pneumothorax mirror: train-rle.csv (competition RLE, one row per mask component) and DICOMs
under dicom-images-train/<study>/<series>/<ImageId>.dcm, plus MAVL-style split files."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
from cxrvlp.core.data.geometry import encode_rle
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


def mask_components(mask: np.ndarray, min_area: int = 8) -> list[np.ndarray]:
    """The connected components of a mask, one uint8 mask each (tiny specks dropped)."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = [(lab == i).astype(np.uint8) for i in range(1, n)]
    return [m for m in out if int(m.sum()) >= min_area]


def write_siim(
    root: str | Path,
    n_images: int = 200,
    seed: int = 0,
    image_size: int = 256,
    leading_space: bool = True,
    jpeg: bool = True,
) -> Path:
    """Write a SIIM-ACR mirror under root; returns root.

    train-rle.csv: header "ImageId, EncodedPixels"; each value written with a leading space (" -1" for no
    pneumothorax) as in the original Kaggle stage-1 file and MAVL's split files (leading_space=False
    writes them without, like the 2021 re-upload). Several rows for an image whose mask has several
    components. splits/{train,val,test}.csv: MAVL-style subsets (header "ImageId,EncodedPixels").
    """
    root = Path(root)
    rng = dataset_rng(seed, "siim-acr")
    sp = " " if leading_space else ""
    rows: list[list[str]] = []
    per_image: dict[str, list[list[str]]] = {}
    n_pos = 0
    for _ in range(n_images):
        if rng.random() < 0.35:
            case = sample_case(
                rng, force=("pneumothorax",), only=("pneumothorax", "support_devices"), uncertain_rate=0
            )
            if rng.random() < 0.15:
                case.findings["pneumothorax"]["side"] = "bilateral"
        else:
            case = sample_case(
                rng, only=("pleural_effusion", "cardiomegaly", "support_devices"), uncertain_rate=0
            )
        view = str(rng.choice(["PA", "AP"], p=[0.6, 0.4]))
        img, masks = render_phantom(case.findings, rng, image_size, view=view)
        sop, study, series = dicom_uid(rng, 4), dicom_uid(rng, 2), dicom_uid(rng, 3)
        comps = mask_components(masks["pneumothorax"]) if "pneumothorax" in masks else []
        # the competition's relative RLE, encoded by the core reader's own function
        img_rows = [[sop, sp + encode_rle(c, "relative")] for c in comps] or [[sop, sp + "-1"]]
        n_pos += bool(comps)
        rows += img_rows
        per_image[sop] = img_rows
        write_dicom(
            root / "dicom-images-train" / study / series / f"{sop}.dcm",
            img,
            sop_uid=sop,
            study_uid=study,
            series_uid=series,
            patient_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            sex=case.sex,
            age=case.age,
            view=view,
            jpeg=jpeg,
        )
    write_text(root / "train-rle.csv", csv_text(("ImageId", " EncodedPixels"), rows))
    ids = list(per_image)
    order = rng.permutation(len(ids))
    n_tr, n_va = int(0.6 * len(ids)), int(0.2 * len(ids))
    parts = {"train": order[:n_tr], "val": order[n_tr : n_tr + n_va], "test": order[n_tr + n_va :]}
    for name, idx in parts.items():
        split_rows = [r for i in sorted(idx.tolist()) for r in per_image[ids[i]]]
        write_text(root / "splits" / f"{name}.csv", csv_text(("ImageId", "EncodedPixels"), split_rows))
    write_meta(
        root,
        "siim-acr",
        seed,
        {"images": n_images, "positive": n_pos, "rle_rows": len(rows)},
        image_size=image_size,
    )
    return root
