"""CXR-CLIP training data: two images and two texts per study (`cxrclip/data/datasets/imagetext.py`, §2).

Images (official effective behaviour, `view_sampling="official"`): a study with one view name samples two
distinct images of that view, with two view names two distinct images of the study; with more than two view
names the official loop keeps only the second drawn view (pitfall P1), so both images come from that view.
A study with a single image gives it twice (two independent augmentations). `view_sampling="distinct_views"`
is the fix (the paper's intent): two different views when the study has them.
Texts: sections [findings, impression] ([impression] when findings are missing, P13); two indices drawn
independently with replacement; each text replaced by its back-translation with p=0.5 when a back-translation
map is given (one section: (orig, bt) or (bt, orig)). Sentence shuffling is a no-op officially (P2): absent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError
from cxrvlp.cxrclip.prompts import chexpert_text_labels, generate_report_from_labels, load_prompt_bank
from torch.utils.data import Dataset


@dataclass
class CxrClipDataConfig:
    """Where the training data comes from and how a sample is drawn."""

    root: str | None = None  # MIMIC-CXR-JPG 2.0.0 root; None = the synthetic mirror (generated once)
    synthetic_dir: str = "~/.cache/cxrvlp/synthetic/mimic_cxr"
    synthetic_patients: int = 120
    synthetic_image_size: int = 256
    reports_root: str | None = None  # mimic-cxr-reports (files/pXX/...txt); default: root
    sectioned_csv: str | None = None
    split: str = "train"
    views: list[str] | None = None  # None: every image of the study (official), e.g. ["PA", "AP"] to filter
    view_sampling: str = "official"  # "official" (P1 quirk) | "distinct_views" (fix)
    back_translation: str | None = None  # JSON {section text: back-translated text}
    chexpert_root: str | None = None  # add CheXpert as prompt reports (needs prompt_json)
    prompt_json: str | None = None  # the official datasets/train_prompts_all.json
    transform: str = "cxrclip-r50"  # core transform preset (cxrclip-r50 | cxrclip-swint)
    image_size: int | None = None  # None: the preset's (224)
    cache_dir: str | None = None  # core resized-image cache


def text_sections(sections: dict[str, str]) -> list[str]:
    """[findings, impression], or [impression] when findings are missing (issue #1); [] when both are."""
    findings, impression = sections.get("findings", "").strip(), sections.get("impression", "").strip()
    if findings and impression:
        return [findings, impression]
    return [t for t in (impression or findings,) if t]


def draw_text_pair(
    texts: Sequence[str], augment: dict[str, str] | None, rng: random.Random
) -> tuple[str, str]:
    """The official text1/text2 draw (with replacement; back-translation swap with p=0.5 each)."""
    if len(texts) >= 2:
        a, b = texts[rng.randrange(len(texts))], texts[rng.randrange(len(texts))]
        if augment:
            a = augment.get(a, a) if rng.random() < 0.5 else a
            b = augment.get(b, b) if rng.random() < 0.5 else b
        return a, b
    t = texts[0]
    bt = augment.get(t, t) if augment else t
    return (t, bt) if rng.random() < 0.5 else (bt, t)


def draw_image_pair(
    paths_by_view: dict[str, list[int]], train: bool, rng: random.Random, mode: str = "official"
) -> tuple[int, int]:
    """Two image indices of one study (see module docstring)."""
    views = list(paths_by_view)
    every = [i for v in views for i in paths_by_view[v]]
    if mode == "distinct_views" and train and len(views) >= 2:
        v1, v2 = rng.sample(views, 2)
        return rng.choice(paths_by_view[v1]), rng.choice(paths_by_view[v2])
    if len(views) > 2 and mode == "official":
        # Official loop overwrites its list: [all images of the 2nd drawn view] + [one of them] (P1).
        v = rng.sample(views, 2)[1]
        chosen = list(paths_by_view[v]) + [rng.choice(paths_by_view[v])]
        return chosen[0], chosen[1]
    candidates = paths_by_view[views[0]] if len(views) == 1 else every
    if not train:
        return candidates[0], candidates[1] if len(candidates) > 1 else candidates[0]
    if len(candidates) >= 2:
        a, b = rng.sample(candidates, 2)
        return a, b
    return candidates[0], candidates[0]


class MimicStudyDataset(Dataset):
    """One item per MIMIC-CXR study: two transformed images and two report texts."""

    def __init__(
        self,
        images,  # a core MimicCxrDataset (one item = one image)
        transform: Callable[[np.ndarray], torch.Tensor],
        train: bool = True,
        view_sampling: str = "official",
        back_translation: dict[str, str] | None = None,
    ) -> None:
        self.images, self.transform, self.train = images, transform, train
        self.view_sampling, self.augment = view_sampling, back_translation
        self.studies: list[tuple[str, dict[str, list[int]], list[str]]] = []
        for study, idxs in images.study_groups().items():
            rec = images.records[idxs[0]]
            _, sections = images.report_for(rec.patient_id, rec.study_id)
            texts = text_sections(sections)
            if not texts:
                continue  # no findings and no impression: nothing to contrast with
            by_view: dict[str, list[int]] = {}
            for i in idxs:
                by_view.setdefault(images.records[i].view or "UNKNOWN", []).append(i)
            self.studies.append((study, by_view, texts))

    def __len__(self) -> int:
        return len(self.studies)

    def texts(self) -> list[str]:
        """Every section text (e.g. to build a tokenizer)."""
        return [t for _, _, texts in self.studies for t in texts]

    def __getitem__(self, index: int) -> dict[str, Any]:
        study, by_view, texts = self.studies[index]
        # Seeded by the training loop per (seed, epoch, index): draw everything from the global RNGs.
        rng = random.Random(random.getrandbits(64))
        i1, i2 = draw_image_pair(by_view, self.train, rng, self.view_sampling)
        _reseed(self.transform)
        img1 = self.transform(self.images[i1].image)
        img2 = self.transform(self.images[i2].image)
        t1, t2 = draw_text_pair(texts, self.augment, rng)
        return {"image": img1, "image_view": img2, "text": t1, "text2": t2, "sample_id": f"mimic/{study}"}


class LabelPromptDataset(Dataset):
    """A label-only dataset (CheXpert) as image-text pairs: two prompt reports, two augmentations."""

    def __init__(self, images, transform, bank, train: bool = True, name: str = "chexpert") -> None:
        self.images, self.transform, self.bank, self.train, self.name = images, transform, bank, train, name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.images[index]
        labels = chexpert_text_labels(sample.labels, sample.classes)
        rng = random.Random(random.getrandbits(64))
        t1 = generate_report_from_labels(labels, self.bank, deterministic=not self.train, rng=rng)
        t2 = generate_report_from_labels(labels, self.bank, deterministic=not self.train, rng=rng)
        _reseed(self.transform)
        img = sample.image
        return {
            "image": self.transform(img),
            "image_view": self.transform(img),
            "text": t1,
            "text2": t2,
            "sample_id": f"{self.name}/{index}",
        }


def _reseed(transform) -> None:
    # core Compose keeps its own generator: derive it from the (per-sample seeded) numpy global RNG.
    if hasattr(transform, "reseed"):
        transform.reseed(int(np.random.randint(0, 2**31 - 1)))


def load_back_translation(path: str | Path | None) -> dict[str, str] | None:
    """{original section: back-translated section} from a JSON file (None when not given)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError("back-translation", p, "a JSON {text: back-translated text}")
    data = json.loads(p.read_text(encoding="utf-8"))
    ok = isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    if not ok:
        raise MalformedRecordError(p, "top level", "expected a JSON object of strings")
    return data


def ensure_synthetic_mimic(cfg: CxrClipDataConfig) -> Path:
    """The synthetic MIMIC-CXR mirror (written once into `synthetic_dir`)."""
    from cxrvlp.core.data.synthetic import GENERATOR_VERSION, write_mimic_cxr

    # the generator version is in the folder name: a mirror written by an older generator is never reused
    tag = f"n{cfg.synthetic_patients}_s{cfg.synthetic_image_size}_g{GENERATOR_VERSION}"
    root = Path(cfg.synthetic_dir).expanduser() / tag
    done = root / ".complete"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_mimic_cxr(root, n_patients=cfg.synthetic_patients, seed=0, image_size=cfg.synthetic_image_size)
        done.write_text("ok\n")
    return root


def build_train_dataset(cfg: CxrClipDataConfig, train: bool = True) -> Dataset:
    """MIMIC-CXR studies (+ CheXpert prompt reports when configured), concatenated as officially."""
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
    from cxrvlp.core.data.transforms import build_transform

    root = Path(cfg.root).expanduser() if cfg.root else ensure_synthetic_mimic(cfg)
    transform = build_transform(cfg.transform, train=train, image_size=cfg.image_size)
    images = MimicCxrDataset(
        root,
        split=cfg.split,
        views=cfg.views,
        reports_root=cfg.reports_root,
        sectioned_csv=cfg.sectioned_csv,
        cache_dir=cfg.cache_dir,
        label_source=None,
    )
    parts: list[Dataset] = [
        MimicStudyDataset(
            images, transform, train, cfg.view_sampling, load_back_translation(cfg.back_translation)
        )
    ]
    if cfg.chexpert_root:
        from cxrvlp.core.data.chexpert import CheXpertDataset

        if not cfg.prompt_json:
            raise DatasetNotFoundError("cxrclip prompts", "data.prompt_json", "train_prompts_all.json")
        chex = CheXpertDataset(cfg.chexpert_root, split="train", uncertain_policy="keep")
        parts.append(LabelPromptDataset(chex, transform, load_prompt_bank(cfg.prompt_json), train))
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
