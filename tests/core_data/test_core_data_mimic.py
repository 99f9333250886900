"""MIMIC-CXR reader, report sectioning and master tables on a tiny dataset in the official layout."""

from __future__ import annotations

import ast
import gzip

import numpy as np
import pandas as pd
import pytest
from cxrvlp.core.data.mimic_cxr import MimicCxrDataset, prepare_master_table
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError
from cxrvlp.core.text.sections import conclusion_text, extract_sections, section_text

from .conftest import REPORT_FULL, REPORT_NO_SECTIONS


def test_sections_full_report():
    ex = extract_sections(REPORT_FULL)
    assert ex["findings"] == "The lungs are clear. No pleural effusion.\n Heart size is normal."
    assert ex["impression"] == "No acute cardiopulmonary process."
    assert ex["comparison"] == "None." and ex["last_paragraph"] is None
    assert conclusion_text(REPORT_FULL) == ex["impression"]
    _, names, _ = section_text(REPORT_FULL)
    assert names == ["preamble", "examination", "indication", "comparison", "findings", "impression"]


def test_sections_last_paragraph_and_typos():
    ex = extract_sections(REPORT_NO_SECTIONS)
    assert ex["findings"] is None and ex["impression"] is None
    assert ex["last_paragraph"] == "Mild pulmonary edema. Small left effusion."
    typo = "FINAL\n IMPRESSOIN: Small effusion.\n"
    assert extract_sections(typo)["impression"] == "Small effusion."
    # an empty findings section is dropped; the last of two impressions wins
    two = "X\n FINDINGS: \n \n IMPRESSION: first.\n IMPRESSION: second.\n"
    ex2 = extract_sections(two)
    assert ex2["findings"] is None and ex2["impression"] == "second."
    # a study-describing header counts as findings
    assert (
        extract_sections("X\n PA AND LATERAL VIEWS OF THE CHEST: clear lungs.\n")["findings"]
        == "clear lungs."
    )


def test_mimic_dataset(mimic_root):
    ds = MimicCxrDataset(mimic_root, split="train")
    assert len(ds) == 2  # the lateral image is filtered
    assert [r.view for r in ds.records] == ["PA", "AP"]
    s = ds[0]
    assert s.image.shape == (12, 10) and s.image.dtype == np.float32
    assert s.patient_id == "10000032" and s.study_id == "50414267" and s.dataset == "mimic-cxr"
    assert s.sections["impression"] == "No acute cardiopulmonary process."
    assert "FINDINGS" in s.report
    i = list(s.classes).index
    assert (
        s.labels[i("Cardiomegaly")] == 1
        and np.isnan(s.labels[i("Edema")])
        and np.isnan(s.labels[i("Fracture")])
    )
    assert s.meta["split"] == "train"
    s1 = ds[1]
    assert s1.sections["last_paragraph"].startswith("Mild pulmonary edema")
    ones = MimicCxrDataset(
        mimic_root, split="train", uncertain_policy="ones", blank_policy="zeros", load_images=False
    )
    lab = ones[0].labels
    assert lab[i("Edema")] == 1 and lab[i("Fracture")] == 0 and ones[0].image is None


def test_mimic_all_splits_views_and_groups(mimic_root):
    ds = MimicCxrDataset(mimic_root, split=None, views=None, load_images=False)
    assert len(ds) == 5
    groups = ds.study_groups()
    assert groups == {"50414267": [0, 1], "53189527": [2], "51111111": [3, 4]}
    test = MimicCxrDataset(mimic_root, split="test", load_images=False)
    assert test.study_groups() == {"51111111": [0, 1]}


def test_mimic_missing_files(mimic_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="mimic-cxr"):
        MimicCxrDataset(tmp_path / "absent")
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="metadata"):
        MimicCxrDataset(mimic_root)


def test_mimic_malformed_label(mimic_root):
    p = mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    text = gzip.open(p, "rt").read().replace("1.0", "maybe", 1)
    with gzip.open(p, "wt") as f:
        f.write(text)
    with pytest.raises(MalformedRecordError, match=r"chexpert.csv.gz: row \d+"):
        MimicCxrDataset(mimic_root)


def test_mimic_corrupt_image_skip(mimic_root):
    (mimic_root / "files/p10/p10000032/s50414267/d1.jpg").write_bytes(b"\xff\xd8broken")
    ds = MimicCxrDataset(mimic_root, split="train", on_error="skip")
    s = ds[0]  # replaced by the next readable image, counted
    assert s.study_id == "53189527"
    assert len(ds.skipped) == 1 and "d1.jpg" in ds.skipped[0][0]
    strict = MimicCxrDataset(mimic_root, split="train")
    with pytest.raises(Exception, match="d1.jpg"):
        strict[0]
    checked = MimicCxrDataset(mimic_root, split="train", on_error="skip")
    assert checked.check_images() == 1 and len(checked) == 1


def test_master_tables(mimic_root, tmp_path):
    m = prepare_master_table(mimic_root, tmp_path / "master.csv", "mgca")
    assert list(m.columns) == [
        "Path",
        "dicom_id",
        "subject_id",
        "study_id",
        "ViewPosition",
        "impression",
        "findings",
        "split",
    ]
    # study 53189527 has neither impression nor findings -> dropped
    assert set(m["study_id"]) == {50414267, 51111111} and len(m) == 4
    assert m["Path"].iloc[0] == "files/p10/p10000032/s50414267/d1.jpg"
    back = pd.read_csv(tmp_path / "master.csv")
    assert len(back) == 4
    a = prepare_master_table(mimic_root, tmp_path / "afloc.csv", "afloc")
    assert a["view"].tolist() == ["Frontal", "Lateral", "Frontal", "Frontal", "Frontal"]
    assert a.loc[2, "report"].startswith("Mild pulmonary edema") and a.loc[0, "Cardiomegaly"] == 1
    c = prepare_master_table(mimic_root, tmp_path / "cxrclip.csv", "cxrclip")
    row = c[c["study_id"] == 50414267].iloc[0]
    assert ast.literal_eval(row["view"]) == ["PA", "LATERAL"]
    assert ast.literal_eval(row["text"])[1] == "No acute cardiopulmonary process."
    assert ast.literal_eval(row["PA"]) == ["files/p10/p10000032/s50414267/d1.jpg"]
    k = prepare_master_table(mimic_root, tmp_path / "medklip.csv", "medklip")
    assert len(k) == 4 and k["report"].str.contains("IMPRESSION").sum() == 3  # the lateral is dropped
    with pytest.raises(Exception, match="unknown master-table format"):
        prepare_master_table(mimic_root, tmp_path / "x.csv", "nope")
