"""Zero-shot prompt sets and which one each method's protocol uses on each dataset.

Every prompt set returns `ClassPrompts` plus a protocol label that goes into the result JSON; a label
that starts with "ours" means the prompts are not from the method's paper or code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cxrvlp.core.text.prompts import chexpert_5x200_prompts
from cxrvlp.core.zeroshot import ClassPrompts

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
    """All GLoRIA attribute combinations of one CheXpert class, duplicates kept (core.text.prompts)."""
    return chexpert_5x200_prompts()[cls]


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

# Methods whose package is not installed (a test double, a name without a spec) use this set, labelled ours.
DEFAULT_PROMPTS: tuple[str, bool] = ("cxrclip-binary", False)


def prompts_for(method: str, dataset: str, classes: Sequence[str]) -> tuple[list[ClassPrompts], str]:
    """The prompts `method` uses on `dataset` (from its MethodSpec) and a protocol label.

    The label ends in 'ours, not from the paper' where the method defines no such prompts.
    """
    from cxrvlp.core.registry import get_method, installed_methods

    if method in installed_methods():
        choice = get_method(method).prompt_choice(dataset)
        set_name, official = choice.prompt_set, choice.official
    else:
        set_name, official = DEFAULT_PROMPTS
    if set_name not in PROMPT_SETS:
        raise KeyError(f"{method}: prompt set '{set_name}' is not defined; known: {sorted(PROMPT_SETS)}")
    pset = PROMPT_SETS[set_name]
    label = f"{pset.name}: {pset.source}" + ("" if official else " -- ours, not from the paper")
    return pset.build(classes), label
