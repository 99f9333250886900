"""Writers of tiny datasets in the official formats, made at test time (no data from ../shared copied)."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPORT_FULL = "\n".join(
    [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        " INDICATION:  ___F with cough",
        " ",
        " COMPARISON:  None.",
        " ",
        " FINDINGS: ",
        " ",
        " The lungs are clear. No pleural effusion.",
        " Heart size is normal.",
        " ",
        " IMPRESSION: ",
        " ",
        " No acute cardiopulmonary process.",
        "",
    ]
)

REPORT_NO_SECTIONS = "\n".join(
    [
        "                                 FINAL REPORT",
        " CHEST RADIOGRAPH PERFORMED ON ___",
        " ",
        " Mild pulmonary edema. Small left effusion.",
        "",
    ]
)


def write_gz(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def tiny_png(path: Path, h: int = 12, w: int = 10, value: int = 100, bits: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w), value, np.uint16 if bits == 16 else np.uint8)
    arr[0, 0] = 0
    cv2.imwrite(str(path), arr)
    return path


CHEXPERT_ALPHA = sorted(
    [
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
    ]
)


def make_mimic(root: Path) -> Path:
    """2 patients, 3 studies, 5 images (one lateral), reports, chexpert labels in MIMIC's column order."""
    imgs = [  # dicom, subject, study, split, view
        ("d1", 10000032, 50414267, "train", "PA"),
        ("d2", 10000032, 50414267, "train", "LATERAL"),
        ("d3", 10000032, 53189527, "train", "AP"),
        ("d4", 11000011, 51111111, "test", "PA"),
        ("d5", 11000011, 51111111, "test", "AP"),
    ]
    write_gz(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{t},{s},{sp}\n" for d, s, t, sp, _ in imgs),
    )
    write_gz(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
        + "".join(f"{d},{s},{t},CHEST (PA AND LAT),{v},12,10\n" for d, s, t, _, v in imgs),
    )
    lab = {
        50414267: {"Cardiomegaly": "1.0", "Edema": "-1.0", "No Finding": ""},
        53189527: {"No Finding": "1.0"},
        51111111: {"Pleural Effusion": "0.0", "Atelectasis": "1.0"},
    }
    rows = [
        ",".join([str(s), str(t)] + [lab[t].get(c, "") for c in CHEXPERT_ALPHA])
        for s, t in [(10000032, 50414267), (10000032, 53189527), (11000011, 51111111)]
    ]
    hdr = "subject_id,study_id," + ",".join(CHEXPERT_ALPHA) + "\n"
    write_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", hdr + "\n".join(rows) + "\n")
    write_gz(root / "mimic-cxr-2.0.0-negbio.csv.gz", hdr + "\n".join(rows) + "\n")
    for d, s, t, _, _ in imgs:
        tiny_png(root / f"files/p{str(s)[:2]}/p{s}/s{t}/{d}.jpg".replace(".jpg", ".png"))
        (root / f"files/p{str(s)[:2]}/p{s}/s{t}/{d}.png").rename(
            root / f"files/p{str(s)[:2]}/p{s}/s{t}/{d}.jpg"
        )
    texts = {
        50414267: REPORT_FULL,
        53189527: REPORT_NO_SECTIONS,
        51111111: REPORT_FULL.replace("clear", "hazy"),
    }
    for (s, t), txt in zip(
        [(10000032, 50414267), (10000032, 53189527), (11000011, 51111111)], texts.values()
    ):
        p = root / f"files/p{str(s)[:2]}/p{s}/s{t}.txt"
        p.write_text(txt)
    return root


@pytest.fixture
def mimic_root(tmp_path) -> Path:
    return make_mimic(tmp_path / "mimic")


def write_dicom(path, arr: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None, window=None):
    """A minimal valid DICOM file with the given pixels (uint8/uint16/int16)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
