"""Decoding of DICOM / 8- and 16-bit PNG / JPEG, corrupt files, and the real raw_formats files."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pydicom
import pytest
from cxrvlp.core.data.imaging import read_image, sniff_format, write_png
from cxrvlp.core.errors import CorruptImageError, CxrvlpError, DatasetNotFoundError

from .conftest import write_dicom


def ramp(h=20, w=30, dtype=np.uint16, hi=4095):
    return (np.linspace(0, hi, h * w).reshape(h, w)).astype(dtype)


def test_dicom_16bit_monochrome2_and_1(tmp_path):
    arr = ramp()
    m2 = read_image(write_dicom(tmp_path / "a.dcm", arr))
    m1 = read_image(write_dicom(tmp_path / "b.dcm", arr, photometric="MONOCHROME1"))
    assert m2.dtype == np.float32 and m2.shape == (20, 30)
    assert m2.min() == 0.0 and m2.max() == 1.0
    assert m2[0, 0] < m2[-1, -1]
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_dicom_rescale_and_window(tmp_path):
    arr = ramp(dtype=np.int16, hi=2000)
    img = read_image(write_dicom(tmp_path / "w.dcm", arr, slope=1, intercept=-1000, window=(0, 500)))
    # window [-250, 250] in rescaled units = raw [750, 1250]: everything below saturates to 0, above to 1
    raw = arr.astype(float)
    assert np.all(img[raw < 740] == 0.0) and np.all(img[raw > 1260] == 1.0)
    mid = (raw > 800) & (raw < 1200)
    assert np.all((img[mid] > 0) & (img[mid] < 1))
    no_voi = read_image(tmp_path / "w.dcm", apply_voi=False)
    assert np.count_nonzero(no_voi == 0.0) == 1


def test_dicom_8bit_and_max_scaling(tmp_path):
    arr = (ramp(hi=200, dtype=np.uint16) // 1).astype(np.uint8) + 10
    img = read_image(write_dicom(tmp_path / "e.dcm", arr), dicom_scaling="max")
    np.testing.assert_allclose(img, arr / arr.max(), atol=1e-6)


def test_png_8_16_bit_and_jpeg(tmp_path):
    a8 = (ramp(hi=255, dtype=np.uint16)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), a8)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), a8 / 255.0, atol=1e-6)
    a16 = ramp(hi=4095)
    cv2.imwrite(str(tmp_path / "b.png"), a16)
    assert sniff_format(tmp_path / "b.png") == "png"
    np.testing.assert_allclose(read_image(tmp_path / "b.png"), a16 / 4095.0, atol=1e-6)
    np.testing.assert_allclose(
        read_image(tmp_path / "b.png", png16_scaling="dtype"), a16 / 65535.0, atol=1e-6
    )
    np.testing.assert_allclose(read_image(tmp_path / "b.png", png16_scaling="bits"), a16 / 4095.0, atol=1e-6)
    colour = np.dstack([a8, a8, a8])
    cv2.imwrite(str(tmp_path / "c.jpg"), colour, [cv2.IMWRITE_JPEG_QUALITY, 100])
    j = read_image(tmp_path / "c.jpg")
    assert j.shape == a8.shape and np.abs(j - a8 / 255.0).max() < 0.03


def test_write_png_roundtrip(tmp_path):
    x = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    write_png(tmp_path / "x16.png", x, bits=16)
    np.testing.assert_allclose(read_image(tmp_path / "x16.png", png16_scaling="dtype"), x, atol=1e-4)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\nnot really", b"\xff\xd8garbage", b"hello"])
def test_corrupt_files_raise_or_skip(tmp_path, content, caplog):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(CorruptImageError, match="bad.png"):
        read_image(p)
    with caplog.at_level(logging.WARNING):
        assert read_image(p, on_error="skip") is None
    assert "bad.png" in caplog.text


def test_corrupt_dicom(tmp_path):
    p = tmp_path / "bad.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00abcd" + b"\xff" * 10)
    with pytest.raises(CorruptImageError, match="bad.dcm"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    assert read_image(tmp_path / "nope.png", on_error="skip") is None
    assert issubclass(CorruptImageError, CxrvlpError)


def test_real_raw_formats(shared_dir):
    d = shared_dir / "data" / "raw_formats"
    siim = read_image(d / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    mono1 = read_image(d / "monochrome1_example.dcm")
    assert siim.shape == mono1.shape == (1024, 1024)
    raw1 = pydicom.dcmread(d / "monochrome1_example.dcm")
    assert raw1.PhotometricInterpretation == "MONOCHROME1"
    raw = raw1.pixel_array.astype(np.float32)
    # MONOCHROME1: the largest stored value must come out black, the smallest white
    assert mono1[raw == raw.max()].max() == 0.0 and mono1[raw == raw.min()].min() == 1.0
    assert np.corrcoef(mono1.ravel(), raw.ravel())[0, 1] < -0.99
    nih = read_image(d / "nih_00000001_000.png")
    assert nih.shape == (512, 512) and nih.dtype == np.float32 and 0 <= nih.min() and nih.max() <= 1
    jpg = read_image(d / "covid_16747_3_1.jpg")
    assert jpg.ndim == 2 and jpg.shape == (885, 1036)
