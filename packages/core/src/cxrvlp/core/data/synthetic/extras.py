"""Synthetic mirrors of the benchmark's extra datasets: VinDr-CXR, ChestX-Det10, MS-CXR, COVID-Rural.

Small on purpose (they exist so that every benchmark registry entry can be opened by its reader and split
in a test): the official file layouts and columns, phantom images whose boxes and masks come from the
drawn findings. Same notice as every mirror: SYNTHETIC, not patient data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cxrvlp.core.data.synthetic.cases import sample_case
from cxrvlp.core.data.synthetic.files import dataset_rng, write_dicom, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom

# finding -> class name in each dataset's vocabulary (findings without an entry are not labelled there)
_VINDR = {
    "pleural_effusion": "Pleural effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "nodule": "Nodule/Mass",
    "mass": "Nodule/Mass",
    "atelectasis": "Atelectasis",
}
VINDR_LABEL_COLUMNS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening",
    "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia",
    "Tuberculosis", "Other diseases", "No finding",
)  # fmt: skip
_DET10 = {
    "pleural_effusion": "Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "nodule": "Nodule",
    "mass": "Mass",
}
_MSCXR = {
    "pleural_effusion": ("Pleural Effusion", "{side} pleural effusion"),
    "pneumothorax": ("Pneumothorax", "{side} pneumothorax"),
    "cardiomegaly": ("Cardiomegaly", "enlarged heart"),
    "consolidation": ("Consolidation", "{side} consolidation"),
    "pneumonia": ("Pneumonia", "{side} pneumonia"),
    "atelectasis": ("Atelectasis", "{side} basilar atelectasis"),
    "edema": ("Edema", "pulmonary edema"),
}


def _box(mask: np.ndarray) -> list[float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]  # xyxy


def _cases(rng: np.random.Generator, n: int, image_size: int):
    for k in range(n):
        case = sample_case(rng, uncertain_rate=0.0)
        img, masks = render_phantom(case.findings, rng, image_size)
        yield k, case, img, masks


def write_vindr(root: str | Path, n_images: int = 40, seed: int = 0, image_size: int = 256) -> Path:
    """PhysioNet VinDr-CXR layout: annotations/image_labels_{train,test}.csv, annotations_{...}.csv, DICOMs.

    Three radiologists label every train image (as released), one consensus row per test image.
    """
    root = Path(root)
    rng = dataset_rng(seed, "vindr-cxr")
    counts = {}
    for split in ("train", "test"):
        n = n_images if split == "train" else max(4, n_images // 3)
        labels, boxes = [], []
        for k, case, img, masks in _cases(rng, n, image_size):
            iid = f"{split}{k:05d}{seed:03d}"
            write_dicom(
                root / split / f"{iid}.dicom", img, sop_uid=f"1.2.3.{k}", study_uid=f"1.2.4.{k}",
                series_uid=f"1.2.5.{k}", patient_id=iid, sex=case.sex, age=case.age, view="PA",
            )  # fmt: skip
            names = sorted({_VINDR[f] for f in case.findings if f in _VINDR})
            rads = ("R1", "R2", "R3") if split == "train" else ("R8",)
            for rad in rads:
                row = [iid, rad] + [int(c in names) for c in VINDR_LABEL_COLUMNS[:-1]] + [int(not names)]
                labels.append(row)
                for f, m in masks.items():
                    b = _box(m) if f in _VINDR else None
                    if b is not None:
                        boxes.append([iid, rad, _VINDR[f], *b])
                if not names:
                    boxes.append([iid, rad, "No finding", "", "", "", ""])
        head = "image_id,rad_id," + ",".join(VINDR_LABEL_COLUMNS)
        write_text(root / "annotations" / f"image_labels_{split}.csv",
                   head + "\n" + "".join(",".join(map(str, r)) + "\n" for r in labels))  # fmt: skip
        write_text(root / "annotations" / f"annotations_{split}.csv",
                   "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
                   + "".join(",".join(map(str, r)) + "\n" for r in boxes))  # fmt: skip
        counts[f"images_{split}"] = n
    write_meta(root, "vindr-cxr", seed, counts, image_size=image_size)
    return root


def write_chestx_det10(root: str | Path, n_images: int = 30, seed: int = 0, image_size: int = 256) -> Path:
    """ChestX-Det10 layout: {train,test}.json ([{file_name, syms, boxes}]) and {train,test}_data/*.png."""
    root = Path(root)
    rng = dataset_rng(seed, "chestx-det10")
    for split in ("train", "test"):
        entries = []
        for k, _case, img, masks in _cases(rng, n_images, image_size):
            name = f"{36000 + k + (0 if split == 'test' else 5000)}.png"
            write_image(root / f"{split}_data" / name, img)
            syms, bxs = [], []
            for f, m in masks.items():
                b = _box(m) if f in _DET10 else None
                if b is not None:
                    syms.append(_DET10[f])
                    bxs.append([int(v) for v in b])
            entries.append({"file_name": name, "syms": syms, "boxes": bxs})
        write_text(root / f"{split}.json", json.dumps(entries))
    write_meta(root, "chestx-det10", seed, {"images_per_split": n_images}, image_size=image_size)
    return root


def write_ms_cxr(root: str | Path, n_images: int = 30, seed: int = 0, image_size: int = 256) -> Path:
    """MS-CXR layout: MS_CXR_Local_Alignment_v1.0.0.csv over files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom>.jpg."""
    root = Path(root)
    rng = dataset_rng(seed, "ms-cxr")
    rows, n = [], 0
    while n < n_images:
        case = sample_case(rng, uncertain_rate=0.0, force=(str(rng.choice(list(_MSCXR))),))
        img, masks = render_phantom(case.findings, rng, image_size)
        pid, sid = 10_000_000 + n, 50_000_000 + n
        dicom = f"{n:08x}-{seed:08x}-synthetic"
        rel = f"files/p{str(pid)[:2]}/p{pid}/s{sid}/{dicom}.jpg"
        rows_here = []
        for f, m in masks.items():
            b = _box(m) if f in _MSCXR else None
            if b is None:
                continue
            cat, phrase = _MSCXR[f]
            side = case.findings[f].get("side", "right")
            x, y, w, h = b[0], b[1], b[2] - b[0], b[3] - b[1]
            rows_here.append([dicom, cat, phrase.format(side=side), rel, x, y, w, h, image_size, image_size])
        if not rows_here:
            continue
        write_image(root / rel, img)
        rows += rows_here
        n += 1
    head = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height"
    write_text(root / "MS_CXR_Local_Alignment_v1.0.0.csv",
               head + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))  # fmt: skip
    write_meta(root, "ms-cxr", seed, {"images": n, "boxes": len(rows)}, image_size=image_size)
    return root


def write_covid_rural(root: str | Path, n_images: int = 30, seed: int = 0, image_size: int = 256) -> Path:
    """COVID-Rural layout: jpgs/<stem>.jpg, pngs_masks/<stem>.png (lesion = pneumonia/consolidation mask).

    No split CSVs (as when MAVL's are not downloaded): the benchmark derives its split and says so.
    """
    root = Path(root)
    rng = dataset_rng(seed, "covid-rural")
    for k, _case, img, masks in _cases(rng, n_images, image_size):
        stem = f"COVID-19-AR-{16400000 + k}"
        write_image(root / "jpgs" / f"{stem}.jpg", img)
        lesion = sum((masks[f] for f in ("pneumonia", "consolidation") if f in masks), np.zeros_like(img))
        write_image(root / "pngs_masks" / f"{stem}.png", (np.asarray(lesion) > 0).astype(np.float32))
    write_meta(root, "covid-rural", seed, {"images": n_images}, image_size=image_size)
    return root


EXTRA_WRITERS = {
    "vindr-cxr": write_vindr,
    "chestx-det10": write_chestx_det10,
    "ms-cxr": write_ms_cxr,
    "covid-rural": write_covid_rural,
}
