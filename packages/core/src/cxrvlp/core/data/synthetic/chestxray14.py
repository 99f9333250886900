"""NIH ChestX-ray14 mirror: Data_Entry_2017_v2020.csv, train_val_list.txt / test_list.txt,
BBox_List_2017.csv (with the official header quirk) and 8-bit PNGs under images/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cxrvlp.core.data.synthetic.cases import FINDING_TO_CXR14, cxr14_labels, sample_case
from cxrvlp.core.data.synthetic.files import csv_text, dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
"""The official header: 9 names over 11 fields (the bracketed names hold commas, unquoted)."""
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
"""The official header: 'Bbox [x,y,w,h]' unquoted, then three empty names (6 fields, like the rows)."""

_BOX_NAME = {"Infiltration": "Infiltrate"}  # BBox_List spells it differently from Data_Entry
_BOXED = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
_SIZES = (
    (2500, 2048, "0.168"),
    (2048, 2500, "0.168"),
    (3056, 2544, "0.139"),
    (2682, 2749, "0.14300000000000002"),
)


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = float(xs.min()), float(ys.min())
    return x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0


def _patients_sized(rng: np.random.Generator, n_test: int, n_train: int):
    """(patient id, follow-up count, is test) until exactly n_test test and n_train train_val images."""
    pid, left = 0, {True: n_test, False: n_train}
    for is_test in (True, False):
        while left[is_test] > 0:
            pid += 1
            k = min(int(rng.integers(1, 5)), left[is_test])
            left[is_test] -= k
            yield pid, k, is_test


def write_chestxray14(
    root: str | Path,
    n_patients: int = 160,
    seed: int = 0,
    image_size: int = 256,
    n_test_images: int | None = None,
    n_train_images: int | None = None,
) -> Path:
    """Write a ChestX-ray14 mirror under root; returns root.

    1-4 images per patient ("<patient:08d>_<follow-up:03d>.png"); about a quarter of the patients are
    listed in test_list.txt, the rest in train_val_list.txt. Every test image with a boxed finding gets a
    BBox_List_2017.csv row per finding label: x, y, w, h in the pixels of the PNG as written (the official
    boxes are in the 1024-px PNG frame, i.e. also the PNG's own pixels).

    n_test_images: write exactly that many test images (whole patients, the last one truncated) and
    n_train_images (default half as many) train_val images; n_patients is then ignored.
    """
    root = Path(root)
    rng = dataset_rng(seed, "chestxray14")
    if n_test_images is None:
        test_patients = set((rng.permutation(n_patients)[: max(1, n_patients // 4)] + 1).tolist())
        plan = ((pid, None, pid in test_patients) for pid in range(1, n_patients + 1))
    else:  # exactly n_test_images test images (whole patients), then n_train_images (default half) train_val
        n_train = n_test_images // 2 if n_train_images is None else n_train_images
        plan = _patients_sized(rng, int(n_test_images), int(n_train))
        test_patients = set()
    entries, train_list, test_list, boxes = [], [], [], []
    n_patients = 0
    for pid, n_follow, is_test in plan:
        n_patients += 1
        if is_test:
            test_patients.add(pid)
        sex = str(rng.choice(["M", "F"]))
        age = int(rng.integers(18, 90))
        for follow in range(int(rng.integers(1, 5)) if n_follow is None else n_follow):
            name = f"{pid:08d}_{follow:03d}.png"
            case = sample_case(rng, uncertain_rate=0.0)
            case.findings.pop("support_devices", None)  # not an NIH label
            labels = cxr14_labels(case)
            # the NIH labeler often adds "Infiltration" to airspace disease
            if {"consolidation", "pneumonia"} & set(case.findings) and rng.random() < 0.5:
                labels = sorted({*labels, "Infiltration"} - {"No Finding"})
            view = str(rng.choice(["PA", "AP"], p=[0.6, 0.4]))
            img, masks = render_phantom(case.findings, rng, image_size, view=view)
            write_image(root / "images" / name, img)
            w, h, spacing = _SIZES[int(rng.integers(len(_SIZES)))]
            entries.append(
                [name, "|".join(labels), follow, pid, age + follow, sex, view, w, h, spacing, spacing]
            )
            (test_list if pid in test_patients else train_list).append(name)
            if pid not in test_patients:
                continue
            for finding, mask in masks.items():
                label = FINDING_TO_CXR14.get(finding)
                if label not in _BOXED or label not in labels:
                    continue
                box = _bbox(mask)
                if box is not None:
                    boxes.append([name, label, *box])
            if "Infiltration" in labels:
                union = sum(masks[f] for f in ("consolidation", "pneumonia") if f in masks)
                box = _bbox(union)
                if box is not None:
                    boxes.append([name, _BOX_NAME["Infiltration"], *box])
    write_text(root / "Data_Entry_2017_v2020.csv", DATA_ENTRY_HEADER + "\n" + csv_text(None, entries))
    write_text(root / "train_val_list.txt", "".join(f"{n}\n" for n in train_list))
    write_text(root / "test_list.txt", "".join(f"{n}\n" for n in test_list))
    box_rows = [[n, lab, *(f"{v:.12g}" if v != int(v) else f"{v:.1f}" for v in b)] for n, lab, *b in boxes]
    write_text(root / "BBox_List_2017.csv", BBOX_HEADER + "\n" + csv_text(None, box_rows))
    counts = {
        "images": len(entries),
        "patients": n_patients,
        "train_val": len(train_list),
        "test": len(test_list),
    }
    counts["boxes"] = len(boxes)
    test_set = set(test_list)
    for cls in (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Pneumothorax",
        "Nodule",
        "Mass",
        "Pneumonia",
        "Edema",
    ):
        counts[f"test_positive_{cls}"] = sum(
            1 for e in entries if e[0] in test_set and cls in e[1].split("|")
        )
    write_meta(root, "chestxray14", seed, counts, image_size=image_size)
    return root
