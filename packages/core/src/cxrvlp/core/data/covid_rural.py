"""COVID-Rural (TCIA COVID-19-AR as prepared by MAVL/AFLoc): JPEG images with lesion mask PNGs.

Expected layout::

    <root>/jpgs/<stem>.jpg, <root>/pngs_masks/<stem>.png
    split CSVs (MAVL's covid_rural/{train,val,test}.csv, one column `filepath` = the stem) go in
    `split_csv`; without one, every jpgs/*.jpg is used.

Label [COVID-19] = the mask has any positive pixel (MAVL); `mask` = uint8 (H, W), 1 inside the lesion.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.errors import CxrvlpError, DatasetNotFoundError

NAME = "covid-rural"


class COVIDRuralDataset(CxrDataset):
    """COVID-19-AR images with their lesion masks; label = mask not empty."""

    name = NAME
    classes = ("COVID-19",)

    def __init__(
        self,
        root: str | Path,
        split_csv: str | Path | None = None,
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        if split_csv is not None:
            sp = Path(split_csv)
            if not sp.is_file():
                raise DatasetNotFoundError(NAME, sp, "the split CSV (filepath column)")
            table = read_table(
                sp, ("filepath",), on_error=self.on_error, skipped=self.skipped, nonblank=("filepath",)
            )
            stems = [str(s).strip() for s in table["filepath"]]
        else:
            jpgs = self.root / "jpgs"
            if not jpgs.is_dir():
                raise DatasetNotFoundError(NAME, jpgs, "jpgs/<stem>.jpg")
            stems = sorted(p.stem for p in jpgs.glob("*.jpg"))
        for stem in stems:
            mask_path = os.path.join(self.root_str, "pngs_masks", f"{stem}.png")
            try:
                m = read_image(mask_path)
            except CxrvlpError as err:
                self._skip(err, mask_path)
                continue
            self.records.append(
                Record(
                    image_path=os.path.join(self.root_str, "jpgs", f"{stem}.jpg"),
                    labels=np.array([float(m.max() > 0)], np.float32),
                    mask_path=mask_path,
                    study_id=stem,
                    meta={"filepath": stem},
                )
            )

    def load_mask(self, rec: Record, img, orig) -> np.ndarray | None:
        m = (read_image(rec.mask_path) > 0).astype(np.uint8)
        if img is not None and m.shape != img.shape:
            m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        return m
