"""Round trip: each core reader loads its synthetic mirror with the expected counts, labels, boxes, masks."""

from __future__ import annotations

import csv
import gzip
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from cxrvlp.core.data.synthetic.cases import CHEXPERT_CLASSES

SIZE = 64


@pytest.fixture()
def mirrors(synthetic_mirrors) -> dict[str, Path]:
    return synthetic_mirrors


def _rows(path: Path) -> list[dict[str, str]]:
    raw = gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="")
    with raw as f:
        return list(csv.DictReader(f))


def _code(v: str) -> float:
    return np.nan if v == "" else float(v)


def _counts(root: Path) -> dict:
    return json.loads((root / "synthetic.json").read_text())["counts"]


def test_mimic_cxr(mirrors):
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset

    root = mirrors["mimic-cxr"]
    split = _rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    meta = {r["dicom_id"]: r for r in _rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")}
    labels = {r["study_id"]: r for r in _rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    for s in ("train", "validate", "test"):
        ds = MimicCxrDataset(root, split=s, views=("PA", "AP"), uncertain_policy="keep")
        expected = [
            r for r in split if r["split"] == s and meta[r["dicom_id"]]["ViewPosition"] in ("PA", "AP")
        ]
        assert len(ds) == len(expected) > 0, s
    ds = MimicCxrDataset(root, split="train", views=None, uncertain_policy="keep")
    assert len(ds) == sum(r["split"] == "train" for r in split) == _counts(root)["images_train"]
    for i in range(0, len(ds), max(1, len(ds) // 8)):
        sample = ds[i]
        assert sample.image.shape == (SIZE, SIZE)
        row = labels[sample.study_id]
        want = np.array([_code(row[c]) for c in ds.classes], np.float32)
        np.testing.assert_array_equal(sample.labels, want)
        assert sample.sections["impression"] or sample.sections["findings"]
        assert "FINAL REPORT" in sample.report


def test_chexpert_splits(mirrors):
    from cxrvlp.core.data.chexpert import CheXpertDataset

    root = mirrors["chexpert"]
    counts = _counts(root)
    train = CheXpertDataset(root, split="train", uncertain_policy="keep", load_images=False)
    assert len(train) == counts["train_images"]
    rows = _rows(root / "CheXpert-v1.0-small" / "train.csv")
    want = np.array([[_code(r[c]) for c in CHEXPERT_CLASSES] for r in rows], np.float32)
    np.testing.assert_array_equal(train.label_matrix(), want)
    valid = CheXpertDataset(root, split="valid")
    assert len(valid) == counts["valid_images"] and valid[0].image.shape == (SIZE, SIZE)
    test = CheXpertDataset(root, split="test")
    assert len(test) == counts["test_images"]
    lab = test.label_matrix()
    assert set(np.unique(lab)) <= {0.0, 1.0} and test[len(test) - 1].image is not None
    five = CheXpertDataset(root, split="5x200")
    assert len(five) == counts["five_x_200_images"]
    onehot = five.label_matrix()
    assert (onehot.sum(1) == 1).all() and (onehot.sum(0) > 0).all()
    assert five[0].image.shape == (SIZE, SIZE)


def test_chestxray14_with_boxes(mirrors):
    from cxrvlp.core.data.chestxray14 import ChestXray14Dataset

    root = mirrors["chestxray14"]
    counts = _counts(root)
    test = ChestXray14Dataset(root, split="test")
    train = ChestXray14Dataset(root, split="train_val", with_boxes=False)
    assert len(test) == counts["test"] and len(train) == counts["train_val"]
    entries = {}
    for line in (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]:
        name, labels = line.split(",")[:2]
        entries[name] = set(labels.split("|")) - {"No Finding"}
    boxes: dict[str, list] = {}
    for line in (root / "BBox_List_2017.csv").read_text().splitlines()[1:]:
        name, lab, *xywh = line.split(",")
        x, y, w, h = map(float, xywh)
        boxes.setdefault(name, []).append(
            ({"Infiltrate": "Infiltration"}.get(lab, lab), [x, y, x + w, y + h])
        )
    n_boxed = 0
    for i in range(len(test)):
        s = test[i]
        name = Path(s.image_path).name
        assert {c for c, v in zip(test.classes, s.labels) if v == 1} == entries[name]
        if name in boxes:
            n_boxed += 1
            assert sorted(s.box_labels) == sorted(b[0] for b in boxes[name])
            got = sorted(map(tuple, s.boxes.tolist()))
            np.testing.assert_allclose(got, sorted(tuple(b[1]) for b in boxes[name]), atol=1e-3)
    assert n_boxed == len(boxes) > 0


def test_padchest(mirrors):
    from cxrvlp.core.data.padchest import PadChestDataset

    root = mirrors["padchest"]
    ds = PadChestDataset(root)
    assert len(ds) == _counts(root)["images"]
    assert {"normal", "pleural effusion", "cardiomegaly"} <= set(ds.classes)
    s = ds[0]
    assert s.image.shape == (SIZE, SIZE) and s.image.max() == pytest.approx(1.0)
    assert s.labels.sum() >= 1 and s.report.startswith(" ")
    assert s.view in ("PA", "AP", "AP_HORIZONTAL", "L")


def test_openi(mirrors):
    from cxrvlp.core.data.openi import OpenIDataset

    root = mirrors["openi"]
    ds = OpenIDataset(root)
    assert len(ds) == _counts(root)["images"]
    for i in range(0, len(ds), max(1, len(ds) // 10)):
        s = ds[i]
        uid = Path(s.image_path).stem.split("_")[0][3:]  # CXR<uid>_IM-... -> <uid>
        xml = ET.parse(root / "ecgen-radiology" / f"{uid}.xml").getroot()
        texts = {a.get("Label").lower(): a.text or "" for a in xml.iter("AbstractText")}
        assert s.sections["findings"] == texts["findings"] and s.sections["impression"] == texts["impression"]
        majors = [m.text for m in xml.iter("major")]
        cardio = float(any(m.startswith("Cardiomegaly") for m in majors))
        assert s.labels[ds.classes.index("Cardiomegaly")] == cardio, (uid, majors)
        assert s.image.shape == (SIZE, SIZE)


def test_rsna(mirrors):
    from cxrvlp.core.data.rsna import RSNAPneumoniaDataset

    root = mirrors["rsna-pneumonia"]
    rows = _rows(root / "stage_2_train_labels.csv")
    ds = RSNAPneumoniaDataset(root)
    assert len(ds) == len({r["patientId"] for r in rows}) == _counts(root)["images"]
    by_pid: dict[str, list] = {}
    for r in rows:
        if r["Target"] == "1":
            x, y, w, h = (float(r[k]) for k in ("x", "y", "width", "height"))
            by_pid.setdefault(r["patientId"], []).append([x, y, x + w, y + h])
    assert by_pid
    for rec in ds.records:
        want = sorted(by_pid.get(rec.patient_id, []))
        assert rec.labels[0] == float(bool(want))
        assert sorted(rec.boxes.tolist()) == want
    for i in range(4):
        s = ds[i]
        assert s.image.shape == (SIZE, SIZE)  # JPEG-baseline DICOM decoded
        assert s.boxes.shape[1] == 4 and (s.boxes[:, 2:] <= SIZE).all()


def test_siim_masks(mirrors):
    from cxrvlp.core.data.geometry import decode_rle
    from cxrvlp.core.data.siim import SIIMPneumothoraxDataset

    root = mirrors["siim-acr"]
    rows = _rows(root / "train-rle.csv")
    ds = SIIMPneumothoraxDataset(root)
    assert len(ds) == _counts(root)["images"]
    want: dict[str, np.ndarray] = {}
    for r in rows:
        m = decode_rle(r[" EncodedPixels"], SIZE, SIZE)
        want[r["ImageId"]] = np.maximum(want.get(r["ImageId"], m * 0), m)
    n_pos = 0
    for i in range(len(ds)):
        s = ds[i]
        m = want[s.study_id]
        assert s.mask.shape == s.image.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(s.mask, m)
        assert s.labels[0] == float(m.any())
        n_pos += int(m.any())
        if m.any():
            # the masked pneumothorax is the most lucent part of its neighbourhood (pixels agree with mask)
            ring = cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(bool) & ~m.astype(bool)
            assert s.image[m.astype(bool)].mean() < s.image[ring].mean()
    assert n_pos == _counts(root)["positive"] > 0
    split = SIIMPneumothoraxDataset(root, split_csv=root / "splits" / "test.csv", load_images=False)
    assert 0 < len(split) < len(ds)


def test_covidx(mirrors):
    from cxrvlp.core.data.covidx import COVIDxDataset

    root = mirrors["covidx"]
    counts = _counts(root)
    for split in ("train", "val", "test"):
        ds = COVIDxDataset(root, split=split)
        assert len(ds) == counts[f"{split}_images"]
        assert int(ds.label_matrix().sum()) == counts[f"{split}_positive"]
    assert ds[0].image.shape == (SIZE, SIZE)


def test_mimic_master_table(mirrors, tmp_path):
    from cxrvlp.core.data.mimic_cxr import prepare_master_table

    root = mirrors["mimic-cxr"]
    split = _rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    df = prepare_master_table(root, tmp_path / "master.csv", method="mgca")
    assert len(df) == len(split)  # every synthetic report has a findings or an impression section
    assert set(df["split"]) == {"train", "validate", "test"}
    assert all((root / p).is_file() or (root / p.split("/", 1)[1]).is_file() for p in df["Path"][:20])
    assert (df["impression"].str.strip() != "").mean() > 0.9
