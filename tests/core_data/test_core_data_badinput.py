"""Issue 24, data side: boxes against the image (box_policy), one box per label, short CSV rows, blank key
values and single-prefix messages. Every case ends in a named MalformedRecordError or a logged, counted
skip / clip - never a silently wrong record."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from cxrvlp.core.data import get_dataset
from cxrvlp.core.data.base import read_table
from cxrvlp.core.data.geometry import validate_boxes
from cxrvlp.core.errors import MalformedRecordError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import tiny_png, write_dicom

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
coord = st.floats(-40, 80, allow_nan=False, width=32)


@FAST
@given(
    st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=4),
    st.sampled_from(["reject", "clip"]),
)
def test_validate_boxes_property(boxes, policy):
    h, w = 48, 64
    b = np.array(boxes, np.float32)
    clipped: list = []
    try:
        out = validate_boxes(b, "f.csv", 7, (h, w), policy, clipped)
    except MalformedRecordError as err:
        assert str(err).startswith("f.csv: row 7: ")
        empty = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        outside = np.any(b < 0, axis=1) | np.any(b > [w, h, w, h], axis=1)
        lo, hi = np.maximum(b[:, :2], 0), np.minimum(b[:, 2:], [w, h])
        wholly = np.any(hi <= lo, axis=1)
        assert empty.any() or (outside.any() if policy == "reject" else wholly.any())
        return
    # accepted: inside the image, positive size; reject never changes a box, clip counts what it changed
    assert np.all(out[:, 2:] > out[:, :2]) and np.all(out >= 0) and np.all(out <= [w, h, w, h])
    changed = not np.array_equal(out, b)
    if policy == "reject":
        assert not changed
    assert len(clipped) == int(changed)


def test_validate_boxes_cases():
    with pytest.raises(MalformedRecordError, match="zero or negative width"):
        validate_boxes(np.array([5, 5, 5, 9]), "f", 1)
    with pytest.raises(MalformedRecordError, match="outside the image"):
        validate_boxes(np.array([-30, -30, -2, -2]), "f", 1)  # no size known: x, y >= 0 still checked
    with pytest.raises(MalformedRecordError, match="wholly outside the 64x64"):
        validate_boxes(np.array([-30, -30, -2, -2]), "f", 1, (64, 64), "clip")
    with pytest.raises(ValueError, match="box_policy"):
        get_dataset("rsna-pneumonia", ".", box_policy="drop")


def _rsna(root, rows, size=(12, 10)):
    root.mkdir(exist_ok=True)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\n" + rows)
    for pid in ("p1", "p2"):
        write_dicom(root / f"stage_2_train_images/{pid}.dcm", np.arange(120, dtype=np.uint8).reshape(*size))
    return root


def test_rsna_boxes_outside_and_empty(tmp_path, caplog):
    root = _rsna(tmp_path / "r", "p1,-30,-30,28,28,1\np2,2,3,0,5,1\n")
    with pytest.raises(MalformedRecordError, match=r"labels.csv: row 2: box .* lies outside the 1024x1024"):
        get_dataset("rsna-pneumonia", root)
    with caplog.at_level(logging.WARNING, "cxrvlp.core.data"):
        ds = get_dataset("rsna-pneumonia", root, on_error="skip")
    assert len(ds) == 0 and [r.split(": ")[1] for _, r in ds.skipped] == ["row 2", "row 3"]
    assert "zero or negative width" in ds.skipped[1][1] and caplog.text.count("skipping") == 2
    # clip: the partly-outside box is clipped, logged and counted; the zero-size one is still rejected
    root = _rsna(tmp_path / "c", "p1,-3,-2,8,8,1\np2,1000,1000,40,10,1\n")
    ds = get_dataset("rsna-pneumonia", root, box_policy="clip", load_images=False)
    assert len(ds.clipped) == 2 and ds.describe()["clipped_boxes"] == 2
    np.testing.assert_allclose(ds.records[0].boxes, [[0, 0, 5, 6]])
    np.testing.assert_allclose(ds.records[1].boxes, [[1000, 1000, 1024, 1010]])


def test_rsna_box_checked_against_the_real_image(tmp_path):
    # inside the nominal 1024 px frame but outside the 12 x 10 image actually on disk
    root = _rsna(tmp_path / "r", "p1,2,3,4,5,1\np2,4,6,20,20,1\n")
    ds = get_dataset("rsna-pneumonia", root)
    assert ds[0].boxes.shape == (1, 4)
    with pytest.raises(MalformedRecordError, match=r"p2.dcm: row 3: box .* outside the 10x12 \(WxH\) image"):
        ds[1]
    skip = get_dataset("rsna-pneumonia", root, on_error="skip")
    assert skip[1].image_path.endswith("p1.dcm") and len(skip.skipped) == 1  # skipped and counted
    clip = get_dataset("rsna-pneumonia", root, box_policy="clip")
    np.testing.assert_allclose(clip[1].boxes, [[4, 6, 10, 12]])
    clip[1]
    assert len(clip.clipped) == 1  # clipped once, counted once, however often the record is read


def test_rsna_message_has_one_prefix(tmp_path):
    root = _rsna(tmp_path / "r", "p1,a,3,4,5,1\np2,1,1,2,2,x\n")
    ds = get_dataset("rsna-pneumonia", root, on_error="skip", load_images=False)
    msgs = [m for _, m in ds.skipped]
    assert len(msgs) == 2 and all(m.count(": row ") == 1 for m in msgs), msgs
    assert "non-numeric box" in msgs[0] and "Target is not a number: 'x'" in msgs[1]
    split = tmp_path / "split.csv"
    split.write_text("ID,img_path,boxes,classes\n7,p.dcm,,maybe\n8,q.dcm,-5;1;4;4,1\n")
    ds = get_dataset("rsna-pneumonia", root, split_csv=split, on_error="skip", load_images=False)
    assert [m.count(": row ") for _, m in ds.skipped] == [1, 1] and "outside" in ds.skipped[1][1]


def test_rsna_blank_patient_and_later_rows_of_a_bad_patient(tmp_path):
    root = _rsna(tmp_path / "r", " ,1,1,2,2,1\np2,1,1,2,2,1\np2,-1,1,2,2,1\np2,3,3,2,2,1\n")
    with pytest.raises(MalformedRecordError, match=r"row 2: blank 'patientId'"):
        get_dataset("rsna-pneumonia", root, load_images=False)
    ds = get_dataset("rsna-pneumonia", root, on_error="skip", load_images=False)
    assert len(ds) == 0 and len(ds.skipped) == 2  # p2 dropped whole, not kept with a partial box list


def _det(root, entries):
    root.mkdir(exist_ok=True)
    (root / "test.json").write_text(json.dumps(entries))
    tiny_png(root / "test_data/a.png", 40, 50)
    return root


def test_chestx_det_one_box_per_label(tmp_path):
    root = _det(
        tmp_path / "d", [{"file_name": "a.png", "syms": ["Mass"], "boxes": [[1, 2, 10, 12, 20, 20, 30, 30]]}]
    )
    with pytest.raises(MalformedRecordError, match=r"test.json: row entry 0: box 0 \(Mass\) .* got 8 values"):
        get_dataset("chestx-det10", root)
    ds = get_dataset("chestx-det10", root, on_error="skip")
    assert len(ds) == 0 and len(ds.skipped) == 1


def test_chestx_det_boxes_against_the_image(tmp_path):
    entries = [
        {"file_name": "a.png", "syms": ["Mass"], "boxes": [[1, 2, 1, 12]]},  # zero width
        {"file_name": "a.png", "syms": ["Nodule"], "boxes": [[1000, 2, 1030, 12]]},  # past 1024
        {"file_name": "a.png", "syms": ["Nodule"], "boxes": [[30, 20, 60, 30]]},  # past the 50 px PNG
    ]
    root = _det(tmp_path / "d", entries)
    ds = get_dataset("chestx-det10", root, on_error="skip")
    assert len(ds) == 1 and [m.split(": ")[1] for _, m in ds.skipped] == ["row entry 0", "row entry 1"]
    with pytest.raises(MalformedRecordError, match=r"a.png: row \?: box .* outside the 50x40"):
        get_dataset("chestx-det10", _det(tmp_path / "e", entries[2:]))[0]
    with pytest.raises(Exception, match="no readable image"):
        ds[0]  # skipped (its box is outside the real image): nothing else left to return
    assert len(ds.skipped) == 3
    clip = get_dataset("chestx-det10", root, on_error="skip", box_policy="clip")
    np.testing.assert_allclose(clip[-1].boxes, [[30, 20, 50, 30]])
    assert len(clip.clipped) == 2  # the 1024 px one at read, the 50 px one when the image was read


def test_vindr_zero_size_and_negative_boxes(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    (root / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,Nodule/Mass,8,R1,5,5,5,9\nb,Nodule/Mass,8,R1,-4,1,3,3\nc,Nodule/Mass,8,R1,1,1,3,3\n"
    )
    with pytest.raises(MalformedRecordError, match=r"train.csv: row 2: box with zero or negative width"):
        get_dataset("vindr-cxr", root, split="train", load_images=False)
    ds = get_dataset("vindr-cxr", root, split="train", on_error="skip", load_images=False)
    assert [m.count(": row ") for _, m in ds.skipped] == [1, 1]  # one prefix, not "box is not numeric"
    assert sum(len(r.boxes) for r in ds.records) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(st.sampled_from(["1", "", " ", "x"]), min_size=0, max_size=6), min_size=1, max_size=6),
)
def test_read_table_field_counts(tmp_path_factory, rows):
    p = tmp_path_factory.mktemp("t") / "t.csv"
    p.write_text("a,b,c,d\n" + "".join(",".join(r) + "\n" for r in rows))
    body = [r for r in rows if r and r != [""]]  # csv: an empty line (or one empty field) is a blank line
    wrong = [r for r in body if len(r) != 4]
    try:
        df = read_table(p)
        assert not wrong and len(df) == len(body)
    except MalformedRecordError as err:
        assert wrong and "t.csv: row " in str(err) and " fields, " in str(err)
    skipped: list = []
    df = read_table(p, on_error="skip", skipped=skipped)
    assert len(df) == len(body) - len(wrong) and len(skipped) == len(wrong)


def test_chexpert_short_row(tmp_path):
    from .test_core_data_readers_tiny import make_chexpert

    root = make_chexpert(tmp_path / "chexpert")
    p = root / "CheXpert-v1.0-small/valid.csv"
    lines = p.read_text().splitlines()
    lines[1] = ",".join(lines[1].split(",")[:8])  # the last labels cut off: was padded with NaN and kept
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedRecordError, match=r"valid.csv: row 2: 8 fields, fewer than the 19"):
        get_dataset("chexpert", root, split="valid")
    ds = get_dataset("chexpert", root, split="valid", on_error="skip", load_images=False)
    assert len(ds) == 1 and len(ds.skipped) == 1


def test_siim_blank_encoded_pixels(tmp_path):
    root = tmp_path / "siim"
    root.mkdir()
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\nA, -1\nB,   \nC,\n")
    with pytest.raises(MalformedRecordError, match=r"train-rle.csv: row 3: blank 'EncodedPixels'"):
        get_dataset("siim-acr", root, load_images=False)
    ds = get_dataset("siim-acr", root, load_images=False, on_error="skip")
    assert [r.study_id for r in ds.records] == ["A"] and len(ds.skipped) == 2
    assert ds.records[0].labels.tolist() == [0.0]  # only "-1" means "no pneumothorax"
