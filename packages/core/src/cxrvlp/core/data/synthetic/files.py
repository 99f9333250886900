"""Byte-deterministic file writing for the mirrors: CSV (plain / gzip), images, DICOM, UIDs, meta."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

GENERATOR_VERSION = "1.3.0"
"""Bumped whenever the mirrors' content changes for a given seed (1.1.0: MIMIC prevalence and negation rates
follow the real CheXpert labeler's, issue 26; 1.2.0: the CheXpert mirror also writes a CXR-CLIP-style prompt
bank, synthetic_train_prompts.json; 1.3.0: impressions lead with the urgent findings, reports.py
_IMPRESSION_ORDER)."""

SYNTHETIC_NOTICE = (
    "These data are SYNTHETIC PHANTOMS written by cxrvlp.core.data.synthetic. They are not patient data,\n"
    "not radiographs and not a substitute for the real datasets: every image is a procedural drawing and\n"
    "every report is a template. They mirror only the FILE FORMATS of the official datasets so that the\n"
    "readers, training loops and benchmark run end to end on a machine that has none of the real data.\n"
    "Numbers measured on them say nothing about clinical performance.\n"
)


def dataset_rng(seed: int, name: str) -> np.random.Generator:
    """An independent generator per (seed, dataset name), so datasets do not shift each other's draws."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[object]], sep: str = ",") -> str:
    """CSV text with minimal quoting and '\\n' line ends (as pandas writes the official files)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    if header is not None:
        w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def write_text(path: Path, text: str, compress: bool | None = None) -> Path:
    """Write text; gzip it (mtime 0, no file name: byte-identical across runs) when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if compress or (compress is None and path.name.endswith(".gz")):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    path.write_bytes(data)
    return path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_image(path: Path, image: np.ndarray, bits: int = 8, jpeg_quality: int = 95) -> Path:
    """Write float [0, 1] (H, W) as PNG (8 or 16 bit) or JPEG, chosen by the file suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        ok, buf = cv2.imencode(".jpg", to_uint8(image), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    elif bits == 16:
        ok, buf = cv2.imencode(".png", np.rint(np.clip(image, 0, 1) * 65535.0).astype(np.uint16))
    else:
        ok, buf = cv2.imencode(".png", to_uint8(image))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    path.write_bytes(buf.tobytes())
    return path


def dicom_uid(rng: np.random.Generator, kind: int = 4) -> str:
    """A UID in the style of the MD.ai exports of RSNA / SIIM (1.2.276.0.7230010.3.1.<kind>.8323329....)."""
    a = int(rng.integers(1, 32000))
    b = int(rng.integers(1517874000, 1517876000))
    c = int(rng.integers(1, 999999))
    return f"1.2.276.0.7230010.3.1.{kind}.8323329.{a}.{b}.{c}"


def write_dicom(
    path: Path,
    image: np.ndarray,
    *,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    patient_id: str,
    sex: str,
    age: int,
    view: str,
    jpeg: bool = True,
) -> Path:
    """Write an 8-bit MONOCHROME2 secondary-capture DICOM like the RSNA / SIIM exports.

    jpeg=True stores the pixels as JPEG Baseline (Process 1), the transfer syntax of the real files
    (encoded with OpenCV, encapsulated by pydicom); jpeg=False stores them uncompressed (Explicit VR LE).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

    px = to_uint8(image)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.276.0.7230010.3.0.3.6.0"
    meta.ImplementationVersionName = "OFFIS_DCMTK_360"
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{int(age):03d}Y"  # the real exports write a bare number (an invalid AS value)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = px.shape
    ds.PixelSpacing = [0.168, 0.168]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if jpeg:
        ok, buf = cv2.imencode(".jpg", px, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode the JPEG frame")
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = px.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_meta(root: Path, name: str, seed: int, counts: dict[str, int], **extra: object) -> Path:
    """Write `<root>/synthetic.json`: what wrote this folder, with which seed, and how many of what."""
    info = {
        "dataset": name,
        "synthetic": True,
        "generator": "cxrvlp.core.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "counts": counts,
        **extra,
        "notice": SYNTHETIC_NOTICE.replace("\n", " ").strip(),
    }
    return write_text(root / "synthetic.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
