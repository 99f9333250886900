"""MIMIC-CXR-JPG 2.0.0 (+ MIMIC-CXR free-text reports) and the master tables the methods train from.

Expected layout (PhysioNet's, unmodified; `.csv.gz` or extracted `.csv` both accepted)::

    <root>/mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split (train/validate/test)
    <root>/mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
    <root>/mimic-cxr-2.0.0-chexpert.csv.gz    subject_id, study_id, 14 labels (1 / 0 / -1 / blank)
    <root>/mimic-cxr-2.0.0-negbio.csv.gz      same columns, NegBio labeler
    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg
    <reports_root>/files/p10/p10000032/s50414267.txt   (mimic-cxr-reports.zip extracted; default = root)

Optionally MIT-LCP's `mimic_cxr_sectioned.csv` (study, impression, findings, last_paragraph, comparison)
replaces parsing the .txt reports.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from cxrvlp.core.data.base import CxrDataset, Record, find_file, iter_rows, read_table, require_root
from cxrvlp.core.data.contract import OnError, Sample
from cxrvlp.core.data.labels import CHEXPERT_CLASSES, Policy, apply_uncertain_policy
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError
from cxrvlp.core.text.sections import SECTIONED_COLUMNS, extract_sections

log = logging.getLogger(__name__)

NAME = "mimic-cxr"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
LABEL_CSV = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz", "negbio": "mimic-cxr-2.0.0-negbio.csv.gz"}
SPLITS = ("train", "validate", "test")


def image_relpath(subject_id: int | str, study_id: int | str, dicom_id: str, ext: str = ".jpg") -> str:
    """files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg"""
    s = str(int(subject_id))
    return f"files/p{s[:2]}/p{s}/s{int(study_id)}/{dicom_id}{ext}"


def report_relpath(subject_id: int | str, study_id: int | str) -> str:
    """files/pXX/pXXXXXXXX/sXXXXXXXX.txt"""
    s = str(int(subject_id))
    return f"files/p{s[:2]}/p{s}/s{int(study_id)}.txt"


def _int_column(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    vals = pd.to_numeric(df[col], errors="coerce")
    bad = np.flatnonzero(vals.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise MalformedRecordError(path, i + 2, f"column {col!r}: not an integer: {df[col].iloc[i]!r}")
    return vals.astype(np.int64)


def read_split_metadata(root: Path, on_error: OnError = "raise", skipped=None) -> pd.DataFrame:
    """split ⋈ metadata on dicom_id: one row per image with split and ViewPosition."""
    split_path = find_file(NAME, root, [SPLIT_CSV], "mimic-cxr-2.0.0-split.csv(.gz)")
    meta_path = find_file(NAME, root, [METADATA_CSV], "mimic-cxr-2.0.0-metadata.csv(.gz)")
    split = read_table(
        split_path,
        ("dicom_id", "study_id", "subject_id", "split"),
        dtype={"dicom_id": str},
        on_error=on_error,
        skipped=skipped,
        nonblank=("dicom_id", "study_id", "subject_id"),
    )
    meta = read_table(
        meta_path,
        ("dicom_id", "ViewPosition"),
        dtype={"dicom_id": str},
        on_error=on_error,
        skipped=skipped,
        nonblank=("dicom_id",),
    )
    for col in ("study_id", "subject_id"):
        split[col] = _int_column(split, col, split_path)
    bad = ~split["split"].isin(SPLITS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise MalformedRecordError(
            split_path, i + 2, f"split must be one of {SPLITS}: {split['split'].iloc[i]!r}"
        )
    meta = meta.drop(columns=[c for c in ("study_id", "subject_id") if c in meta.columns])
    return split.merge(meta, on="dicom_id", how="left")


def read_labels(root: Path, source: str = "chexpert") -> pd.DataFrame:
    """The labeler CSV indexed by study_id, columns in CHEXPERT_CLASSES order (raw 1 / 0 / -1 / NaN)."""
    if source not in LABEL_CSV:
        raise ConfigError(f"label_source must be one of {sorted(LABEL_CSV)}, got {source!r}")
    path = find_file(NAME, root, [LABEL_CSV[source]], LABEL_CSV[source])
    df = read_table(path, ("subject_id", "study_id", *CHEXPERT_CLASSES))
    df["study_id"] = _int_column(df, "study_id", path)
    vals = df[list(CHEXPERT_CLASSES)].apply(pd.to_numeric, errors="coerce")
    raw = df[list(CHEXPERT_CLASSES)]
    bad = (vals.isna() & raw.notna()) | ~(vals.isna() | vals.isin([1.0, 0.0, -1.0]))
    if bad.to_numpy().any():
        i, j = np.argwhere(bad.to_numpy())[0]
        raise MalformedRecordError(
            path, int(i) + 2, f"{CHEXPERT_CLASSES[j]}: label must be 1/0/-1/blank, got {raw.iloc[i, j]!r}"
        )
    vals.index = df["study_id"].to_numpy()
    return vals.astype(np.float32)


def read_sectioned_csv(path: Path) -> pd.DataFrame:
    """MIT-LCP's mimic_cxr_sectioned.csv, indexed by integer study id (the 's' prefix removed)."""
    df = read_table(path, ("study", *SECTIONED_COLUMNS), dtype=str)
    df["study_id"] = df["study"].str.lstrip("s")
    df["study_id"] = _int_column(df, "study_id", path)
    return df.set_index("study_id")[list(SECTIONED_COLUMNS)]


