"""ChestX-Det10 / ChestX-Det (Deepwise): JSON boxes (and polygons) over renamed NIH images.

Expected layout (unmodified)::

    <root>/train.json, <root>/test.json          (ChestX-Det10)  or  ChestX_Det_{train,test}.json (ChestX-Det)
    <root>/train_data/<file_name>, <root>/test_data/<file_name>   (or <root>/images/<file_name>)

Each entry: {"file_name", "syms": [...], "boxes": [[x1, y1, x2, y2], ...], ("polygons": [...])}.
Labels: multi-hot of `syms` over the 10 (ChestX-Det10) or 13 (ChestX-Det) categories; boxes xyxy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import BoxPolicy, validate_boxes
from cxrvlp.core.errors import ConfigError, MalformedRecordError

NAME = "chestx-det10"
DET10_CLASSES = (
    "Atelectasis",
    "Calcification",
    "Consolidation",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Fracture",
    "Mass",
    "Nodule",
    "Pneumothorax",
)
DET13_CLASSES = (
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "Diffuse Nodule",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Fracture",
    "Mass",
    "Nodule",
    "Pleural Thickening",
    "Pneumothorax",
)


class ChestXDet10Dataset(CxrDataset):
    """ChestX-Det10 (or ChestX-Det with `version="det13"`) images with labels, boxes and polygons."""

    name = NAME

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "test"] = "test",
        version: Literal["det10", "det13"] = "det10",
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        box_policy: BoxPolicy = "reject",
        image_size: tuple[int, int] | None = (1024, 1024),
    ) -> None:
        super().__init__(
            root, load_images=load_images, on_error=on_error, cache_dir=cache_dir, box_policy=box_policy
        )
        if split not in ("train", "test") or version not in ("det10", "det13"):
            raise ConfigError(f"split must be train/test and version det10/det13, got {split!r}, {version!r}")
        self.classes = DET10_CLASSES if version == "det10" else DET13_CLASSES
        names = [f"{split}.json"] if version == "det10" else [f"ChestX_Det_{split}.json"]
        path = find_file(self.name, self.root, names, names[0])
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedRecordError(path, getattr(exc, "lineno", "?"), f"invalid JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise MalformedRecordError(path, 1, "expected a JSON list of entries")
        cidx = {c: j for j, c in enumerate(self.classes)}
        img_dir = f"{split}_data" if (self.root / f"{split}_data").is_dir() else "images"
        for k, e in enumerate(entries):
            where = f"entry {k}"
            try:
                if not isinstance(e, dict) or not isinstance(e.get("file_name"), str):
                    raise MalformedRecordError(path, where, "entry without a file_name")
                syms, bx = e.get("syms", []), e.get("boxes", [])
                if not isinstance(syms, list) or not isinstance(bx, list) or len(syms) != len(bx):
                    raise MalformedRecordError(path, where, "syms and boxes must be lists of equal length")
                unknown = [s for s in syms if s not in cidx]
                if unknown:
                    raise MalformedRecordError(path, where, f"unknown categories {unknown}")
                # one box of exactly 4 numbers per label: 8 numbers must not become 2 boxes, one unlabelled
                for j, (s, b) in enumerate(zip(syms, bx)):
                    if not isinstance(b, list) or len(b) != 4:
                        n = len(b) if isinstance(b, list) else type(b).__name__
                        raise MalformedRecordError(
                            path, where, f"box {j} ({s}) must be [x1, y1, x2, y2], got {n} values: {b!r}"
                        )
                try:
                    boxes = np.array(bx, np.float32).reshape(-1, 4)
                except (TypeError, ValueError) as exc:
                    raise MalformedRecordError(
                        path, where, f"boxes are not [x1, y1, x2, y2] lists: {exc}"
                    ) from exc
                boxes = validate_boxes(boxes, path, where, image_size, self.box_policy, self.clipped)
            except MalformedRecordError as err:
                self._skip(err)
                continue
            lab = np.zeros(len(self.classes), np.float32)
            for s in syms:
                lab[cidx[s]] = 1.0
            self.records.append(
                Record(
                    image_path=os.path.join(self.root_str, img_dir, e["file_name"]),
                    labels=lab,
                    boxes=boxes,
                    box_labels=list(syms),
                    study_id=e["file_name"],
                    meta={"file_name": e["file_name"], "polygons": e.get("polygons")},
                )
            )
