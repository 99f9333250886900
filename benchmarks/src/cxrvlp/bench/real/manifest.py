"""Manifest folders (the columns of ../shared/data/real/manifest.csv): rows, fit/eval roles, binary tasks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cxrvlp.bench.sources import split_part
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

COLUMNS = (
    "dataset",
    "image_path",
    "labels",
    "report",
    "boxes",
    "view",
    "width",
    "height",
    "patient_id",
    "suggested_role",
)
REQUIRED = ("dataset", "image_path", "labels", "patient_id")
FIT_ROLE, EVAL_ROLE = "demo_pretrain", "demo_eval"


@dataclass(frozen=True)
class BinaryTask:
    """One binary task over the rows of `dataset`: `positive` makes a row positive."""

    name: str
    dataset: str
    positive: str
    negative: str | None  # label a negative row must carry (None: any row without `positive`)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV; a missing file, column or empty required cell names the file and row."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError("real-manifest", path, "a manifest CSV with columns " + ", ".join(COLUMNS))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise MalformedRecordError(path, 1, f"missing column(s) {missing}")
    rows = df.to_dict("records")
    for i, r in enumerate(rows):
        empty = [c for c in ("dataset", "image_path", "patient_id") if not r[c].strip()]
        if empty:
            raise MalformedRecordError(path, i + 2, f"empty {empty}")  # +2: header line, 1-based
    return rows


def split_roles(
    rows: Sequence[dict[str, str]], eval_rows: Sequence[dict[str, str]] | None, seed: int = 0
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(fit, eval) rows: the eval manifest if given, else `suggested_role`, else patients 70/30 by seed."""
    if eval_rows is not None:
        return list(rows), list(eval_rows)
    roles = {r.get("suggested_role", "") for r in rows}
    if EVAL_ROLE in roles:
        return [r for r in rows if r.get("suggested_role") != EVAL_ROLE], [
            r for r in rows if r.get("suggested_role") == EVAL_ROLE
        ]
    part = [split_part(f"roles:{seed}:{r['patient_id']}", (0.7, 0.7)) for r in rows]
    return [r for r, p in zip(rows, part) if p == "train"], [r for r, p in zip(rows, part) if p != "train"]


def labels_of(row: dict[str, str]) -> set[str]:
    """The row's '|'-separated labels."""
    return set(filter(None, row.get("labels", "").split("|")))


def default_tasks(
    rows: Sequence[dict[str, str]], min_count: int = 10, skipped: list[str] | None = None
) -> list[BinaryTask]:
    """Binary tasks the labels allow: pneumonia vs no finding, COVID-19 vs other findings, top NIH labels.

    A candidate with fewer than `min_count` rows in a class is left out; `skipped` (if given) gets why."""
    by_ds: dict[str, list[set[str]]] = {}
    for r in rows:
        by_ds.setdefault(r["dataset"], []).append(labels_of(r))
    tasks = []
    for ds, labs in sorted(by_ds.items()):

        def has(lab: str, labs: list[set[str]] = labs) -> int:
            return sum(lab in s for s in labs)

        if has("Pneumonia") >= min_count and has("No Finding") >= min_count and has("COVID-19") == 0:
            tasks.append(BinaryTask(f"{ds}: pneumonia vs no finding", ds, "Pneumonia", "No Finding"))
        n_covid, n_other = has("COVID-19"), len(labs) - has("COVID-19")
        if n_covid >= min_count and n_other >= min_count:
            tasks.append(BinaryTask(f"{ds}: COVID-19 vs other findings", ds, "COVID-19", None))
        elif n_covid and skipped is not None:
            skipped.append(
                f"{ds}: COVID-19 vs other findings ({n_covid} vs {n_other} rows; needs {min_count} each)"
            )
        if ds.startswith("nih"):  # multi-label thumbnails: the three most frequent findings, one-vs-rest
            counts: dict[str, int] = {}
            for s in labs:
                for lab in s - {"No Finding"}:
                    counts[lab] = counts.get(lab, 0) + 1
            for lab in sorted(counts, key=lambda k: (-counts[k], k))[:3]:
                if counts[lab] >= max(15, min_count):
                    tasks.append(BinaryTask(f"{ds}: {lab} vs rest", ds, lab, None))
    return tasks


