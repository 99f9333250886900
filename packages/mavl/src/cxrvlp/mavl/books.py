"""The frozen text books of MAVL: anatomy prompts, entity descriptions and visual-aspect sentences as CLS
embeddings of a frozen text encoder, computed once (spec §2.4, §3.1)."""

from __future__ import annotations

import torch


def assemble_concept_book(disease_book: torch.Tensor, aspect_book: torch.Tensor) -> torch.Tensor:
    """(E, T) descriptions + (N, T) aspect rows (entity-major) -> (E*(n+1), T) with n = N // E.

    As the official code: n = floor(N / E) and only the first E*n aspect rows are kept (so the 76th entity's
    8 rows are dropped when E = 75); row (n+1)*e + k is entity e, aspect k, k = 0 the description.
    """
    e, t = disease_book.shape
    n = aspect_book.shape[0] // e
    aspects = aspect_book[: e * n].reshape(e, n, t)
    return torch.cat([disease_book.unsqueeze(1), aspects], dim=1).reshape(e * (n + 1), t)


# ----------------------------------------------------------------------------------------------------------
# Knowledge texts. OURS by default (written for this project, NOT the official MedKLIP descriptions or GPT-4
# aspects); the official JSON files are read from a user path when given.
# ----------------------------------------------------------------------------------------------------------
import hashlib  # noqa: E402
import json  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from cxrvlp.core.errors import ConfigError  # noqa: E402
from cxrvlp.core.text.entities import ASPECTS, ENTITIES, LANDMARKS, anatomy_prompts  # noqa: E402

