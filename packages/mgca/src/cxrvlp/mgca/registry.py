"""MGCA's entry in the cxrvlp registry: named model configs and the method hooks (`get_method("mgca")`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxrvlp.core.method import DemoBudget, PretrainedRecord, PromptChoice, merged_config, method_spec
from cxrvlp.core.registry import register_model
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.model import MGCA

METHOD = "mgca"


def _with_overrides(base: MGCAConfig, overrides: Mapping[str, Any]) -> MGCAConfig:
    return MGCAConfig.from_dict(merged_config(base.to_dict(), overrides, nested=("bert", "vit")))


TINY = MGCAConfig(
    image_encoder="vit-b16",
    vit={"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
    bert=MedBertConfig(
        vocab_size=600,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        encoder_width=64,
    ),
    max_words=64,
    emb_dim=64,
    proj_hidden_dim=128,
    sep_token_id=3,
)


# all-MiniLM-L6-v2 as a med BERT: 6 layers, 384 wide, 12 heads, uncased vocab of 30522 ([SEP] = 102). No
# cross-attention blocks (the paper's are dead weights of the released state dict; nothing here imports one).
MINILM_BERT = MedBertConfig(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
    layer_norm_eps=1e-12,
    encoder_width=384,
    add_cross_attention=False,
)

# Small real-weight variant (NOT the paper's backbones): MGCA's heads, prototypes, losses and protocol on
# EfficientNet-Lite0 (ImageNet) + MiniLM-L6. Deviations from the paper, all for the backbones' sake:
# ImageNet normalisation, positions 0..L-1 (`fix_position_ids`: with the official all-zero positions MiniLM's
# pretrained encoder maps every sentence to nearly the same vector), token-type row folded into positions.
SMALL = MGCAConfig(
    image_encoder="efficientnet-lite0",
    image_pretrained=True,  # the packaged ImageNet-1k weights
    normalisation="imagenet",
    bert=MINILM_BERT,
    text_pretrained="minilm-l6",
    text_fold_token_type=True,
    tokenizer="minilm-l6",
    sep_token_id=102,
    fix_position_ids=True,
)


@register_model("mgca-vit-b16", method=METHOD, description="MGCA ViT-B/16 + 6-layer med BERT (paper)")
def mgca_vit_b16(**overrides: Any) -> MGCA:
    """The paper's ViT-B/16 model (random init unless image_pretrained / text_pretrained are given)."""
    return MGCA(_with_overrides(MGCAConfig(image_encoder="vit-b16"), overrides))


@register_model("mgca-r50", method=METHOD, description="MGCA ResNet-50 (224->299) + 6-layer med BERT (paper)")
def mgca_r50(**overrides: Any) -> MGCA:
    """The paper's ResNet-50 model."""
    return MGCA(_with_overrides(MGCAConfig(image_encoder="resnet50"), overrides))


@register_model(
    "mgca-tiny",
    method=METHOD,
    description="tiny MGCA for demos/tests (NOT the paper's sizes)",
    paper_config=False,
)
def mgca_tiny(**overrides: Any) -> MGCA:
    """A tiny ViT (64 px, patch 8, width 64) + 2-layer BERT; same method, losses and wiring."""
    return MGCA(_with_overrides(TINY, overrides))


@register_model(
    "mgca-small",
    method=METHOD,
    description="MGCA heads/losses on EfficientNet-Lite0 (ImageNet) + MiniLM-L6 (real small pretrained "
    "backbones; NOT the paper's backbones)",
    paper_config=False,
)
def mgca_small(**overrides: Any) -> MGCA:
    """EfficientNet-Lite0 + MiniLM-L6-sized med BERT with their packaged weights; MGCA's heads and losses."""
    from cxrvlp.core.errors import ConfigError

    try:
        return MGCA(_with_overrides(SMALL, overrides))
    except ConfigError as err:
        raise ConfigError(f"mgca-small: {err}") from err


_RELEASE = "Google Drive folder of the official README (mgca.md section 8)"
METHOD_SPEC = method_spec(
    METHOD,
    demo=DemoBudget(
        1500,
        0.05,
        measured="1500 steps: CheXpert / CXR14 0.820 / 0.703, min class 0.51 (2026-12-07 demo)",
    ),
    description="MGCA (NeurIPS 2022): instance, token and prototype alignment",
    # MGCA defines no zero-shot prompts: ours, labelled in every result (not from the paper)
    prompts={
        "*": PromptChoice("cxrclip-binary", official=False),
        "chexpert-5x200": PromptChoice("gloria-5x200", official=False),
    },
    image_size_keys=("data.image_size",),
    text_length_key="model.max_words",
    pretrained=(
        PretrainedRecord(
            "mgca-vit-b16",
            "vit_base.ckpt",
            _RELEASE,
            224,
            "mean0.5-std0.5",
            "emilyalsentzer/Bio_ClinicalBERT",
            112,
            notes="PyTorch-Lightning 1.5 .ckpt",
        ),
        PretrainedRecord(
            "mgca-r50",
            "resnet_50.ckpt",
            _RELEASE,
            224,
            "mean0.5-std0.5",
            "emilyalsentzer/Bio_ClinicalBERT",
            112,
            notes="PyTorch-Lightning 1.5 .ckpt; 224 -> 299 inside",
        ),
    ),
)