def select_tasks(tasks: Sequence[BinaryTask], wanted: Sequence[str] | None) -> list[BinaryTask]:
    """Tasks whose name or dataset is in `wanted` (None: all); an unknown name raises, listing the known."""
    if wanted is None:
        return list(tasks)
    known = {t.name for t in tasks} | {t.dataset for t in tasks}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown task/dataset {unknown}; this manifest allows {sorted(known)}")
    return [t for t in tasks if t.name in wanted or t.dataset in wanted]


def task_rows(
    task: BinaryTask, rows: Sequence[dict[str, str]], max_rows: int | None = None
) -> tuple[list[dict[str, str]], np.ndarray]:
    """Rows of the task's dataset that are positive or valid negatives, and their 0/1 labels.

    `max_rows` keeps evenly spaced rows (manifests are often sorted by class), for smoke runs."""
    keep, y = [], []
    for r in rows:
        if r["dataset"] != task.dataset:
            continue
        labs = labels_of(r)
        if task.positive in labs:
            keep.append(r)
            y.append(1.0)
        elif task.negative is None or task.negative in labs:
            keep.append(r)
            y.append(0.0)
    if max_rows is not None and len(keep) > max_rows:
        pick = np.linspace(0, len(keep) - 1, max_rows).round().astype(int)
        keep, y = [keep[i] for i in pick], [y[i] for i in pick]
    return keep, np.asarray(y, dtype=np.float64)


def probe_split(rows: Sequence[dict[str, str]], seed: int, train_fraction: float = 0.6) -> np.ndarray:
    """Boolean mask of probe-train rows: a patient-level split by seed (no patient on both sides)."""
    return np.array(
        [split_part(f"{seed}:{r['patient_id']}", (train_fraction, train_fraction)) == "train" for r in rows]
    )


def manifest_samples(rows: Sequence[dict[str, str]], root: Path, classes: Sequence[str]) -> list:
    """Manifest rows -> core `Sample`s (labels over `classes`, 1 if listed else 0; lung boxes kept)."""
    from cxrvlp.core.data import read_image
    from cxrvlp.core.data.contract import Sample

    out = []
    for r in rows:
        labs = labels_of(r)
        boxes, blabels = None, []
        if r.get("boxes"):
            items = json.loads(r["boxes"])
            boxes = np.array(
                [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (i["bbox_xywh"] for i in items)], np.float32
            ).reshape(-1, 4)
            blabels = [i["label"] for i in items]
        out.append(
            Sample(
                image=read_image(root / r["image_path"]),
                image_path=str(root / r["image_path"]),
                dataset=r["dataset"],
                classes=tuple(classes),
                labels=np.array([float(c in labs) for c in classes], np.float32),
                report=r.get("report") or None,
                boxes=boxes,
                box_labels=blabels,
                patient_id=r["patient_id"],
                view=r.get("view") or None,
            )
        )
    return out


def manifest_source(
    task: BinaryTask, rows: Sequence[dict[str, str]], root: Path, max_rows: int | None = None
):
    """A benchmark DataSource over one binary task of a manifest: patient-level 60/20/20 train/val/test."""
    from cxrvlp.bench.datasets import BenchDataset
    from cxrvlp.bench.sources import DataSource

    keep, _ = task_rows(task, rows, max_rows)
    parts = {r["patient_id"]: split_part(r["patient_id"], (0.6, 0.8)) for r in keep}
    ds = BenchDataset(
        name=f"real-{task.dataset}",
        reader="manifest",
        classes=(task.positive,),
        tasks=("zeroshot", "linear_probe"),
        test_split="test",
        val_split="val",
        train_split="train",
        expected_files="manifest.csv and its images",
        description=f"real images ({task.name}), manifest rows",
        extra=True,
    )
    by_split = {s: [r for r in keep if parts[r["patient_id"]] == s] for s in ("train", "val", "test")}
    return DataSource(
        ds, root, synthetic=False, reader_fn=lambda s: manifest_samples(by_split[s], root, (task.positive,))
    )
