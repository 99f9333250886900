"""Synthetic cases: which findings a study has, how sure the report is, and each dataset's label names.

A `Case` is the ground truth shared by the phantom (what is drawn), the report (what is written) and the
label files (what each official vocabulary calls it), so the three always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from cxrvlp.core.data.labels import CHESTXRAY14_CLASSES, CHEXPERT_CLASSES
from cxrvlp.core.data.synthetic.phantom import SIDES, ZONES

MIMIC_CHEXPERT_COLUMNS: tuple[str, ...] = tuple(sorted(CHEXPERT_CLASSES))
"""The 14 labels in the (alphabetical) order of mimic-cxr-2.0.0-chexpert.csv / -negbio.csv."""

CXR14_CLASSES: tuple[str, ...] = CHESTXRAY14_CLASSES

# finding -> CheXpert classes that a positive mention sets (the first is the finding's own class)
FINDING_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "cardiomegaly": ("Cardiomegaly", "Enlarged Cardiomediastinum"),
    "consolidation": ("Consolidation", "Lung Opacity"),
    "pneumonia": ("Pneumonia", "Lung Opacity"),
    "nodule": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "edema": ("Edema", "Lung Opacity"),
    "atelectasis": ("Atelectasis", "Lung Opacity"),
    "support_devices": ("Support Devices",),
}
FINDING_TO_CXR14: dict[str, str] = {
    "pleural_effusion": "Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "nodule": "Nodule",
    "mass": "Mass",
    "edema": "Edema",
    "atelectasis": "Atelectasis",
}
# BBox_List_2017.csv spells infiltration "Infiltrate"; the 8 box classes
CXR14_BOX_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
FINDING_TO_PADCHEST: dict[str, str] = {
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "cardiomegaly": "cardiomegaly",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "nodule": "nodule",
    "mass": "mass",
    "edema": "pulmonary edema",
    "atelectasis": "laminar atelectasis",
    "support_devices": "endotracheal tube",
}
FINDING_TO_MESH: dict[str, str] = {
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "nodule": "Nodule",
    "mass": "Mass",
    "edema": "Pulmonary Edema",
    "atelectasis": "Pulmonary Atelectasis",
    "support_devices": "Catheters, Indwelling",
}

DEFAULT_PREVALENCE: dict[str, float] = {
    "pleural_effusion": 0.16,
    "pneumothorax": 0.1,
    "cardiomegaly": 0.16,
    "consolidation": 0.1,
    "pneumonia": 0.1,
    "nodule": 0.07,
    "mass": 0.05,
    "edema": 0.12,
    "atelectasis": 0.12,
    "support_devices": 0.1,
}
"""Per-finding probability in `sample_case` (roughly a third of cases come out with no finding)."""

MIMIC_PREVALENCE: dict[str, float] = {
    "pleural_effusion": 0.45,
    "pneumothorax": 0.1,
    "cardiomegaly": 0.15,
    "consolidation": 0.2,
    "pneumonia": 0.1,
    "nodule": 0.03,
    "mass": 0.02,
    "edema": 0.3,
    "atelectasis": 0.3,
    "support_devices": 0.5,
}
"""Per-finding probability for the report corpus (the MIMIC-CXR mirror), an inpatient population: the share
of the 223,414 real CheXpert train reports that the CheXpert labeler reads as positive or uncertain, rounded
to 0.05 (../shared/data/labels/chexpert_train.csv.gz: Pleural Effusion 0.44, Support Devices 0.52,
Atelectasis 0.30, Edema 0.29, Consolidation 0.19, Cardiomegaly 0.16, Pneumonia 0.11, Pneumothorax 0.10,
Lung Lesion 0.05)."""


@dataclass
class Case:
    """Ground truth of one synthetic study."""

    findings: dict[str, dict] = field(default_factory=dict)  # name -> phantom params (side, severity, zone)
    uncertain: set[str] = field(default_factory=set)  # present (drawn mild) but reported with hedging
    age: int = 60
    sex: str = "M"

    @property
    def positives(self) -> list[str]:
        """Findings reported with certainty."""
        return [f for f in self.findings if f not in self.uncertain]


def random_params(name: str, rng: np.random.Generator) -> dict:
    """Draw phantom parameters (side, severity, zone) for one finding."""
    p: dict = {"severity": str(rng.choice(["small", "moderate", "large"], p=[0.4, 0.4, 0.2]))}
    if name in ("pleural_effusion", "pneumothorax", "atelectasis"):
        p["side"] = str(rng.choice(SIDES, p=[0.4, 0.35, 0.25] if name != "pneumothorax" else [0.5, 0.5, 0.0]))
    elif name in ("consolidation", "pneumonia", "nodule", "mass"):
        p["side"] = str(rng.choice(["right", "left"]))
        p["zone"] = str(rng.choice(ZONES, p=[0.25, 0.3, 0.45]))
    if name == "cardiomegaly":
        p["severity"] = str(rng.choice(["mild", "moderate", "severe"], p=[0.3, 0.5, 0.2]))
    return p


def sample_case(
    rng: np.random.Generator,
    prevalence: dict[str, float] | None = None,
    uncertain_rate: float = 0.15,
    force: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> Case:
    """Draw one case: independent findings (nodule and mass exclusive), some reported as uncertain.

    force: findings the case must have; only: when given, no other finding is drawn (e.g. 5x200 sets).
    """
    prev = dict(DEFAULT_PREVALENCE if prevalence is None else prevalence)
    names = list(prev) if only is None else [n for n in prev if n in only]
    findings: dict[str, dict] = {}
    for name in names:
        if name in force or rng.random() < prev[name]:
            findings[name] = random_params(name, rng)
    for name in force:
        findings.setdefault(name, random_params(name, rng))
    if "nodule" in findings and "mass" in findings:
        del findings["nodule" if "mass" in force or "nodule" not in force else "mass"]
    uncertain = set()
    for name in findings:
        if name not in force and name != "support_devices" and rng.random() < uncertain_rate:
            uncertain.add(name)
            findings[name]["severity"] = "small"  # hedged findings are the subtle ones
    return Case(
        findings=findings,
        uncertain=uncertain,
        age=int(rng.integers(18, 95)),
        sex=str(rng.choice(["M", "F"])),
    )


def truth_chexpert(case: Case) -> dict[str, float]:
    """Image-level 0/1 CheXpert labels (expert-style, as in valid.csv / the test set): every class 0 or 1."""
    out = dict.fromkeys(CHEXPERT_CLASSES, 0.0)
    for f in case.findings:
        for c in FINDING_TO_CHEXPERT[f]:
            out[c] = 1.0
    pathology = [f for f in case.findings if f != "support_devices"]
    out["No Finding"] = 0.0 if pathology else 1.0
    return out


def cxr14_labels(case: Case) -> list[str]:
    """ChestX-ray14 'Finding Labels' of a case (alphabetical), ['No Finding'] when none applies."""
    labels = sorted({FINDING_TO_CXR14[f] for f in case.findings if f in FINDING_TO_CXR14})
    return labels or ["No Finding"]
