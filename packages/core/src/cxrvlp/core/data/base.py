"""What every official-format reader shares: finding files, reading tables with row numbers, skipping
bad records (logged and counted, never silently), reading images (optionally from the reduced-size cache)
and building `Sample`s."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from cxrvlp.core.data.contract import OnError, Sample
from cxrvlp.core.data.geometry import BoxPolicy, check_box_policy, validate_boxes
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.errors import CorruptImageError, CxrvlpError, DatasetNotFoundError, MalformedRecordError

log = logging.getLogger("cxrvlp.core.data")


def check_on_error(on_error: str) -> OnError:
    """Validate the on_error argument."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]


def require_root(dataset: str, root: str | Path) -> Path:
    """The dataset root as a Path, or DatasetNotFoundError."""
    p = Path(root).expanduser()
    if not p.is_dir():
        raise DatasetNotFoundError(dataset, p, "the dataset root folder")
    return p


def _variants(name: str) -> list[str]:
    """'x.csv.gz' -> ['x.csv.gz', 'x.csv']; 'x.csv' -> ['x.csv', 'x.csv.gz', 'x.csv.zip']."""
    if name.endswith(".gz"):
        return [name, name[:-3]]
    if name.endswith(".zip"):
        return [name, name[:-4]]
    return [name, name + ".gz", name + ".zip"]


