"""SIIM-ACR Pneumothorax Segmentation (stage 1): RLE CSV + DICOM images.

Expected layout (unmodified)::

    <root>/train-rle.csv          ImageId, EncodedPixels ("-1" = no pneumothorax; one row per mask)
    <root>/dicom-images-train/<study>/<series>/<ImageId>.dcm   (found by one recursive glob)

One item per ImageId: label [Pneumothorax] = any mask; `mask` = union of its masks, uint8 (H, W) at the
returned image's size. The stage-1 CSV uses the competition's *relative* RLE (`rle_encoding="relative"`);
stage 2 files use absolute starts ("absolute"). `split_csv` takes MAVL's siimacr/{train,val,test}.csv
(same two columns) and keeps its ImageIds in order.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, find_file, iter_files, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.geometry import Encoding, _ints, is_empty_rle, masks_union
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

NAME = "siim-acr"


class SIIMPneumothoraxDataset(CxrDataset):
    """SIIM-ACR pneumothorax: binary label and the union mask decoded from the RLE rows of each image."""

    name = NAME
    classes = ("Pneumothorax",)

    def __init__(
        self,
        root: str | Path,
        split_csv: str | Path | None = None,
        rle_encoding: Encoding = "relative",
        mask_size: tuple[int, int] = (1024, 1024),
        load_images: bool = True,
        load_masks: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        self.rle_encoding, self.mask_size, self.load_masks = rle_encoding, mask_size, load_masks
        if split_csv is not None:
            path = Path(split_csv)
            if not path.is_file():
                raise DatasetNotFoundError(NAME, path, "the split CSV")
        else:
            path = find_file(NAME, self.root, ["train-rle.csv", "stage_2_train.csv"], "train-rle.csv")
        self.csv_path = path
        df = read_table(
            path,
            ("ImageId", "EncodedPixels"),
            on_error=self.on_error,
            skipped=self.skipped,
            dtype=str,
            # a blank EncodedPixels is not "no pneumothorax" (that is "-1"): it is a malformed row
            nonblank=("ImageId", "EncodedPixels"),
        )
        per: dict[str, dict] = {}
        bad_ids: set[str] = set()
        for i, (iid, rle) in enumerate(zip(df["ImageId"], df["EncodedPixels"])):
            line = i + 2
            if not isinstance(iid, str) or not iid.strip():
                self._skip(MalformedRecordError(path, line, "empty ImageId"))
                continue
            iid = iid.strip()
            try:
                if not is_empty_rle(rle):
                    arr = _ints(rle, path, line)
                    if np.any(arr < 0):
                        raise MalformedRecordError(path, line, "RLE has a negative value")
            except MalformedRecordError as err:
                self._skip(err)
                bad_ids.add(iid)
                continue
            e = per.setdefault(iid, {"rles": [], "line": line})
            if not is_empty_rle(rle):
                e["rles"].append(str(rle).strip())
        for iid in bad_ids:
            per.pop(iid, None)  # an image with one unreadable mask row is dropped whole (counted above)
        index = iter_files(self.root, ["*.dcm"])
        for iid, e in per.items():
            self.records.append(
                Record(
                    image_path=index.get(iid)
                    or os.path.join(self.root_str, "dicom-images-train", f"{iid}.dcm"),
                    labels=np.array([1.0 if e["rles"] else 0.0], np.float32),
                    rle=e["rles"],
                    patient_id=None,
                    study_id=iid,
                    meta={"ImageId": iid, "line": e["line"], "n_masks": len(e["rles"])},
                )
            )

    def load_mask(self, rec: Record, img, orig) -> np.ndarray | None:
        """Union of the image's RLE masks at the returned image's size (nearest-neighbour if cached)."""
        if not self.load_masks:
            return None
        h, w = orig if orig is not None else (img.shape if img is not None else self.mask_size)
        m = masks_union(rec.rle, h, w, self.rle_encoding, self.csv_path, rec.meta.get("line", "?"))
        if img is not None and m.shape != img.shape:
            m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        return m
