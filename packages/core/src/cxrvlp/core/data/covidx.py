"""COVIDx CXR (COVID-Net): space-separated split files + PNG/JPEG images.

Expected layout (unmodified)::

    <root>/train.txt, <root>/test.txt (and val.txt in COVIDx9+; any *.txt passed as `split_file`)
    <root>/train/<filename>, <root>/test/<filename>   (val images live in train/ in COVIDx9)

Each line: "<patient id> <filename> <class> <source>"; filenames may contain spaces, so the patient id
is the first token and class and source the last two. Class sets: COVIDx-CXR2/9+ use positive /
negative -> classes ("COVID-19",); older versions use normal / pneumonia / COVID-19 -> three one-hot
classes ("Normal", "Pneumonia", "COVID-19") (MGCA's 3-way task). MAVL's split files
(covidx-cxr2/{train,val,test}_split.csv, same line format, images in <root>/train/) work via `split_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file, open_text
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError

NAME = "covidx"
BINARY = {"positive": 1.0, "negative": 0.0}
THREE = {"normal": 0, "pneumonia": 1, "covid-19": 2}
THREE_CLASSES = ("Normal", "Pneumonia", "COVID-19")


def parse_split_line(line: str, file: object, lineno: int) -> tuple[str, str, str, str]:
    """ "pid filename class source" -> (pid, filename, class (lower-case), source)."""
    parts = line.split()
    if len(parts) < 4:
        raise MalformedRecordError(file, lineno, f"expected 'patient filename class source', got {line!r}")
    pid, cls, src = parts[0], parts[-2].lower(), parts[-1]
    fname = " ".join(parts[1:-2])
    if cls not in BINARY and cls not in THREE:
        raise MalformedRecordError(file, lineno, f"unknown class {parts[-2]!r}")
    return pid, fname, cls, src


class COVIDxDataset(CxrDataset):
    """COVIDx images with a COVID-19 (binary) or normal/pneumonia/COVID-19 (one-hot) label."""

    name = NAME

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "test",
        split_file: str | Path | None = None,
        image_dir: str | None = None,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train / val / test, got {split!r}")
        if split_file is not None:
            path = Path(split_file)
            if not path.is_file():
                raise DatasetNotFoundError(NAME, path, "the COVIDx split file")
        else:
            cands = [
                f"{split}.txt",
                f"{split}_COVIDx9A.txt",
                f"{split}_split.txt",
                f"{split}_COVIDx_CXR3.txt",
            ]
            path = find_file(NAME, self.root, cands, f"{split}.txt")
        self.split, self.split_path = split, path
        rows = []
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((lineno, *parse_split_line(line, path, lineno)))
                except MalformedRecordError as err:
                    self._skip(err)
        kinds = {c in BINARY for _, _, _, c, _ in rows}
        if len(kinds) > 1:
            raise MalformedRecordError(
                path, "?", "mixes positive/negative with normal/pneumonia/COVID-19 classes"
            )
        binary = not rows or kinds == {True}
        self.classes = ("COVID-19",) if binary else THREE_CLASSES
        folder = image_dir or ("test" if split == "test" else "train")
        for lineno, pid, fname, cls, src in rows:
            if binary:
                lab = np.array([BINARY[cls]], np.float32)
            else:
                lab = np.zeros(3, np.float32)
                lab[THREE[cls]] = 1.0
            img = os.path.join(self.root_str, folder, fname)
            if (
                load_images
                and not os.path.exists(img)
                and os.path.exists(os.path.join(self.root_str, "val", fname))
            ):
                img = os.path.join(self.root_str, "val", fname)
            self.records.append(
                Record(
                    image_path=img,
                    labels=lab,
                    patient_id=pid,
                    meta={"patient_id": pid, "filename": fname, "class": cls, "source": src, "line": lineno},
                )
            )
