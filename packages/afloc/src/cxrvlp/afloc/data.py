"""AFLoc pretraining data (spec §2): report cleaning, per-draw sentence sampling, tokenisation, collate.

* report text = findings + " " + impression (the last paragraph when both are missing), as core's "afloc"
  master table builds the `report` column; cleaned with core's GLoRIA recipe incl. the cnt == 5 early stop.
* every draw samples k ~ U{1, ..., n-1} sentences (n >= 2; numpy `randint(1, n)`: the full report is never
  used), distinct, in random order, joined with ". " (`get_caption`, random_combine mode 1). The draw uses the
  dataset's own numpy Generator, reseeded per item by core's loop from (seed, epoch, index): exact resume.
* prompts (zero-shot, grounding) are cleaned the same way and joined with a space (`process_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.pretraining import load_with_substitute, read_exact
from cxrvlp.core.text.cleaning import clean_prompt, clean_report
from torch.utils.data import Dataset

STOP_AT_WORD_COUNT = 5  # GLoRIA's `captions_per_image` reused as a word cap (spec §2.2 step 4)


def report_text(sections: dict[str, str]) -> str:
    """The `report` column of BASE-MIMIC.csv from a study's sections."""
    parts = [sections.get(k) or "" for k in ("findings", "impression")]
    parts = [p for p in parts if p.strip()]
    if not parts and (sections.get("last_paragraph") or "").strip():
        parts = [sections["last_paragraph"]]
    return " ".join(parts)


def report_sentences(text: str) -> list[str]:
    """Cleaned sentences of a report (official `create_path_2_sent_mapping`, early stop included)."""
    return clean_report(text, stop_at_word_count=STOP_AT_WORD_COUNT)


def sample_caption(sentences: Sequence[str], rng: np.random.Generator) -> str:
    """One training caption: a random subset (size 1..n-1, random order) of the sentences joined by ". "."""
    n = len(sentences)
    if n < 2:
        return sentences[0]
    k = int(rng.integers(1, n))  # numpy randint(1, n): upper bound exclusive (official)
    idx = rng.choice(n, size=k, replace=False)
    return ". ".join(sentences[i] for i in idx)


class AFLocTokenizer:
    """A BERT WordPiece tokenizer padded to `max_length` (97), plus the masks the model needs per token:
    `piece_mask` ("##" continuation) and `bracket_mask` (token starts with "[": the official unit count)."""

    def __init__(self, tokenizer: Any, max_length: int = 97) -> None:
        from cxrvlp.core.encoders.text import continuation_table, token_prefix_table

        self.tokenizer = tokenizer
        self.max_length = max_length
        self.continuation = continuation_table(tokenizer)
        self.bracket = token_prefix_table(tokenizer, "[")
        self.cls_token_id = int(tokenizer.cls_token_id)
        self.sep_token_id = int(tokenizer.sep_token_id)
        period = tokenizer.convert_tokens_to_ids(".")
        if period is None or period == tokenizer.unk_token_id:
            raise ValueError("the tokenizer has no '.' token (AFLoc's sentence boundary)")
        self.period_token_id = int(period)
        self.vocab_size = len(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, max_length: int = 97) -> AFLocTokenizer:
        """Hub id (paper: emilyalsentzer/Bio_ClinicalBERT), local folder / vocab.txt, or "minilm-l6"."""
        from cxrvlp.core.text.tokenize import load_tokenizer

        return cls(load_tokenizer(name_or_path), max_length)

    @classmethod
    def from_vocab_file(cls, vocab_file: str | Path, max_length: int = 97, lower_case: bool = False):
        """A WordPiece tokenizer on a bare vocab.txt (text is lower-cased by the cleaning anyway)."""
        from transformers import BertTokenizerFast

        return cls(BertTokenizerFast(str(vocab_file), do_lower_case=lower_case), max_length)

    def save(self, out_dir: str | Path) -> None:
        self.tokenizer.save_pretrained(str(out_dir))

    def ids_to_masks(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """piece_mask and bracket_mask of already tokenised ids."""
        return {"piece_mask": self.continuation[input_ids], "bracket_mask": self.bracket[input_ids]}

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Cleaned captions -> input_ids, attention_mask, token_type_ids, piece_mask, bracket_mask."""
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            padding="max_length",
            max_length=self.max_length,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        ids = enc["input_ids"]
        return {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"],
            "token_type_ids": enc["token_type_ids"],
            **self.ids_to_masks(ids),
        }

    def prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompts: official `process_text` cleaning (sentences joined by a space), then tokenised."""
        return self([clean_prompt(t) for t in texts])


class AFLocPretrainDataset(Dataset):
    """Frontal MIMIC-CXR images with their cleaned report sentences; a caption is sampled on every draw.

    Wraps `cxrvlp.core.data.MimicCxrDataset`; studies whose report cleans to no sentence are dropped (counted
    in `dropped`). `reseed(seed)` is called by core's loop before each item (sentence draw + transform).
    Image and caption always come from the same record; with on_error="skip" an unreadable image is replaced
    by the next readable record as a whole (its own image and its own sentences)."""

    def __init__(
        self,
        base: Any,
        tokenizer: AFLocTokenizer | None,
        transform: Callable[[np.ndarray], torch.Tensor],
        on_error: str = "raise",
    ) -> None:
        self.base, self.tokenizer, self.transform, self.on_error = base, tokenizer, transform, on_error
        keep, sentences = [], []
        for i, rec in enumerate(base.records):
            _, secs = base.report_for(rec.patient_id, rec.study_id)
            sents = report_sentences(report_text(secs))
            if sents:
                keep.append(i)
                sentences.append(sents)
        self.dropped = len(base.records) - len(keep)
        self.indices, self.sentences = keep, sentences
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        """Private generators for one item: the sentence draw and the transform (if it has one)."""
        self.rng = np.random.default_rng(seed)
        fn = getattr(self.transform, "reseed", None)
        if callable(fn):
            fn(seed)

    def texts(self) -> list[str]:
        """Every cleaned report (sentences joined by '. '), e.g. to build a vocabulary."""
        return [". ".join(s) for s in self.sentences]

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, i: int) -> dict[str, Any]:
        # the image first: an unreadable one raises before the sentence draw consumes the item's generator
        sample = read_exact(self.base, self.indices[i])
        caption = sample_caption(self.sentences[i], self.rng)
        return {"image": self.transform(sample.image), "caption": caption, "sample_id": sample.image_path}

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, skipped = load_with_substitute(i, len(self), self._item, self.on_error, self.base.name)
        item["skipped"] = skipped
        return item


def afloc_collate(samples: list[dict[str, Any]], tokenizer: AFLocTokenizer) -> dict[str, Any]:
    """Tokenise the drawn captions and stack; rows sorted by token count, descending (official collate;
    the losses do not depend on the order)."""
    enc = tokenizer([s["caption"] for s in samples])
    order = torch.argsort(enc["attention_mask"].sum(1), descending=True, stable=True)
    batch = {k: v[order] for k, v in enc.items()}
    batch["images"] = torch.stack([samples[i]["image"] for i in order.tolist()])
    batch["sample_ids"] = [samples[i]["sample_id"] for i in order.tolist()]
    batch["skipped"] = [x for s in samples for x in s.get("skipped", ())]
    return batch