class MimicCxrDataset(CxrDataset):
    """MIMIC-CXR-JPG 2.0.0 images with their report, sections and 14 CheXpert (or NegBio) labels.

    One item = one image (reports repeat across the images of a study); `study_groups()` gives the images of
    each study for CXR-CLIP's two-images-per-study sampling. `view` is ViewPosition (NaN -> None).
    Labels: 1 / 0 / NaN per `uncertain_policy` ("nan": -1 -> NaN; a dict per class is accepted) and blanks
    (not mentioned) -> NaN unless `blank_policy="zeros"`. Sections: {"findings", "impression",
    "last_paragraph"} (missing ones are ""), from the .txt report (parsed like MIT-LCP) or `sectioned_csv`.
    """

    name = NAME
    classes = CHEXPERT_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "validate", "test"] | None = "train",
        views: Sequence[str] | None = ("PA", "AP"),
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        label_source: Literal["chexpert", "negbio"] | None = "chexpert",
        uncertain_policy: Policy | Mapping[str, Policy] = "nan",
        blank_policy: Literal["nan", "zeros"] = "nan",
        reports_root: str | Path | None = None,
        sectioned_csv: str | Path | None = None,
        load_reports: bool = True,
        cache_size: int | None = None,
    ) -> None:
        super().__init__(
            root, load_images=load_images, on_error=on_error, cache_dir=cache_dir, cache_size=cache_size
        )
        if split is not None and split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.split, self.views = split, tuple(views) if views is not None else None
        self.reports_root = Path(reports_root) if reports_root is not None else self.root
        self.load_reports = load_reports
        self._sectioned = None
        if sectioned_csv is not None:
            p = Path(sectioned_csv)
            if not p.is_file():
                raise DatasetNotFoundError(self.name, p, "mimic_cxr_sectioned.csv")
            self._sectioned = read_sectioned_csv(p)

        df = read_split_metadata(self.root, self.on_error, self.skipped)
        if split is not None:
            df = df[df["split"] == split]
        if self.views is not None:
            df = df[df["ViewPosition"].isin(self.views)]
        df = df.reset_index(drop=True)
        raw = np.full((len(df), len(self.classes)), np.nan, np.float32)  # (N, 14)
        if label_source is not None:
            labels = read_labels(self.root, label_source)
            labels = labels[~labels.index.duplicated()]
            raw = labels.reindex(df["study_id"].to_numpy()).to_numpy(np.float32)
        lab = apply_uncertain_policy(raw, self.classes, uncertain_policy, blank_policy)
        for i, row in enumerate(iter_rows(df)):
            subj, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
            vp = row.get("ViewPosition")
            self.records.append(
                Record(
                    image_path=os.path.join(self.root_str, image_relpath(subj, study, dicom)),
                    labels=lab[i],
                    patient_id=str(subj),
                    study_id=str(study),
                    view=str(vp).upper() if isinstance(vp, str) else None,
                    meta=row,
                )
            )

    def study_groups(self) -> dict[str, list[int]]:
        """study_id -> indices of this dataset's images of that study (in CSV order)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(self.records):
            groups[r.study_id].append(i)
        return dict(groups)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - per-instance cache of parsed reports is intended
    def report_for(self, subject_id: str, study_id: str) -> tuple[str | None, dict[str, str]]:
        """(full report text, {"findings", "impression", "last_paragraph"}) of one study."""
        if self._sectioned is not None:
            sid = int(study_id)
            if sid not in self._sectioned.index:
                return None, {"findings": "", "impression": "", "last_paragraph": ""}
            row = self._sectioned.loc[sid]
            secs = {
                k: ("" if pd.isna(row[k]) else str(row[k]))
                for k in ("findings", "impression", "last_paragraph")
            }
            return None, secs
        path = self.reports_root / report_relpath(subject_id, study_id)
        if not path.is_file():
            raise DatasetNotFoundError(self.name, path, "the study's free-text report (mimic-cxr-reports)")
        text = path.read_text(encoding="utf-8", errors="replace")
        ex = extract_sections(text)
        return text, {k: (ex[k] or "") for k in ("findings", "impression", "last_paragraph")}

    def make_sample(self, rec: Record, img, orig) -> Sample:
        if self.load_reports and not rec.sections:
            try:
                rec.report, rec.sections = self.report_for(rec.patient_id, rec.study_id)
            except DatasetNotFoundError as err:
                self._skip(err)
        return super().make_sample(rec, img, orig)


# --------------------------------------------------------------------------------------------------
# Master tables
# --------------------------------------------------------------------------------------------------


def _study_sections(
    root: Path, studies: pd.DataFrame, reports_root: Path | None, sectioned_csv: Path | None, progress: bool
) -> pd.DataFrame:
    """study_id -> impression, findings, last_paragraph, comparison (NaN where absent) and the report."""
    if sectioned_csv is not None:
        sec = read_sectioned_csv(Path(sectioned_csv))
        sec["report"] = np.nan
        return sec
    rr = reports_root or root
    rows, index = [], []
    it = studies[["subject_id", "study_id"]].drop_duplicates().itertuples(index=False)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc="sectioning reports", unit="report")
    for subj, study in it:
        path = rr / report_relpath(subj, study)
        if not path.is_file():
            log.warning("mimic-cxr: report missing: %s", path)
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        ex = extract_sections(text)
        rows.append({**{k: (np.nan if v is None else v) for k, v in ex.items()}, "report": text})
        index.append(int(study))
    return pd.DataFrame(rows, index=pd.Index(index, name="study_id"), columns=[*SECTIONED_COLUMNS, "report"])


MasterFormat = Literal["mgca", "afloc", "cxrclip", "carzero", "medklip"]
MASTER_FORMATS = ("mgca", "afloc", "cxrclip", "carzero", "medklip")


def prepare_master_table(
    root: str | Path,
    out_csv: str | Path,
    method: MasterFormat = "mgca",
    reports_root: str | Path | None = None,
    sectioned_csv: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Write the master CSV a method's official code trains from; returns it.

    * "mgca" (`preprocess/mimic_cxr.py`): Path, dicom_id, subject_id, study_id, ViewPosition, impression,
      findings, split: metadata ⋈ sections (left) ⋈ split (inner); rows whose impression and findings are
      both missing are dropped, remaining NaN -> " ". All views are kept (the dataset keeps PA/AP).
    * "afloc" (`BASE-MIMIC.csv`): path, view ("Frontal" for PA/AP else "Lateral"), split_with_MS (here the
      official split: the MS-CXR exclusion list is not public), report (findings + " " + impression, or
      the last paragraph), impression, + 14 CheXpert labels (raw codes).
    * "cxrclip": one row per study: image (list of paths), view (list of view names), one column per view
      name holding its paths, text = [findings, impression] ([impression] when findings is missing), split.
    * "carzero": Path, Frontal/Lateral, Split (train/valid/test), Report Impression (the LLM `xinhuo`
      column cannot be regenerated here and is left out).
    * "medklip" (MedKLIP / MAVL): Path, dicom_id, subject_id, study_id, ViewPosition, split, report for the
      frontal images: the input of the RadGraph step that builds their `rad_graph_metric_*.json` and
      entity x landmark matrix (RadGraph itself is not run here; their JSONs come from MedKLIP's release).
    """
    root = require_root(NAME, root)
    df = read_split_metadata(root)
    sec = _study_sections(root, df, Path(reports_root) if reports_root else None, sectioned_csv, progress)
    df["Path"] = [image_relpath(s, t, d) for s, t, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])]
    df = df.merge(sec, left_on="study_id", right_index=True, how="left")
    if method == "mgca":
        out = df[
            ["Path", "dicom_id", "subject_id", "study_id", "ViewPosition", "impression", "findings", "split"]
        ]
        out = out[~(out["impression"].isna() & out["findings"].isna())].fillna(" ")
    elif method == "afloc":
        labels = read_labels(root, "chexpert")
        frontal = df["ViewPosition"].isin(["PA", "AP"])

        def _report(r) -> str:
            parts = [r[k] for k in ("findings", "impression") if isinstance(r[k], str) and r[k].strip()]
            if not parts and isinstance(r["last_paragraph"], str):
                parts = [r["last_paragraph"]]
            return " ".join(parts)

        out = pd.DataFrame(
            {
                "path": df["Path"],
                "view": np.where(frontal, "Frontal", "Lateral"),
                "split_with_MS": df["split"],
                "report": df.apply(_report, axis=1),
                "impression": df["impression"].fillna(""),
            }
        )
        lab = labels.reindex(df["study_id"].to_numpy())
        for c in CHEXPERT_CLASSES:
            out[c] = lab[c].to_numpy()
    elif method == "cxrclip":
        rows = []
        for study, g in df.groupby("study_id", sort=False):
            views = [v if isinstance(v, str) else "UNKNOWN" for v in g["ViewPosition"]]
            first = g.iloc[0]
            f, i = first["findings"], first["impression"]
            texts = [t for t in (f, i) if isinstance(t, str) and t.strip()]
            if not texts:
                continue
            row = {
                "study_id": study,
                "subject_id": first["subject_id"],
                "split": first["split"],
                "image": list(g["Path"]),
                "view": sorted(set(views), key=views.index),
                "text": texts,
            }
            for v in row["view"]:
                row[v] = [p for p, vv in zip(g["Path"], views) if vv == v]
            rows.append(row)
        out = pd.DataFrame(rows)
        for c in out.columns:
            if c not in ("study_id", "subject_id", "split"):
                out[c] = out[c].apply(lambda v: repr(v) if isinstance(v, list) else "[]")
    elif method == "carzero":
        frontal = df["ViewPosition"].isin(["PA", "AP"])
        out = pd.DataFrame(
            {
                "Path": df["Path"],
                "Frontal/Lateral": np.where(frontal, "Frontal", "Lateral"),
                "Split": df["split"].replace({"validate": "valid"}),
                "Report Impression": df["impression"],
            }
        )
        out = out[out["Report Impression"].notna()]
    elif method == "medklip":
        out = df[["Path", "dicom_id", "subject_id", "study_id", "ViewPosition", "split"]].copy()
        out["report"] = df["report"]
        out = out[out["ViewPosition"].isin(["PA", "AP"])]
    else:
        raise ConfigError(f"unknown master-table format {method!r}; known: {', '.join(MASTER_FORMATS)}")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_csv, index=False)
    return out