# entity -> (readable name, one short visual description). Ours.
OUR_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "normal": ("normal findings", "Structures of the chest look as expected, with no visible disease."),
    "clear": ("clear lungs", "The lung fields are dark and evenly aerated with no added shadows."),
    "sharp": (
        "sharp anatomical structures",
        "Edges of the heart, diaphragm and angles are crisp and well defined.",
    ),
    "sharply": ("sharply defined margins", "Margins are outlined crisply against the air-filled lung."),
    "unremarkable": ("unremarkable appearance", "Nothing stands out from the usual appearance of the chest."),
    "intact": ("intact structures", "Bones and devices are continuous, without breaks or gaps."),
    "stable": ("stable appearance", "The appearance matches the previous image without change."),
    "free": ("free space", "Spaces such as the costophrenic angles are open and not filled."),
    "effusion": (
        "pleural effusion",
        "Fluid in the pleural space: a dense area at the lung base with a curved upper edge that blunts "
        "the costophrenic angle.",
    ),
    "opacity": (
        "lung opacity",
        "A region of the lung that is whiter than normal because air is replaced or obscured.",
    ),
    "pneumothorax": (
        "pneumothorax",
        "Air in the pleural space: a thin white pleural line with no lung markings beyond it.",
    ),
    "edema": (
        "pulmonary edema",
        "Fluid in the lungs: hazy opacities around the hila, thickened septal lines and fluid in the "
        "fissures.",
    ),
    "atelectasis": (
        "atelectasis",
        "Partial lung collapse: a linear or wedge-shaped dense band with volume loss and shifted "
        "fissures.",
    ),
    "tube": (
        "tube",
        "A man-made tube seen as a long radiopaque line, such as an endotracheal or feeding tube.",
    ),
    "consolidation": (
        "consolidation",
        "Airspace filled with fluid or cells: a dense homogeneous area, often with air bronchograms.",
    ),
    "process": ("disease process", "An abnormal process in the lung seen as added density or distortion."),
    "abnormality": ("abnormality", "Any finding that departs from the normal appearance of the chest."),
    "enlarge": ("enlargement", "A structure that is bigger than expected, such as a widened heart or hilum."),
    "tip": ("device tip", "The end of a tube or catheter, a small bright point along its course."),
    "low": ("low lung volumes", "Small lungs with a raised diaphragm and crowded vessels at the bases."),
    "pneumonia": (
        "pneumonia",
        "Lung infection: patchy or lobar consolidation, sometimes with air bronchograms.",
    ),
    "line": ("line", "A thin radiopaque line from a catheter or a linear scar or plate-like density."),
    "congestion": (
        "vascular congestion",
        "Prominent, indistinct pulmonary vessels, more visible in the upper zones.",
    ),
    "catheter": ("catheter", "A thin radiopaque tube inside a vessel, ending in the central veins or heart."),
    "cardiomegaly": (
        "cardiomegaly",
        "An enlarged heart: the cardiac shadow is wider than half of the chest.",
    ),
    "fracture": ("fracture", "A break in a bone: a lucent line or step in the cortex of a rib or clavicle."),
    "air": ("air", "Abnormal dark air collection outside the lungs, such as under the diaphragm."),
    "tortuous": ("tortuous aorta", "A curved, unfolded aorta that bulges the mediastinal contour."),
    "lead": ("pacemaker lead", "A thin wire running from a device into the heart chambers."),
    "disease": ("disease", "Visible changes caused by an illness of the lung, heart or chest wall."),
    "calcification": ("calcification", "Very bright, bone-like deposits in vessels, nodes or nodules."),
    "prominence": ("prominence", "A structure that stands out more than usual, such as a full hilum."),
    "device": ("medical device", "An implanted or external object with sharp, very bright outlines."),
    "engorgement": ("vascular engorgement", "Distended vessels that look wider and denser than normal."),
    "picc": (
        "peripherally inserted central catheter",
        "A thin line entering from the arm and ending in the superior vena cava.",
    ),
    "clip": ("surgical clip", "Small very bright metallic clips, often in the neck or upper abdomen."),
    "elevation": ("elevated diaphragm", "A hemidiaphragm that sits higher than the other side."),
    "expand": (
        "lung expansion",
        "How well the lungs are inflated, judged by the diaphragm height and rib count.",
    ),
    "nodule": ("lung nodule", "A small round well-defined density within the lung, under three centimetres."),
    "wire": ("wire", "Thin bright metallic wires, such as sternal wires after heart surgery."),
    "fluid": ("fluid", "Fluid density in the pleura, fissures or lung tissue."),
    "degenerative": (
        "degenerative change",
        "Wear of the spine or joints: osteophytes and narrowed disc spaces.",
    ),
    "pacemaker": (
        "pacemaker",
        "A bright box-shaped device under the skin of the chest with leads to the heart.",
    ),
    "thicken": ("thickening", "A pleural or wall layer that looks thicker and denser than normal."),
    "marking": ("lung markings", "Branching vessel and interstitial lines in the lung fields."),
    "scar": ("scarring", "Fibrous linear densities with volume loss and distortion of nearby structures."),
    "hyperinflate": ("hyperinflation", "Overexpanded lungs with flat diaphragms and a long narrow heart."),
    "blunt": ("blunted costophrenic angle", "The sharp lateral angle at the lung base is rounded or filled."),
    "loss": ("volume loss", "Reduced lung size with shifted fissures, hila or mediastinum toward the side."),
    "widen": ("widened mediastinum", "The central shadow between the lungs is broader than expected."),
    "collapse": (
        "lung collapse",
        "A lobe or lung without air: dense, small and pulling structures toward it.",
    ),
    "density": ("density", "An area that absorbs more x-rays and looks whiter than nearby lung."),
    "emphysema": (
        "emphysema",
        "Destroyed lung tissue: dark hyperlucent lungs, flat diaphragms and sparse vessels.",
    ),
    "aerate": ("aeration", "How much air fills the lung; poor aeration appears as hazy density."),
    "mass": ("lung mass", "A large round or lobulated density in the lung, over three centimetres."),
    "crowd": ("crowded vessels", "Vessels pressed close together, usually at the bases with low volumes."),
    "infiltrate": ("infiltrate", "Ill-defined patchy opacities spreading through the lung."),
    "obscure": ("obscured margin", "A normally visible edge such as the heart border is hidden by density."),
    "deformity": ("deformity", "Abnormal shape of a bone or of the chest wall."),
    "hernia": (
        "hiatal hernia",
        "A rounded density or air-fluid level behind the heart from herniated stomach.",
    ),
    "drainage": ("drain", "A tube placed to drain fluid or air, seen as a radiopaque line."),
    "distention": ("distention", "A bowel loop or stomach filled with gas and larger than normal."),
    "shift": ("mediastinal shift", "The heart and trachea are displaced toward one side."),
    "stent": ("stent", "A bright meshed metallic tube inside a vessel or airway."),
    "pressure": (
        "raised pressure",
        "Signs of raised vascular pressure: enlarged central vessels and congestion.",
    ),
    "lesion": ("lesion", "A focal abnormal area in the lung or bones with defined edges."),
    "finding": ("finding", "A visible feature noted on the radiograph."),
    "borderline": ("borderline size", "A structure at the upper limit of normal size, such as the heart."),
    "hardware": ("orthopedic hardware", "Bright metallic screws, plates or rods in the bones."),
    "dilation": ("dilation", "A widened tubular structure such as a dilated aorta or bowel loop."),
    "chf": ("congestive heart failure", "A large heart with vascular congestion, edema and effusions."),
    "redistribution": (
        "vascular redistribution",
        "Upper lobe vessels as large as or larger than lower lobe ones.",
    ),
    "aspiration": ("aspiration", "Opacities in dependent lung segments from inhaled material."),
    "tail_abnorm_obs": ("rare diseases", "Uncommon abnormal findings that do not fit the named categories."),
    "excluded_obs": ("other observations", "Observations that seldom appear in the reports."),
}  # fmt: skip

