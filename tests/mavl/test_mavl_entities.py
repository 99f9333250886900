"""The rule-based report -> (landmark x entity) extractor (core.text.entities, ours) on real IU X-ray text.

Every sentence below is copied from ../shared/data/labels/iu_xray_reports.csv (checked) and labelled by hand
with the entity vocabulary (RadGraph-style: what a reader would mark present / absent / uncertain).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cxrvlp.core.text.entities import (
    ENTITIES,
    LANDMARKS,
    extract_label_matrix,
    extract_mentions,
    presence_labels,
)

P, A, U = "present", "absent", "uncertain"
HAND: list[tuple[str, dict[str, str]]] = [
    ("The heart size is normal.", {"normal": P}),
    ("The cardiomediastinal silhouette is within normal limits.", {"normal": P}),
    ("Small T-spine osteophytes.", {"tail_abnorm_obs": P}),
    ("No evidence of acute cardiopulmonary process.", {"process": A}),
    ("There is no acute infiltrate or effusion.", {"infiltrate": A, "effusion": A}),
    (
        "There is a left-sided cardiac pacemaker identified whose leads are stable in position overlying the "
        "right atrial appendage and right ventricle.",
        {"pacemaker": P, "lead": P, "stable": P},
    ),
    ("Heart and mediastinum of normal size and contour.", {"normal": P}),
    ("No pneumothorax.", {"pneumothorax": A}),
    ("Otherwise no acute cardiopulmonary abnormality seen.", {"abnormality": A}),
    ("The cardiomediastinal silhouette is normal in size and contour.", {"normal": P}),
    ("No infiltrates or masses in the lungs.", {"infiltrate": A, "mass": A}),
    ("The lungs are hyperinflated but otherwise clear bilaterally.", {"hyperinflate": P, "clear": P}),
    ("There is no focal air space consolidation.", {"consolidation": A}),
    (
        "The lungs are clear, without evidence of acute infiltrate or effusion.",
        {"clear": P, "infiltrate": A, "effusion": A},
    ),
    (
        "There are small round calcific density nodules consistent with prior granulomatous disease "
        "bilaterally.",
        {"calcification": P, "density": P, "nodule": P, "tail_abnorm_obs": P, "disease": P},
    ),
    ("No acute cardiopulmonary abnormalities.", {"abnormality": A}),
    ("No pleural effusion.", {"effusion": A}),
    ("Aortic calcifications are noted.", {"calcification": P}),
    (
        "Persistent partial middle lobe atelectasis and infiltrate seen XXXX on the lateral",
        {"atelectasis": P, "infiltrate": P},
    ),
    ("The cardiac silhouette and mediastinal contours are within normal limits.", {"normal": P}),
    ("The cardiac silhouette is normal in size and configuration.", {"normal": P}),
    ("There is increased opacity in the left upper lobe, peripherally.", {"opacity": P, "enlarge": P}),
    ("The lung volumes are low normal.", {"low": P, "normal": P}),
    (
        "The tip of the catheter reaches the level of the brachiocephalic venous confluence.",
        {"tip": P, "catheter": P},
    ),
    ("No focal airspace consolidation to suggest pneumonia.", {"consolidation": A, "pneumonia": A}),
    (
        "1.0 cm nodular opacity in the left midlung is stable compared to prior examination from XXXX.",
        {"nodule": P, "opacity": P, "stable": P},
    ),
    (
        "No focal pulmonary opacity, pleural effusion or pneumothorax.",
        {"opacity": A, "effusion": A, "pneumothorax": A},
    ),
    ("The cardiomediastinal contours are grossly unremarkable.", {"unremarkable": P}),
    ("Visualized osseous structures of the thorax are without acute abnormality.", {"abnormality": A}),
    ("The lungs are hypoinflated but grossly clear.", {"clear": P}),
    (
        "No pneumothorax, pleural effusion or airspace consolidation.",
        {"pneumothorax": A, "effusion": A, "consolidation": A},
    ),
    ("Normal chest exam.", {"normal": P}),
    ("Minimal XXXX atelectasis or scarring in the left lower lobe.", {"atelectasis": U, "scar": U}),
    (
        "There is stable lucency in the right mid clavicle dating back to XXXX.",
        {"stable": P, "tail_abnorm_obs": P},
    ),
    ("This is superimposed on a background of probable emphysematous lung.", {"emphysema": U}),
    ("The lungs are clear.", {"clear": P}),
    ("No acute disease.", {"disease": A}),
    ("There is eventration of the right hemidiaphragm.", {"tail_abnorm_obs": P}),
    ("The appearance is stable from multiple previous studies.", {"stable": P}),
    ("No significant changes from prior study..", {}),
    ("Evaluation is limited by body habitus and AP technique.", {}),
]

LOCATIONS = {  # sentence -> landmarks the extractor must link
    "No pleural effusion.": {"pleural_unspec"},
    "Aortic calcifications are noted.": {"aorta"},
    "There is increased opacity in the left upper lobe, peripherally.": {"upper_left_lobe"},
    "The lung volumes are low normal.": {"lung_volumes"},
    "1.0 cm nodular opacity in the left midlung is stable compared to prior examination from XXXX.": {
        "left_mid_lung"
    },
    "There is eventration of the right hemidiaphragm.": {"right_diaphragm"},
    "Persistent partial middle lobe atelectasis and infiltrate seen XXXX on the lateral": {
        "middle_right_lobe"
    },
}


@pytest.fixture(scope="module")
def iu_text(shared_dir) -> str:
    with open(shared_dir / "data" / "labels" / "iu_xray_reports.csv", newline="") as fh:
        return "\n".join(r["findings"] + " " + r["impression"] for r in csv.DictReader(fh))


def _statuses(sentence: str) -> dict[str, str]:
    out: dict[str, str] = {}
    rank = {"present": 2, "uncertain": 1, "absent": 0}
    for m in extract_mentions(sentence):
        if m.entity not in out or rank[m.status] > rank[out[m.entity]]:
            out[m.entity] = m.status
    return out


def test_sentences_are_real_report_text(iu_text):
    for sentence, _ in HAND:
        assert sentence in iu_text, sentence


def test_agreement_with_hand_labels(iu_text):
    agree = total = 0
    disagreements = []
    for sentence, want in HAND:
        got = _statuses(sentence)
        for e in set(want) | set(got):
            total += 1
            if want.get(e) == got.get(e):
                agree += 1
            else:
                disagreements.append((sentence[:40], e, want.get(e), got.get(e)))
    rate = agree / total
    print(f"extractor agreement with hand labels: {agree}/{total} = {rate:.3f}; {disagreements}")
    assert rate >= 0.9, disagreements


def test_landmarks_and_matrix():
    for sentence, lms in LOCATIONS.items():
        got = {lm for m in extract_mentions(sentence) for lm in m.landmarks}
        assert lms <= got, (sentence, got)
    m = extract_label_matrix("Small left pleural effusion. No pneumothorax. Pneumonia cannot be excluded.")
    assert m.shape == (len(LANDMARKS), len(ENTITIES))
    e = ENTITIES.index
    assert m[LANDMARKS.index("left_pleural"), e("effusion")] == 1
    assert m[LANDMARKS.index("unspecified"), e("pneumothorax")] == 0
    assert np.all(m[:, e("pneumonia")] == -1)  # uncertain stays -1
    lab = presence_labels(m)
    assert lab[e("effusion")] == 1 and lab[e("pneumothorax")] == 0 and lab[e("pneumonia")] == -1
    # present wins over absent at the same cell (official: OBS-DA sets max(cell, 0))
    m2 = extract_label_matrix("Pleural effusion. No pleural effusion.")
    assert m2[LANDMARKS.index("pleural_unspec"), e("effusion")] == 1
