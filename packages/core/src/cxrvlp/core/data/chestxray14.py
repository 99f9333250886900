"""NIH ChestX-ray14: the official metadata, split lists and bounding boxes.

Expected layout (NIH box release or its Kaggle mirror, unmodified)::

    <root>/Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv; .gz accepted)
    <root>/train_val_list.txt, <root>/test_list.txt   (one Image Index per line)
    <root>/BBox_List_2017.csv          (Image Index, Finding Label, Bbox [x,y,w,h] in 1024 px)
    <root>/images/00000001_000.png     (or images_001/images/..., found by one recursive glob)

Labels: the 14 findings of "Finding Labels" ('|'-separated; "No Finding" = all zeros), no uncertainty.
Boxes (xyxy, original pixels) come from BBox_List_2017, whose "Infiltrate" is mapped to "Infiltration".
`split`: "train_val" | "test" | None (all) | "bbox" (the 880 images with boxes); `split_csv` instead takes
MAVL's xray14 CSV (img_path, Image Index, ...) and keeps its images in its order.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from cxrvlp.core.data.base import (
    CxrDataset,
    Record,
    find_file,
    iter_files,
    iter_rows,
    log,
    open_text,
    read_table,
)
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import BoxPolicy, validate_boxes, xywh_to_xyxy
from cxrvlp.core.data.labels import CHESTXRAY14_CLASSES
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError

NAME = "chestxray14"
BOX_LABEL_MAP = {"Infiltrate": "Infiltration"}


def read_list(path: Path) -> list[str]:
    """A split list: one image name per non-empty line."""
    with open_text(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


def read_bbox_list(
    path: Path,
    on_error: OnError = "raise",
    skipped=None,
    image_size: tuple[int, int] | None = (1024, 1024),
    box_policy: BoxPolicy = "reject",
    clipped: list[tuple[str, str]] | None = None,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """BBox_List_2017.csv -> Image Index -> [(finding, (4,) xyxy)], validated row by row (boxes against
    the 1024 px PNGs of the release unless `image_size` says otherwise; see `geometry.validate_boxes`)."""
    # the official header splits "Bbox [x,y,w,h]" into 4 names (9 in all); the rows have 6 fields
    df = read_table(path, header=0, on_error=on_error, skipped=skipped, strip_columns=False, min_fields=6)
    if df.shape[1] < 6:
        raise MalformedRecordError(
            path, 1, f"expected 6 columns (index, label, x, y, w, h), found {df.shape[1]}"
        )
    out: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for i, row in enumerate(df.itertuples(index=False)):
        name, label = row[0], row[1]
        try:
            try:
                xywh = np.array([float(v) for v in row[2:6]], np.float32)
            except (ValueError, TypeError) as exc:
                raise MalformedRecordError(path, i + 2, f"box is not numeric: {list(row[2:6])}") from exc
            box = validate_boxes(xywh_to_xyxy(xywh), path, i + 2, image_size, box_policy, clipped)[0]
            if not isinstance(name, str) or not isinstance(label, str):
                raise MalformedRecordError(path, i + 2, "missing Image Index or Finding Label")
        except MalformedRecordError as err:
            if on_error == "raise":
                raise
            log.warning("skipping: %s", err)
            if skipped is not None:
                skipped.append((str(path), str(err)))
            continue
        out[name.strip()].append((BOX_LABEL_MAP.get(label.strip(), label.strip()), box))
    return dict(out)


class ChestXray14Dataset(CxrDataset):
    """ChestX-ray14 images with 14 binary labels, patient id, view and (where given) boxes."""

    name = NAME
    classes = CHESTXRAY14_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: Literal["train_val", "test", "bbox"] | None = "test",
        split_csv: str | Path | None = None,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        with_boxes: bool = True,
        box_policy: BoxPolicy = "reject",
        image_size: tuple[int, int] | None = (1024, 1024),
    ) -> None:
        super().__init__(
            root, load_images=load_images, on_error=on_error, cache_dir=cache_dir, box_policy=box_policy
        )
        if split not in ("train_val", "test", "bbox", None):
            raise ConfigError(f"split must be train_val / test / bbox / None, got {split!r}")
        entry = find_file(
            NAME, self.root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"], "Data_Entry_2017*.csv"
        )
        df = read_table(
            entry,
            ("Image Index", "Finding Labels"),
            on_error=self.on_error,
            skipped=self.skipped,
            nonblank=("Image Index",),
        )
        boxes: dict[str, list] = {}
        if with_boxes or split == "bbox":
            try:
                bpath = find_file(NAME, self.root, ["BBox_List_2017.csv"], "BBox_List_2017.csv")
                boxes = read_bbox_list(
                    bpath, self.on_error, self.skipped, image_size, self.box_policy, self.clipped
                )
            except DatasetNotFoundError:
                if split == "bbox":
                    raise
        order: list[str] | None = None
        if split_csv is not None:
            sp = Path(split_csv)
            if not sp.is_file():
                raise DatasetNotFoundError(NAME, sp, "the split CSV")
            order = [str(v).strip() for v in read_table(sp, ("Image Index",))["Image Index"]]
        elif split in ("train_val", "test"):
            lst = find_file(NAME, self.root, [f"{split}_list.txt"], f"{split}_list.txt")
            order = read_list(lst)
        elif split == "bbox":
            order = sorted(boxes)
        rows = {str(r["Image Index"]).strip(): (i, r) for i, r in enumerate(iter_rows(df))}
        self._index = iter_files(self.root, ["*.png"])  # one recursive glob: both NIH and Kaggle layouts
        names = order if order is not None else list(rows)
        dummies = df["Finding Labels"].astype(str).str.get_dummies(sep="|")  # (N, distinct findings)
        dummies.columns = [c.strip() for c in dummies.columns]
        dummies = dummies.T.groupby(level=0).max().T  # merge columns that differed only by spaces
        unknown = [c for c in dummies.columns if c not in self.classes and c != "No Finding"]
        bad_rows = set(np.flatnonzero(dummies[unknown].to_numpy().any(axis=1))) if unknown else set()
        labels = dummies.reindex(columns=list(self.classes), fill_value=0).to_numpy(np.float32)  # (N, 14)
        for name in names:
            if name not in rows:
                self._skip(
                    MalformedRecordError(entry, "?", f"image {name!r} of the split is not in the metadata")
                )
                continue
            i, row = rows[name]
            if i in bad_rows:
                self._skip(
                    MalformedRecordError(entry, i + 2, f"unknown finding in {row['Finding Labels']!r}")
                )
                continue
            lab = labels[i]
            bx = boxes.get(name, [])
            path = self._index.get(name.rsplit(".", 1)[0]) or os.path.join(self.root_str, "images", name)
            view = row.get("View Position")
            self.records.append(
                Record(
                    image_path=path,
                    labels=lab,
                    boxes=np.stack([b for _, b in bx]).astype(np.float32) if bx else None,
                    box_labels=[lbl for lbl, _ in bx],
                    patient_id=str(row.get("Patient ID")) if row.get("Patient ID") is not None else None,
                    view=view.upper() if isinstance(view, str) else None,
                    meta=row,
                )
            )