# aspect -> template on the readable name. Ours.
OUR_ASPECT_TEMPLATES: dict[str, str] = {
    "border": "border: how sharp or blurred the edges of {} are",
    "fluid": "fluid: whether fluid density or an air-fluid level accompanies {}",
    "location": "location: where in the chest {} is usually seen",
    "opacity": "opacity: how white or dark {} appears compared with the lung",
    "other": "other: associated signs that come with {}",
    "patterns": "patterns: the distribution pattern of {}, focal, patchy or diffuse",
    "shape": "shape: the outline and form of {}",
    "texture": "texture: whether {} looks homogeneous, hazy or reticular",
}


def our_knowledge(entities: Sequence[str] = ENTITIES) -> tuple[list[str], list[list[str]]]:
    """(descriptions, aspect sentences (E x 8)) written by this project, for `entities` (unknown names get a
    generic sentence built from the name)."""
    desc, aspects = [], []
    for e in entities:
        name, text = OUR_DESCRIPTIONS.get(
            e, (e.replace("_", " "), f"Radiographic appearance of {e.replace('_', ' ')}.")
        )
        desc.append(text)
        aspects.append([OUR_ASPECT_TEMPLATES[a].format(name) for a in ASPECTS[1:]])
    return desc, aspects


def read_official_knowledge(
    descriptions_json: str | Path, aspects_json: str | Path | None, entities: Sequence[str] = ENTITIES
) -> tuple[list[str], list[list[str]]]:
    """The official `observation explanation.json` (entity -> sentence) and `gpt4_mimic.json` (entity -> 8
    "<aspect>: text" strings, aspect order border..texture) for `entities` (KeyError names a missing one)."""
    desc_map = json.loads(Path(descriptions_json).read_text(encoding="utf-8"))
    asp_map = json.loads(Path(aspects_json).read_text(encoding="utf-8")) if aspects_json else {}
    missing = [e for e in entities if e not in desc_map or (asp_map and e not in asp_map)]
    if missing:
        raise ConfigError(f"knowledge files lack entities {missing}")
    ours = our_knowledge(entities)[1]
    aspects = [list(asp_map[e]) if asp_map else ours[i] for i, e in enumerate(entities)]
    bad = [e for e, a in zip(entities, aspects) if len(a) != len(ASPECTS) - 1]
    if bad:
        raise ConfigError(f"{aspects_json}: entities {bad} do not have {len(ASPECTS) - 1} aspect strings")
    return [desc_map[e] for e in entities], aspects


