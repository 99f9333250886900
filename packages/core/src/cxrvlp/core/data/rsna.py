"""RSNA Pneumonia Detection Challenge (stage 2): boxes CSV + DICOM images.

Expected layout (Kaggle's, unmodified)::

    <root>/stage_2_train_labels.csv      patientId, x, y, width, height, Target (one row per box)
    <root>/stage_2_detailed_class_info.csv   (optional) patientId, class
    <root>/stage_2_train_images/<patientId>.dcm

One item per patientId: label [Pneumonia] = Target, boxes xyxy in the 1024 px DICOM. With `split_csv`
(MAVL's rsna/{test,val}.csv: ID, img_path, boxes "x;y;w;h|...", classes) the images are the CSV's
`img_path` under the root (MD.ai layout) and its boxes/labels are used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import BoxPolicy, parse_box_string, validate_boxes, xywh_to_xyxy
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

NAME = "rsna-pneumonia"


class RSNAPneumoniaDataset(CxrDataset):
    """RSNA Pneumonia: binary label, boxes and (optional) detailed class per patient."""

    name = NAME
    classes = ("Pneumonia",)

    def __init__(
        self,
        root: str | Path,
        split_csv: str | Path | None = None,
        images_dir: str = "stage_2_train_images",
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        box_policy: BoxPolicy = "reject",
        image_size: tuple[int, int] | None = (1024, 1024),
    ) -> None:
        super().__init__(
            root, load_images=load_images, on_error=on_error, cache_dir=cache_dir, box_policy=box_policy
        )
        self.image_size = image_size  # boxes are checked against it at construction (None: x, y >= 0 only)
        if split_csv is not None:
            self._from_split_csv(Path(split_csv))
            return
        path = find_file(
            NAME,
            self.root,
            ["stage_2_train_labels.csv", "stage_1_train_labels.csv"],
            "stage_2_train_labels.csv",
        )
        df = read_table(
            path,
            ("patientId", "x", "y", "width", "height", "Target"),
            on_error=self.on_error,
            skipped=self.skipped,
            nonblank=("patientId", "Target"),
        )
        detail: dict[str, str] = {}
        try:
            dpath = find_file(NAME, self.root, ["stage_2_detailed_class_info.csv"], "")
            d = read_table(dpath, ("patientId", "class"))
            detail = dict(zip(d["patientId"].astype(str), d["class"].astype(str)))
        except DatasetNotFoundError:
            pass
        per: dict[str, dict] = {}
        bad: set[str] = set()  # a patient with one bad row is dropped whole (its other rows too)
        for i, row in enumerate(df.itertuples(index=False)):
            line = i + 2
            pid = str(row.patientId).strip() if isinstance(row.patientId, str) else ""
            if pid in bad:
                continue
            try:
                if not pid:
                    raise MalformedRecordError(path, line, f"blank patientId {row.patientId!r}")
                try:
                    target = float(row.Target)
                except (ValueError, TypeError) as exc:
                    raise MalformedRecordError(path, line, f"Target is not a number: {row.Target!r}") from exc
                if target not in (0.0, 1.0):
                    raise MalformedRecordError(path, line, f"Target must be 0 or 1, got {row.Target!r}")
                coords = [row.x, row.y, row.width, row.height]
                entry = per.setdefault(pid, {"target": target, "boxes": [], "line": line})
                if target != entry["target"]:
                    raise MalformedRecordError(path, line, f"{pid}: Target differs between its rows")
                try:
                    vals = [float(v) for v in coords]
                except (ValueError, TypeError) as exc:
                    raise MalformedRecordError(path, line, f"{pid}: non-numeric box {coords}") from exc
                if target == 1.0:
                    xyxy = xywh_to_xyxy(np.array(vals, np.float32))
                    box = validate_boxes(xyxy, path, line, self.image_size, self.box_policy, self.clipped)
                    entry["boxes"].append(box[0])
                elif not all(np.isnan(v) for v in vals):
                    raise MalformedRecordError(path, line, f"{pid}: a box on a Target=0 row")
            except MalformedRecordError as err:  # before ValueError: it is one, and has its prefix already
                self._skip(err)
                per.pop(pid, None)
                if pid:
                    bad.add(pid)
        img_dir = os.path.join(self.root_str, images_dir)
        for pid, e in per.items():
            boxes = np.stack(e["boxes"]).astype(np.float32) if e["boxes"] else np.zeros((0, 4), np.float32)
            self.records.append(
                Record(
                    image_path=os.path.join(img_dir, f"{pid}.dcm"),
                    labels=np.array([e["target"]], np.float32),
                    boxes=boxes,
                    box_labels=["Pneumonia"] * len(boxes),
                    patient_id=pid,
                    meta={"patientId": pid, "class": detail.get(pid), "line": e["line"]},
                )
            )

    def _from_split_csv(self, path: Path) -> None:
        if not path.is_file():
            raise DatasetNotFoundError(NAME, path, "the split CSV")
        df = read_table(path, on_error=self.on_error, skipped=self.skipped, nonblank=("img_path",))
        cols = list(df.columns)
        if len(cols) < 4 or "img_path" not in cols:
            raise MalformedRecordError(path, 1, f"expected ID, img_path, boxes, classes; found {cols}")
        # columns by position (1, 2, 3), as MAVL's loader reads them; val.csv has merge-suffixed names
        for i, row in enumerate(df.itertuples(index=False)):
            line = i + 2
            try:
                boxes = parse_box_string(row[2], path, line, self.image_size, self.box_policy, self.clipped)
                try:
                    lab = float(row[3])
                except (ValueError, TypeError) as exc:
                    raise MalformedRecordError(path, line, f"classes is not a number: {row[3]!r}") from exc
                if lab not in (0.0, 1.0):
                    raise MalformedRecordError(path, line, f"classes must be 0/1, got {row[3]!r}")
            except MalformedRecordError as err:
                self._skip(err)
                continue
            self.records.append(
                Record(
                    image_path=os.path.join(self.root_str, str(row[1])),
                    labels=np.array([lab], np.float32),
                    boxes=boxes,
                    box_labels=["Pneumonia"] * len(boxes),
                    patient_id=str(row[0]),
                    meta={"ID": row[0], "img_path": row[1], "line": line},
                )
            )
