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
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.chexpert import patients_5x200 as chexpert_5x200_patients  # re-exported
from cxrvlp.core.data.pretraining import (
    load_with_substitute,
    mimic_images,
    read_exact,
    resolve_mimic_root,
)
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError, MalformedRecordError
from cxrvlp.cxrclip.config import CxrClipDataConfig
from torch.utils.data import Dataset

logger = logging.getLogger("cxrvlp.cxrclip")


# ----------------------------------------------------------------------------------------------------------
# Label-to-text expansion (`cxrclip/prompt/prompts.py`, spec §2.3): labels -> a pseudo-report.
#
# The sentence bank is the official `datasets/train_prompts_all.json` whose path the user gives:
# `{class: {"pos": [...], "neg": [...], "unc": [...]}}`. Train mode draws one sentence per label from its
# list, shuffles the sentences and joins them with spaces (called twice per sample for two different texts);
# valid mode keeps the positives only (["No Finding"] when none), the FIRST sentence of each, unshuffled.
# ----------------------------------------------------------------------------------------------------------
PromptBank = dict[str, dict[str, list[str]]]

# The 14 ChestX-ray14 tasks negatives are sampled from (official `num_negs: 3`).
CHESTXRAY14_TASKS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip


def load_prompt_bank(path: str | Path) -> PromptBank:
    """Read and validate the prompt JSON (MalformedRecordError names the bad class/key)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError("cxrclip prompts", p, "train_prompts_all.json")
    try:
        bank = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MalformedRecordError(p, err.lineno, f"invalid JSON: {err.msg}") from err
    if not isinstance(bank, dict):
        raise MalformedRecordError(p, "top level", "expected {class: {pos|neg|unc: [sentences]}}")
    for cls, lists in bank.items():
        if not isinstance(lists, dict) or not all(k in ("pos", "neg", "unc") for k in lists):
            raise MalformedRecordError(p, cls, "expected an object with keys among pos / neg / unc")
        for kind, sents in lists.items():
            if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
                raise MalformedRecordError(p, f"{cls}.{kind}", "expected a list of strings")
    return bank


def generate_report_from_labels(
    labels: Sequence[Sequence[str]],
    bank: Mapping[str, Mapping[str, Sequence[str]]],
    deterministic: bool = False,
    rng: random.Random | None = None,
) -> str:
    """[[positives], [negatives], [uncertains]] (trailing lists optional) -> one pseudo-report string."""
    rng = rng or random
    kinds = ("pos", "neg", "unc")
    if deterministic:
        positives = list(labels[0]) if labels and labels[0] else ["No Finding"]
        sentences = [_lookup(bank, c, "pos")[0] for c in positives]
    else:
        sentences = []
        for kind, classes in zip(kinds, labels):
            for c in classes:
                sentences.append(rng.choice(list(_lookup(bank, c, kind))))
        rng.shuffle(sentences)
    return " ".join(s for s in sentences if s)  # empty sentences ('No Finding' neg/unc) are skipped


def _lookup(bank, cls: str, kind: str) -> Sequence[str]:
    try:
        return bank[cls][kind]
    except KeyError as err:
        raise MalformedRecordError("prompt bank", cls, f"no '{kind}' sentences for class '{cls}'") from err


def chexpert_text_labels(labels: np.ndarray, classes: Sequence[str]) -> list[list[str]]:
    """CheXpert 1 / 0 / -1 / NaN (blank) -> [[positives], [negatives], [uncertains]] (blanks absent)."""
    out: list[list[str]] = [[], [], []]
    for c, v in zip(classes, np.asarray(labels, dtype=np.float32)):
        if v == 1:
            out[0].append(c)
        elif v == 0:
            out[1].append(c)
        elif v == -1:
            out[2].append(c)
    return out


def chestxray14_text_labels(positives: Sequence[str], num_negs: int = 3, rng=None) -> list[list[str]]:
    """ChestX-ray14 'Finding Labels' -> [[positives], [3 sampled negatives]], Effusion -> Pleural Effusion."""
    rng = rng or random
    pos = [p for p in positives if p]
    candidates = [t for t in CHESTXRAY14_TASKS if t not in pos]
    negs = rng.sample(candidates, min(num_negs, len(candidates)))

    def rename(xs):
        return ["Pleural Effusion" if x == "Effusion" else x for x in xs]

    return [rename(pos), rename(negs)]


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
        on_error: str = "raise",
    ) -> None:
        self.images, self.transform, self.train, self.on_error = images, transform, train, on_error
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

    def _item(self, index: int, rng: random.Random) -> dict[str, Any]:
        study, by_view, texts = self.studies[index]
        i1, i2 = draw_image_pair(by_view, self.train, rng, self.view_sampling)
        _reseed(self.transform)
        img1 = self.transform(read_exact(self.images, i1).image)
        img2 = self.transform(read_exact(self.images, i2).image)
        t1, t2 = draw_text_pair(texts, self.augment, rng)
        return {"image": img1, "image_view": img2, "text": t1, "text2": t2, "sample_id": f"mimic/{study}"}

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Seeded by the training loop per (seed, epoch, index): draw everything from the global RNGs.
        rng = random.Random(random.getrandbits(64))
        # images and texts of ONE study; an unreadable image (on_error="skip") passes to the next study whole
        item, skipped = load_with_substitute(
            index, len(self), lambda j: self._item(j, rng), self.on_error, "mimic-cxr"
        )
        item["skipped"] = skipped
        return item


class LabelPromptDataset(Dataset):
    """A label-only dataset (CheXpert) as image-text pairs, one item per study (official `imagetext`).

    The two images are two images of the same study (the same one, augmented twice, when the study has one
    image); the two texts are two prompt reports generated from the first image's labels.
    """

    def __init__(
        self, images, transform, bank, train: bool = True, name: str = "chexpert", on_error: str = "raise"
    ) -> None:
        self.images, self.transform, self.bank, self.train, self.name = images, transform, bank, train, name
        self.on_error = on_error
        groups: dict[tuple[str, str], list[int]] = {}
        for i, rec in enumerate(images.records):
            groups.setdefault((str(rec.patient_id), str(rec.study_id)), []).append(i)
        self.studies = list(groups.items())

    def __len__(self) -> int:
        return len(self.studies)

    def texts(self) -> list[str]:
        """Every sentence its prompt reports can draw from (e.g. to build a tokenizer), once each."""
        return sorted({t for kinds in self.bank.values() for sents in kinds.values() for t in sents if t})

    def _item(self, index: int, rng: random.Random) -> dict[str, Any]:
        (patient, study), idxs = self.studies[index]
        if self.train and len(idxs) >= 2:
            i1, i2 = rng.sample(idxs, 2)
        else:
            i1 = i2 = idxs[0] if not self.train else rng.choice(idxs)
            if not self.train and len(idxs) >= 2:
                i2 = idxs[1]
        s1 = read_exact(self.images, i1)
        s2 = s1 if i2 == i1 else read_exact(self.images, i2)
        labels = chexpert_text_labels(s1.labels, s1.classes)
        t1 = generate_report_from_labels(labels, self.bank, deterministic=not self.train, rng=rng)
        t2 = generate_report_from_labels(labels, self.bank, deterministic=not self.train, rng=rng)
        _reseed(self.transform)
        return {
            "image": self.transform(s1.image),
            "image_view": self.transform(s2.image),
            "text": t1,
            "text2": t2,
            "sample_id": f"{self.name}/{patient}/{study}",
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        item, skipped = load_with_substitute(
            index, len(self), lambda j: self._item(j, rng), self.on_error, self.name
        )
        item["skipped"] = skipped
        return item


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


def build_train_dataset(
    cfg: CxrClipDataConfig, train: bool = True, split: str | None = None, root: Path | None = None
) -> Dataset:
    """MIMIC-CXR studies (+ CheXpert prompt reports when configured), concatenated as officially.

    `split` defaults to `cfg.split` for training; validation passes `cfg.val_split` with train=False
    (eval transform, deterministic draws) and gets CheXpert's `valid` split when CheXpert is configured.
    """
    from cxrvlp.core.data.transforms import build_transform

    root = root or resolve_mimic_root(cfg, "cxrclip")
    split = split or cfg.split
    transform = build_transform(cfg.transform, train=train, image_size=cfg.image_size)
    images = mimic_images(cfg, root, split, views=cfg.views)
    parts: list[Dataset] = [
        MimicStudyDataset(
            images,
            transform,
            train,
            cfg.view_sampling,
            load_back_translation(cfg.back_translation),
            cfg.on_error,
        )
    ]
    if cfg.chexpert_root:
        parts.append(_chexpert_prompts(cfg, transform, train))
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def _chexpert_prompts(cfg: CxrClipDataConfig, transform, train: bool) -> LabelPromptDataset:
    from cxrvlp.core.data.chexpert import CheXpertDataset

    if not cfg.prompt_json:
        raise DatasetNotFoundError("cxrclip prompts", "data.prompt_json", "train_prompts_all.json")
    if cfg.chexpert_5x200_csv is None and not cfg.allow_5x200_overlap:
        raise ConfigError(
            "cxrclip: data.chexpert_root is set but data.chexpert_5x200_csv is not: the official pretraining "
            "removes every CheXpert 5x200 patient (223,414 -> 216,478 images), or the 5x200 zero-shot score "
            "is contaminated. Give GLoRIA's chexpert_5x200.csv, or data.allow_5x200_overlap=true to skip it."
        )
    chex = CheXpertDataset(
        cfg.chexpert_root, split="train" if train else "valid", uncertain_policy="keep", on_error=cfg.on_error
    )
    if cfg.chexpert_5x200_csv is not None:
        excluded = chexpert_5x200_patients(cfg.chexpert_5x200_csv)
        before = len(chex.records)
        chex.records = [r for r in chex.records if _patient_of(r) not in excluded]
        logger.info("cxrclip: CheXpert %d -> %d images without the 5x200 patients", before, len(chex.records))
    return LabelPromptDataset(
        chex, transform, load_prompt_bank(cfg.prompt_json), train, on_error=cfg.on_error
    )


def _patient_of(rec) -> str:
    import re

    m = re.search(r"(patient\d+)", str(rec.image_path))
    return m.group(1) if m else str(rec.patient_id)
