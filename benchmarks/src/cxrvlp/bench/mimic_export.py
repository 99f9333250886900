"""Write manifest rows with text as a MIMIC-CXR-JPG-shaped folder, so that every method's own training
entry point (which reads MIMIC-CXR) can run a short contrastive fine-tune on real images.

One manifest row becomes one study with one frontal image. The row's free text (clinical notes in
../shared/data/real, not radiology reports) goes under FINDINGS, its first sentence under IMPRESSION.
Manifest labels whose names are CheXpert classes fill the CheXpert/NegBio tables (1.0), the rest stay blank.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

from cxrvlp.bench.sources import split_part
from cxrvlp.core.data.synthetic.mimic_cxr import METADATA_COLUMNS

CHEXPERT14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)


META_COLUMNS = METADATA_COLUMNS  # the official mimic-cxr-2.0.0-metadata.csv header


def _num(text: str, digits: int) -> int:
    """A stable integer id with `digits` digits from a string."""
    lo = 10 ** (digits - 1)
    return lo + int(hashlib.sha256(text.encode()).hexdigest(), 16) % (9 * lo)


def _dicom_id(text: str) -> str:
    h = hashlib.sha256(("dicom:" + text).encode()).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def _gz_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def export_mimic(
    rows: Sequence[dict[str, str]], images_root: Path, out: Path, val_fraction: float = 0.1
) -> Path:
    """Rows with a non-empty `report` -> out/ in the MIMIC-CXR-JPG 2.0.0 layout; returns out."""
    import cv2
    from cxrvlp.core.data import read_image

    out.mkdir(parents=True, exist_ok=True)
    split_rows, meta_rows, label_rows = [], [], []
    for r in rows:
        text = " ".join(str(r.get("report") or "").split())
        if not text:
            continue
        subject = _num("subject:" + r["patient_id"], 8)
        study = _num("study:" + r["image_path"], 8)
        dicom = _dicom_id(r["image_path"])
        folder = out / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        img = read_image(images_root / r["image_path"])  # (H, W) in [0, 1]
        cv2.imwrite(str(folder / f"s{study}" / f"{dicom}.jpg"), (img * 255).round().astype("uint8"))
        first = re.split(r"(?<=[.!?])\s+", text)[0]
        (folder / f"s{study}.txt").write_text(
            f"                                 FINAL REPORT\n FINDINGS:\n {text}\n\n IMPRESSION:\n {first}\n"
        )
        part = "validate" if split_part(r["patient_id"], (1 - val_fraction, 1.0)) != "train" else "train"
        split_rows.append((dicom, study, subject, part))
        view = (r.get("view") or "PA").upper()
        view = view if view in ("PA", "AP") else "PA"
        h, w = img.shape
        meta_rows.append(
            (
                dicom,
                subject,
                study,
                f"CHEST ({view})",
                view,
                h,
                w,
                21000101,
                0.0,
                f"CHEST ({view})",
                "postero-anterior" if view == "PA" else "antero-posterior",
                "Erect",
            )
        )
        labs = set(filter(None, r.get("labels", "").split("|")))
        label_rows.append((subject, study, *("1.0" if c in labs else "" for c in CHEXPERT14)))
    if not split_rows:
        raise ValueError("export_mimic: no manifest row has report text")
    _gz_csv(out / "mimic-cxr-2.0.0-split.csv.gz", ("dicom_id", "study_id", "subject_id", "split"), split_rows)
    _gz_csv(
        out / "mimic-cxr-2.0.0-metadata.csv.gz",
        META_COLUMNS,
        meta_rows,
    )  # fmt: skip
    for name in ("chexpert", "negbio"):
        _gz_csv(out / f"mimic-cxr-2.0.0-{name}.csv.gz", ("subject_id", "study_id", *CHEXPERT14), label_rows)
    return out
