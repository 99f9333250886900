"""Property-based bad input (issue 11): every malformed record raises the library's own error (a
CxrvlpError naming the file) or, with on_error="skip", is skipped and counted - never a bare traceback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cxrvlp.core.data import get_dataset
from cxrvlp.core.data.geometry import decode_rle, encode_rle, parse_box_string
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.data.openi import parse_report_xml
from cxrvlp.core.errors import CorruptImageError, CxrvlpError, MalformedRecordError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from .conftest import write_dicom
from .test_core_data_readers_tiny import CHEX_HDR, XML

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cells = st.one_of(
    st.sampled_from(["1.0", "0.0", "-1.0", "", "2", "nan", "x", "1e309", '"', "1,0", " -1"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)


@FAST
@given(st.text(max_size=60))
def test_rle_strings(text):
    try:
        m = decode_rle(text, 16, 16, "relative")
    except MalformedRecordError as err:
        assert "<string>" in str(err)
        return
    assert m.shape == (16, 16) and m.dtype == np.uint8


@FAST
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)),
    st.sampled_from(["relative", "absolute"]),
)
def test_rle_roundtrip(mask, enc):
    h, w = mask.shape
    np.testing.assert_array_equal(decode_rle(encode_rle(mask, enc), h, w, enc), mask)


@FAST
@given(st.text(alphabet="0123456789.;|-eanx ", max_size=40))
def test_box_strings(text):
    try:
        b = parse_box_string(text, "f.csv", 3)
    except MalformedRecordError as err:
        assert "f.csv: row 3" in str(err)
        return
    assert b.shape[1] == 4 and np.all(b[:, 2:] >= b[:, :2])


@FAST
@given(st.lists(st.lists(cells, min_size=14, max_size=16), min_size=1, max_size=4))
def test_chexpert_rows(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("chex")
    stem = "CheXpert-v1.0-small/valid/patient1/study{}/view1_frontal.jpg,Male,1,Frontal,AP,"
    lines = [stem.format(i) + ",".join(r) for i, r in enumerate(rows)]
    p = root / "CheXpert-v1.0-small/valid.csv"
    p.parent.mkdir(parents=True)
    p.write_text(CHEX_HDR + "\n".join(lines) + "\n")
    try:
        ds = get_dataset("chexpert", root, split="valid", load_images=False)
        assert len(ds) == len(rows)
    except CxrvlpError as err:
        assert "valid.csv" in str(err)
    ds = get_dataset("chexpert", root, split="valid", load_images=False, on_error="skip")
    assert len(ds) <= len(rows)
    assert all(np.all(np.isin(s.labels[~np.isnan(s.labels)], [0.0, 1.0])) for s in ds)


@FAST
@given(st.integers(0, len(XML)), st.text(max_size=12))
def test_openi_xml_mutations(cut, junk):
    data = XML[:cut] + junk + XML[cut:]
    try:
        rep = parse_report_xml(data.encode("utf-8", "surrogatepass"), "r.xml")
    except MalformedRecordError as err:
        assert str(err).startswith("r.xml: row")
        return
    assert rep["uid"]


@FAST
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    bits=st.sampled_from([8, 16]),
    photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "BOGUS"]),
    declared=st.tuples(st.integers(0, 20), st.integers(0, 20)),
    truncate=st.integers(0, 3),
)
def test_dicom_headers(tmp_path_factory, rows, cols, bits, photometric, declared, truncate):
    d = tmp_path_factory.mktemp("dcm")
    arr = np.arange(rows * cols, dtype=np.uint16 if bits == 16 else np.uint8).reshape(rows, cols)
    p = write_dicom(d / "x.dcm", arr, photometric="MONOCHROME2")
    import pydicom

    ds = pydicom.dcmread(p)
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = declared if declared != (0, 0) else (rows, cols)
    ds.save_as(p)
    if truncate:
        p.write_bytes(p.read_bytes()[: -truncate * 7])
    try:
        img = read_image(p)
    except CorruptImageError as err:
        assert "x.dcm" in str(err)
        return
    assert img.dtype == np.float32 and img.ndim == 2 and np.all((img >= 0) & (img <= 1))


@FAST
@given(
    arrays(np.uint16, st.tuples(st.integers(1, 16), st.integers(1, 16))),
    st.sampled_from(["max", "dtype", "bits"]),
)
def test_png16(tmp_path_factory, arr, scaling):
    p = tmp_path_factory.mktemp("png") / "a.png"
    cv2.imwrite(str(p), arr)
    img = read_image(p, png16_scaling=scaling)
    assert img.shape == arr.shape and np.all(np.isfinite(img)) and img.min() >= 0 and img.max() <= 1
    if arr.max() > 0 and scaling == "max":
        assert img.max() == 1.0


@FAST
@given(st.lists(st.text(alphabet="abc .pngPOSITIVEnegative\t", max_size=30), min_size=1, max_size=5))
def test_covidx_lines(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("covidx")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    try:
        get_dataset("covidx", root, load_images=False)
    except CxrvlpError as err:
        assert "test.txt" in str(err)
    ds = get_dataset("covidx", root, load_images=False, on_error="skip")
    n_lines = sum(1 for ln in "\n".join(lines).split("\n") if ln.strip())
    assert len(ds) + len(ds.skipped) == n_lines  # every non-blank line is a record or counted


@pytest.mark.parametrize(
    "blob", [b"", b"\x00" * 200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, b"\xff\xd8\xff" + b"1" * 99]
)
def test_corrupt_rasters(tmp_path, blob):
    p = tmp_path / "c.png"
    p.write_bytes(blob)
    with pytest.raises(CorruptImageError, match="c.png"):
        read_image(p)
