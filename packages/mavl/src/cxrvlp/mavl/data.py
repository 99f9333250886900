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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError
from cxrvlp.core.text.entities import extract_label_matrix, presence_labels
from torch.utils.data import Dataset

OFFICIAL_PREFIX = "/remote-home/share/medical/public/MIMIC-CXR-JPG/MIMIC-CXR/small"
N_CANDIDATES = 8


@dataclass
class MavlDataConfig:
    """Where images, reports and labels come from."""

    root: str | None = None  # MIMIC-CXR-JPG 2.0.0 root (required unless synthetic: true)
    synthetic: bool = False  # generate and use the synthetic MIMIC mirror (tests/demo only)
    synthetic_dir: str = "~/.cache/cxrvlp/synthetic/mimic_cxr"
    synthetic_patients: int = 120
    synthetic_image_size: int = 256
    reports_root: str | None = None
    sectioned_csv: str | None = None
    splits: list[str] | None = None  # None: official = train + validate + test (pitfall 4); e.g. [train]
    val_splits: list[str] | None = None  # per-epoch validation loss (official: [test], also trained on)
    views: list[str] | None = None  # None: every view in the metadata (official: all views in the JSON)
    label_matrix_npy: str | None = None  # official landmark_observation_adj_mtx.npy
    label_json: list[str] | None = None  # official rad_graph_metric_{train,validate,test}.json
    transform: str = "mavl"
    augment: bool = True  # False: the eval transform in training too (ours, tiny demo)
    image_size: int | None = None
    normalisation: str | None = None
    cache_dir: str | None = None


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
    """Images of a core MimicCxrDataset with one label matrix per study."""

    def __init__(self, images, matrices: dict[str, np.ndarray], transform) -> None:
        self.images, self.transform = images, transform
        self.index = [i for i, r in enumerate(images.records) if r.study_id in matrices]
        self.matrices = matrices

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec_i = self.index[i]
        rec = self.images.records[rec_i]
        m = self.matrices[rec.study_id]
        labels = presence_labels(m).astype(np.float32)
        rng = random.Random(random.getrandbits(64))  # seeded per (seed, epoch, index) by the loop
        loc = draw_location_index(m, labels, rng)
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(np.random.randint(0, 2**31 - 1)))
        image = self.transform(self.images[rec_i].image)
        return {
            "image": image,
            "labels": torch.from_numpy(labels),
            "location_index": torch.from_numpy(loc),
            "sample_id": f"mimic/{rec.study_id}/{Path(rec.image_path).stem}",
        }


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


def ensure_synthetic_mimic(cfg: MavlDataConfig) -> Path:
    from cxrvlp.core.data.synthetic import GENERATOR_VERSION, write_mimic_cxr

    tag = f"n{cfg.synthetic_patients}_s{cfg.synthetic_image_size}_g{GENERATOR_VERSION}"
    root = Path(cfg.synthetic_dir).expanduser() / tag
    if not (root / ".complete").exists():
        root.mkdir(parents=True, exist_ok=True)
        write_mimic_cxr(root, n_patients=cfg.synthetic_patients, seed=0, image_size=cfg.synthetic_image_size)
        (root / ".complete").write_text("ok\n")
    return root


def data_root(cfg: MavlDataConfig) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser()
    if not cfg.synthetic:
        raise ConfigError("data.root is not set: point it at MIMIC-CXR-JPG 2.0.0 (or set data.synthetic=true "
                          "for the synthetic demo mirror)")  # fmt: skip
    return ensure_synthetic_mimic(cfg)


def build_train_dataset(cfg: MavlDataConfig, train: bool = True, splits: list[str] | None = None) -> Dataset:
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
    from cxrvlp.core.data.transforms import build_transform

    root = data_root(cfg)
    transform = build_transform(cfg.transform, train=train and cfg.augment, image_size=cfg.image_size,
                                normalisation=cfg.normalisation)  # fmt: skip
    parts = []
    for split in splits or cfg.splits or ["train", "validate", "test"]:
        images = MimicCxrDataset(
            root, split=split, views=cfg.views, reports_root=cfg.reports_root,
            sectioned_csv=cfg.sectioned_csv,
            cache_dir=cfg.cache_dir, label_source=None,
        )  # fmt: skip
        if cfg.label_matrix_npy:
            mats = study_matrices_from_official(images, cfg.label_matrix_npy, cfg.label_json or [], str(root))
        else:
            mats = study_matrices_from_reports(images)
        parts.append(MavlImageDataset(images, mats, transform))
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "location_index": torch.stack([s["location_index"] for s in samples]),
        "sample_ids": [s["sample_id"] for s in samples],
    }
