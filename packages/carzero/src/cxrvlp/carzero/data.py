"""CARZero training data: frontal MIMIC-CXR images, one sentence drawn per image (spec §2.2).

Text per study (official `create_path_2_sent_mapping` over `Report Impression` + `xinhuo`): the impression and
the LLM-rewritten report (iFlytek Spark, column `xinhuo` of the authors' master CSV) concatenated WITHOUT a
separator, newlines to spaces, split on numbered-list markers and ".", each piece lower-cased to `\\w+` tokens,
one-token pieces dropped, and the official early stop when the running word count equals exactly 5. Studies
with no sentence are dropped. Each draw takes one sentence uniformly (`numpy.random.randint`, seeded per
(seed, epoch, index) by core's loop).

Without an LLM column (`data.llm_csv` unset) the text is the report's own sections (`data.text_sections`,
default the impression, as the official `Report Impression`) and a warning says so: the released model was
trained with the LLM rewrite, which cannot be regenerated here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError
from cxrvlp.core.text.cleaning import clean_report
from torch.utils.data import Dataset

log = logging.getLogger("cxrvlp.carzero")


@dataclass
class CarzeroDataConfig:
    """Where the training data comes from and how a sample is drawn."""

    root: str | None = None  # MIMIC-CXR-JPG 2.0.0 root; None = the synthetic mirror (only when asked)
    synthetic: bool = False  # [ours] allow the synthetic mirror when root is null
    synthetic_dir: str = "~/.cache/cxrvlp/synthetic/mimic_cxr"
    synthetic_patients: int = 120
    synthetic_image_size: int = 256
    reports_root: str | None = None  # mimic-cxr-reports (files/pXX/...txt); default: root
    sectioned_csv: str | None = None
    split: str = "train"
    views: list[str] = field(default_factory=lambda: ["PA", "AP"])  # [paper] Frontal/Lateral == "Frontal"
    # [paper] the authors' master CSV (mimic-cxr-label-LLM_report-xinhuo-chexpertformat.csv) or any CSV with
    # `Path` and the LLM column; rows are matched to images by file name (dicom id).
    llm_csv: str | None = None
    llm_column: str = "xinhuo"  # [paper] iFlytek Spark rewrite (issue #8); "LLM Report Impression" = Vicuna
    impression_column: str = "Report Impression"  # used from llm_csv when present, else the report section
    text_sections: list[str] = field(default_factory=lambda: ["impression"])  # report sections, in order
    stop_at_word_count: int | None = 5  # [paper] the exact-equality early stop (spec corrections 1)
    exclude_file: str | None = None  # [paper] the noise list as text, one image file name per line
    transform: str = "carzero"
    image_size: int | None = None  # None: the preset's (224)
    normalisation: str | None = None  # None: the preset's (cxr-mae)
    cache_dir: str | None = None


def study_sentences(impression: str | None, llm: str | None = None, stop_at_word_count: int | None = 5) -> list:
    """Cleaned sentences of one study: impression + LLM text concatenated without a separator (official)."""
    text = (impression or "") + (llm or "")
    return clean_report(text, stop_at_word_count=stop_at_word_count)


def _present(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return str(x)


def read_llm_table(path: str | Path, llm_column: str, impression_column: str) -> dict[str, tuple[str, str]]:
    """{image file stem: (impression or "", llm text or "")} from the authors' master CSV (frontal rows)."""
    import pandas as pd

    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetNotFoundError("carzero LLM reports", p, "a CSV with `Path` and the LLM column")
    df = pd.read_csv(p)
    if "Path" not in df.columns or llm_column not in df.columns:
        raise ConfigError(f"{p}: needs columns 'Path' and '{llm_column}', has {list(df.columns)[:12]}")
    if "Frontal/Lateral" in df.columns:
        df = df[df["Frontal/Lateral"] == "Frontal"]
    imp = df[impression_column] if impression_column in df.columns else [None] * len(df)
    return {
        Path(str(path_)).stem: (_present(i), _present(t)) for path_, i, t in zip(df["Path"], imp, df[llm_column])
    }


