"""Zero-shot prompt sets and which one each method's protocol uses on each dataset.

Every prompt set returns `ClassPrompts` plus a protocol label that goes into the result JSON; a label
that starts with "ours" means the prompts are not from the method's paper or code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cxrvlp.core.zeroshot import ClassPrompts

# GLoRIA's CheXpert attribute lists (as CXR-CLIP's `constants.CHEXPERT_CLASS_PROMPTS` keeps them, in dict
# order, typos included; spec cxrclip.md §6.3). Expanded counts: 210 / 15 / 192 / 18 / 54.
GLORIA_CHEXPERT_ATTRIBUTES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Atelectasis": (
        ("", "mild", "minimal"),
        (
            "subsegmental atelectasis",
            "linear atelectasis",
            "trace atelectasis",
            "bibasilar atelectasis",
            "retrocardiac atelectasis",
            "bandlike atelectasis",
            "residual atelectasis",
        ),
        (
            "at the mid lung zone",
            "at the upper lung zone",
            "at the right lung zone",
            "at the left lung zone",
            "at the lung bases",
            "at the right lung base",
            "at the left lung base",
            "at the bilateral lung bases",
            "at the left lower lobe",
            "at the right lower lobe",
        ),
    ),
    "Cardiomegaly": (
        ("",),
        (
            "cardiac silhouette size is upper limits of normal",
            "cardiomegaly which is unchanged",
            "mildly prominent cardiac silhouette",
            "portable view of the chest demonstrates stable cardiomegaly",
            "portable view of the chest demonstrates mild cardiomegaly",
            "persistent severe cardiomegaly",
            "heart size is borderline enlarged",
            "cardiomegaly unchanged",
            "heart size is at the upper limits of normal",
            "redemonstration of cardiomegaly",
            "ap erect chest radiograph demonstrates the heart size is the upper limits of normal",
            "cardiac silhouette size is mildly enlarged",
            "mildly enlarged cardiac silhouette, likely left ventricular enlargement. other chambers are less"
            " prominent",
            "heart size remains at mildly enlarged",
            "persistent cardiomegaly with prominent upper lobe vessels",
        ),
        ("",),
    ),
    "Consolidation": (
        ("", "increased", "improved", "apperance of"),
        (
            "bilateral consolidation",
            "reticular consolidation",
            "retrocardiac consolidation",
            "patchy consolidation",
            "airspace consolidation",
            "partial consolidation",
        ),
        (
            "at the lower lung zone",
            "at the upper lung zone",
            "at the left lower lobe",
            "at the right lower lobe",
            "at the left upper lobe",
            "at the right uppper lobe",
            "at the right lung base",
            "at the left lung base",
        ),
    ),
    "Edema": (
        ("", "mild", "improvement in", "presistent", "moderate", "decreased"),
        ("pulmonary edema", "trace interstitial pulmonary edema", "pulmonary interstitial edema"),
        ("",),
    ),
    # Its dict lists location before subtype, so the phrase is severity + location + subtype.
    "Pleural Effusion": (
        ("", "small", "stable", "large", "decreased", "increased"),
        ("left", "right", "tiny"),
        ("bilateral pleural effusion", "subpulmonic pleural effusion", "bilateral pleural effusion"),
    ),
}

# CARZero's "There is X" wording per class where the spec lists it (carzero.md §2.3), keyed by our class name.
CARZERO_WORDING: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Pleural Effusion": "Pleural Effusion",
    "Infiltration": "Pulmonary Infiltration",
    "Mass": "Pulmonary Mass",
    "Nodule": "Lung Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Pulmonary Consolidation",
    "Edema": "Pulmonary Edema",
    "Emphysema": "Pulmonary Emphysema",
    "Fibrosis": "Fibrosis",
    "Pleural_Thickening": "Pleural Thickening",
    "Pleural Thickening": "Pleural Thickening",
    "Hernia": "Hernia",
}

# MAVL queries entities, not sentences (mavl.md §6.1): our class name -> its entity.
MAVL_ENTITIES: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "effusion",
    "Effusion": "effusion",
    "Infiltration": "infiltrate",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Emphysema": "emphysema",
    "Fibrosis": "tail_abnorm_obs",
    "Pleural_Thickening": "thicken",
    "Hernia": "hernia",
    "COVID-19": "covid19",
}


def gloria_ensemble(cls: str) -> list[str]:
    """All GLoRIA attribute combinations of one CheXpert class, duplicates kept (they weigh double)."""
    lists = GLORIA_CHEXPERT_ATTRIBUTES[cls]
    return [" ".join(parts).strip() for parts in itertools.product(*lists)]


def _readable(cls: str) -> str:
    return cls.replace("_", " ")


def cxrclip_binary(classes: Sequence[str]) -> list[ClassPrompts]:
    """CXR-CLIP `zeroshot_binary`: positive = the class string, negative = "No " + class string."""
    return [ClassPrompts(c, [_readable(c)], [f"No {_readable(c)}"]) for c in classes]


def biovil_pneumonia(classes: Sequence[str]) -> list[ClassPrompts]:
    """CXR-CLIP `zeroshot_binary_BioVIL` prompts for RSNA Pneumonia."""
    return [
        ClassPrompts(c, ["Findings suggesting pneumonia."], ["No evidence of pneumonia"]) for c in classes
    ]


def gloria_5x200(classes: Sequence[str]) -> list[ClassPrompts]:
    """CXR-CLIP `zeroshot_gloria`: the GLoRIA prompt ensemble per CheXpert class (no negatives)."""
    return [ClassPrompts(c, gloria_ensemble(c)) for c in classes]


def carzero_there_is(classes: Sequence[str]) -> list[ClassPrompts]:
    """CARZero's one "There is X" prompt per class; no negatives."""
    return [ClassPrompts(c, [f"There is {CARZERO_WORDING.get(c, _readable(c))}"]) for c in classes]


