"""MedKLIP/MAVL entity and landmark vocabularies, and a rule-based report -> label-matrix extractor.

MedKLIP and MAVL do not train on report text: each study becomes a (51 landmarks x 75 entities) matrix with
1 (present), 0 (absent) and -1 (not mentioned or uncertain), built offline from RadGraph annotations
(spec mavl.md §2.2). The vocabularies below are the official ones, in the official order (entity i is query
group i; landmark j is anatomy prompt j).

`extract_label_matrix(report)` is OURS (not the paper's): a rule-based, negation- and uncertainty-aware
extractor that builds the same matrix from raw report text with the same vocabularies, for users without
RadGraph. See the function docstring for what it does and does not do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Official order (`disease_name` in the official model files). 0..7 are the "normal" terms.
ENTITIES: tuple[str, ...] = (
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free",
    "effusion", "opacity", "pneumothorax", "edema", "atelectasis", "tube", "consolidation", "process",
    "abnormality", "enlarge", "tip", "low", "pneumonia", "line", "congestion", "catheter", "cardiomegaly",
    "fracture", "air", "tortuous", "lead", "disease", "calcification", "prominence", "device", "engorgement",
    "picc", "clip", "elevation", "expand", "nodule", "wire", "fluid", "degenerative", "pacemaker", "thicken",
    "marking", "scar", "hyperinflate", "blunt", "loss", "widen", "collapse", "density", "emphysema", "aerate",
    "mass", "crowd", "infiltrate", "obscure", "deformity", "hernia", "drainage", "distention", "shift",
    "stent",
    "pressure", "lesion", "finding", "borderline", "hardware", "dilation", "chf", "redistribution",
    "aspiration", "tail_abnorm_obs", "excluded_obs",
)  # fmt: skip
NORMAL_ENTITIES = ENTITIES[:8]

# Official order (`DICT_ANATOMICAL_LANDMARKS` keys as used by adj_matrix.py and the anatomy prompts).
LANDMARKS: tuple[str, ...] = (
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural", "pleural_unspec",
    "heart_size", "heart_border", "left_diaphragm", "right_diaphragm", "diaphragm_unspec", "retrocardiac",
    "lower_left_lobe", "upper_left_lobe", "lower_right_lobe", "middle_right_lobe", "upper_right_lobe",
    "left_lower_lung", "left_mid_lung", "left_upper_lung", "left_apical_lung", "left_lung_unspec",
    "right_lower_lung", "right_mid_lung", "right_upper_lung", "right_apical_lung", "right_lung_unspec",
    "lung_apices", "lung_bases", "left_costophrenic", "right_costophrenic", "costophrenic_unspec",
    "cardiophrenic_sulcus", "mediastinal", "spine", "clavicle", "rib", "stomach", "right_atrium",
    "right_ventricle", "aorta", "svc", "interstitium", "parenchymal", "cavoatrial_junction",
    "cardiopulmonary",
    "pulmonary", "lung_volumes", "unspecified", "other",
)  # fmt: skip

# MAVL's aspect order: k = 0 is the entity description, then the 8 GPT-4 aspects in the JSON's order.
ASPECTS: tuple[str, ...] = (
    "description", "border", "fluid", "location", "opacity", "other", "patterns", "shape", "texture",
)  # fmt: skip


def anatomy_prompts(landmarks: Sequence[str] = LANDMARKS) -> list[str]:
    """The official anatomy prompts: "It is located at " + landmark (underscores kept)."""
    return [f"It is located at {name}" for name in landmarks]


def presence_labels(matrix: np.ndarray) -> np.ndarray:
    """(..., L, E) -1/0/1 matrix -> (..., E): 1 if any landmark is 1, else 0 if any is 0, else -1."""
    m = np.asarray(matrix)
    return np.where((m == 1).any(-2), 1.0, np.where((m == 0).any(-2), 0.0, -1.0))


# ----------------------------------------------------------------------------------------------------------
# Rule-based extractor (OURS, not the paper's: the official labels come from RadGraph annotations)
# ----------------------------------------------------------------------------------------------------------

# entity -> surface forms (regex alternatives, matched on lowercased text at word boundaries). The official
# lemma merges are followed where the spec names them (enlargement/increase -> enlarge, opacification ->
# opacity, infection -> pneumonia, pacer -> pacemaker, nodular -> nodule).
_SURFACE: dict[str, str] = {
    "normal": r"normal(?:ly)?|within normal limits",
    "clear": r"clear(?:ed)?(?! of)",
    "sharp": r"sharp",
    "sharply": r"sharply",
    "unremarkable": r"unremarkable",
    "intact": r"intact",
    "stable": r"stable|stably",
    "free": r"free(?! of)",
    "effusion": r"effusions?",
    "opacity": r"opacit(?:y|ies)|opacification|opacified|opaque",
    "pneumothorax": r"pneumothora(?:x|ces)|ptx",
    "edema": r"o?edema(?:tous)?",
    "atelectasis": r"atelecta(?:sis|ses|tic)",
    "tube": r"tubes?",
    "consolidation": r"consolidat(?:ion|ions|ive|ed)",
    "process": r"process(?:es)?",
    "abnormality": r"abnormalit(?:y|ies)|abnormal",
    "enlarge": r"enlarge(?:d|ment|ments)?|enlarging|increas(?:e|ed|ing)",
    "tip": r"tips?",
    "low": r"low",
    "pneumonia": r"pneumonias?|infections?|infectious",
    "line": r"lines?",
    "congestion": r"congest(?:ion|ed)",
    "catheter": r"catheters?",
    "cardiomegaly": r"cardiomegaly",
    "fracture": r"fractur(?:e|es|ed)",
    "air": r"air(?! ?space)",
    "tortuous": r"tortu(?:ous|osity)",
    "lead": r"leads?",
    "disease": r"diseases?",
    "calcification": r"calcifi(?:cation|cations|ed)|calcific",
    "prominence": r"prominen(?:ce|t)",
    "device": r"devices?",
    "engorgement": r"engorge(?:ment|d)",
    "picc": r"picc",
    "clip": r"clips?",
    "elevation": r"elevat(?:ion|ed)",
    "expand": r"expand(?:ed)?|expansion",
    "nodule": r"nodul(?:e|es|ar)",
    "wire": r"wires?",
    "fluid": r"fluid",
    "degenerative": r"degenerat(?:ive|ion)",
    "pacemaker": r"pacemakers?|pacer",
    "thicken": r"thicken(?:ing|ed)",
    "marking": r"markings?",
    "scar": r"scar(?:s|ring)?",
    "hyperinflate": r"hyperinflat(?:ed|ion)|hyperexpan(?:ded|sion)",
    "blunt": r"blunt(?:ing|ed)",
    "loss": r"loss",
    "widen": r"widen(?:ing|ed)",
    "collapse": r"collapsed?",
    "density": r"densit(?:y|ies)",
    "emphysema": r"emphysema(?:tous)?",
    "aerate": r"aerat(?:ed|ion)",
    "mass": r"mass(?:es)?",
    "crowd": r"crowd(?:ing|ed)",
    "infiltrate": r"infiltrat(?:e|es|ion|ive)",
    "obscure": r"obscur(?:ed|ing|ation|es)",
    "deformity": r"deformit(?:y|ies)|deformed",
    "hernia": r"hernia(?:s|tion)?",
    "drainage": r"drainage",
    "distention": r"disten(?:tion|sion|ded)",
    "shift": r"shift(?:ed)?",
    "stent": r"stents?",
    "pressure": r"pressure",
    "lesion": r"lesions?",
    "finding": r"findings?",
    "borderline": r"borderline",
    "hardware": r"hardware",
    "dilation": r"dilat(?:ion|ation|ed)",
    "chf": r"chf|congestive heart failure",
    "redistribution": r"redistribution",
    "aspiration": r"aspiration",
    # rare abnormal findings outside the 73 named ones (the official `tail_abnorm_obs` bucket, partial list)
    "tail_abnorm_obs": r"granulomas?|granulomatous|fibrosis|fibrotic|bullae|bulla|bullous|cysts?|cystic|"
    r"cavit(?:y|ary|ation)|osteopenia|osteopenic|kyphosis|kyphotic|scoliosis|lymphadenopathy|adenopathy|"
    r"bronchiectasis|metasta(?:sis|ses|tic)|neoplasm|malignancy|tumou?r|pneumoperitoneum|osteophytes?|"
    r"lucenc(?:y|ies)|eventration",
}

# Landmark rules: (regex, landmarks); a sentence's landmarks are every rule that matches it (sides applied).
_LANDMARK_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"(?:bilateral|both) upper lobes?", ("upper_left_lobe", "upper_right_lobe")),
    (r"(?:bilateral|both) lower lobes?", ("lower_left_lobe", "lower_right_lobe")),
    (r"left lower lobe|lll", ("lower_left_lobe",)),
    (r"left upper lobe|lul|lingula", ("upper_left_lobe",)),
    (r"right lower lobe|rll", ("lower_right_lobe",)),
    (r"right middle lobe|rml|middle lobe", ("middle_right_lobe",)),
    (r"right upper lobe|rul", ("upper_right_lobe",)),
    (r"left (?:lung )?bases?|left basilar|left lower lung", ("left_lower_lung",)),
    (r"right (?:lung )?bases?|right basilar|right lower lung", ("right_lower_lung",)),
    (r"bibasilar|bibasal|(?:lung |both |bilateral )?bases", ("lung_bases",)),
    (r"left mid(?:dle)? ?lung", ("left_mid_lung",)),
    (r"right mid(?:dle)? ?lung", ("right_mid_lung",)),
    (r"left upper lung", ("left_upper_lung",)),
    (r"right upper lung", ("right_upper_lung",)),
    (r"left (?:lung )?ap(?:ex|ical)", ("left_apical_lung",)),
    (r"right (?:lung )?ap(?:ex|ical)", ("right_apical_lung",)),
    (r"apices|biapical|apical", ("lung_apices",)),
    (r"left lung|left hemithorax", ("left_lung_unspec",)),
    (r"right lung|right hemithorax", ("right_lung_unspec",)),
    (r"left (?:pleura|pleural)|left-sided (?:pleural )?effusion", ("left_pleural",)),
    (r"right (?:pleura|pleural)|right-sided (?:pleural )?effusion", ("right_pleural",)),
    (r"bilateral (?:pleural|effusions)", ("left_pleural", "right_pleural")),
    (r"pleura|pleural", ("pleural_unspec",)),
    (r"left hil(?:ar|um)", ("left_hilar",)),
    (r"right hil(?:ar|um)", ("right_hilar",)),
    (r"hila|hilar|hilum", ("hilar_unspec",)),
    (r"heart size|cardiac size|size of the heart|cardiac silhouette|cardiomegaly|heart is", ("heart_size",)),
    (r"heart border|cardiac border|cardiac contour", ("heart_border",)),
    (r"left (?:hemi)?diaphragm", ("left_diaphragm",)),
    (r"right (?:hemi)?diaphragm", ("right_diaphragm",)),
    (r"(?:hemi)?diaphragms?|diaphragmatic", ("diaphragm_unspec",)),
    (r"retrocardiac", ("retrocardiac",)),
    (r"left costophrenic", ("left_costophrenic",)),
    (r"right costophrenic", ("right_costophrenic",)),
    (r"costophrenic", ("costophrenic_unspec",)),
    (r"cardiophrenic", ("cardiophrenic_sulcus",)),
    (r"mediastin(?:um|al)|cardiomediastinal", ("mediastinal",)),
    (r"spine|spinal|vertebra(?:l|e)?|thoracic spine", ("spine",)),
    (r"clavicles?|clavicular", ("clavicle",)),
    (r"ribs?", ("rib",)),
    (r"stomach|gastric", ("stomach",)),
    (r"right atri(?:um|al)", ("right_atrium",)),
    (r"right ventric(?:le|ular)", ("right_ventricle",)),
    (r"aorta|aortic", ("aorta",)),
    (r"svc|superior vena cava", ("svc",)),
    (r"cavoatrial", ("cavoatrial_junction",)),
    (r"trachea|tracheal", ("trachea",)),
    (r"interstiti(?:um|al)", ("interstitium",)),
    (r"parenchyma|parenchymal", ("parenchymal",)),
    (r"cardiopulmonary", ("cardiopulmonary",)),
    (r"lung volumes?", ("lung_volumes",)),
    (r"lungs?|pulmonary", ("pulmonary",)),
)

_NEG_PRE = (
    r"\bno\b", r"\bnot\b", r"\bwithout\b", r"\bnegative for\b", r"\bfree of\b", r"\bclear of\b",
    r"\babsence of\b", r"\bno evidence of\b", r"\bnor\b", r"\bresolution of\b", r"\bruled out\b",
    r"\bthere is no\b", r"\bnone\b",
)  # fmt: skip
_NEG_POST = (
    r"\b(?:is|are|was|were|has been|have been)? ?(?:not (?:seen|identified|present|appreciated|visualized|"
    r"evident|demonstrated|detected)|no longer (?:seen|present|visualized|evident))\b",
    r"\b(?:has|have) (?:resolved|cleared)\b", r"\bresolved\b", r"\bis absent\b", r"\bare absent\b",
)  # fmt: skip
_UNC_POST = (
    r"\bcannot be (?:excluded|ruled out)\b", r"\bcan not be (?:excluded|ruled out)\b",
    r"\bnot (?:be )?excluded\b",
    r"\b(?:is|are) (?:possible|suspected|likely|questionable|favored)\b", r"\?",
)  # fmt: skip
_UNC = (
    r"\bmay\b", r"\bmight\b", r"\bcould\b", r"\bpossible\b", r"\bpossibly\b", r"\bprobable\b",
    r"\bprobably\b",
    r"\blikely\b", r"\bsuspicious\b", r"\bsuspected\b", r"\bsuspect\b", r"\bquestionable\b",
    r"\bconcern(?:ing)? for\b",
    r"\bsuggest(?:s|ed|ing|ive)?\b", r"\bcannot be (?:excluded|ruled out)\b",
    r"\bcan not be (?:excluded|ruled out)\b",
    r"\bcannot (?:exclude|rule out)\b", r"\bnot (?:be )?excluded\b", r"\bversus\b", r"\bvs\.?\b",
    r"\bdifferential\b",
    r"\bconsider(?:ed)?\b", r"\bequivocal\b", r"\bpossibility\b", r"\bquestion of\b",
    r"\bcannot be entirely\b",
    r"\?", r"\bmay represent\b", r"\bpresumably\b", r"\bworrisome\b", r"\brule out\b", r"\br/o\b",
)  # fmt: skip
# A negation/uncertainty cue covers the rest of its clause; these words end a clause.
_CLAUSE_BREAK = re.compile(
    r"\b(?:but|however|although|though|except|which|whereas|aside from|apart from)\b|[;:]"
)

_ENTITY_RE = [(e, re.compile(rf"\b(?:{p})\b")) for e, p in _SURFACE.items()]
_LANDMARK_RE = [(re.compile(rf"\b(?:{p})\b"), lms) for p, lms in _LANDMARK_RULES]
_NEG_PRE_RE = [re.compile(p) for p in _NEG_PRE]
_NEG_POST_RE = [re.compile(p) for p in _NEG_POST]
_UNC_RE = [re.compile(p) for p in _UNC]
_UNC_POST_RE = [re.compile(p) for p in _UNC_POST]


@dataclass(frozen=True)
class Mention:
    """One entity mention: its status ('present' | 'absent' | 'uncertain') and the sentence's landmarks."""

    entity: str
    status: str
    landmarks: tuple[str, ...]
    sentence: int
    start: int  # character offset in the sentence


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (periods not followed by a digit, question marks, new lines, numbered items)."""
    text = re.sub(r"\s+", " ", text or "").strip()
    parts = re.split(r"(?<=[.?!])\s+|(?<=\.)(?=[A-Z])|\s(?=\d+\.\s)", text)
    return [p.strip() for p in parts if p and p.strip(" .")]


def _clauses(sentence: str) -> list[tuple[int, int]]:
    """(start, end) spans of the clauses of a sentence."""
    spans, start = [], 0
    for m in _CLAUSE_BREAK.finditer(sentence):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(sentence)))
    return spans


def _landmarks_of(sentence: str) -> tuple[str, ...]:
    found: list[str] = []
    taken: list[tuple[int, int]] = []
    for rx, lms in _LANDMARK_RE:  # specific rules first: a span used by one rule is not reused by a later one
        for m in rx.finditer(sentence):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            taken.append(m.span())
            found.extend(lm for lm in lms if lm not in found)
    return tuple(found) or ("unspecified",)


def extract_mentions(report: str) -> list[Mention]:
    """Entity mentions of a report with negation and uncertainty (see `extract_label_matrix`)."""
    mentions: list[Mention] = []
    for si, sentence in enumerate(split_sentences(report)):
        s = sentence.lower()
        landmarks = _landmarks_of(s)
        for c0, c1 in _clauses(s):
            clause = s[c0:c1]
            unc = [m.start() for rx in _UNC_RE for m in rx.finditer(clause)]
            unc_post = [m.start() for rx in _UNC_POST_RE for m in rx.finditer(clause)]
            neg_pre = [m.end() for rx in _NEG_PRE_RE for m in rx.finditer(clause)]
            neg_post = [m.start() for rx in _NEG_POST_RE for m in rx.finditer(clause)]
            taken: list[tuple[int, int]] = []
            for entity, rx in _ENTITY_RE:
                for m in rx.finditer(clause):
                    if any(a < m.end() and m.start() < b for a, b in taken):
                        continue  # a longer surface form already claimed this text (e.g. "free of")
                    taken.append(m.span())
                    pre_u = [u for u in unc if u < m.start()]
                    pre_n = [n for n in neg_pre if n <= m.start()]
                    # "no X to suggest Y": a negation before the uncertainty cue keeps Y negated
                    negated_cue = bool(pre_u and pre_n and min(pre_n) <= min(pre_u))
                    if (pre_u and not negated_cue) or any(u >= m.end() for u in unc_post):
                        status = "uncertain"
                    elif any(n <= m.start() for n in neg_pre) or any(n >= m.end() for n in neg_post):
                        status = "absent"
                    else:
                        status = "present"
                    mentions.append(Mention(entity, status, landmarks, si, c0 + m.start()))
    return mentions


_E_INDEX = {e: i for i, e in enumerate(ENTITIES)}
_L_INDEX = {lm: i for i, lm in enumerate(LANDMARKS)}


def extract_label_matrix(report: str) -> np.ndarray:
    """(51 landmarks, 75 entities) float32 matrix from raw report text, as adj_matrix.py fills it.

    Starts at -1; a present mention sets its (landmark, entity) cells to 1, an absent one to max(cell, 0);
    uncertain mentions leave the cells unchanged. A mention's landmarks are all anatomy phrases of its
    sentence (`unspecified` when there is none).

    OURS (not the paper's): the official matrices come from RadGraph (entity and relation annotations,
    `located_at` links, spaCy lemmas). This extractor is a lexicon + NegEx-style clause-scoped cue matcher:
    it does not resolve which anatomy an observation is linked to inside a sentence (it links all of
    them), it recognises only the lexicon's surface forms, and its `tail_abnorm_obs` bucket is a short list.
    `excluded_obs` is never produced.
    """
    m = np.full((len(LANDMARKS), len(ENTITIES)), -1.0, dtype=np.float32)
    for men in extract_mentions(report):
        if men.status == "uncertain":
            continue
        e = _E_INDEX[men.entity]
        for lm in men.landmarks:
            li = _L_INDEX[lm]
            m[li, e] = 1.0 if men.status == "present" else max(m[li, e], 0.0)
    return m


def extract_labels(reports: Iterable[str]) -> np.ndarray:
    """(N, 51, 75) matrices for many reports."""
    return (
        np.stack([extract_label_matrix(r) for r in reports]) if reports else np.zeros((0, 51, 75), np.float32)
    )
