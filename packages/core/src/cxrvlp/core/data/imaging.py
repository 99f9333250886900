"""Decode chest X-ray files (DICOM, 8/16-bit PNG, JPEG) to float32 (H, W) grayscale in [0, 1].

One function, `read_image`, is the only place where pixels enter the library. It never guesses silently:
a file it cannot decode raises `CorruptImageError` naming the file (or, with `on_error="skip"`, logs a
warning and returns None so the caller can count it).

Scaling rules (documented because they move results):
* DICOM: modality LUT (RescaleSlope/Intercept or a Modality LUT) then VOI LUT / windowing when the header
  has one (as CXR-CLIP's converter does), MONOCHROME1 inverted, then min-max to [0, 1] ("minmax", default)
  or divided by the maximum ("max", MGCA's `read_from_dicom`: pixel * 255 / max).
* 8-bit PNG/JPEG: divided by 255. Colour images are converted to gray with OpenCV's BGR->GRAY weights.
* 16-bit PNG: divided by the image's own maximum ("max", default; MAVL's PadChest reading), or by 65535
  ("dtype"), or by the largest value that fits the bits actually used ("bits": 2**ceil(log2(max+1)) - 1,
  e.g. 4095 for a 12-bit detector stored in 16 bits).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.errors import CorruptImageError, DatasetNotFoundError

log = logging.getLogger(__name__)

DicomScaling = Literal["minmax", "max"]
Png16Scaling = Literal["max", "dtype", "bits"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"


def sniff_format(path: str | Path) -> str:
    """'dicom', 'png', 'jpeg' or 'other', from the file's first bytes (extension as a fallback)."""
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if p.suffix.lower() in (".dcm", ".dicom"):
        return "dicom"  # DICOM without the 128-byte preamble
    return "other"


def _to_unit_range(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map [lo, hi] -> [0, 1] as float32; a constant image maps to 0."""
    arr = arr.astype(np.float32, copy=False)
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise ValueError("non-finite pixel values")
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    out = (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def _to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA -> (H, W)."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported array shape {arr.shape}")


def _decode_raster(path: Path, png16: Png16Scaling) -> np.ndarray:
    """PNG/JPEG/other raster via OpenCV, keeping the stored bit depth."""
    buf = np.fromfile(str(path), dtype=np.uint8)
    if buf.size == 0:
        raise ValueError("empty file")
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("OpenCV could not decode the data")
    arr = _to_gray(arr)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        if png16 == "dtype":
            hi = 65535.0
        elif png16 == "bits":
            mx = int(arr.max())
            hi = float(2 ** max(1, math.ceil(math.log2(mx + 1))) - 1) if mx > 0 else 1.0
        else:
            hi = float(arr.max())
        return _to_unit_range(arr, 0.0, hi)
    if arr.dtype in (np.float32, np.float64):
        return _to_unit_range(arr, float(np.nanmin(arr)), float(np.nanmax(arr)))
    raise ValueError(f"unsupported pixel type {arr.dtype}")


def _decode_dicom(path: Path, scaling: DicomScaling, apply_voi: bool) -> np.ndarray:
    """DICOM via pydicom: modality LUT, VOI LUT/windowing, MONOCHROME1 inversion."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path), force=True)
    if "PixelData" not in ds:
        raise ValueError("DICOM has no PixelData")
    arr = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422") and arr.shape[0] > 1:
        arr = arr[0]  # multi-frame grayscale: first frame
    if photometric.startswith("YBR") or photometric == "RGB":
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
        return _to_unit_range(arr, float(arr.min()), float(arr.max()))
    arr = apply_modality_lut(arr, ds)
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        arr = apply_voi_lut(arr, ds)
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("non-finite pixel values after LUTs")
    lo, hi = float(arr.min()), float(arr.max())
    if photometric == "MONOCHROME1":
        arr = (hi + lo) - arr  # invert within the observed range: air becomes black
    if scaling == "max":
        return _to_unit_range(arr, 0.0, float(arr.max()))
    return _to_unit_range(arr, lo, hi)


def read_image(
    path: str | Path,
    on_error: OnError = "raise",
    *,
    dicom_scaling: DicomScaling = "minmax",
    apply_voi: bool = True,
    png16_scaling: Png16Scaling = "max",
) -> np.ndarray | None:
    """Read one image file -> float32 (H, W) in [0, 1]; None (logged) when on_error="skip" and it fails."""
    p = Path(path)
    try:
        if not p.is_file():
            raise DatasetNotFoundError("image", p, "an image file")
        fmt = sniff_format(p)
        if fmt == "dicom":
            img = _decode_dicom(p, dicom_scaling, apply_voi)
        else:
            img = _decode_raster(p, png16_scaling)
        if img.ndim != 2 or img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"decoded to an unusable shape {img.shape}")
        return np.ascontiguousarray(img, dtype=np.float32)
    except DatasetNotFoundError:
        if on_error == "skip":
            log.warning("skipping missing image %s", p)
            return None
        raise
    except Exception as exc:  # any decoder failure becomes our own error naming the file
        err = CorruptImageError(p, f"{type(exc).__name__}: {exc}")
        if on_error == "skip":
            log.warning("skipping corrupt image: %s", err)
            return None
        raise err from exc


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) -> uint8 (round half to even, like `np.rint`), for 8-bit official pipelines."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray, bits: int = 8) -> None:
    """Write float [0, 1] (H, W) as an 8- or 16-bit grayscale PNG."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        arr = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    else:
        arr = to_uint8(image)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise CorruptImageError(p, "OpenCV could not encode the PNG")
    buf.tofile(str(p))
