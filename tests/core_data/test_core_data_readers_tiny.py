"""Every reader on tiny datasets written at test time in the official layout, with images, plus the
bad-input cases: missing root/file, malformed rows, corrupt images (raise vs skip-and-count)."""

from __future__ import annotations

import numpy as np
import pytest
from cxrvlp.core.data import DATASETS, get_dataset
from cxrvlp.core.data.geometry import encode_rle
from cxrvlp.core.errors import (
    ConfigError,
    CorruptImageError,
    CxrvlpError,
    DatasetNotFoundError,
    MalformedRecordError,
)

from .conftest import tiny_png, write_dicom, write_gz

CHEX_HDR = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices\n"
)


def make_chexpert(root):
    rows = [
        "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,"
        + "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
        "CheXpert-v1.0-small/valid/patient64541/study1/view2_lateral.jpg,Male,73,Lateral,,"
        + "0.0,,-1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,",
    ]
    p = root / "CheXpert-v1.0-small/valid.csv"
    p.parent.mkdir(parents=True)
    p.write_text(CHEX_HDR + "\n".join(rows) + "\n")
    for r in rows:
        path = root / r.split(",")[0]
        tiny_png(path.with_suffix(".png")).rename(path)
    return root


def test_chexpert_tiny(tmp_path):
    root = make_chexpert(tmp_path / "chexpert")
    ds = get_dataset("chexpert", root, split="valid")
    assert len(ds) == 2 and ds[0].image.shape == (12, 10)
    assert ds[0].view == "AP" and ds[1].view == "LATERAL" and ds[1].study_id == "patient64541/study1"
    i = list(ds.classes).index
    assert np.isnan(ds[1].labels[i("Cardiomegaly")]) and np.isnan(ds[1].labels[i("Support Devices")])
    from cxrvlp.core.data.labels import MGCA_UNCERTAIN_POLICY

    mg = get_dataset(
        "chexpert", root, split="valid", uncertain_policy=MGCA_UNCERTAIN_POLICY, blank_policy="zeros"
    )
    assert mg[1].labels[i("Cardiomegaly")] == 0 and mg[1].labels[i("Support Devices")] == 0
    # full-size folder name in the CSV resolves to the -small folder on disk
    (root / "CheXpert-v1.0-small/valid.csv").write_text(
        (root / "CheXpert-v1.0-small/valid.csv").read_text().replace("CheXpert-v1.0-small/", "CheXpert-v1.0/")
    )
    assert get_dataset("chexpert", root, split="valid")[0].image is not None


def test_chexpert_malformed(tmp_path):
    root = make_chexpert(tmp_path / "chexpert")
    p = root / "CheXpert-v1.0-small/valid.csv"
    p.write_text(p.read_text().replace("0.0,1.0,1.0,1.0", "0.0,2.0,1.0,1.0", 1))
    with pytest.raises(MalformedRecordError, match=r"valid.csv: row 2: Enlarged Cardiomediastinum"):
        get_dataset("chexpert", root, split="valid")
    ds = get_dataset("chexpert", root, split="valid", on_error="skip")
    assert len(ds) == 1 and len(ds.skipped) == 1
    p.write_text(p.read_text() + "a,b\n,,,,,,,,,,,,,,,,,,,,,,,,,,,,\n")
    # row 4 is too short (issue 24: no longer padded with NaN and kept), row 5 too long
    with pytest.raises(MalformedRecordError, match=r"valid.csv: row 4: 2 fields, fewer than the 19"):
        get_dataset("chexpert", root, split="valid")
    ds = get_dataset("chexpert", root, split="valid", on_error="skip")
    assert len(ds) == 1 and sorted(r.split(": ")[1] for _, r in ds.skipped) == ["row 2", "row 4", "row 5"]


def make_cxr14(root):
    write_gz(
        root / "Data_Entry_2017_v2020.csv.gz",
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
        "00000001_000.png,Cardiomegaly|Effusion,0,1,57,M,PA,10,12,0.1,0.1\n"
        "00000002_000.png,No Finding,0,2,80,M,AP,10,12,0.1,0.1\n",
    )
    (root / "test_list.txt").write_text("00000002_000.png\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Infiltrate,1.0,2.0,3.0,4.0\n"
    )
    tiny_png(root / "images_001/images/00000001_000.png")
    tiny_png(root / "images_001/images/00000002_000.png")
    return root


def test_chestxray14_tiny_and_cache_scaling(tmp_path):
    root = make_cxr14(tmp_path / "cxr14")
    ds = get_dataset("chestxray14", root, split="train_val")
    s = ds[0]
    assert s.image.shape == (12, 10) and s.labels.tolist()[:3] == [0, 1, 1]
    np.testing.assert_allclose(s.boxes, [[1, 2, 4, 6]]) and s.box_labels == ["Infiltration"]
    assert len(get_dataset("chestxray14", root, split="test")) == 1
    from cxrvlp.core.data.cache import prepare_cache

    prepare_cache(ds, tmp_path / "cache", size=6)
    cached = get_dataset("chestxray14", root, split="train_val", cache_dir=tmp_path / "cache")
    c = cached[0]
    assert c.image.shape == (6, 5)  # long side 12 -> 6
    np.testing.assert_allclose(c.boxes, [[0.5, 1, 2, 3]])  # boxes follow the returned image