def hashed_embeddings(texts: Sequence[str], dim: int) -> torch.Tensor:
    """OURS, tests/tiny only: a fixed pseudo-random vector of norm ~1 per text (SHA-256 seeded)."""
    rows = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        rows.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)) / dim**0.5)
    return torch.stack(rows) if rows else torch.zeros(0, dim)


@torch.no_grad()
def cls_embeddings(
    texts: Sequence[str], text_encoder: str, max_length: int, batch_size: int = 64, device: str = "cpu"
) -> torch.Tensor:
    """CLS token of the last hidden state of a frozen HF encoder (official: Bio_ClinicalBERT, max_length
    padding, truncation; the hub tokenizer lowercases, spec correction 1)."""
    from cxrvlp.core.encoders.packaged import resolve_model_source
    from cxrvlp.core.encoders.text import load_hf_text_model
    from cxrvlp.core.text.tokenize import load_tokenizer

    tok = load_tokenizer(text_encoder)
    model = load_hf_text_model(resolve_model_source(text_encoder), add_pooling_layer=False).eval().to(device)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i : i + batch_size]), padding="max_length", truncation=True,
                  max_length=max_length, return_tensors="pt")  # fmt: skip
        enc = {
            k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        out.append(model(**enc).last_hidden_state[:, 0].float().cpu())
    return torch.cat(out)


def embed(texts: Sequence[str], text_encoder: str | None, max_length: int, dim: int) -> torch.Tensor:
    if text_encoder is None:
        return hashed_embeddings(texts, dim)
    return cls_embeddings(texts, text_encoder, max_length)


def compute_books(
    text_encoder: str | None,
    text_max_length: int,
    text_dim: int,
    entities: Sequence[str] = ENTITIES,
    descriptions_json: str | Path | None = None,
    aspects_json: str | Path | None = None,
    landmarks: Sequence[str] = LANDMARKS,
) -> dict[str, torch.Tensor]:
    """{"ana_book" (L, T), "concept_book" (E*9, T)}: anatomy prompts and knowledge texts encoded."""
    if descriptions_json:
        desc, aspects = read_official_knowledge(descriptions_json, aspects_json, entities)
    else:
        desc, aspects = our_knowledge(entities)
    ana = embed(anatomy_prompts(landmarks), text_encoder, text_max_length, text_dim)
    d = embed(desc, text_encoder, text_max_length, text_dim)
    a = embed([s for row in aspects for s in row], text_encoder, text_max_length, text_dim)
    return {"ana_book": ana, "concept_book": assemble_concept_book(d, a)}


def books_for(
    cfg: Mapping | object, entities: Sequence[str] = ENTITIES, cache: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Books for a model config (`text_encoder`, `text_max_length`, `text_dim`, optional
    `extra.descriptions_json` / `extra.aspects_json`), read from / written to `cache` (.safetensors)."""
    from safetensors.torch import load_file, save_file

    if cache is not None and Path(cache).is_file():
        books = load_file(str(cache))
        if books["concept_book"].shape[0] == len(entities) * len(ASPECTS):
            return books
    get = cfg.get if isinstance(cfg, Mapping) else lambda k, d=None: getattr(cfg, k, d)
    extra = get("extra", {}) or {}
    books = compute_books(
        get("text_encoder"), int(get("text_max_length", 128)), int(get("text_dim", 768)), entities,
        extra.get("descriptions_json"), extra.get("aspects_json"),
    )  # fmt: skip
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in books.items()}, str(cache))
    return books
