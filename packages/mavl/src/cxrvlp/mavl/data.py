"""MAVL training data: one item per MIMIC-CXR image -> (image, 75 labels, (75, 8) location candidates).

Labels come from a (51 landmarks x 75 entities) matrix per study, either
- the official preprocessed files (`landmark_observation_adj_mtx.npy` (N, 51, 75) + the
  `rad_graph_metric_*.json` that map an image path to {"labels_id": row}; spec §2.2), or
- OURS: `cxrvlp.core.text.entities.extract_label_matrix` on the study's findings + impression (rule-based,
  no RadGraph needed), computed once per study.

Per draw (official `triplet_extraction`, re-drawn on every __getitem__ from the loop's per-(seed, epoch,
index) RNG, so runs resume exactly): label[e] = 1 if any landmark is 1, else 0 if any is 0, else -1; for a
present entity slot 0 is a random positive landmark and slots 1..7 are 7 distinct random non-positive
landmarks; otherwise 8 random non-positive landmarks (never used by a loss).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.pretraining import load_with_substitute, read_exact
from cxrvlp.core.errors import DatasetNotFoundError
from cxrvlp.core.text.entities import extract_label_matrix, presence_labels
from cxrvlp.mavl.config import MavlDataConfig
from torch.utils.data import Dataset

OFFICIAL_PREFIX = "/remote-home/share/medical/public/MIMIC-CXR-JPG/MIMIC-CXR/small"
N_CANDIDATES = 8


def draw_location_index(matrix: np.ndarray, labels: np.ndarray, rng: random.Random) -> np.ndarray:
    """(L, E) matrix, (E,) labels -> (E, 8) landmark indices (official triplet_extraction semantics)."""
    n_lm, n_e = matrix.shape
    out = np.zeros((n_e, N_CANDIDATES), dtype=np.int64)
    for e in range(n_e):
        col = matrix[:, e]
        neg = [i for i in range(n_lm) if col[i] != 1]
        if labels[e] == 1:
            pos = [i for i in range(n_lm) if col[i] == 1]
            out[e, 0] = rng.choice(pos)
            if len(neg) < N_CANDIDATES - 1:
                raise ValueError(f"entity {e}: fewer than {N_CANDIDATES - 1} non-positive landmarks")
            out[e, 1:] = rng.sample(neg, N_CANDIDATES - 1)
        else:
            out[e] = rng.sample(neg, N_CANDIDATES)
    return out


class MavlImageDataset(Dataset):
    """Images of a core MimicCxrDataset with one label matrix per study; an item is built from ONE record."""

    def __init__(self, images, matrices: dict[str, np.ndarray], transform, on_error: str = "raise") -> None:
        self.images, self.transform, self.on_error = images, transform, on_error
        self.index = [i for i, r in enumerate(images.records) if r.study_id in matrices]
        self.matrices = matrices

    def __len__(self) -> int:
        return len(self.index)

    def _item(self, i: int, rng: random.Random) -> dict[str, Any]:
        sample = read_exact(self.images, self.index[i])  # CxrvlpError when its image is unreadable
        rec = self.images.records[self.index[i]]
        m = self.matrices[rec.study_id]
        labels = presence_labels(m).astype(np.float32)
        loc = draw_location_index(m, labels, rng)
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(np.random.randint(0, 2**31 - 1)))
        return {
            "image": self.transform(sample.image),
            "labels": torch.from_numpy(labels),
            "location_index": torch.from_numpy(loc),
            "sample_id": f"mimic/{rec.study_id}/{Path(rec.image_path).stem}",
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))  # seeded per (seed, epoch, index) by the loop
        # image and labels of ONE record; an unreadable image (on_error="skip") passes to the next one whole
        item, skipped = load_with_substitute(
            i, len(self), lambda j: self._item(j, rng), self.on_error, "mimic-cxr"
        )
        item["skipped"] = skipped
        return item


def study_matrices_from_reports(images) -> dict[str, np.ndarray]:
    """OURS: study_id -> extracted (51, 75) matrix of findings + impression (full text if both empty)."""
    out: dict[str, np.ndarray] = {}
    for study, idxs in images.study_groups().items():
        rec = images.records[idxs[0]]
        full, sections = images.report_for(rec.patient_id, rec.study_id)
        text = " ".join(t for t in (sections.get("findings", ""), sections.get("impression", "")) if t)
        out[study] = extract_label_matrix(text or full or "")
    return out


def study_matrices_from_official(images, npy: str, jsons: list[str], root: str) -> dict[str, np.ndarray]:
    """Official files: JSON keys = image paths under OFFICIAL_PREFIX, labels_id = a row of the npy."""
    if not Path(npy).is_file():
        raise DatasetNotFoundError("mavl labels", Path(npy), "landmark_observation_adj_mtx.npy")
    mtx = np.load(npy, mmap_mode="r")
    by_image: dict[str, int] = {}
    for j in jsons:
        for path, item in json.loads(Path(j).read_text()).items():
            by_image[Path(path.replace(OFFICIAL_PREFIX, root)).stem] = int(item["labels_id"])
    out: dict[str, np.ndarray] = {}
    for r in images.records:
        row = by_image.get(Path(r.image_path).stem)
        if row is not None and r.study_id not in out:
            out[r.study_id] = np.asarray(mtx[row], dtype=np.float32)
    return out


def build_train_dataset(
    cfg: MavlDataConfig, root: str | Path, train: bool = True, split: str | None = None
) -> Dataset:
    """The MAVL items of `split` (default `cfg.split`; "a+b" joins splits) under the resolved data root."""
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
    from cxrvlp.core.data.transforms import build_transform

    transform = build_transform(cfg.transform, train=train and cfg.augment, image_size=cfg.image_size,
                                normalisation=cfg.normalisation)  # fmt: skip
    parts = []
    for name in (split or cfg.split).split("+"):
        images = MimicCxrDataset(
            root, split=name, views=cfg.views, reports_root=cfg.reports_root,
            sectioned_csv=cfg.sectioned_csv, cache_dir=cfg.image_cache_dir, label_source=None,
        )  # fmt: skip
        if cfg.label_matrix_npy:
            mats = study_matrices_from_official(images, cfg.label_matrix_npy, cfg.label_json or [], str(root))
        else:
            mats = study_matrices_from_reports(images)
        parts.append(MavlImageDataset(images, mats, transform, on_error=cfg.on_error))
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "location_index": torch.stack([s["location_index"] for s in samples]),
        "sample_ids": [s["sample_id"] for s in samples],
        "skipped": [x for s in samples for x in s.get("skipped", ())],
    }