def mavl_entities(classes: Sequence[str]) -> list[ClassPrompts]:
    """MAVL: the class's knowledge-book entity name (the adapter looks up its descriptions)."""
    return [
        ClassPrompts(MAVL_ENTITIES.get(c, _readable(c).lower()), [MAVL_ENTITIES.get(c, c)]) for c in classes
    ]


def findings_suggesting(classes: Sequence[str]) -> list[ClassPrompts]:
    """Ours: "Findings suggesting X." against "No evidence of X." (AFLoc's grounding query wording)."""
    return [
        ClassPrompts(
            c, [f"Findings suggesting {_readable(c).lower()}."], [f"No evidence of {_readable(c).lower()}."]
        )
        for c in classes
    ]


@dataclass(frozen=True)
class PromptSet:
    """A named way to turn class names into prompts, with the label the result JSON records."""

    name: str
    build: Callable[[Sequence[str]], list[ClassPrompts]]
    source: str


PROMPT_SETS: dict[str, PromptSet] = {
    p.name: p
    for p in (
        PromptSet("cxrclip-binary", cxrclip_binary, "CXR-CLIP zeroshot_binary (cxrclip.md §6.1)"),
        PromptSet("biovil-pneumonia", biovil_pneumonia, "CXR-CLIP zeroshot_binary_BioVIL (cxrclip.md §6.2)"),
        PromptSet(
            "gloria-5x200", gloria_5x200, "GLoRIA ensemble as in CXR-CLIP zeroshot_gloria (cxrclip.md §6.3)"
        ),
        PromptSet(
            "carzero-there-is", carzero_there_is, "CARZero 'There is X' test prompts (carzero.md §2.3)"
        ),
        PromptSet("mavl-entities", mavl_entities, "MAVL query entities (mavl.md §6.1)"),
        PromptSet(
            "findings-suggesting", findings_suggesting, "AFLoc grounding query wording (afloc.md §6.1)"
        ),
    )
}

# Which prompt set each method's protocol uses; "*" is the method's default, dataset names override it.
# Entries marked False are our choice where the method defines no zero-shot prompts ("not from the paper").
METHOD_PROMPTS: dict[str, dict[str, tuple[str, bool]]] = {
    "cxrclip": {
        "*": ("cxrclip-binary", True),
        "rsna-pneumonia": ("biovil-pneumonia", True),
        "chexpert-5x200": ("gloria-5x200", True),
    },
    "carzero": {"*": ("carzero-there-is", True)},
    "mavl": {"*": ("mavl-entities", True)},
    "afloc": {"*": ("findings-suggesting", False)},  # paper figure only: pos/neg prompts, wording inferred
    "mgca": {"*": ("cxrclip-binary", False), "chexpert-5x200": ("gloria-5x200", False)},  # MGCA has none
}
DEFAULT_PROMPTS: tuple[str, bool] = ("cxrclip-binary", False)


def prompts_for(method: str, dataset: str, classes: Sequence[str]) -> tuple[list[ClassPrompts], str]:
    """The prompts `method` uses on `dataset` and a protocol label ('not from the paper' where ours)."""
    table = METHOD_PROMPTS.get(method, {})
    set_name, official = table.get(dataset, table.get("*", DEFAULT_PROMPTS))
    pset = PROMPT_SETS[set_name]
    label = f"{pset.name}: {pset.source}" + ("" if official else " -- ours, not from the paper")
    return pset.build(classes), label
