"""Mirror writers: every file in place, byte-deterministic under a seed, internally consistent."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from cxrvlp.core.data.geometry import decode_rle, encode_rle
from cxrvlp.core.data.synthetic import DATASET_NAMES, write_all, write_siim
from cxrvlp.core.data.synthetic.mimic_cxr import LABEL_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS

SCALE = 0.1
SIZE = 64


@pytest.fixture()
def mirrors(synthetic_mirrors) -> dict[str, Path]:
    return synthetic_mirrors


def _rows(path: Path, sep: str = ",") -> list[list[str]]:
    raw = gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="")
    with raw as f:
        return list(csv.reader(f, delimiter=sep))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_every_dataset_written_with_notice(mirrors):
    root = next(iter(mirrors.values())).parent
    assert tuple(mirrors) == DATASET_NAMES
    assert "SYNTHETIC PHANTOMS" in (root / "SYNTHETIC_README.txt").read_text()
    for name, path in mirrors.items():
        meta = json.loads((path / "synthetic.json").read_text())
        assert meta["dataset"] == name and meta["seed"] == 0 and meta["synthetic"] is True
        assert meta["generator_version"] and meta["counts"]


def test_byte_identical_under_the_same_seed(mirrors, tmp_path):
    again = write_all(tmp_path / "again", seed=0, scale=SCALE, image_size=SIZE)
    for name in DATASET_NAMES:
        assert _tree_digest(mirrors[name]) == _tree_digest(again[name]), name
    other = write_all(
        tmp_path / "other", seed=1, scale=SCALE, image_size=SIZE, names=("mimic-cxr", "siim-acr")
    )
    for name in other:
        assert _tree_digest(mirrors[name]) != _tree_digest(other[name])


def test_mimic_tree_and_tables(mirrors):
    root = mirrors["mimic-cxr"]
    split = _rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    meta = _rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    chex = _rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    negbio = _rows(root / "mimic-cxr-2.0.0-negbio.csv.gz")
    assert tuple(split[0]) == SPLIT_COLUMNS and tuple(meta[0]) == METADATA_COLUMNS
    assert tuple(chex[0]) == tuple(negbio[0]) == LABEL_COLUMNS
    assert len(split) == len(meta)
    # split by patient: one split per subject; all three splits present
    by_subject: dict[str, set[str]] = {}
    for dicom, study, subject, s in split[1:]:
        by_subject.setdefault(subject, set()).add(s)
        assert (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg").is_file()
        assert (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").is_file()
    assert all(len(v) == 1 for v in by_subject.values())
    assert {s for v in by_subject.values() for s in v} == {"train", "validate", "test"}
    views = [r[4] for r in meta[1:]]
    assert {"PA", "AP", "LATERAL"} <= set(views)
    studies = [r[2] for r in meta[1:]]
    frontal_per_study = {
        s: sum(v in ("PA", "AP") for st, v in zip(studies, views) if st == s) for s in studies
    }
    assert max(frontal_per_study.values()) == 2  # some studies have two frontal images
    values = {v for r in chex[1:] for v in r[2:]}
    assert values <= {"", "1.0", "0.0", "-1.0"} and {"1.0", "0.0", "-1.0"} <= values
    assert len(chex) - 1 == len(set(studies))


def test_mimic_labels_agree_with_report_files(mirrors):
    root = mirrors["mimic-cxr"]
    chex = _rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    cols = chex[0]
    for row in chex[1:]:
        subject, study = row[0], row[1]
        text = (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").read_text()
        labels = dict(zip(cols, row))
        assert "FINAL REPORT" in text and "EXAMINATION:" in text
        low = " ".join(text.lower().split())
        if "no pleural effusion." in low or "no effusion is seen" in low:
            assert labels["Pleural Effusion"] in ("0.0",), (text, labels)
        if "possible small" in low and "effusion" in low:
            assert labels["Pleural Effusion"] in ("-1.0", "1.0")
        if "heart size is normal" in low:
            assert labels["Cardiomegaly"] == "0.0"
        if "cardiomegaly." in low and "possible mild cardiomegaly" not in low:
            assert labels["Cardiomegaly"] == "1.0"
        if "no acute cardiopulmonary process" in low:
            assert labels["No Finding"] == "1.0"


def test_chexpert_files(mirrors):
    root = mirrors["chexpert"]
    train = _rows(root / "CheXpert-v1.0-small" / "train.csv")
    valid = _rows(root / "CheXpert-v1.0-small" / "valid.csv")
    test = _rows(root / "filter_test_labels.csv")
    five = _rows(root / "chexpert-5x200-meta.csv")
    for table in (train, valid):
        for r in table[1:]:
            assert (root / r[0]).is_file() and r[0].startswith("CheXpert-v1.0-small/")
            assert r[3] in ("Frontal", "Lateral") and (
                r[4] in ("AP", "PA") if r[3] == "Frontal" else r[4] == ""
            )
    assert {v for r in train[1:] for v in r[5:]} <= {"", "1.0", "0.0", "-1.0"}
    assert {v for r in valid[1:] + test[1:] for v in r[-14:]} <= {"1.0", "0.0"}
    assert all((root / r[0]).is_file() and r[0].startswith("CheXpert-v1.0/test/") for r in test[1:])
    train_paths = {r[0] for r in train[1:]}
    five_cls = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    idx = [five[0].index(c) for c in five_cls]
    for r in five[1:]:
        rel = r[1].split("CheXpert/data/", 1)[1]
        assert rel in train_paths and train[int(r[0]) + 1][0] == rel
        assert sum(r[i] == "1.0" for i in idx) == 1  # exactly one of the five classes
    per_class = {c: sum(r[i] == "1.0" for r in five[1:]) for c, i in zip(five_cls, idx)}
    assert min(per_class.values()) >= 2


def test_chestxray14_files(mirrors):
    root = mirrors["chestxray14"]
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    rows = list(csv.reader(lines[1:]))
    assert all(len(r) == 11 for r in rows)
    names = {r[0] for r in rows}
    assert all((root / "images" / n).is_file() for n in names)
    train = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    assert set(train) | set(test) == names and not set(train) & set(test)
    assert not {n[:8] for n in train} & {n[:8] for n in test}  # split by patient
    labels = {r[0]: set(r[1].split("|")) for r in rows}
    box_lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    assert box_lines[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    assert len(box_lines) > 1
    for r in csv.reader(box_lines[1:]):
        name, lab, x, y, w, h = r[0], r[1], *map(float, r[2:])
        assert name in test
        assert {"Infiltrate": "Infiltration"}.get(lab, lab) in labels[name]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE


def test_padchest_files(mirrors):
    import ast

    root = mirrors["padchest"]
    rows = _rows(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
    head = rows[0]
    assert head[0] == "" and len(head) == 36
    for r in rows[1:]:
        d = dict(zip(head, r))
        assert (root / d["ImageDir"] / d["ImageID"]).is_file()
        labels = ast.literal_eval(d["Labels"])
        assert isinstance(labels, list) and labels and isinstance(ast.literal_eval(d["Localizations"]), list)
        assert d["Report"].startswith(" ") and d["Report"].endswith(" .")
        assert d["Projection"] in ("PA", "AP", "AP_horizontal", "L")
    import cv2

    img = cv2.imread(str(next(root.rglob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (SIZE, SIZE)


def test_openi_files(mirrors):
    root = mirrors["openi"]
    xmls = sorted((root / "ecgen-radiology").glob("*.xml"))
    assert xmls
    for x in xmls:
        tree = ET.parse(x).getroot()
        labels = [a.get("Label") for a in tree.iter("AbstractText")]
        assert labels == ["COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION"]
        assert [m.text for m in tree.find("MeSH").iter("major")]
        for p in tree.iter("parentImage"):
            assert (root / "NLMCXR_png" / f"{p.get('id')}.png").is_file()


def test_rsna_files(mirrors):
    import pydicom

    root = mirrors["rsna-pneumonia"]
    labels = _rows(root / "stage_2_train_labels.csv")
    classes = _rows(root / "stage_2_detailed_class_info.csv")
    assert labels[0] == ["patientId", "x", "y", "width", "height", "Target"]
    assert len(labels) == len(classes) and classes[0] == ["patientId", "class"]
    for (pid, x, y, w, h, t), (pid2, cls) in zip(labels[1:], classes[1:]):
        assert pid == pid2 and (cls == "Lung Opacity") == (t == "1")
        assert (x == "") == (t == "0")
        if t == "1":
            assert float(x) + float(w) <= SIZE and float(y) + float(h) <= SIZE
    pids = [r[0] for r in labels[1:]]
    ds = pydicom.dcmread(root / "stage_2_train_images" / f"{pids[0]}.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8 and ds.PatientID == pids[0]
    assert ds.pixel_array.shape == (SIZE, SIZE)


def test_siim_files_and_rle(mirrors):
    import pydicom

    root = mirrors["siim-acr"]
    text = (root / "train-rle.csv").read_text()
    assert text.startswith("ImageId, EncodedPixels\n")
    rows = _rows(root / "train-rle.csv")[1:]
    assert all(r[1].startswith(" ") for r in rows)
    assert any(r[1] == " -1" for r in rows) and any(r[1] != " -1" for r in rows)
    dcms = {p.stem: p for p in (root / "dicom-images-train").rglob("*.dcm")}
    assert {r[0] for r in rows} == set(dcms)
    for image_id, rle in rows:
        p = dcms[image_id]
        assert p.parent.parent.parent.name == "dicom-images-train"
        if rle.strip() != "-1":
            m = decode_rle(rle, SIZE, SIZE)
            assert 8 <= m.sum() < SIZE * SIZE // 4
    ds = pydicom.dcmread(next(iter(dcms.values())))
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.50"  # JPEG Baseline, as the real files
    assert ds.SOPInstanceUID == next(iter(dcms)) and ds.pixel_array.shape == (SIZE, SIZE)
    split_ids = set()
    for s in ("train", "val", "test"):
        part = _rows(root / "splits" / f"{s}.csv")
        assert part[0] == ["ImageId", "EncodedPixels"]
        ids = {r[0] for r in part[1:]}
        assert not ids & split_ids
        split_ids |= ids
    assert split_ids == set(dcms)


def test_siim_without_leading_space(tmp_path):
    root = write_siim(tmp_path / "siim", n_images=6, image_size=SIZE, leading_space=False, jpeg=False)
    rows = _rows(root / "train-rle.csv")[1:]
    assert all(not r[1].startswith(" ") for r in rows)


def test_covidx_files(mirrors):
    root = mirrors["covidx"]
    for split, folder in (("train", "train"), ("val", "train"), ("test", "test")):
        lines = (root / f"{split}.txt").read_text().splitlines()
        assert lines
        for line in lines:
            pid, fname, cls, source = line.split(" ")
            assert cls in ("positive", "negative") and source in ("rsna", "stonybrook", "cohen")
            assert (root / folder / fname).is_file()


def test_rle_is_the_competition_relative_format():
    # column-major walk with relative starts: a 2-pixel vertical run at column 1 starts at pixel 4
    m = np.zeros((4, 4), np.uint8)
    m[0:2, 1] = 1
    m[3, 1] = 1
    assert encode_rle(m, "relative") == "4 2 1 1"
    rng = np.random.default_rng(0)
    for _ in range(10):
        h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        assert np.array_equal(decode_rle(encode_rle(m, "relative"), h, w), m)


def test_reader_independent_image_decode(mirrors):
    from cxrvlp.core.data.imaging import read_image

    for p in (
        next((mirrors["rsna-pneumonia"] / "stage_2_train_images").glob("*.dcm")),
        next(mirrors["padchest"].rglob("*.png")),
        next((mirrors["mimic-cxr"] / "files").rglob("*.jpg")),
    ):
        img = read_image(p)
        assert img.shape == (SIZE, SIZE) and 0.0 <= img.min() < img.max() <= 1.0


def test_bilateral_pneumonia_gives_one_box_per_lung():
    from cxrvlp.core.data.synthetic import render_phantom
    from cxrvlp.core.data.synthetic.rsna import component_boxes

    f = {"pneumonia": {"side": "bilateral", "zone": "lower", "severity": "large"}}
    _, masks = render_phantom(f, np.random.default_rng(2), 128)
    boxes = component_boxes(masks["pneumonia"])
    assert len(boxes) == 2
    assert boxes[0][0] + boxes[0][2] <= 64 <= boxes[1][0]  # one box on each side of the midline


# ---- the mirrors against the real official files (skipped when ../shared is absent) -----------------------


def _first_line(path: Path) -> str:
    import zipfile

    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            return z.open(z.namelist()[0]).readline().decode().rstrip("\r\n")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return f.readline().rstrip("\r\n")


def test_headers_match_the_real_files(mirrors, shared_dir):
    d = shared_dir / "data"
    pairs = [
        (mirrors["chexpert"] / "CheXpert-v1.0-small" / "train.csv", d / "labels" / "chexpert_train.csv.gz"),
        (
            mirrors["chexpert"] / "CheXpert-v1.0-small" / "valid.csv",
            d / "splits" / "chexpertv1" / "valid.csv",
        ),
        (
            mirrors["chexpert"] / "filter_test_labels.csv",
            d / "splits" / "chexpertv1" / "filter_test_labels.csv",
        ),
        (
            mirrors["chexpert"] / "chexpert-5x200-meta.csv",
            d / "splits_more" / "medclip" / "chexpert-5x200-meta.csv",
        ),
        (mirrors["chestxray14"] / "Data_Entry_2017_v2020.csv", d / "labels" / "Data_Entry_2017_v2020.csv.gz"),
        (mirrors["chestxray14"] / "BBox_List_2017.csv", d / "labels" / "BBox_List_2017.csv.gz"),
        (
            mirrors["padchest"] / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
            d / "labels" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
        ),
        (
            mirrors["rsna-pneumonia"] / "stage_2_train_labels.csv",
            d / "labels" / "kaggle_stage_2_train_labels.csv.zip",
        ),
        (mirrors["siim-acr"] / "train-rle.csv", d / "labels" / "siim-pneumothorax-train-rle.csv.gz"),
        (mirrors["siim-acr"] / "splits" / "test.csv", d / "splits" / "siimacr" / "test.csv"),
    ]
    for ours, real in pairs:
        assert _first_line(ours) == _first_line(real), ours.name


def _real_rows(path: Path, n: int = 3000) -> list[list[str]]:
    import itertools

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(itertools.islice(csv.reader(f), n))


def test_value_formats_match_the_real_files(mirrors, shared_dir):
    d = shared_dir / "data"
    # CheXpert: label cells, Sex, Frontal/Lateral, AP/PA vocabularies
    real = _real_rows(d / "labels" / "chexpert_train.csv.gz")
    ours = _rows(mirrors["chexpert"] / "CheXpert-v1.0-small" / "train.csv")
    for col in (1, 3, 4):
        assert {r[col] for r in ours[1:]} <= {r[col] for r in real[1:]}, real[0][col]
    assert {v for r in ours[1:] for v in r[5:]} <= {v for r in real[1:] for v in r[5:]}
    # ChestX-ray14: same field count per row, view and gender vocabularies, label vocabulary
    real = _real_rows(d / "labels" / "Data_Entry_2017_v2020.csv.gz")
    ours = list(csv.reader((mirrors["chestxray14"] / "Data_Entry_2017_v2020.csv").read_text().splitlines()))
    assert {len(r) for r in ours[1:]} == {len(r) for r in real[1:]} == {11}
    assert {r[6] for r in ours[1:]} <= {r[6] for r in real[1:]} and {r[5] for r in ours[1:]} <= {"M", "F"}
    real_labels = {x for r in real[1:] for x in r[1].split("|")}
    assert {x for r in ours[1:] for x in r[1].split("|")} <= real_labels
    real_box = _real_rows(d / "labels" / "BBox_List_2017.csv.gz")
    ours_box = _rows(mirrors["chestxray14"] / "BBox_List_2017.csv")
    assert {len(r) for r in ours_box[1:]} == {len(r) for r in real_box[1:]} == {6}
    assert {r[1] for r in ours_box[1:]} <= {r[1] for r in real_box[1:]}
    # PadChest: projections, label names, list-literal cells
    real = _real_rows(d / "labels" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", 3000)
    ours = _rows(mirrors["padchest"] / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
    h = real[0]
    col = {c: h.index(c) for c in ("Projection", "Labels", "ViewPosition_DICOM", "MethodProjection")}
    for c in ("Projection", "MethodProjection"):
        assert {r[col[c]] for r in ours[1:]} <= {r[col[c]] for r in real[1:]}, c
    import ast

    # rarer values: stream the real file until every label name and view we write has been seen
    wanted = {repr(x) for r in ours[1:] for x in ast.literal_eval(r[col["Labels"]])}
    wanted |= {f",{r[col['ViewPosition_DICOM']]},{r[col['Projection']]}," for r in ours[1:]}
    with gzip.open(d / "labels" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "rt") as f:
        for line in f:
            wanted = {x for x in wanted if x not in line}
            if not wanted:
                break
    assert not wanted
    # RSNA: box numbers written like "264.0", Target 0/1
    import re
    import zipfile

    with zipfile.ZipFile(d / "labels" / "kaggle_stage_2_train_labels.csv.zip") as z:
        real = list(csv.reader(io_text(z.open(z.namelist()[0]).read())))[:2000]
    ours = _rows(mirrors["rsna-pneumonia"] / "stage_2_train_labels.csv")
    num = re.compile(r"^\d+\.\d$")
    for rows in (real, ours):
        boxes = [r for r in rows[1:] if r[5] == "1"]
        assert boxes and all(num.match(v) for r in boxes for v in r[1:5])
    # SIIM: the MAVL split files keep a leading space before the RLE, as the mirror's file does
    real = _real_rows(d / "splits" / "siimacr" / "val.csv", 200)
    assert all(r[1].startswith(" ") for r in real[1:])
    # COVIDx: four space-separated fields and the same class words
    real = (d / "splits" / "covidx-cxr2" / "test_split.csv").read_text().splitlines()
    ours = (mirrors["covidx"] / "test.txt").read_text().splitlines()
    assert {len(x.split(" ")) for x in real} == {len(x.split(" ")) for x in ours} == {4}
    assert {x.split(" ")[2] for x in ours} == {x.split(" ")[2] for x in real}


def io_text(data: bytes) -> list[str]:
    return data.decode().splitlines()


def test_openi_xml_matches_the_real_structure(mirrors, shared_dir):
    import tarfile

    with tarfile.open(shared_dir / "data" / "labels" / "NLMCXR_reports.tgz") as t:
        member = next(m for m in t.getmembers() if m.name.endswith("/1.xml"))
        real = ET.fromstring(t.extractfile(member).read())
    ours = ET.parse(mirrors["openi"] / "ecgen-radiology" / "1.xml").getroot()
    for tree in (real, ours):
        assert tree.tag == "eCitation"
        path = "MedlineCitation/Article/Abstract/AbstractText"
        assert [a.get("Label") for a in tree.findall(path)] == [
            "COMPARISON",
            "INDICATION",
            "FINDINGS",
            "IMPRESSION",
        ]
        assert tree.find("MeSH/major") is not None
        ids = [p.get("id") for p in tree.findall("parentImage")]
        assert ids and all(i.startswith("CXR1_") and "_IM-" in i for i in ids)


def test_mimic_prevalence_overrides_raise_a_finding_and_are_recorded(tmp_path):
    from cxrvlp.core.data.synthetic import write_mimic_cxr

    def lesion_share(root: Path) -> float:
        rows = _rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
        col = rows[0].index("Lung Lesion")
        return sum(r[col] in ("1.0", "-1.0") for r in rows[1:]) / (len(rows) - 1)

    base = write_mimic_cxr(tmp_path / "base", n_patients=80, seed=0, image_size=32)
    more = write_mimic_cxr(
        tmp_path / "more", n_patients=80, seed=0, image_size=32, prevalence_overrides={"nodule": 0.5}
    )
    assert lesion_share(more) > lesion_share(base) + 0.25  # 0.05 -> ~0.5 of the studies
    meta = json.loads((more / "synthetic.json").read_text())
    assert meta["prevalence_overrides"] == {"nodule": 0.5}
    assert json.loads((base / "synthetic.json").read_text())["prevalence_overrides"] == {}
    with pytest.raises(ValueError, match="unknown findings.*'nodules'"):
        write_mimic_cxr(tmp_path / "bad", n_patients=4, prevalence_overrides={"nodules": 0.5})