def find_file(dataset: str, root: Path, candidates: Sequence[str | Path], expected: str = "") -> Path:
    """First existing file among candidates (relative to root, with .gz / plain / .zip variants)."""
    tried = []
    for c in candidates:
        c = Path(c)
        base = c if c.is_absolute() else root / c
        for v in _variants(base.name):
            q = base.with_name(v)
            tried.append(q)
            if q.is_file():
                return q
    raise DatasetNotFoundError(
        dataset, tried[0] if tried else root, expected or " or ".join(map(str, candidates))
    )


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file that may be gzipped or a single-member zip."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    if path.name.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        names = [n for n in zf.namelist() if not n.endswith("/")]
        return io.TextIOWrapper(zf.open(names[0]), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


_LINE_RE = re.compile(r"line (\d+)")


def read_table(
    path: Path,
    required: Sequence[str] = (),
    *,
    sep: str = ",",
    header: int | None = 0,
    names: Sequence[str] | None = None,
    dtype: Any = None,
    usecols: Sequence[str] | None = None,
    nrows: int | None = None,
    skipped: list[tuple[str, str]] | None = None,
    on_error: OnError = "raise",
    strip_columns: bool = True,
    min_fields: int | None = -1,
    nonblank: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a CSV/TXT table; a malformed line -> MalformedRecordError(file, line), or skipped and counted.

    A malformed line is one with more fields than the header, fewer than `min_fields` (-1: as many as the
    header; None: no lower bound; blank lines are ignored), or a blank value in a `nonblank` column.
    """
    bad: list[tuple[int, str]] = []
    # index_col=False: rows with extra fields must not silently become an index
    kw: dict[str, Any] = dict(
        sep=sep, header=header, dtype=dtype, nrows=nrows, keep_default_na=True, index_col=False
    )
    if names is not None:
        kw["names"] = list(names)
    lines: list[int] = []
    try:
        with open_text(path) as f:
            src = _check_rows(f, sep, header, path, bad, lines, min_fields, on_error)
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            if src is None:  # every row is well-formed: pandas reads the file itself
                with open_text(path) as f:
                    df = pd.read_csv(f, **kw)
            else:
                df = pd.read_csv(src, **kw)
    except pd.errors.ParserWarning as exc:
        raise MalformedRecordError(path, "?", f"rows do not match the header: {exc}") from exc
    except pd.errors.ParserError as exc:
        m = _LINE_RE.search(str(exc))
        raise MalformedRecordError(path, int(m.group(1)) if m else "?", str(exc).strip()) from exc
    except (
        UnicodeDecodeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        pd.errors.EmptyDataError,
        csv.Error,
    ) as exc:
        raise MalformedRecordError(path, "?", f"cannot read the table: {type(exc).__name__}: {exc}") from exc
    if strip_columns and header is not None:
        df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MalformedRecordError(path, 1, f"missing column(s) {missing}; found {list(df.columns)[:20]}")
    if nonblank and len(df):
        cols = [c for c in nonblank if c in df.columns]
        blank = (
            df[cols].isna().to_numpy() | df[cols].astype(str).apply(lambda c: c.str.strip() == "").to_numpy()
        )
        rows = np.flatnonzero(blank.any(axis=1))
        for i in rows:
            col = cols[int(np.flatnonzero(blank[i])[0])]
            line = lines[i] if i < len(lines) else int(i) + 2
            err = MalformedRecordError(path, line, f"blank {col!r}")
            if on_error == "raise":
                raise err
            bad.append((line, str(err)))
        if len(rows):
            df = df.drop(index=df.index[rows]).reset_index(drop=True)
    for _line, msg in sorted(bad):
        log.warning("skipping: %s", msg)
        if skipped is not None:
            skipped.append((str(path), msg))
    if usecols is not None:
        df = df[[c for c in usecols if c in df.columns]]
    return df


def _check_rows(
    f, sep: str, header: int | None, path: Path, bad: list, lines: list, min_fields: int | None, on_error: str
) -> io.StringIO | None:
    """Check every row's field count (recording where each kept record starts in `lines`).

    on_error="raise": the first malformed row raises; returns None (the file itself is then read).
    on_error="skip": returns a copy of the table without the malformed rows (each recorded in `bad`).
    """
    reader = csv.reader(f, delimiter=sep)
    out = io.StringIO() if on_error == "skip" else None
    writer = csv.writer(out, delimiter=sep, lineterminator="\n") if out is not None else None
    width = None
    prev_end = 0
    for i, fields in enumerate(reader):
        start, prev_end = prev_end + 1, reader.line_num
        if i == 0 and header is not None:
            width = len(fields)
            if writer is not None:
                writer.writerow(fields)
            continue
        if not fields:
            continue  # a blank line: pandas skips it too
        if width is None:
            width = len(fields)
        least = width if min_fields == -1 else (min_fields or 0)
        if len(fields) > width or len(fields) < least:
            why = "more" if len(fields) > width else "fewer"
            err = MalformedRecordError(
                path,
                start,
                f"{len(fields)} fields, {why} than the {width if why == 'more' else least} expected: "
                f"{sep.join(fields)[:120]!r}",
            )
            if writer is None:
                raise err
            bad.append((start, str(err)))
            continue
        lines.append(start)
        if writer is not None:
            writer.writerow(fields)
    if out is None:
        return None
    out.seek(0)
    return out


def record_lines(path: Path, sep: str = ",") -> list[int]:
    """Physical (1-based) line where each data record of a CSV starts; quoted fields may span lines."""
    starts = []
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=sep)
        prev_end = 0
        for i, _ in enumerate(reader):
            if i > 0:
                starts.append(prev_end + 1)
            prev_end = reader.line_num
    return starts


class RecordSkipper:
    """Raise, or log and count, a bad record."""

    def __init__(self, on_error: OnError, skipped: list[tuple[str, str]]):
        self.on_error, self.skipped = on_error, skipped

    def __call__(self, err: CxrvlpError, where: str | None = None) -> None:
        if self.on_error == "raise":
            raise err
        log.warning("skipping: %s", err)
        self.skipped.append((where or str(getattr(err, "file", "")), str(err)))


class RowView(Mapping):
    """A read-only view of one source row (column -> unmodified value), cheap to build for 100k+ rows.

    Built from `DataFrame.itertuples`; `extra` overrides or adds keys (e.g. parsed list columns).
    """

    __slots__ = ("_pos", "_values", "_extra")

    def __init__(self, pos: dict[str, int], values: Sequence[Any], extra: dict[str, Any] | None = None):
        self._pos, self._values, self._extra = pos, values, extra

    def __getitem__(self, key: str) -> Any:
        if self._extra is not None and key in self._extra:
            return self._extra[key]
        return self._values[self._pos[key]]

    def __iter__(self):
        yield from self._pos
        if self._extra:
            yield from (k for k in self._extra if k not in self._pos)

    def __len__(self) -> int:
        return len(self._pos) + sum(1 for k in (self._extra or ()) if k not in self._pos)

    def with_extra(self, **extra: Any) -> RowView:
        """A copy with some keys overridden."""
        return RowView(self._pos, self._values, {**(self._extra or {}), **extra})

    def __repr__(self) -> str:
        return f"RowView({dict(self)!r})"


def iter_rows(df: pd.DataFrame):
    """RowView per DataFrame row (much cheaper than `to_dict("records")`)."""
    pos = {str(c): i for i, c in enumerate(df.columns)}
    # one vectorised conversion to Python objects; iterating pandas extension arrays cell by cell is slow
    for values in df.to_numpy(dtype=object).tolist():
        yield RowView(pos, values)


@dataclass
class Record:
    """One image of a dataset, before its pixels are read."""

    image_path: str  # a plain string: Path objects cost seconds over 100k+ records
    labels: np.ndarray | None = None
    report: str | None = None
    sections: dict[str, str] = field(default_factory=dict)
    boxes: np.ndarray | None = None  # (K, 4) xyxy in the original image's pixels
    box_labels: list[str] = field(default_factory=list)
    rle: list[str] = field(default_factory=list)  # SIIM: run-length strings of the masks
    mask_path: str | None = None
    patient_id: str | None = None
    study_id: str | None = None
    view: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


class CxrDataset(torch.utils.data.Dataset):
    """Base of the readers: a list of `Record`s, read into `Sample`s on access.

    `skipped` lists (path-or-row, reason) for every record dropped at construction and every image
    skipped at access time (with on_error="skip" an unreadable image is replaced by the next readable
    index and counted; counts made inside DataLoader worker processes stay in those processes, so call
    `check_images()` first when an exact count matters).

    Boxes follow `box_policy` (see `geometry.BoxPolicy`): at construction they are checked against what
    the reader knows of the image size (the source's nominal size, or only x, y >= 0), and when an image
    is read against its real (original) size. "reject" makes a box outside the image a
    `MalformedRecordError` (raised, or skipped and counted under on_error="skip"); "clip" clips it, logs
    it and counts it once in `clipped`. Empty and wholly-outside boxes are always rejected. A mask whose
    size differs from its image is a `MalformedRecordError` too.
    """

    name: str = ""
    classes: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        *,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        box_policy: BoxPolicy = "reject",
        cache_size: int | None = None,
    ) -> None:
        self.root = require_root(self.name, root)
        self.root_str = str(self.root)
        self.load_images = load_images
        self.on_error = check_on_error(on_error)
        self.skipped: list[tuple[str, str]] = []
        self._skip = RecordSkipper(self.on_error, self.skipped)
        self.box_policy = check_box_policy(box_policy)
        self.clipped: list[tuple[str, str]] = []  # (file, message) per clipped box row (box_policy="clip")
        self.records: list[Record] = []
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: dict[str, tuple[Path, int, int]] | None = None
        self._shards = None  # a uint8 shard cache (`shards.py`), found in cache_dir by its manifest
        self._shard_kwargs_checked = False
        if self.cache_dir is not None:
            from cxrvlp.core.data.shards import open_shard_cache, shard_folder

            if shard_folder(self.cache_dir, self.name) is not None:
                # checked here (size, completeness, source fingerprint), so a bad cache stops the run early
                self._shards = open_shard_cache(self.cache_dir, self.name, cache_size, source_root=self.root)
            else:
                from cxrvlp.core.data.cache import load_cache_index

                self._cache = load_cache_index(self.cache_dir, self.name)

    # -- subclasses fill self.records ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def key(self, rec: Record) -> str:
        """The image's path relative to the root (posix), the cache key."""
        rel = os.path.relpath(rec.image_path, self.root_str)
        return Path(rec.image_path).as_posix() if rel.startswith("..") else rel.replace(os.sep, "/")

    def read_pixels(self, rec: Record) -> tuple[np.ndarray | None, tuple[int, int] | None]:
        """(image, original (H, W) when read from the cache else None); image None when skipped."""
        if self._shards is not None:
            if not self._shard_kwargs_checked:
                self._check_shard_kwargs()
            hit = self._shards.get(self.key(rec))
            if hit is not None:
                # the same float image the 8-bit PNG cache decodes to (`_decode_raster`), with no decoding
                return hit[0].astype(np.float32) / np.float32(255.0), hit[1]
        if self._cache is not None:
            hit = self._cache.get(self.key(rec))
            if hit is not None:
                img = read_image(hit[0], on_error="raise")
                return img, (hit[1], hit[2])
        return read_image(rec.image_path, on_error="raise", **self.read_kwargs()), None

    def _check_shard_kwargs(self) -> None:
        # read_kwargs() may use attributes a subclass sets after CxrDataset.__init__: checked at first read
        from cxrvlp.core.data.shards import ShardCacheError

        built, mine = self._shards.manifest.get("read_kwargs", {}), dict(self.read_kwargs())
        if built != mine:
            raise ShardCacheError(
                self._shards.folder, f"built with reader arguments {built}, this reader uses {mine}"
            )
        self._shard_kwargs_checked = True

    def read_kwargs(self) -> dict[str, Any]:
        """Extra `read_image` arguments (e.g. PadChest's 16-bit scaling)."""
        return {}

    def check_images(self) -> int:
        """Decode every image once; drop unreadable ones (counted in `skipped`); returns how many."""
        keep = []
        for rec in self.records:
            try:
                self.read_pixels(rec)
                keep.append(rec)
            except CxrvlpError as err:
                self._skip(err, rec.image_path)
        dropped = len(self.records) - len(keep)
        self.records = keep
        return dropped

    def __getitem__(self, idx: int) -> Sample:
        n = len(self.records)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(idx)
        if not self.load_images:
            return self.make_sample(self.records[idx], None, None)
        for attempt in range(n):
            rec = self.records[(idx + attempt) % n]
            try:
                img, orig = self.read_pixels(rec)
                return self.make_sample(rec, img, orig)
            except CxrvlpError as err:
                self._skip(err, str(rec.image_path))
        raise CorruptImageError(self.root, f"{self.name}: no readable image in the dataset")

    def make_sample(self, rec: Record, img: np.ndarray | None, orig: tuple[int, int] | None) -> Sample:
        """Record + pixels -> Sample; boxes and masks follow the returned image's size."""
        boxes = None if rec.boxes is None else rec.boxes.astype(np.float32).copy()
        row = rec.meta.get("line", "?") if isinstance(rec.meta, Mapping) else "?"
        if img is not None and boxes is not None and len(boxes):
            size = orig if orig is not None else (int(img.shape[0]), int(img.shape[1]))
            checked = validate_boxes(boxes, rec.image_path, row, size, self.box_policy, self.clipped)
            if not np.array_equal(checked, boxes):
                rec.boxes = checked  # clipped once: later reads of this record neither clip nor count again
            boxes = checked
        mask = self.load_mask(rec, img, orig)
        if img is not None and mask is not None and tuple(np.shape(mask)[-2:]) != tuple(img.shape[:2]):
            raise MalformedRecordError(
                rec.mask_path or rec.image_path,
                row,
                f"mask is {tuple(np.shape(mask)[-2:])} (H, W) but its image is {tuple(img.shape[:2])}",
            )
        if img is not None and orig is not None and boxes is not None and len(boxes):
            sy, sx = img.shape[0] / orig[0], img.shape[1] / orig[1]
            boxes *= np.array([sx, sy, sx, sy], np.float32)
        return Sample(
            image=img,
            image_path=rec.image_path,
            dataset=self.name,
            classes=self.classes,
            labels=rec.labels,
            report=rec.report,
            sections=rec.sections,
            boxes=boxes,
            box_labels=list(rec.box_labels),
            mask=mask,
            patient_id=rec.patient_id,
            study_id=rec.study_id,
            view=rec.view,
            meta=rec.meta,
        )

    def load_mask(
        self, rec: Record, img: np.ndarray | None, orig: tuple[int, int] | None
    ) -> np.ndarray | None:
        """Subclasses with masks override this."""
        return None

    def label_matrix(self) -> np.ndarray:
        """(N, C) float32 labels of all records (NaN where unknown), without reading images."""
        if not self.records or self.records[0].labels is None:
            return np.zeros((len(self.records), len(self.classes)), np.float32)
        return np.stack([r.labels for r in self.records]).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """Counts for logs and result JSONs."""
        return {
            "dataset": self.name,
            "n": len(self),
            "classes": list(self.classes),
            "skipped": len(self.skipped),
            "clipped_boxes": len(self.clipped),
        }


def iter_files(root: Path, patterns: Iterable[str]) -> dict[str, str]:
    """Recursive glob once: file stem -> path (first found), for DICOM/PNG trees indexed by id."""
    out: dict[str, str] = {}
    for pat in patterns:
        for p in sorted(root.rglob(pat)):
            out.setdefault(p.stem, str(p))
    return out
