"""CARZero training data: frontal MIMIC-CXR images, one sentence drawn per image (spec §2.2).

Text per study (official `create_path_2_sent_mapping` over `Report Impression` + `xinhuo`): the impression and
the LLM-rewritten report (iFlytek Spark, column `xinhuo` of the authors' master CSV) concatenated WITHOUT a
separator, newlines to spaces, split on numbered-list markers and ".", each piece lower-cased to
`\\w+` tokens,
one-token pieces dropped, and the official early stop when the running word count equals exactly 5. Studies
with no sentence are dropped. Each draw takes one sentence uniformly (`numpy.random.randint`, seeded per
(seed, epoch, index) by core's loop). An item is built from ONE record (its image and one of its own
sentences); with `data.on_error=skip` an unreadable image hands the item to the next readable record whole.

Without an LLM column (`data.llm_csv` unset) the text is the report's own sections (`data.text_sections`,
default the impression, as the official `Report Impression`) and a warning says so: the released model was
trained with the LLM rewrite, which cannot be regenerated here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.carzero.config import CarzeroDataConfig
from cxrvlp.core.data.pretraining import load_with_substitute, read_exact, resolve_mimic_root
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError
from cxrvlp.core.text.cleaning import clean_report
from torch.utils.data import Dataset

log = logging.getLogger("cxrvlp.carzero")


def study_sentences(
    impression: str | None, llm: str | None = None, stop_at_word_count: int | None = 5
) -> list:
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
        Path(str(path_)).stem: (_present(i), _present(t))
        for path_, i, t in zip(df["Path"], imp, df[llm_column])
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
        on_error: str = "raise",
    ) -> None:
        self.images, self.transform, self.on_error = images, transform, on_error
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

    def _item(self, index: int) -> dict[str, Any]:
        i, pos = self.items[index]
        sents = self.sentences[pos]
        sentence = sents[np.random.randint(len(sents))]  # one sentence per draw, as official
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(np.random.randint(0, 2**31 - 1)))
        rec = self.images.records[i]
        return {
            "image": self.transform(read_exact(self.images, i).image),  # this record's image, never another
            "text": sentence,
            "sample_id": f"mimic/{rec.study_id}/{Path(rec.image_path).stem}",
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        item, skipped = load_with_substitute(index, len(self), self._item, self.on_error, "mimic-cxr")
        item["skipped"] = skipped
        return item


def build_train_dataset(
    cfg: CarzeroDataConfig, train: bool = True, split: str | None = None, root: Path | None = None
) -> CarzeroImageTextDataset:
    """Frontal MIMIC-CXR images of `split` (default `cfg.split`) with their sentences (LLM column when
    configured). Validation passes `cfg.val_split` with train=False (the eval transform). `root`: the resolved
    data root (the task resolves it once, main process first); None resolves it here."""
    from cxrvlp.core.data.pretraining import mimic_images
    from cxrvlp.core.data.transforms import build_transform

    root = root or resolve_mimic_root(cfg, "carzero")
    transform = build_transform(cfg.transform, train=train, image_size=cfg.image_size,
                                normalisation=cfg.normalisation)  # fmt: skip
    images = mimic_images(cfg, root, split or cfg.split, views=cfg.views)
    llm = None
    if cfg.llm_csv:
        llm = read_llm_table(cfg.llm_csv, cfg.llm_column, cfg.impression_column)
    elif train:
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
    return CarzeroImageTextDataset(
        images, transform, llm, cfg.text_sections, cfg.stop_at_word_count, exclude, on_error=cfg.on_error
    )
