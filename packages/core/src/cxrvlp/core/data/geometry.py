"""Boxes and run-length masks in the sources' own encodings.

* Boxes: xywh -> xyxy; MAVL's RSNA strings "x;y;w;h|x;y;w;h"; rasterising boxes to masks.
* SIIM-ACR RLE: the competition's *relative* encoding (start offsets counted from the end of the previous
  run, 0-based) and the standard *absolute* one (1-based start positions); both walk the pixels in
  column-major order (the competition's `rle2mask(...).T`), which is `order="F"` here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from cxrvlp.core.errors import MalformedRecordError

log = logging.getLogger("cxrvlp.core.data")


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) x, y, w, h -> (K, 4) x1, y1, x2, y2 (float32)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


BoxPolicy = Literal["reject", "clip"]
"""What a reader does with a box that reaches outside its image: "reject" (a `MalformedRecordError`, which
the reader's `on_error` raises or skips and counts) or "clip" (clipped to the image, logged and counted in
the dataset's `clipped`). Either way a box that is empty (zero or negative width / height), non-finite, or
wholly outside the image is rejected: clipping it would leave nothing."""


def check_box_policy(policy: str) -> BoxPolicy:
    """Validate the box_policy argument."""
    if policy not in ("reject", "clip"):
        raise ValueError(f"box_policy must be 'reject' or 'clip', got {policy!r}")
    return policy  # type: ignore[return-value]


def validate_boxes(
    boxes: np.ndarray,
    file: object,
    row: object,
    image_size: tuple[int, int] | None = None,
    policy: BoxPolicy = "reject",
    clipped: list[tuple[str, str]] | None = None,
) -> np.ndarray:
    """Finite xyxy boxes of positive width and height inside the image, or MalformedRecordError.

    Coordinates are pixels of an image of `image_size` (H, W): a box must lie within [0, W] x [0, H]. Without
    `image_size` only the lower bound (x, y >= 0) is known. A box reaching outside is rejected, or with
    `policy="clip"` clipped to the image (each clip logged and appended to `clipped` as (where, message)).
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    if not np.all(np.isfinite(b)):
        raise MalformedRecordError(file, row, f"non-finite box coordinates {b.tolist()}")
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise MalformedRecordError(file, row, f"box with zero or negative width/height {b.tolist()}")
    hi = (
        np.array([np.inf, np.inf, np.inf, np.inf], np.float32)
        if image_size is None
        else np.array([image_size[1], image_size[0]] * 2, np.float32)
    )
    outside = np.any(b < 0, axis=1) | np.any(b > hi, axis=1)
    if not outside.any():
        return b
    frame = "the image" if image_size is None else f"the {image_size[1]}x{image_size[0]} (WxH) image"
    bad = b[outside].tolist()
    if policy != "clip":
        raise MalformedRecordError(file, row, f"box {bad[0]} lies outside {frame}")
    c = np.clip(b, 0, hi)
    if np.any(c[:, 2] <= c[:, 0]) or np.any(c[:, 3] <= c[:, 1]):
        raise MalformedRecordError(file, row, f"box {bad[0]} lies wholly outside {frame}")
    msg = f"{file}: row {row}: clipped {int(outside.sum())} box(es) {bad} to {frame}"
    log.warning("%s", msg)
    if clipped is not None:
        clipped.append((str(file), msg))
    return c


def parse_box_string(
    text: object,
    file: object = "<string>",
    row: object = "?",
    image_size: tuple[int, int] | None = None,
    policy: BoxPolicy = "reject",
    clipped: list[tuple[str, str]] | None = None,
) -> np.ndarray:
    """MAVL's RSNA "x;y;w;h|x;y;w;h" (blank / 'nan' = no box) -> (K, 4) float32 xyxy, checked by
    `validate_boxes` (the last three arguments are its own)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return np.zeros((0, 4), np.float32)
    s = str(text).strip()
    if s == "" or s.lower() == "nan":
        return np.zeros((0, 4), np.float32)
    out = []
    for part in s.split("|"):
        fields = part.split(";")
        if len(fields) != 4:
            raise MalformedRecordError(file, row, f"box {part!r} does not have 4 ';'-separated numbers")
        try:
            vals = [float(v) for v in fields]
        except ValueError as exc:
            raise MalformedRecordError(file, row, f"box {part!r} is not numeric") from exc
        out.append(vals)
    b = xywh_to_xyxy(np.array(out, np.float32))
    return validate_boxes(b, file, row, image_size, policy, clipped)


def boxes_to_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 4) xyxy -> uint8 (H, W) mask, 1 inside any box (pixel centres inside, edges rounded)."""
    m = np.zeros((height, width), np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4):
        c1, r1 = max(int(round(x1)), 0), max(int(round(y1)), 0)
        c2, r2 = min(int(round(x2)), width), min(int(round(y2)), height)
        m[r1:r2, c1:c2] = 1
    return m


Encoding = Literal["relative", "absolute"]


def _ints(rle: str, file: object, row: object) -> np.ndarray:
    parts = str(rle).split()
    try:
        arr = np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError as exc:
        raise MalformedRecordError(file, row, f"RLE has a non-integer token: {str(rle)[:60]!r}") from exc
    if arr.size % 2:
        raise MalformedRecordError(file, row, f"RLE has an odd number of values ({arr.size})")
    return arr


def is_empty_rle(rle: object) -> bool:
    """True for the competition's '-1' (no pneumothorax) and for blanks."""
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return True
    s = str(rle).strip()
    return s in ("", "-1")


def decode_rle(
    rle: str,
    height: int = 1024,
    width: int = 1024,
    encoding: Encoding = "relative",
    file: object = "<string>",
    row: object = "?",
) -> np.ndarray:
    """RLE string -> uint8 (H, W) mask (column-major pixel walk); '-1' or '' -> all zeros."""
    mask = np.zeros(height * width, np.uint8)
    if is_empty_rle(rle):
        return mask.reshape(height, width)
    arr = _ints(rle, file, row)
    starts, lengths = arr[0::2], arr[1::2]
    if np.any(lengths < 0) or np.any(starts < (0 if encoding == "relative" else 1)):
        raise MalformedRecordError(file, row, "RLE has a negative start or length")
    if encoding == "relative":
        pos = 0
        for s, n in zip(starts, lengths):
            pos += int(s)
            if pos + n > mask.size:
                raise MalformedRecordError(file, row, f"RLE runs past the {height}x{width} image")
            mask[pos : pos + n] = 1
            pos += int(n)
    elif encoding == "absolute":
        for s, n in zip(starts, lengths):
            a = int(s) - 1
            if a + n > mask.size:
                raise MalformedRecordError(file, row, f"RLE runs past the {height}x{width} image")
            mask[a : a + n] = 1
    else:
        raise ValueError(f"unknown RLE encoding {encoding!r}")
    return mask.reshape(width, height).T.copy()  # column-major walk, as rle2mask(...).T


def encode_rle(mask: np.ndarray, encoding: Encoding = "relative") -> str:
    """uint8/bool (H, W) mask -> RLE string (column-major); an empty mask -> '-1'."""
    flat = np.asarray(mask).T.reshape(-1).astype(bool)
    if not flat.any():
        return "-1"
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    if encoding == "absolute":
        return " ".join(f"{s + 1} {n}" for s, n in zip(starts, lengths))
    rel, prev_end = [], 0
    for s, e in zip(starts, ends):
        rel.append(f"{s - prev_end} {e - s}")
        prev_end = e
    return " ".join(rel)


def masks_union(
    rles: list[str], height: int, width: int, encoding: Encoding, file: Path | str, row
) -> np.ndarray:
    """Union of several RLE masks of one image -> uint8 (H, W)."""
    m = np.zeros((height, width), np.uint8)
    for r in rles:
        m |= decode_rle(r, height, width, encoding, file, row)
    return m
