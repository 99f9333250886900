"""A reduced-size image cache: decode every image once, store it as a PNG with long side N, index it.

Layout written by `prepare_cache(dataset, out_dir, size)` (and `cxrvlp prepare`)::

    <out_dir>/<dataset name>/index.csv      key, cache_path, orig_h, orig_w, h, w
    <out_dir>/<dataset name>/<key>.png      key = the image path relative to the dataset root

Readers given `cache_dir=<out_dir>` read the cached PNG when the key is indexed (boxes and masks are
rescaled to the returned image, see `CxrDataset.make_sample`) and the original otherwise. The same pixels
without a PNG decode per read: the uint8 shard cache (`shards.py`, `cxrvlp prepare ... --format shards`).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from cxrvlp.core.data.imaging import read_image, write_png
from cxrvlp.core.errors import CxrvlpError, DatasetNotFoundError, MalformedRecordError

log = logging.getLogger(__name__)

INDEX = "index.csv"
COLUMNS = ("key", "cache_path", "orig_h", "orig_w", "h", "w")


def resize_long_side(img: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the long side is `size` (INTER_AREA, int() truncation); smaller images are kept as is."""
    h, w = img.shape
    if max(h, w) <= size:
        return img
    s = size / max(h, w)
    nh, nw = max(1, int(h * s)), max(1, int(w * s))
    if h >= w:
        nh = size
    else:
        nw = size
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def _cache_folder(cache_dir: Path, name: str) -> Path:
    if (cache_dir / INDEX).is_file():
        return cache_dir
    return cache_dir / name


def load_cache_index(cache_dir: str | Path, name: str) -> dict[str, tuple[str, int, int]]:
    """key -> (absolute cached path, original H, original W); DatasetNotFoundError without an index."""
    folder = _cache_folder(Path(cache_dir), name)
    path = folder / INDEX
    if not path.is_file():
        raise DatasetNotFoundError(name, path, f"a cache index (run `cxrvlp prepare {name} ...`)")
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or any(c not in reader.fieldnames for c in COLUMNS):
            raise MalformedRecordError(path, 1, f"expected columns {COLUMNS}, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                out[row["key"]] = (str(folder / row["cache_path"]), int(row["orig_h"]), int(row["orig_w"]))
            except (TypeError, ValueError) as exc:
                raise MalformedRecordError(path, line, f"bad cache index row: {row}") from exc
    return out


@dataclass
class CacheReport:
    """What `prepare_cache` did."""

    folder: Path
    written: int
    reused: int
    skipped: list[tuple[str, str]]
    seconds: float


def prepare_cache(
    dataset,
    out_dir: str | Path,
    size: int,
    bits: int = 8,
    progress: bool = False,
    limit: int | None = None,
    overwrite: bool = False,
) -> CacheReport:
    """Write each image of `dataset` once at long side `size` (PNG) and the index CSV."""
    folder = Path(out_dir) / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    records = dataset.records[:limit] if limit is not None else dataset.records
    it = records
    if progress:
        from tqdm import tqdm

        it = tqdm(records, desc=f"caching {dataset.name}", unit="img")
    rows, skipped, written, reused = [], [], 0, 0
    seen: set[str] = set()
    t0 = time.perf_counter()
    for rec in it:
        key = dataset.key(rec)
        if key in seen:
            continue
        seen.add(key)
        rel = os.path.splitext(key)[0].lstrip("/") + ".png"
        dst = folder / rel
        try:
            img = read_image(rec.image_path, on_error="raise", **dataset.read_kwargs())
        except CxrvlpError as err:
            log.warning("cache: skipping %s", err)
            skipped.append((rec.image_path, str(err)))
            continue
        small = resize_long_side(img, size)
        if overwrite or not dst.is_file():
            write_png(dst, small, bits=bits)
            written += 1
        else:
            reused += 1
        rows.append((key, rel, img.shape[0], img.shape[1], small.shape[0], small.shape[1]))
    with open(folder / INDEX, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return CacheReport(folder, written, reused, skipped, time.perf_counter() - t0)


def read_throughput(paths: list[str], read_kwargs: dict | None = None, repeats: int = 1) -> float:
    """Images per second decoding `paths` in this process (one core)."""
    if not paths:
        return float("nan")
    t0 = time.perf_counter()
    for _ in range(repeats):
        for p in paths:
            read_image(p, on_error="skip", **(read_kwargs or {}))
    return len(paths) * repeats / max(time.perf_counter() - t0, 1e-9)
