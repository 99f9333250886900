"""CheXpert v1.0 (train / valid / expert-labelled test) and the CheXpert 5x200 subset.

Expected layout (the official CSVs, unmodified; their `Path` column is relative to the root)::

    <root>/CheXpert-v1.0-small/train.csv   (or CheXpert-v1.0/train.csv; .csv.gz accepted)
    <root>/CheXpert-v1.0-small/valid.csv
    <root>/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg  ...
    test:  <root>/test_labels.csv or filter_test_labels.csv (MAVL's 500-image copy) - or pass `csv=`
    5x200: <root>/chexpert_5x200.csv (GLoRIA) or chexpert-5x200-meta.csv (MedCLIP) - or pass `csv=`

Paths are resolved by the part from "CheXpert-v1.0" on, so CSVs whose paths carry another prefix
("./data/CheXpert/data/CheXpert-v1.0-small/...") work, and "-small" / full-size are tried both ways.
Labels: CheXpert codes 1 / 0 / -1 / blank through `uncertain_policy` (a policy or {class: policy}, e.g.
`MGCA_UNCERTAIN_POLICY`) and `blank_policy`. The 5x200 split is single-label: a one-hot over CHEXPERT5
(the last of the 5 columns equal to 1, as CXR-CLIP's loader does).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from cxrvlp.core.data.base import CxrDataset, Record, find_file, iter_rows, read_table
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.data.labels import CHEXPERT5, CHEXPERT_CLASSES, Policy, apply_uncertain_policy
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError

NAME = "chexpert"
Split = Literal["train", "valid", "test", "5x200"]
_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
_PATIENT = re.compile(r"(patient\d+)/(study\d+)/")
PATH_COLUMNS = ("Path", "imgpath")  # the image column: CheXpert's / GLoRIA's CSVs, MedCLIP's 5x200 list


def default_csv(split: str) -> list[str]:
    """Where each split's CSV is looked for, relative to the root."""
    if split in ("train", "valid"):
        return [f"{d}/{split}.csv" for d in _DIRS] + [f"{split}.csv"]
    if split == "test":
        return ["test_labels.csv", "filter_test_labels.csv"] + [f"{d}/test_labels.csv" for d in _DIRS]
    return ["chexpert_5x200.csv", "chexpert-5x200-meta.csv", "chexpert_5x200_newpath.csv"]


