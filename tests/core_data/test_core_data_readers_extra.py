"""The extra readers (VinDr-CXR, ChestX-Det10 / ChestX-Det, COVID-Rural): real files and tiny layouts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from cxrvlp.core.data import get_dataset
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

from .conftest import tiny_png, write_dicom


def test_vindr_kaggle_official(shared_dir, tmp_path):
    root = tmp_path / "vindr"
    root.mkdir()
    (root / "train.csv.gz").symlink_to(shared_dir / "data/labels/vinbigdata-train.csv.gz")
    ds = get_dataset("vindr-cxr", root, split="train", load_images=False)
    raw = pd.read_csv(shared_dir / "data/labels/vinbigdata-train.csv.gz")
    assert len(raw) == 67_914 and len(ds) == raw.image_id.nunique() == 15_000
    assert sum(len(r.boxes) for r in ds.records) == int((raw.class_id != 14).sum()) == 36_096
    lab = ds.label_matrix()
    per_class = raw[raw.class_id != 14].groupby("class_name").image_id.nunique()
    for j, c in enumerate(ds.classes):
        assert int(lab[:, j].sum()) == per_class[c]


def test_vindr_physionet_tiny(tmp_path):
    root = tmp_path / "vindr"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/image_labels_test.csv").write_text(
        "image_id,rad_ID,Aortic enlargement,Nodule/Mass,No finding\na,R1,0,1,0\na,R2,0,0,1\nb,R3,0,0,1\n"
    )
    (root / "annotations/annotations_test.csv").write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\na,R1,Nodule/Mass,1,2,5,6\nb,R3,No finding,,,,\n"
    )
    write_dicom(root / "test/a.dicom", np.arange(120, dtype=np.uint16).reshape(12, 10))
    ds = get_dataset("vindr-cxr", root)
    assert ds.classes == ("Aortic enlargement", "Nodule/Mass", "No finding")
    s = ds[0]
    assert s.labels.tolist() == [0, 1, 1] and s.box_labels == ["Nodule/Mass"] and s.meta["box_rads"] == ["R1"]
    np.testing.assert_allclose(s.boxes, [[1, 2, 5, 6]])
    assert s.image.shape == (12, 10) and ds.records[1].boxes.shape == (0, 4)


def test_chestx_det10_official(shared_dir, tmp_path):
    root = tmp_path / "det"
    root.mkdir()
    for split in ("train", "test"):
        (root / f"{split}.json").symlink_to(shared_dir / f"data/splits_more/chestx_det10/{split}.json")
        (root / f"ChestX_Det_{split}.json").symlink_to(
            shared_dir / f"data/splits_more/chestx_det/ChestX_Det_{split}.json"
        )
    test = get_dataset("chestx-det10", root, split="test", load_images=False)
    raw = json.loads((root / "test.json").read_text())
    assert len(test) == len(raw) == 542 and not test.skipped
    assert sum(len(r.boxes) for r in test.records) == sum(len(e["boxes"]) for e in raw)
    train = get_dataset("chestx-det10", root, split="train", load_images=False)
    assert len(train) + len(test) == 3_543
    det13 = get_dataset("chestx-det10", root, split="test", version="det13", load_images=False)
    assert len(det13) == 553 and det13.records[0].meta["polygons"] is not None


def test_chestx_det_tiny_and_bad(tmp_path):
    root = tmp_path / "det"
    root.mkdir()
    entries = [
        {"file_name": "1.png", "syms": ["Mass"], "boxes": [[1, 1, 4, 5]]},
        {"file_name": "2.png", "syms": ["Mass"], "boxes": [[1, 1]]},
    ]
    (root / "test.json").write_text(json.dumps(entries))
    tiny_png(root / "test_data/1.png")
    with pytest.raises(MalformedRecordError, match="entry 1"):
        get_dataset("chestx-det10", root)
    ds = get_dataset("chestx-det10", root, on_error="skip")
    assert len(ds) == 1 and len(ds.skipped) == 1 and ds[0].labels[7] == 1 and ds[0].image.shape == (12, 10)
    (root / "test.json").write_text("[{")
    with pytest.raises(MalformedRecordError, match="invalid JSON"):
        get_dataset("chestx-det10", root)


def test_covid_rural(shared_dir, tmp_path):
    root = tmp_path / "cr"
    for stem, lesion in (("COVID-19-AR-1", True), ("COVID-19-AR-2", False)):
        tiny_png(root / f"jpgs/{stem}.png").rename(root / f"jpgs/{stem}.jpg")
        m = np.zeros((12, 10), np.uint8)
        if lesion:
            m[3:6, 2:5] = 255
        (root / "pngs_masks").mkdir(exist_ok=True)
        cv2.imwrite(str(root / f"pngs_masks/{stem}.png"), m)
    ds = get_dataset("covid-rural", root)
    assert [s.labels[0] for s in ds] == [1, 0] and ds[0].mask.sum() == 9 and ds[0].mask.max() == 1
    split = shared_dir / "data/splits/covid_rural/test.csv"
    with pytest.raises(DatasetNotFoundError, match="pngs_masks"):
        get_dataset("covid-rural", root, split_csv=split)
    skip = get_dataset("covid-rural", root, split_csv=split, on_error="skip")
    assert len(skip) == 0 and len(skip.skipped) == 45  # MAVL's 45 test studies, none present here
