"""mavl's entry in the cxrvlp method registry: named model configs and the method hooks."""

from __future__ import annotations

from cxrvlp.core.method import DemoBudget, PretrainedRecord, PromptChoice, method_spec
from cxrvlp.core.registry import register_model
from cxrvlp.mavl.config import BIO_CLINICAL_BERT, MavlModelConfig
from cxrvlp.mavl.model import Mavl

METHOD = "mavl"


def _build(base: dict, overrides: dict) -> Mavl:
    return Mavl(MavlModelConfig(**{**base, **overrides}))


@register_model(
    "mavl-r50", method=METHOD, description="MAVL ResNet-50 (layer3) + 4-layer 675-query decoder (paper)"
)
def mavl_r50(**overrides) -> Mavl:
    """The paper's model (19.65 M parameters without the books)."""
    return _build({}, overrides)


@register_model(
    "mavl-tiny",
    method=METHOD,
    description="MAVL wiring on a tiny CNN (64 px), d_model 32, 2 decoder layers: demo/tests, NOT the paper",
    paper_config=False,
)
def mavl_tiny(**overrides) -> Mavl:
    return _build(_TINY, overrides)


_TINY = dict(
    backbone="tiny-cnn", tiny_channels=32, image_size=64, d_model=32, num_layers=2, nhead=2,
    dim_feedforward=64, pool_heads=2, text_dim=32, text_encoder=None,
)  # fmt: skip


@register_model(
    "mavl-small",
    method=METHOD,
    description="MAVL heads on EfficientNet-Lite0 (7x7 map) with MiniLM-L6 books (384-d): real small "
    "pretrained backbones, NOT the paper's",
    paper_config=False,
)
def mavl_small(**overrides) -> Mavl:
    base = dict(
        backbone="efficientnet-lite0", image_pretrained=True, d_model=128, num_layers=2, nhead=4,
        dim_feedforward=512, text_dim=384, text_encoder="minilm-l6", text_max_length=128,
    )  # fmt: skip
    return _build(base, overrides)


@register_model(
    "medklip-r50",
    method=METHOD,
    description="MedKLIP (MAVL's base, spec mavl.md §3.6): ResNet-50 (layer3, random init) + 4-layer "
    "75-query decoder, per-query presence/location heads, no global term",
)
def medklip_r50(**overrides) -> Mavl:
    """MedKLIP as shipped in the MAVL repository (`Pretrain/models/model_MedKLIP.py`)."""
    return _build(dict(variant="medklip", n_aspects=1), overrides)


@register_model(
    "medklip-tiny",
    method=METHOD,
    description="MedKLIP wiring on the tiny CNN (64 px), d_model 32, 2 decoder layers: tests, NOT the paper",
    paper_config=False,
)
def medklip_tiny(**overrides) -> Mavl:
    """MedKLIP on the tiny MAVL sizes (tests and contract checks)."""
    return _build({**_TINY, "variant": "medklip", "n_aspects": 1}, overrides)


def _release(file_name: str, notes: str) -> PretrainedRecord:
    return PretrainedRecord(
        "mavl-r50", file_name, "Google Drive link of the official README (mavl.md section 5)", 224,
        "imagenet",
        BIO_CLINICAL_BERT, 128, notes=notes + "; torch.save dict, key 'model' with 'module.' prefixes; books "
        "not included (recomputed from Bio_ClinicalBERT, 64 tokens in the official zero-shot scripts)",
    )  # fmt: skip


METHOD_SPEC = method_spec(
    METHOD,
    demo=DemoBudget(
        300,
        0.75,
        measured="300 steps: CheXpert / CXR14 0.740 / 0.718, min class 0.52 (2026-12-07 demo)",
    ),
    description="MAVL (CVPR 2024): 75 entities x 9 visual aspects as decoder queries; presence, location and "
    "aspect-wise contrastive losses from report -> entity/landmark labels",
    prompts={"*": PromptChoice("mavl-entities", official=True)},
    pretrained=(
        _release("checkpoint_full_46.pth", "60-epoch run, epoch 46: best zero-shot classification"),
        _release("checkpoint_full_40.pth", "60-epoch run, epoch 40: grounding, RSNA/SIIM/COVID"),
        _release("checkpoint_short_37.pth", "40-epoch fp16 run, epoch 37: PadChest-seen"),
    ),
    random_init_overrides=("model.image_pretrained=null",),
)
