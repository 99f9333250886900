"""A synthetic label-to-sentence bank in the format of CXR-CLIP's `datasets/train_prompts_all.json`.

CXR-CLIP turns label-only datasets (CheXpert, ChestX-ray14) into pseudo-reports by drawing one sentence per
positive / negative / uncertain label from a hand-written bank (spec cxrclip.md §2.3). The official bank is
not ours to ship, so the CheXpert mirror writes this one beside its files: the same JSON layout
(`{class: {"pos": [...], "neg": [...], "unc": [...]}}`), our own templated sentences, labelled synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrvlp.core.data.labels import CHEXPERT_CLASSES

PROMPT_BANK_FILE = "synthetic_train_prompts.json"
"""File name under the CheXpert mirror's root (the official one is `datasets/train_prompts_all.json`)."""

_POS = ("{C}.", "There is {c}.", "Findings consistent with {c}.", "{C} is present.")
_NEG = ("No {c}.", "There is no {c}.", "No evidence of {c}.", "{C} is not seen.")
_UNC = ("Possible {c}.", "{C} cannot be excluded.", "Findings may represent {c}.")
_NO_FINDING_POS = ("No acute cardiopulmonary process.", "No acute findings.", "Normal chest radiograph.")


def synthetic_prompt_bank() -> dict[str, dict[str, list[str]]]:
    """{CheXpert class: {"pos", "neg", "unc": sentences}}; "No Finding" has positives only ("" otherwise)."""
    bank: dict[str, dict[str, list[str]]] = {}
    for cls in CHEXPERT_CLASSES:
        if cls == "No Finding":
            bank[cls] = {"pos": list(_NO_FINDING_POS), "neg": [""], "unc": [""]}
            continue
        c = cls.lower()
        fill = {"c": c, "C": c[:1].upper() + c[1:]}
        bank[cls] = {
            k: [t.format(**fill) for t in ts] for k, ts in (("pos", _POS), ("neg", _NEG), ("unc", _UNC))
        }
    return bank


def write_prompt_bank(root: str | Path) -> Path:
    """Write `synthetic_prompt_bank()` as root/PROMPT_BANK_FILE (UTF-8 JSON); returns the path."""
    path = Path(root) / PROMPT_BANK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # no marker key inside: the official layout has classes only (the file name says synthetic)
    path.write_text(json.dumps(synthetic_prompt_bank(), indent=1) + "\n", encoding="utf-8")
    return path