def test_chestxray14_bad_box(tmp_path):
    root = make_cxr14(tmp_path / "cxr14")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Mass,1.0,abc,3.0,4.0\n"
    )
    with pytest.raises(MalformedRecordError, match=r"BBox_List_2017.csv: row 2"):
        get_dataset("chestxray14", root, split="train_val")
    ds = get_dataset("chestxray14", root, split="train_val", on_error="skip")
    assert len(ds.skipped) == 1 and ds[0].boxes is None


def make_padchest(root):
    hdr = "ImageID,ImageDir,PatientID,StudyID,Projection,MethodLabel,Report,Labels,Localizations\n"
    rows = [
        "a.png,0,p1,s1,PA,Physician,normal report,\"['normal']\",[]",
        "b.png,0,p2,s2,L,RNN_model,x,\"['pleural effusion', ' cardiomegaly', '']\",\"['loc left']\"",
        "c.png,1,p3,s3,PA,Physician,y,,",
    ]
    write_gz(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", hdr + "\n".join(rows) + "\n")
    tiny_png(root / "0/a.png", value=4000, bits=16)
    tiny_png(root / "0/b.png", value=1000, bits=16)
    return root


def test_padchest_tiny(tmp_path):
    root = make_padchest(tmp_path / "padchest")
    ds = get_dataset("padchest", root)
    assert ds.classes == ("cardiomegaly", "normal", "pleural effusion")
    assert len(ds) == 2 and len(ds.skipped) == 1 and "c.png" in ds.skipped[0][1]
    s = ds[1]
    assert s.labels.tolist() == [1, 0, 1] and s.meta["Localizations"] == ["loc left"] and s.view == "L"
    assert s.image.max() == 1.0  # 16-bit divided by its own max
    assert len(get_dataset("padchest", root, projections=("PA",), load_images=False)) == 1
    p = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
    import gzip

    text = gzip.open(p, "rt").read().replace("\"['normal']\"", "\"['normal'\"")
    write_gz(p, text)
    with pytest.raises(MalformedRecordError, match="Labels: not a Python list"):
        get_dataset("padchest", root)


XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">Heart is enlarged.</AbstractText>
<AbstractText Label="IMPRESSION">Cardiomegaly.</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>Cardiomegaly/mild</major><automatic>Cardiomegaly</automatic></MeSH>
<parentImage id="CXR7_IM-1-1001"><caption>PA</caption></parentImage>
<parentImage id="CXR7_IM-1-2001"><caption>Lateral</caption></parentImage>
</eCitation>"""


def test_openi_tiny_and_bad_xml(tmp_path):
    root = tmp_path / "openi"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "ecgen-radiology/7.xml").write_text(XML)
    no_image = XML.replace("CXR7", "CXR8").replace("<parentImage", "<x").replace("</parentImage>", "</x>")
    (root / "ecgen-radiology/8.xml").write_text(no_image)
    for iid in ("CXR7_IM-1-1001", "CXR7_IM-1-2001"):
        tiny_png(root / f"NLMCXR_png/{iid}.png")
    ds = get_dataset("openi", root)
    assert len(ds) == 2 and len(ds.skipped) == 1  # CXR8 has no image: counted
    s = ds[0]
    assert s.sections["impression"] == "Cardiomegaly." and s.report == "Heart is enlarged. Cardiomegaly."
    assert s.labels[list(ds.classes).index("Cardiomegaly")] == 1 and s.meta["longest"] == "Heart is enlarged."
    assert len(get_dataset("openi", root, first_image_only=True)) == 1
    (root / "ecgen-radiology/9.xml").write_text(XML[:200])
    with pytest.raises(MalformedRecordError, match=r"9.xml: row \d+: XML parse error"):
        get_dataset("openi", root)
    assert len(get_dataset("openi", root, on_error="skip").skipped) == 2


def test_rsna_tiny(tmp_path):
    root = tmp_path / "rsna"
    root.mkdir()
    (root / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\np1,,,,,0\np2,2,3,4,5,1\np2,1,1,2,2,1\n"
    )
    write_dicom(root / "stage_2_train_images/p1.dcm", np.arange(120, dtype=np.uint16).reshape(12, 10))
    write_dicom(root / "stage_2_train_images/p2.dcm", np.arange(120, dtype=np.uint8).reshape(12, 10))
    ds = get_dataset("rsna-pneumonia", root)
    assert len(ds) == 2 and ds[0].labels.tolist() == [0] and ds[0].boxes.shape == (0, 4)
    np.testing.assert_allclose(ds[1].boxes, [[2, 3, 6, 8], [1, 1, 3, 3]])
    assert ds[1].image.shape == (12, 10) and ds[1].image.max() == 1.0
    (root / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\np1,1,,,,0\np2,a,3,4,5,1\n"
    )
    with pytest.raises(MalformedRecordError, match=r"row 2: p1: a box on a Target=0 row"):
        get_dataset("rsna-pneumonia", root)
    assert len(get_dataset("rsna-pneumonia", root, on_error="skip").skipped) == 2
    split = tmp_path / "split.csv"
    split.write_text("ID,img_path,boxes,classes\n7,stage_2_train_images/p2.dcm,2.0;3.0;4.0;5.0|1;1;1;1,1\n")
    sp = get_dataset("rsna-pneumonia", root, split_csv=split)
    np.testing.assert_allclose(sp[0].boxes, [[2, 3, 6, 8], [1, 1, 2, 2]])
    split.write_text("ID,img_path,boxes,classes\n7,x.dcm,2.0;3.0;4.0,1\n")
    with pytest.raises(MalformedRecordError, match="4 ';'-separated"):
        get_dataset("rsna-pneumonia", root, split_csv=split)


def test_siim_tiny_masks(tmp_path):
    root = tmp_path / "siim"
    m1 = np.zeros((12, 10), np.uint8)
    m1[2:5, 3:6] = 1
    m2 = np.zeros((12, 10), np.uint8)
    m2[8:10, 0:2] = 1
    (root / "dicom-images-train/s1/r1").mkdir(parents=True)
    (root / "train-rle.csv").write_text(
        f"ImageId, EncodedPixels\nimg1, {encode_rle(m1)}\nimg1, {encode_rle(m2)}\nimg2, -1\n"
    )
    write_dicom(root / "dicom-images-train/s1/r1/img1.dcm", np.full((12, 10), 7, np.uint8))
    write_dicom(root / "dicom-images-train/s1/r1/img2.dcm", np.full((12, 10), 7, np.uint8))
    ds = get_dataset("siim-acr", root)
    s = ds[0]
    assert s.labels.tolist() == [1] and s.meta["n_masks"] == 2
    np.testing.assert_array_equal(s.mask, m1 | m2)
    assert ds[1].labels.tolist() == [0] and ds[1].mask.sum() == 0
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\nimg1, 3 x\nimg2, -1\n")
    with pytest.raises(MalformedRecordError, match=r"train-rle.csv: row 2: RLE has a non-integer"):
        get_dataset("siim-acr", root)
    skip = get_dataset("siim-acr", root, on_error="skip")
    assert len(skip) == 1 and len(skip.skipped) == 1


def test_covidx_tiny(tmp_path):
    root = tmp_path / "covidx"
    root.mkdir()
    (root / "test.txt").write_text("p1 a b.png positive rsna\np2 c.png negative bimcv\n\n")
    tiny_png(root / "test/a b.png")
    tiny_png(root / "test/c.png")
    ds = get_dataset("covidx", root, split="test")
    assert ds.classes == ("COVID-19",) and [s.labels[0] for s in ds] == [1, 0]
    assert ds[0].meta["filename"] == "a b.png" and ds[0].image.shape == (12, 10)
    (root / "train.txt").write_text("1 x.png normal cohen\n2 y.png COVID-19 cohen\n")
    three = get_dataset("covidx", root, split="train", load_images=False)
    assert three.classes == ("Normal", "Pneumonia", "COVID-19") and three[1].labels.tolist() == [0, 0, 1]
    (root / "train.txt").write_text("1 x.png normal cohen\n2 y.png\n3 z.png maybe src\n")
    with pytest.raises(MalformedRecordError, match=r"train.txt: row 2"):
        get_dataset("covidx", root, split="train")
    assert len(get_dataset("covidx", root, split="train", on_error="skip").skipped) == 2


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_root_and_files(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=name):
        get_dataset(name, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match=rf"{name}: expected"):
        get_dataset(name, empty)


def test_unknown_dataset_and_corrupt_image(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        get_dataset("nope", tmp_path)
    root = tmp_path / "covidx"
    root.mkdir()
    (root / "test.txt").write_text("p1 a.png positive rsna\np2 c.png negative bimcv\n")
    (root / "test").mkdir()
    (root / "test/a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    tiny_png(root / "test/c.png")
    with pytest.raises(CorruptImageError, match="a.png"):
        get_dataset("covidx", root)[0]
    ds = get_dataset("covidx", root, on_error="skip")
    assert ds[0].meta["filename"] == "c.png" and len(ds.skipped) == 1
    assert issubclass(MalformedRecordError, CxrvlpError)


@pytest.mark.parametrize(
    "name,blob", [("valid.csv", b""), ("valid.csv.gz", b"\x1f\x8b\x08garbage"), ("valid.csv.zip", b"PK")]
)
def test_unreadable_tables(tmp_path, name, blob):
    root = tmp_path / "chexpert"
    (root / "CheXpert-v1.0-small").mkdir(parents=True)
    (root / "CheXpert-v1.0-small" / name).write_bytes(blob)
    with pytest.raises(MalformedRecordError, match=name.replace(".", r"\.")):
        get_dataset("chexpert", root, split="valid")
