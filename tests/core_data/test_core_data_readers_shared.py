"""Every reader on the real official files in ../shared/data (row counts from data/README.md).

Roots are assembled at test time from symlinks to the shared files (nothing is copied).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cxrvlp.core.data import (
    ChestXray14Dataset,
    CheXpertDataset,
    COVIDxDataset,
    OpenIDataset,
    PadChestDataset,
    RSNAPneumoniaDataset,
    SIIMPneumothoraxDataset,
)
from cxrvlp.core.data.geometry import decode_rle, encode_rle, is_empty_rle
from cxrvlp.core.data.labels import CHEXPERT5


def link(root, name, target):
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(target)
    return p


@pytest.fixture
def data(shared_dir):
    return shared_dir / "data"


def test_chestxray14_official(data, tmp_path):
    root = tmp_path / "cxr14"
    link(root, "Data_Entry_2017_v2020.csv.gz", data / "labels/Data_Entry_2017_v2020.csv.gz")
    link(root, "BBox_List_2017.csv.gz", data / "labels/BBox_List_2017.csv.gz")
    ds = ChestXray14Dataset(root, split=None, load_images=False)
    assert len(ds) == 112_120 and not ds.skipped
    r = {rec.meta["Image Index"]: rec for rec in ds.records}["00000001_001.png"]
    assert [ds.classes[j] for j in np.flatnonzero(r.labels)] == ["Cardiomegaly", "Emphysema"]
    assert r.patient_id == "1" and r.view == "PA"
    bb = ChestXray14Dataset(root, split="bbox", load_images=False)
    assert len(bb) == 880 and sum(len(x.boxes) for x in bb.records) == 984
    s = {x.meta["Image Index"]: x for x in bb.records}["00013118_008.png"]
    i = s.box_labels.index("Atelectasis")
    np.testing.assert_allclose(
        s.boxes[i], [225.0847, 547.0192, 225.0847 + 86.7797, 547.0192 + 79.1864], atol=1e-3
    )
    assert "Infiltration" in {lbl for x in bb.records for lbl in x.box_labels}


def test_chestxray14_mavl_test_split_labels_agree(data, tmp_path):
    root = tmp_path / "cxr14"
    link(root, "Data_Entry_2017_v2020.csv.gz", data / "labels/Data_Entry_2017_v2020.csv.gz")
    split = data / "splits/xray14/test.csv"
    ds = ChestXray14Dataset(root, split=None, split_csv=split, load_images=False, with_boxes=False)
    mavl = pd.read_csv(split)
    assert len(ds) == len(mavl) == 25_596
    # MAVL's 14 columns (3 onwards) are the NIH order: our labels must equal theirs image by image
    np.testing.assert_array_equal(ds.label_matrix(), mavl.iloc[:, 3:].to_numpy(np.float32))
    assert int((ds.label_matrix().sum(1) == 0).sum()) == 9_861


def test_chexpert_official_csvs(data, tmp_path):
    root = tmp_path / "chexpert"
    link(root, "CheXpert-v1.0-small/train.csv.gz", data / "labels/chexpert_train.csv.gz")
    link(root, "CheXpert-v1.0-small/valid.csv", data / "splits/chexpertv1/valid.csv")
    link(root, "filter_test_labels.csv", data / "splits/chexpertv1/filter_test_labels.csv")
    link(root, "chexpert-5x200-meta.csv", data / "splits_more/medclip/chexpert-5x200-meta.csv")
    train = CheXpertDataset(root, "train", load_images=False)
    assert len(train) == 223_414 and not train.skipped
    s = train[1]  # patient00002/study2: Cardiomegaly -1, Lung Opacity 1, Edema -1, ...
    i = list(train.classes).index
    assert np.isnan(s.labels[i("Cardiomegaly")]) and s.labels[i("Lung Opacity")] == 1 and s.view == "AP"
    assert s.patient_id == "patient00002" and s.image_path.endswith("patient00002/study2/view1_frontal.jpg")
    valid = CheXpertDataset(root, "valid", load_images=False)
    assert len(valid) == 234
    u1 = CheXpertDataset(root, "valid", load_images=False, uncertain_policy="ones", blank_policy="zeros")
    assert np.nansum(valid.label_matrix()) == u1.label_matrix().sum()  # valid has no -1 and no blanks
    assert len(CheXpertDataset(root, "valid", frontal_only=True, load_images=False)) == 202
    test = CheXpertDataset(root, "test", classes=CHEXPERT5, load_images=False)
    assert len(test) == 500
    pos = dict(zip(CHEXPERT5, test.label_matrix().sum(0).astype(int)))
    assert pos == {
        "Atelectasis": 153,
        "Cardiomegaly": 151,
        "Consolidation": 29,
        "Edema": 78,
        "Pleural Effusion": 104,
    }
    five = CheXpertDataset(root, "5x200", load_images=False)
    assert len(five) == 1000 and five.label_matrix().sum(0).tolist() == [200.0] * 5
    assert five.records[0].image_path == str(
        root / "CheXpert-v1.0-small/train/patient07756/study1/view1_frontal.jpg"
    )


def test_padchest_official_csv(data, tmp_path):
    root = tmp_path / "padchest"
    csv = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
    link(root, csv, data / "labels" / csv)
    ds = PadChestDataset(root, load_images=False)
    assert len(ds) + len(ds.skipped) == 160_861
    assert len(ds.skipped) == 103 and all("blank Labels" in r for _, r in ds.skipped)
    assert "normal" in ds.classes and "" not in ds.classes and len(ds.classes) == 193
    s = ds[1]
    assert s.view == "L" and s.meta["Localizations"] == ["loc basal", "loc basal bilateral"]
    assert {ds.classes[j] for j in np.flatnonzero(s.labels)} == {
        "pulmonary fibrosis",
        "chronic changes",
        "kyphosis",
        "pseudonodule",
        "ground glass pattern",
    }
    n_manual = sum(r.meta["MethodLabel"] == "Physician" for r in ds.records)
    assert n_manual == 39_053  # the physician-labelled subset; none of its Labels cells is blank


def test_rsna_official_and_mavl(data, tmp_path):
    root = tmp_path / "rsna"
    link(root, "stage_2_train_labels.csv.zip", data / "labels/kaggle_stage_2_train_labels.csv.zip")
    ds = RSNAPneumoniaDataset(root, load_images=False)
    raw = pd.read_csv(data / "labels/kaggle_stage_2_train_labels.csv.zip")
    assert len(raw) == 30_227
    assert len(ds) == raw["patientId"].nunique() == 26_684
    assert int(ds.label_matrix().sum()) == raw.loc[raw.Target == 1, "patientId"].nunique() == 6_012
    assert sum(len(r.boxes) for r in ds.records) == int(raw.Target.sum()) == 9_555
    first = raw[raw.Target == 1].iloc[0]
    rec = {r.patient_id: r for r in ds.records}[first.patientId]
    x, y, w, h = first[["x", "y", "width", "height"]]
    assert any(np.allclose(b, [x, y, x + w, y + h]) for b in rec.boxes)
    test = RSNAPneumoniaDataset(tmp_path, split_csv=data / "splits/rsna/test.csv", load_images=False)
    assert len(test) == 5_337 and int(test.label_matrix().sum()) == 1_218
    val = RSNAPneumoniaDataset(tmp_path, split_csv=data / "splits/rsna/val.csv", load_images=False)
    assert len(val) == 4_933 and int(val.label_matrix().sum()) == 1_704
    b = [r for r in val.records if len(r.boxes)][0].boxes
    assert b.shape[1] == 4 and np.all(b[:, 2:] > b[:, :2])


def test_siim_official_rle_roundtrip(data, tmp_path):
    root = tmp_path / "siim"
    link(root, "train-rle.csv.gz", data / "labels/siim-pneumothorax-train-rle.csv.gz")
    ds = SIIMPneumothoraxDataset(root, load_images=False)
    raw = pd.read_csv(data / "labels/siim-pneumothorax-train-rle.csv.gz")
    raw.columns = [c.strip() for c in raw.columns]
    assert len(raw) == 12_954 and len(ds) == raw["ImageId"].nunique() and not ds.skipped
    pos_ids = set(raw.loc[~raw.EncodedPixels.str.strip().eq("-1"), "ImageId"])
    assert int(ds.label_matrix().sum()) == len(pos_ids)
    rles = [r for r in raw.EncodedPixels if not is_empty_rle(r)]
    for rle in rles[:40]:
        m = decode_rle(rle, 1024, 1024, "relative")
        assert m.any() and encode_rle(m, "relative") == " ".join(rle.split())
        np.testing.assert_array_equal(decode_rle(encode_rle(m, "absolute"), 1024, 1024, "absolute"), m)
    rec = next(r for r in ds.records if r.meta["n_masks"] > 1)
    mask = ds[ds.records.index(rec)].mask
    assert mask.shape == (1024, 1024) and mask.sum() >= max(decode_rle(x).sum() for x in rec.rle)
    test = SIIMPneumothoraxDataset(tmp_path, split_csv=data / "splits/siimacr/test.csv", load_images=False)
    assert len(test) == 2_264 and int(test.label_matrix().sum()) == len(
        {i for i, e in zip(*pd.read_csv(data / "splits/siimacr/test.csv").T.values) if not is_empty_rle(e)}
    )


def test_covidx_mavl_split_lines(data, tmp_path):
    counts = {"train": 20_990, "val": 6_027, "test": 2_969}
    for split, n in counts.items():
        f = data / f"splits/covidx-cxr2/{split}_split.csv"
        ds = COVIDxDataset(tmp_path, split=split, split_file=f, load_images=False)
        assert len(ds) == n and not ds.skipped and ds.classes == ("COVID-19",)
        if split == "test":
            assert int(ds.label_matrix().sum()) == 1_586
    s = ds[1]
    assert s.patient_id == "A113004" and s.meta["source"] == "stonybrook" and s.labels[0] == 1


def test_openi_xml_from_tgz(data, tmp_path):
    root = tmp_path / "openi"
    link(root, "NLMCXR_reports.tgz", data / "labels/NLMCXR_reports.tgz")
    few = OpenIDataset(root, load_images=False, max_reports=20)
    assert 0 < len(few) <= 60 and len({r.meta["uid"] for r in few.records}) <= 20
    ds = OpenIDataset(root, load_images=False)
    assert len({r.meta["uid"] for r in ds.records}) + len(ds.skipped) == 3_955
    assert len(ds) == 7_470 and len(ds.skipped) == 104
    cxr1 = [r for r in ds.records if r.meta["uid"] == "CXR1"]
    assert [Path(r.image_path).name for r in cxr1] == ["CXR1_1_IM-0001-3001.png", "CXR1_1_IM-0001-4001.png"]
    assert cxr1[0].sections["impression"] == "Normal chest x-XXXX."
    assert cxr1[0].meta["mesh_major"] == ["normal"] and cxr1[0].labels.sum() == 0
    cardio = sum(1 for r in ds.records if r.labels[list(ds.classes).index("Cardiomegaly")] == 1)
    assert cardio > 100