def patients_5x200(path: str | Path) -> set[str]:
    """Patient ids ('patient64541') of a CheXpert 5x200 list: GLoRIA's chexpert_5x200.csv (column `Path`) or
    MedCLIP's chexpert-5x200-meta.csv (column `imgpath`), the two files the 5x200 split reads (CXR-CLIP
    removes these patients from its CheXpert training data)."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(
            "chexpert-5x200",
            p,
            "chexpert_5x200.csv (GLoRIA, column Path) or chexpert-5x200-meta.csv (imgpath)",
        )
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        col = next((c for c in PATH_COLUMNS if c in (reader.fieldnames or ())), None)
        if col is None:
            raise MalformedRecordError(p, "header", f"no 'Path' or 'imgpath' column in {reader.fieldnames}")
        found = set()
        for row_no, row in enumerate(reader, start=2):
            m = re.search(r"(patient\d+)", row[col] or "")
            if m is None:
                raise MalformedRecordError(p, f"row {row_no}", f"no patientNNNNN in {col} {row[col]!r}")
            found.add(m.group(1))
    if not found:
        raise MalformedRecordError(p, "rows", "no patient listed")
    return found


def _rel(raw: str) -> tuple[str, bool]:
    s = str(raw).strip().replace("\\", "/")
    i = s.find("CheXpert-v1.0")
    return (s[i:], True) if i >= 0 else (s.lstrip("./"), False)


def path_resolver(root: Path, sample: Sequence[str]):
    """A function CSV path -> file path, choosing the '-small'/full-size folder once from a few rows."""
    root_s = str(root)
    swap: str | None = None
    for raw in sample:
        rel, anchored = _rel(raw)
        if not anchored or os.path.exists(os.path.join(root_s, rel)):
            break
        tail = rel.split("/", 1)[1] if "/" in rel else rel
        found = [d for d in _DIRS if os.path.exists(os.path.join(root_s, d, tail))]
        if found:
            swap = found[0]
            break

    def resolve(raw: str) -> str:
        rel, anchored = _rel(raw)
        if swap is not None and anchored and "/" in rel:
            rel = swap + "/" + rel.split("/", 1)[1]
        return os.path.join(root_s, rel)

    return resolve


def resolve_path(root: Path, raw: str) -> str:
    """A CSV path -> the file under root (from 'CheXpert-v1.0' on; '-small' and full size tried)."""
    s = str(raw).strip().replace("\\", "/")
    i = s.find("CheXpert-v1.0")
    rel = s[i:] if i >= 0 else s.lstrip("./")
    cand = os.path.join(root, rel)
    if i < 0 or os.path.exists(cand):
        return cand
    tail = rel.split("/", 1)[1] if "/" in rel else rel
    for d in _DIRS:
        alt = os.path.join(root, d, tail)
        if os.path.exists(alt):
            return alt
    return cand


class CheXpertDataset(CxrDataset):
    """CheXpert images with 14 labels (or a subset via `classes`), patient/study ids and view."""

    name = NAME

    def __init__(
        self,
        root: str | Path,
        split: Split = "valid",
        csv: str | Path | None = None,
        classes: Sequence[str] | None = None,
        frontal_only: bool = False,
        uncertain_policy: Policy | Mapping[str, Policy] = "nan",
        blank_policy: Literal["nan", "zeros"] = "nan",
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        if split not in ("train", "valid", "test", "5x200"):
            raise ConfigError(f"split must be train / valid / test / 5x200, got {split!r}")
        self.split = split
        self.classes = (
            tuple(classes) if classes is not None else (CHEXPERT5 if split == "5x200" else CHEXPERT_CLASSES)
        )
        path = (
            Path(csv) if csv is not None else find_file(NAME, self.root, default_csv(split), f"{split} CSV")
        )
        if csv is not None and not path.is_file():
            path = find_file(NAME, self.root, [path], f"{split} CSV")
        self.csv_path = path
        df = read_table(path, on_error=self.on_error, skipped=self.skipped, nonblank=PATH_COLUMNS)
        path_col = next((c for c in PATH_COLUMNS if c in df.columns), None)
        missing = [c for c in self.classes if c not in df.columns]
        if path_col is None or missing:
            raise MalformedRecordError(
                path, 1, f"needs a Path/imgpath column and {missing or 'label'} columns"
            )
        if frontal_only and "Frontal/Lateral" in df.columns:
            df = df[df["Frontal/Lateral"] == "Frontal"]
        raw = df[list(self.classes)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)  # (N, C)
        bad = (np.isnan(raw) & df[list(self.classes)].notna().to_numpy()) | ~(
            np.isnan(raw) | np.isin(raw, [1.0, 0.0, -1.0])
        )
        for i in np.flatnonzero(bad.any(axis=1)):
            j = int(np.flatnonzero(bad[i])[0])
            self._skip(
                MalformedRecordError(path, int(df.index[i]) + 2, f"{self.classes[j]}: not 1/0/-1/blank"),
            )
        keep = ~bad.any(axis=1)
        if split == "5x200":
            onehot = np.zeros_like(raw)
            for i in range(len(raw)):
                pos = np.flatnonzero(raw[i] == 1.0)
                if len(pos):
                    onehot[i, pos[-1]] = 1.0  # the last positive column, as CXR-CLIP's loader takes
                elif keep[i]:
                    keep[i] = False
                    self._skip(
                        MalformedRecordError(path, int(df.index[i]) + 2, "5x200 row with no positive class")
                    )
            labels = onehot
        else:
            labels = apply_uncertain_policy(raw, self.classes, uncertain_policy, blank_policy)
        resolve = path_resolver(self.root, [str(p) for p in df[path_col].iloc[:20]])
        for i, row in enumerate(iter_rows(df)):
            if not keep[i]:
                continue
            p = str(row[path_col])
            m = _PATIENT.search(p.replace("\\", "/") + ("/" if not p.endswith("/") else ""))
            view = row.get("AP/PA") if isinstance(row.get("AP/PA"), str) else row.get("Frontal/Lateral")
            if not isinstance(view, str):
                view = (
                    "LATERAL" if "lateral" in p.lower() else ("FRONTAL" if "frontal" in p.lower() else None)
                )
            self.records.append(
                Record(
                    image_path=resolve(p),
                    labels=labels[i],
                    report=row.get("Report Impression")
                    if isinstance(row.get("Report Impression"), str)
                    else None,
                    patient_id=m.group(1) if m else None,
                    study_id=f"{m.group(1)}/{m.group(2)}" if m else None,
                    view=view.upper() if isinstance(view, str) else None,
                    meta=row,
                )
            )
