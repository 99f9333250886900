"""SIIM-ACR competition run-length encoding (private copy for the mirrors).

The competition's RLE walks the mask column by column (Fortran order of the (H, W) mask) and writes
"start length" pairs where each start is counted from the end of the previous run (the first from pixel 0).
The core SIIM reader owns the public encoder/decoder; `encode_rle` here prefers it when it is importable.
"""

from __future__ import annotations

import numpy as np


def _encode_rle_local(mask: np.ndarray) -> str:
    """(H, W) mask -> competition relative RLE ('-1' for an empty mask)."""
    flat = (np.asarray(mask) > 0).astype(np.int8).T.ravel()  # column-major walk
    if not flat.any():
        return "-1"
    padded = np.concatenate([[0], flat, [0]])
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts
    prev_end = np.concatenate([[0], ends[:-1]])
    rel = starts - prev_end
    return " ".join(f"{r} {n}" for r, n in zip(rel.tolist(), lengths.tolist()))


def decode_rle_local(rle: str, height: int, width: int) -> np.ndarray:
    """Competition relative RLE -> (H, W) uint8 mask (used by the tests to check the encoder)."""
    out = np.zeros(height * width, np.uint8)
    vals = [int(v) for v in rle.split()]
    if vals == [-1]:
        return out.reshape(width, height).T.copy()
    pos = 0
    for start, length in zip(vals[0::2], vals[1::2]):
        pos += start
        out[pos : pos + length] = 1
        pos += length
    return out.reshape(width, height).T.copy()


def encode_rle(mask: np.ndarray) -> str:
    """(H, W) mask -> competition relative RLE; the core reader's encoder when it exists."""
    try:
        from cxrvlp.core.data.siim import encode_rle as reader_encode  # type: ignore[attr-defined]
    except ImportError:
        return _encode_rle_local(mask)
    return str(reader_encode(mask)).strip()
