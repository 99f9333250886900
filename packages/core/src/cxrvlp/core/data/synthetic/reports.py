"""Template radiology reports whose CheXpert-style labels are derived from the very sentences written.

Every sentence template carries the labels a CheXpert-style labeler would give it (1 positive, 0 negated,
-1 uncertain), and a report's labels are the aggregate over the sentences it contains (positive over
uncertain over negative, as the CheXpert labeler aggregates), so the label CSV always agrees with the text.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
from cxrvlp.core.data.synthetic.cases import CHEXPERT_CLASSES, Case

Labels = dict[str, float]


@dataclass
class Sentence:
    """One report sentence and the CheXpert labels it implies."""

    text: str
    labels: Labels = field(default_factory=dict)


@dataclass
class Report:
    """A synthetic report: sections, full text and the labels implied by the text."""

    findings: str  # "" when the report has no FINDINGS section
    impression: str  # "" when the report has no IMPRESSION section
    text: str  # the full report file text (MIMIC style) or findings + impression (other styles)
    labels: Labels  # CheXpert class -> 1.0 / 0.0 / -1.0; classes the text does not mention are absent
    indication: str = ""
    comparison: str = ""


_LOBES = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
_CARDIO_ADV = {
    "mild": "mildly",
    "small": "mildly",
    "moderate": "moderately",
    "severe": "severely",
    "large": "severely",
}


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _side_phrase(p: dict) -> str:
    return p.get("side", "right")


def _lobe(p: dict) -> str:
    return _LOBES[
        (p.get("side", "right") if p.get("side") != "bilateral" else "right", p.get("zone", "lower"))
    ]


def _positive(name: str, p: dict, rng: np.random.Generator) -> Sentence:
    sev, side = p.get("severity", "moderate"), _side_phrase(p)
    if name == "pleural_effusion":
        eff = "pleural effusions" if side == "bilateral" else "pleural effusion"
        text = _pick(
            rng,
            [
                f"{_cap(sev)} {side} {eff}.",
                f"There is a {sev} {side} {eff}."
                if side != "bilateral"
                else f"There are {sev} bilateral {eff}.",
                f"{_cap(sev)} {side} {eff} with blunting of the costophrenic angle.",
            ],
        )
        return Sentence(str(text), {"Pleural Effusion": 1.0})
    if name == "pneumothorax":
        text = _pick(
            rng,
            [
                f"{_cap(sev)} {side} apical pneumothorax.",
                f"There is a {sev} {side} pneumothorax with a visible pleural line.",
                f"{_cap(side)} pneumothorax, {sev} in size.",
            ],
        )
        return Sentence(str(text), {"Pneumothorax": 1.0})
    if name == "cardiomegaly":
        adv = _CARDIO_ADV.get(sev, "moderately")
        options = [
            (f"{_cap(sev)} cardiomegaly.", {"Cardiomegaly": 1.0}),
            (f"The heart is {adv} enlarged.", {"Cardiomegaly": 1.0}),
            (
                f"Enlarged cardiomediastinal silhouette with {sev} cardiomegaly.",
                {"Cardiomegaly": 1.0, "Enlarged Cardiomediastinum": 1.0},
            ),
        ]
        text, labels = _pick(rng, options)
        return Sentence(text, labels)
    if name == "consolidation":
        lobe = _lobe(p)
        options = [
            (f"Focal consolidation in the {lobe}.", {"Consolidation": 1.0}),
            (
                f"Patchy opacity with consolidation in the {lobe}.",
                {"Consolidation": 1.0, "Lung Opacity": 1.0},
            ),
            (f"There is {lobe} consolidation.", {"Consolidation": 1.0}),
            # ChestX-ray14's "Infiltration" is a word reports use for airspace disease; without it the
            # class name never occurs in the text and no image-text model can learn it from these reports
            (f"Focal infiltrate with consolidation in the {lobe}.", {"Consolidation": 1.0}),
        ]
        text, labels = _pick(rng, options)
        return Sentence(text, labels)
    if name == "pneumonia":
        lobe = _lobe(p)
        options = [
            (f"Opacity in the {lobe} consistent with pneumonia.", {"Pneumonia": 1.0, "Lung Opacity": 1.0}),
            (f"Findings consistent with {lobe} pneumonia.", {"Pneumonia": 1.0}),
            (
                f"{_cap(lobe)} airspace opacity compatible with pneumonia.",
                {"Pneumonia": 1.0, "Lung Opacity": 1.0},
            ),
            (f"{_cap(lobe)} infiltrate consistent with pneumonia.", {"Pneumonia": 1.0}),
            (f"Patchy infiltration in the {lobe} consistent with pneumonia.", {"Pneumonia": 1.0}),
        ]
        text, labels = _pick(rng, options)
        return Sentence(text, labels)
    if name == "nodule":
        mm = int(rng.integers(6, 15))
        text = _pick(
            rng,
            [
                f"{mm} mm nodule in the {_lobe(p)}.",
                f"A {mm} mm pulmonary nodule projects over the {_lobe(p)}.",
            ],
        )
        return Sentence(str(text), {"Lung Lesion": 1.0})
    if name == "mass":
        cm = round(float(rng.uniform(3.0, 6.0)), 1)
        text = _pick(
            rng, [f"{cm} cm mass in the {_lobe(p)}.", f"There is a {cm} cm lung mass in the {_lobe(p)}."]
        )
        return Sentence(str(text), {"Lung Lesion": 1.0})
    if name == "edema":
        sev_word = {"small": "mild", "large": "severe"}.get(sev, sev)
        text = _pick(
            rng,
            [
                f"{_cap(sev_word)} pulmonary edema.",
                f"Perihilar haziness and vascular congestion consistent with {sev_word} pulmonary edema.",
                f"Bilateral perihilar opacities compatible with {sev_word} pulmonary edema.",
            ],
        )
        labels = {"Edema": 1.0}
        if "opacities" in str(text):
            labels["Lung Opacity"] = 1.0
        return Sentence(str(text), labels)
    if name == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        base = "both lung bases" if side == "bilateral" else f"the {side} lung base"
        options = [
            (f"{_cap(where)} atelectasis.", {"Atelectasis": 1.0}),
            (
                f"Linear opacity at {base} consistent with atelectasis.",
                {"Atelectasis": 1.0, "Lung Opacity": 1.0},
            ),
            (f"Plate-like atelectasis at {base}.", {"Atelectasis": 1.0}),
        ]
        text, labels = _pick(rng, options)
        return Sentence(text, labels)
    if name == "support_devices":
        text = _pick(
            rng,
            [
                "Endotracheal tube terminates 4 cm above the carina. Right IJ line ends in the SVC.",
                "Enteric tube courses below the diaphragm. Right IJ catheter tip in the mid SVC.",
                "Support devices are in standard position.",
            ],
        )
        return Sentence(str(text), {"Support Devices": 1.0})
    raise KeyError(name)


def _uncertain(name: str, p: dict, rng: np.random.Generator) -> Sentence:
    side = _side_phrase(p)
    if name == "pleural_effusion":
        side_w = "" if side == "bilateral" else f" {side}"
        text = _pick(
            rng,
            [
                f"Possible small{side_w} effusion.",
                f"Blunting of the{side_w} costophrenic angle may reflect a small pleural effusion.",
                f"A small{side_w} pleural effusion cannot be excluded.",
            ],
        )
        return Sentence(str(text), {"Pleural Effusion": -1.0})
    if name == "pneumothorax":
        text = _pick(
            rng,
            [f"Possible tiny {side} apical pneumothorax.", f"A small {side} pneumothorax is not excluded."],
        )
        return Sentence(str(text), {"Pneumothorax": -1.0})
    if name == "cardiomegaly":
        text = _pick(rng, ["Heart size is borderline enlarged.", "Possible mild cardiomegaly."])
        return Sentence(str(text), {"Cardiomegaly": -1.0})
    if name == "consolidation":
        return Sentence(
            f"Ill-defined opacity in the {_lobe(p)}, possibly consolidation.",
            {"Lung Opacity": 1.0, "Consolidation": -1.0},
        )
    if name == "pneumonia":
        text, labels = _pick(
            rng,
            [
                (
                    f"Opacity in the {_lobe(p)} may represent pneumonia.",
                    {"Lung Opacity": 1.0, "Pneumonia": -1.0},
                ),
                (f"Early pneumonia in the {_lobe(p)} cannot be excluded.", {"Pneumonia": -1.0}),
            ],
        )
        return Sentence(text, labels)
    if name == "nodule":
        return Sentence(
            f"Possible nodule in the {_lobe(p)}; a chest CT may be considered.", {"Lung Lesion": -1.0}
        )
    if name == "mass":
        return Sentence(f"Rounded density in the {_lobe(p)}, possibly a mass.", {"Lung Lesion": -1.0})
    if name == "edema":
        return Sentence(
            str(_pick(rng, ["Possible mild interstitial edema.", "Mild edema is not excluded."])),
            {"Edema": -1.0},
        )
    if name == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        return Sentence(
            f"{_cap(where)} opacity, likely atelectasis.", {"Lung Opacity": 1.0, "Atelectasis": -1.0}
        )
    raise KeyError(name)


_NEGATIONS: dict[str, list[tuple[str, Labels]]] = {
    "pleural_effusion": [
        ("No pleural effusion.", {"Pleural Effusion": 0.0}),
        ("There is no pleural effusion.", {"Pleural Effusion": 0.0}),
        ("No effusion is seen.", {"Pleural Effusion": 0.0}),
    ],
    "pneumothorax": [
        ("No pneumothorax.", {"Pneumothorax": 0.0}),
        ("There is no pneumothorax.", {"Pneumothorax": 0.0}),
    ],
    "cardiomegaly": [
        ("Heart size is normal.", {"Cardiomegaly": 0.0}),
        ("The heart is normal in size.", {"Cardiomegaly": 0.0}),
        (
            "The cardiomediastinal silhouette is within normal limits.",
            {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
        ),
    ],
    "consolidation": [("No focal consolidation.", {"Consolidation": 0.0})],
    "pneumonia": [("No evidence of pneumonia.", {"Pneumonia": 0.0})],
    "nodule": [("No suspicious pulmonary nodules.", {"Lung Lesion": 0.0})],
    "mass": [("No lung mass is identified.", {"Lung Lesion": 0.0})],
    "edema": [("No pulmonary edema.", {"Edema": 0.0}), ("There is no pulmonary edema.", {"Edema": 0.0})],
    "atelectasis": [("The lungs are well expanded without atelectasis.", {"Atelectasis": 0.0})],
}
# P(a report negates a finding | the finding is absent), from the CheXpert labeler's own counts on the 223,414
# real CheXpert train reports (../shared/data/labels/chexpert_train.csv.gz): negated / (not positive and not
# uncertain), e.g. Pleural Effusion 0.158 / 0.562 = 0.28, Cardiomegaly 0.05 / 0.843 = 0.06, Atelectasis 0.01.
# The "no consolidation, effusion or pneumothorax" sentence (_TRIPLE_RATE) carries most of the three classes'
# negations, the per-class rate the rest. Real reports name a finding more often to affirm it than to negate
# it (Pleural Effusion 0.39 positive vs 0.16 negated); earlier mirrors negated 0.5-0.7 of the time and, at
# 10-16 % prevalence, put each class's words mostly in negated sentences, which a short image-text training
# run learned as "class words = normal image" (zero-shot AUROC below 0.5; issue 26).
_NEGATION_RATE = {
    "pleural_effusion": 0.1,
    "pneumothorax": 0.15,
    "cardiomegaly": 0.06,
    "consolidation": 0.0,
    "edema": 0.13,
    "pneumonia": 0.015,
    "atelectasis": 0.01,
    "nodule": 0.01,
    "mass": 0.01,
}
_TRIPLE_RATE = 0.3
_TRIPLE = ("consolidation", "pleural_effusion", "pneumothorax")
_NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic abnormality.",
    "Normal chest radiograph.",
]
_ORDER = (
    "support_devices",
    "cardiomegaly",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "nodule",
    "mass",
    "pleural_effusion",
    "pneumothorax",
)

# Impressions lead with what the referring clinician must act on (a pneumothorax, a new lesion) and keep
# three findings at most. Listed in _ORDER (the findings section's anatomical order), the inpatient studies'
# frequent effusion / edema / atelectasis filled the three places and cut the pneumothorax from the
# impression of most studies that had one, so an impression-only model (CARZero's training text) hardly ever
# read "pneumothorax" beside an image with one (its zero-shot Pneumothorax AUROC 0.43-0.46, issue 26).
_IMPRESSION_ORDER = (
    "pneumothorax",
    "mass",
    "nodule",
    "consolidation",
    "pneumonia",
    "pleural_effusion",
    "edema",
    "cardiomegaly",
    "atelectasis",
)


def aggregate_labels(sentences: list[Sentence]) -> Labels:
    """Aggregate sentence labels like the CheXpert labeler (positive > uncertain > negative), + No Finding."""
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    out: Labels = {}
    for s in sentences:
        for k, v in s.labels.items():
            if k not in out or rank[v] > rank[out[k]]:
                out[k] = v
    pathology = [k for k, v in out.items() if k not in ("No Finding", "Support Devices") and v in (1.0, -1.0)]
    if not pathology:
        out["No Finding"] = 1.0
    return out


def finding_sentences(case: Case, rng: np.random.Generator) -> tuple[list[Sentence], list[Sentence]]:
    """(FINDINGS sentences, IMPRESSION sentences) for a case."""
    body: list[Sentence] = []
    present = set(case.findings)
    for name in _ORDER:
        if name not in present:
            continue
        p = case.findings[name]
        body.append(_uncertain(name, p, rng) if name in case.uncertain else _positive(name, p, rng))
    negs: list[Sentence] = []
    if not present & set(_TRIPLE) and rng.random() < _TRIPLE_RATE:
        triple = {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}
        negs.append(
            Sentence(
                str(
                    _pick(
                        rng,
                        [
                            "No focal consolidation, pleural effusion or pneumothorax.",
                            "There is no focal consolidation, pleural effusion, or pneumothorax.",
                        ],
                    )
                ),
                triple,
            )
        )
        done = set(_TRIPLE)
    else:
        done = set()
    for name, sents in _NEGATIONS.items():
        if name in present or name in done:
            continue
        if name in ("nodule", "mass") and present & {"nodule", "mass"}:
            continue  # "no nodule" next to a mass would negate the same class (Lung Lesion)
        if rng.random() < _NEGATION_RATE[name]:
            text, labels = _pick(rng, sents)
            negs.append(Sentence(text, labels))
    if "cardiomegaly" in present:
        negs = [s for s in negs if "Enlarged Cardiomediastinum" not in s.labels]
    order = rng.permutation(len(negs))
    findings = body + [negs[i] for i in order]
    if not present:
        findings.insert(
            0, Sentence(str(_pick(rng, ["The lungs are clear.", "Lungs are clear bilaterally."])))
        )
    # the impression restates the main findings in fresh words (same label values), the urgent ones first
    impression = [
        _uncertain(n, case.findings[n], rng) if n in case.uncertain else _positive(n, case.findings[n], rng)
        for n in _IMPRESSION_ORDER
        if n in present
    ][:3]
    if not impression:
        impression = [Sentence(str(_pick(rng, _NORMAL_IMPRESSIONS)))]
    return findings, impression


def _join(sentences: list[Sentence]) -> str:
    return " ".join(s.text for s in sentences)


def _wrap(text: str, width: int = 77) -> str:
    lines = textwrap.wrap(text, width=width, break_on_hyphens=False, break_long_words=False)
    return "\n".join(" " + line for line in lines) if text else ""


_INDICATIONS = [
    "___-year-old {sex} with shortness of breath.",
    "___-year-old {sex} with cough and fever, evaluate for pneumonia.",
    "History: ___{s} with chest pain",
    "___-year-old {sex} status post line placement, assess position.",
    "Dyspnea, evaluate for effusion or edema.",
]


def make_report(
    case: Case, rng: np.random.Generator, style: str = "mimic", views: str = "PA AND LAT"
) -> Report:
    """Write a report for a case. style: "mimic" (full FINAL REPORT text) or "openi" (sections only).

    views: the examination's views, "PA AND LAT" | "PORTABLE AP" | "PA" ... (MIMIC header only).
    About 8% of MIMIC reports have no FINDINGS section and about 4% no IMPRESSION, as in the real corpus.
    """
    f_sents, i_sents = finding_sentences(case, rng)
    has_findings = style != "mimic" or rng.random() > 0.08
    has_impression = style != "mimic" or not has_findings or rng.random() > 0.04
    used = (f_sents if has_findings else []) + (i_sents if has_impression else [])
    labels = aggregate_labels(used)
    findings = _join(f_sents) if has_findings else ""
    impression = _join(i_sents) if has_impression else ""
    sex_word = "man" if case.sex == "M" else "woman"
    indication = str(_pick(rng, _INDICATIONS)).format(sex=sex_word, s=case.sex)
    comparison = str(_pick(rng, ["None.", "___.", "Chest radiograph from ___."]))
    if style == "openi":
        indication = indication.replace("___", "XXXX")
        comparison = comparison.replace("___", "XXXX")
        return Report(
            findings, impression, f"{findings} {impression}".strip(), labels, indication, comparison
        )
    if style != "mimic":
        raise ValueError(f"make_report: unknown style {style!r} (use 'mimic' or 'openi')")
    technique = (
        "Chest PA and lateral radiographs."
        if "LAT" in views
        else f"Single {views.lower()} view of the chest."
    )
    lines = [
        " " * 33 + "FINAL REPORT",
        f" EXAMINATION:  CHEST ({views})",
        " ",
        f" INDICATION:  {indication}",
        " ",
        f" TECHNIQUE:  {technique}",
        " ",
        f" COMPARISON:  {comparison}",
        " ",
    ]
    if has_findings:
        lines += [" FINDINGS: ", " ", _wrap(findings), " "]
    if has_impression:
        lines += [" IMPRESSION: ", " ", _wrap(impression)]
    text = "\n".join(lines).rstrip() + "\n"
    return Report(findings, impression, text, labels, indication, comparison)


def labels_row(labels: Labels, classes: tuple[str, ...] = CHEXPERT_CLASSES) -> list[str]:
    """CSV cells for the label columns: '1.0' / '0.0' / '-1.0', '' where the text says nothing."""
    return [f"{labels[c]:.1f}" if c in labels else "" for c in classes]
