"""Label-to-text expansion (`cxrclip/prompt/prompts.py`, spec §2.3): labels -> a pseudo-report.

The sentence bank is the official `datasets/train_prompts_all.json` whose path the user gives:
`{class: {"pos": [...], "neg": [...], "unc": [...]}}`. Train mode draws one sentence per label from its
list, shuffles the sentences and joins them with spaces (called twice per sample for two different texts);
valid mode keeps the positives only (["No Finding"] when none), the FIRST sentence of each, unshuffled.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

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