class CarzeroImageTextDataset(Dataset):
    """One item per frontal image: the transformed image and one sentence of its study."""

    def __init__(
        self,
        images,  # a core MimicCxrDataset (one item = one image)
        transform: Callable[[np.ndarray], torch.Tensor],
        llm: dict[str, tuple[str, str]] | None = None,
        text_sections: Sequence[str] = ("impression",),
        stop_at_word_count: int | None = 5,
        exclude: set[str] | None = None,
    ) -> None:
        self.images, self.transform = images, transform
        self.items: list[tuple[int, int]] = []  # (image index, study position)
        self.sentences: list[list[str]] = []
        study_pos: dict[str, int] = {}
        exclude = exclude or set()
        for i, rec in enumerate(images.records):
            stem = Path(rec.image_path).stem
            if stem in exclude:
                continue
            if llm is not None:
                if stem not in llm:
                    continue  # not in the master CSV: the official dataset never sees it
                imp, llm_text = llm[stem]
                if not imp:
                    imp = images.report_for(rec.patient_id, rec.study_id)[1].get("impression", "")
                key = f"{rec.study_id}/{stem}"  # the CSV is per image; text is per row
                sents = study_sentences(imp, llm_text, stop_at_word_count)
            else:
                key = str(rec.study_id)
                if key not in study_pos:
                    secs = images.report_for(rec.patient_id, rec.study_id)[1]
                    text = " ".join(secs.get(s, "") for s in text_sections if secs.get(s, "").strip())
                    sents = clean_report(text, stop_at_word_count=stop_at_word_count)
                else:
                    sents = None
            if key not in study_pos:
                if not sents:
                    study_pos[key] = -1
                else:
                    study_pos[key] = len(self.sentences)
                    self.sentences.append(sents)
            if study_pos[key] >= 0:
                self.items.append((i, study_pos[key]))

    def __len__(self) -> int:
        return len(self.items)

    def texts(self) -> list[str]:
        """Every training sentence (e.g. to build a tokenizer)."""
        return [s for sents in self.sentences for s in sents]

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, pos = self.items[index]
        sents = self.sentences[pos]
        sentence = sents[np.random.randint(len(sents))]  # one sentence per draw, as official
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(np.random.randint(0, 2**31 - 1)))
        sample = self.images[i]
        rec = self.images.records[i]
        return {
            "image": self.transform(sample.image),
            "text": sentence,
            "sample_id": f"mimic/{rec.study_id}/{Path(rec.image_path).stem}",
        }


def ensure_synthetic_mimic(cfg: CarzeroDataConfig) -> Path:
    """The synthetic MIMIC-CXR mirror (written once into `synthetic_dir`)."""
    from cxrvlp.core.data.synthetic import GENERATOR_VERSION, write_mimic_cxr

    tag = f"n{cfg.synthetic_patients}_s{cfg.synthetic_image_size}_g{GENERATOR_VERSION}"
    root = Path(cfg.synthetic_dir).expanduser() / tag
    done = root / ".complete"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        write_mimic_cxr(root, n_patients=cfg.synthetic_patients, seed=0, image_size=cfg.synthetic_image_size)
        done.write_text("ok\n")
    return root


def build_train_dataset(cfg: CarzeroDataConfig, train: bool = True) -> CarzeroImageTextDataset:
    """Frontal MIMIC-CXR images of `split` with their sentences (LLM column when configured)."""
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
    from cxrvlp.core.data.transforms import build_transform

    if cfg.root:
        root = Path(cfg.root).expanduser()
    elif cfg.synthetic:
        root = ensure_synthetic_mimic(cfg)
    else:
        raise ConfigError(
            "carzero: data.root is not set. Point it at MIMIC-CXR-JPG 2.0.0 (data.root=/path), or ask for the "
            "synthetic mirror explicitly (data.synthetic=true) for a demo run"
        )
    transform = build_transform(cfg.transform, train=train, image_size=cfg.image_size,
                                normalisation=cfg.normalisation)  # fmt: skip
    images = MimicCxrDataset(
        root, split=cfg.split, views=cfg.views, reports_root=cfg.reports_root, sectioned_csv=cfg.sectioned_csv,
        cache_dir=cfg.cache_dir, label_source=None,
    )  # fmt: skip
    llm = None
    if cfg.llm_csv:
        llm = read_llm_table(cfg.llm_csv, cfg.llm_column, cfg.impression_column)
    else:
        log.warning(
            "carzero: no LLM-rewritten report column (data.llm_csv unset): training text = the report's %s "
            "sentences only; the released model was trained on impression + the '%s' LLM rewrite",
            "+".join(cfg.text_sections), cfg.llm_column,
        )  # fmt: skip
    exclude = None
    if cfg.exclude_file:
        p = Path(cfg.exclude_file).expanduser()
        if not p.is_file():
            raise DatasetNotFoundError("carzero noise list", p, "one image file name per line")
        exclude = {Path(x.strip()).stem for x in p.read_text().splitlines() if x.strip()}
    return CarzeroImageTextDataset(images, transform, llm, cfg.text_sections, cfg.stop_at_word_count, exclude)
