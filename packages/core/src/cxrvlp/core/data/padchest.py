"""PadChest (BIMCV): the 160K labels CSV with list-valued Labels / Localizations, 16-bit PNGs.

Expected layout (unmodified)::

    <root>/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv   (.gz accepted)
    <root>/<ImageDir>/<ImageID>.png     (the official 0..54 folders)  or  <root>/images/<ImageID>.png

Labels: multi-hot over `classes` (default: the sorted unique label strings of the selected rows,
"normal" included; CARZero's protocol uses the alphabetical list without "normal"); leading/trailing
spaces and empty strings inside the lists are dropped. Rows whose Labels cell is blank (103 in the official
file) are skipped and counted. `manual_only=True` keeps the physician-labelled subset (MethodLabel ==
"Physician"), `projections` filters the Projection column (e.g. ("PA", "AP", "AP_horizontal")).
Images are 16-bit: divided by their own maximum (MAVL's reading) unless `png16_scaling` says otherwise.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file, iter_rows, read_table, record_lines
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.imaging import Png16Scaling
from cxrvlp.core.errors import MalformedRecordError

NAME = "padchest"
LABELS_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"


_SIMPLE_LIST = re.compile(r"\[\s*(?:'[^'\\]*'\s*(?:,\s*'[^'\\]*'\s*)*)?\]")
_ITEM = re.compile(r"'([^'\\]*)'")


@functools.lru_cache(maxsize=65536)
def _literal(s: str) -> Any:
    # label lists repeat a lot across rows: parse each distinct string once, plain lists by regex
    if _SIMPLE_LIST.fullmatch(s):
        return _ITEM.findall(s)
    return ast.literal_eval(s)


def parse_list_cell(value: Any, file: object, row: object, column: str) -> list[str] | None:
    """A Python-list string "['a', 'b']" -> ['a', 'b'] (stripped, empties dropped); blank -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip()
    if s == "":
        return None
    try:
        v = _literal(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise MalformedRecordError(file, row, f"{column}: not a Python list: {s[:80]!r}") from exc
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise MalformedRecordError(file, row, f"{column}: expected a list of strings, got {s[:80]!r}")
    return [x.strip() for x in v if x.strip()]


class PadChestDataset(CxrDataset):
    """PadChest images with multi-hot labels, localizations, projection and report text (Spanish stems)."""

    name = NAME

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        manual_only: bool = False,
        projections: Sequence[str] | None = None,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        png16_scaling: Png16Scaling = "max",
        csv: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        self.png16_scaling = png16_scaling
        path = find_file(NAME, self.root, [csv or LABELS_CSV], LABELS_CSV)
        self.csv_path = path
        df = read_table(
            path,
            ("ImageID", "ImageDir", "Labels", "Projection"),
            on_error=self.on_error,
            skipped=self.skipped,
            dtype={"ImageID": str},
            nonblank=("ImageID", "ImageDir"),
        )
        if manual_only:
            df = df[df["MethodLabel"] == "Physician"]
        if projections is not None:
            df = df[df["Projection"].isin(list(projections))]
        parsed: list[tuple[dict, list[str], list[str]]] = []
        lines: list[int] | None = None  # reports span several lines: map data rows to file lines lazily
        for pos, row in zip(df.index, iter_rows(df)):
            try:
                labels = parse_list_cell(row["Labels"], path, "?", "Labels")
                locs = parse_list_cell(row.get("Localizations"), path, "?", "Localizations") or []
            except MalformedRecordError as err:
                lines = lines or record_lines(path)
                line = lines[int(pos)] if int(pos) < len(lines) else "?"
                self._skip(MalformedRecordError(path, line, err.reason))
                continue
            if labels is None:
                lines = lines or record_lines(path)
                line = lines[int(pos)] if int(pos) < len(lines) else "?"
                self.skipped.append((f"{path}:{line}", f"{row['ImageID']}: blank Labels cell"))
                continue
            parsed.append((row, labels, locs))
        if classes is None:
            classes = sorted({lbl for _, labels, _ in parsed for lbl in labels})
        self.classes = tuple(classes)
        cidx = {c: j for j, c in enumerate(self.classes)}
        layout = self._detect_layout([r for r, _, _ in parsed[:50]])
        for row, labels, locs in parsed:
            lab = np.zeros(len(self.classes), np.float32)
            for lbl in labels:
                if lbl in cidx:
                    lab[cidx[lbl]] = 1.0
            row = row.with_extra(Labels=labels, Localizations=locs)
            proj = row.get("Projection")
            self.records.append(
                Record(
                    image_path=self._image_path(row, layout),
                    labels=lab,
                    report=row.get("Report") if isinstance(row.get("Report"), str) else None,
                    patient_id=str(row.get("PatientID")),
                    study_id=str(row.get("StudyID")),
                    view=proj.upper() if isinstance(proj, str) else None,
                    meta=row,
                )
            )

    def _detect_layout(self, rows: list[dict]) -> str:
        for r in rows:
            if (self.root / str(r["ImageDir"]) / r["ImageID"]).is_file():
                return "imagedir"
            if (self.root / "images" / r["ImageID"]).is_file():
                return "images"
        return "imagedir" if not (self.root / "images").is_dir() else "images"

    def _image_path(self, row: Mapping[str, Any], layout: str) -> str:
        sub = "images" if layout == "images" else str(row["ImageDir"])
        return f"{self.root_str}{os.sep}{sub}{os.sep}{row['ImageID']}"  # os.path.join is slow at 160k rows

    def read_kwargs(self) -> dict[str, Any]:
        return {"png16_scaling": self.png16_scaling}
