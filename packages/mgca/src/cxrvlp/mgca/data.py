"""MGCA pretraining data: official caption cleaning, tokenisation (+ `##` piece mask), dataset, collate."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.pretraining import load_with_substitute, read_exact
from torch.utils.data import Dataset

_NUMBERED = re.compile(r"[0-9]+\.")  # official splitter: also eats the integer part of decimals ("4.5")
_WORD = re.compile(r"\w+")  # NLTK RegexpTokenizer(r"\w+"): keeps underscores, drops punctuation


def report_sentences(impression: str | None, findings: str | None) -> list[str]:
    """Official `create_path_2_sent_mapping` for one report: cleaned sentences (empty list: unusable)."""
    text = f"{impression or ''} {findings or ''}".replace("\n", " ")
    pieces = [s for point in _NUMBERED.split(text) for s in point.split(".")]
    sentences, count = [], 0
    for cap in pieces:
        if not cap:
            continue
        tokens = _WORD.findall(cap.replace("\ufffd\ufffd", " ").lower())
        if len(tokens) <= 1:
            continue
        kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
        kept = [t for t in kept if t]
        if kept:
            sentences.append(" ".join(kept))
        count += len(kept)
    return sentences if count >= 3 else []


def clean_text(text: str) -> str:
    """A prompt cleaned exactly as a training caption's sentences (same splitter, word rule, ASCII filter),
    without the report-level drop rule, so a one-word prompt stays a prompt."""
    pieces = [s for point in _NUMBERED.split(text.replace("\n", " ")) for s in point.split(".")]
    words = []
    for cap in pieces:
        tokens = _WORD.findall(cap.replace("\ufffd\ufffd", " ").lower())
        kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
        words.extend(t for t in kept if t)
    return " ".join(words)


def report_caption(impression: str | None, findings: str | None) -> str | None:
    """The caption MGCA tokenises (sentences joined by one space), or None when the report is dropped."""
    sents = report_sentences(impression, findings)
    return " ".join(s for s in sents if s) if sents else None


class MGCATokenizer:
    """A BERT WordPiece tokenizer padded/truncated to `max_words`, plus the `##` continuation mask."""

    def __init__(self, tokenizer: Any, max_words: int = 112) -> None:
        from cxrvlp.core.encoders.text import continuation_table

        self.tokenizer = tokenizer
        self.max_words = max_words
        self.continuation = continuation_table(tokenizer)  # (V,) bool
        self.sep_token_id = int(tokenizer.sep_token_id)
        self.vocab_size = len(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, max_words: int = 112) -> MGCATokenizer:
        """Hub id (the paper: emilyalsentzer/Bio_ClinicalBERT), a local folder / vocab.txt, or "minilm-l6"."""
        from cxrvlp.core.encoders.packaged import resolve_pretrained_source
        from cxrvlp.core.text.tokenize import load_tokenizer

        return cls(load_tokenizer(resolve_pretrained_source(name_or_path)), max_words)

    @classmethod
    def from_vocab_file(cls, vocab_file: str | Path, max_words: int = 112) -> MGCATokenizer:
        """A lower-casing WordPiece tokenizer on a bare vocab.txt."""
        from transformers import BertTokenizerFast

        return cls(BertTokenizerFast(str(vocab_file), do_lower_case=True), max_words)

    def save(self, out_dir: str | Path) -> None:
        """Write the tokenizer files (reload with `from_pretrained(out_dir)`)."""
        self.tokenizer.save_pretrained(str(out_dir))

    def __call__(self, texts: Sequence[str], padding: str = "max_length") -> dict[str, torch.Tensor]:
        """texts -> input_ids, attention_mask (B, max_words) and piece_mask (B, max_words) bool."""
        enc = self.tokenizer(
            list(texts), truncation=True, padding=padding, max_length=self.max_words, return_tensors="pt"
        )
        ids = enc["input_ids"]
        return {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"],
            "piece_mask": self.continuation[ids],
        }


class MGCAPretrainDataset(Dataset):
    """Frontal MIMIC-CXR images with their MGCA captions (pre-tokenised once: no per-draw tokenisation).

    Wraps a `cxrvlp.core.data.MimicCxrDataset`; images whose report gives no caption are dropped and counted
    in `dropped` (the official rule: fewer than 3 kept tokens). Image and caption always come from the same
    record; with on_error="skip" an unreadable image is replaced by the next readable record as a whole.
    """

    def __init__(
        self,
        base: Any,
        tokenizer: MGCATokenizer,
        transform: Callable[[np.ndarray], torch.Tensor],
        data_pct: float = 1.0,
        seed: int = 42,
        captions: Sequence[str | None] | None = None,
        on_error: str = "raise",
    ) -> None:
        self.base, self.transform, self.on_error = base, transform, on_error
        if captions is None:  # one report read per record (the task passes the list it already has)
            captions = []
            for rec in base.records:
                _, secs = base.report_for(rec.patient_id, rec.study_id)
                captions.append(report_caption(secs.get("impression"), secs.get("findings")))
        keep = [i for i, c in enumerate(captions) if c is not None]
        kept_captions = [captions[i] for i in keep]
        self.dropped = len(base.records) - len(keep)
        if data_pct < 1.0:  # official: df.sample(frac, random_state=42) on the train split
            rng = np.random.default_rng(seed)
            sel = np.sort(rng.choice(len(keep), max(1, int(round(data_pct * len(keep)))), replace=False))
            keep, kept_captions = [keep[i] for i in sel], [kept_captions[i] for i in sel]
        self.indices, self.captions = keep, kept_captions
        self.tokens = tokenizer(kept_captions) if kept_captions else None

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, i: int) -> dict[str, Any]:
        # image and caption of the SAME record i: pairs never shift when an image is unreadable
        sample = read_exact(self.base, self.indices[i])
        return {
            "image": self.transform(sample.image),  # (3, S, S)
            "input_ids": self.tokens["input_ids"][i],
            "attention_mask": self.tokens["attention_mask"][i],
            "piece_mask": self.tokens["piece_mask"][i],
            "sample_id": sample.image_path,
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, skipped = load_with_substitute(i, len(self), self._item, self.on_error, self.base.name)
        item["skipped"] = skipped
        return item


def mgca_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch; sorted by caption length, descending (official collate order, harmless)."""
    lens = torch.stack([s["attention_mask"].sum() for s in samples])
    order = torch.argsort(lens, descending=True, stable=True).tolist()
    samples = [samples[i] for i in order]
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
        "piece_mask": torch.stack([s["piece_mask"] for s in samples]),
        "sample_ids": [s["sample_id"] for s in samples],
        "skipped": [x for s in samples for x in s.get("skipped", ())],
    }
