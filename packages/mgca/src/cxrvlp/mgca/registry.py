"""MGCA's entry in the cxrvlp registry: named model configs and the method hooks (`get_method("mgca")`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.method import MethodSpec, PretrainedRecord, PromptChoice, lazy
from cxrvlp.core.registry import register_model
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.model import MGCA
from cxrvlp.mgca.packaged import MINILM_L6

METHOD = "mgca"


def _with_overrides(base: MGCAConfig, overrides: Mapping[str, Any]) -> MGCAConfig:
    d = base.to_dict()
    for k, v in overrides.items():
        if k in ("bert", "vit") and isinstance(v, Mapping):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return MGCAConfig.from_dict(d)


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
    text_pretrained=MINILM_L6,
    text_fold_token_type=True,
    tokenizer=MINILM_L6,
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


def train(config: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Same run as `python -m cxrvlp.mgca.train CONFIG key=value ...`; returns the run folder."""
    from cxrvlp.mgca.train import train as _train

    return _train(config, tuple(overrides))


def load_pretrained(pretrained_dir: str | os.PathLike) -> tuple[MGCA, dict[str, Any]]:
    """(model, config.json document) of a `final/` folder written by training."""
    from cxrvlp.core.training.checkpoint import load_pretrained_weights, read_pretrained_config

    doc = read_pretrained_config(pretrained_dir)
    cfg = doc["config"]
    model_cfg = MGCAConfig.from_dict(cfg["model"] if "model" in cfg else cfg)
    # every weight comes from the folder: skip the pretrained initialisation (no hub, no weight packages)
    model = MGCA(dataclasses.replace(model_cfg, image_pretrained=None, text_pretrained=None))
    model.cfg = model_cfg  # the trained model's config, as recorded
    load_pretrained_weights(model, pretrained_dir)
    return model, doc


def load_adapter(pretrained_dir: str | os.PathLike, device: str | torch.device | None = None):
    """Zero-shot adapter of a model trained with this package."""
    from cxrvlp.mgca.data import MGCATokenizer
    from cxrvlp.mgca.zeroshot import MGCAZeroShotAdapter

    model, doc = load_pretrained(pretrained_dir)
    tok_dir = Path(pretrained_dir) / "tokenizer"
    tok = MGCATokenizer.from_pretrained(
        tok_dir if tok_dir.is_dir() else model.cfg.tokenizer, model.cfg.max_words
    )
    return MGCAZeroShotAdapter(
        model,
        tok,
        model_name=doc.get("model_name", "mgca"),
        device=device,
        checkpoint_sha256=doc.get("weights_sha256"),
    )


def load_official_adapter(
    source: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    device: str | torch.device | None = None,
    tokenizer: str | os.PathLike | None = None,
):
    """Zero-shot adapter of a released checkpoint (tokenizer: Bio_ClinicalBERT unless given)."""
    from cxrvlp.mgca.data import MGCATokenizer
    from cxrvlp.mgca.official import load_official_checkpoint
    from cxrvlp.mgca.zeroshot import MGCAZeroShotAdapter

    model = load_official_checkpoint(source, name=name)
    tok = MGCATokenizer.from_pretrained(tokenizer or model.cfg.tokenizer, model.cfg.max_words)
    if tok.sep_token_id != model.cfg.sep_token_id:
        model.cfg = dataclasses.replace(model.cfg, sep_token_id=tok.sep_token_id)
    sha = None
    if isinstance(source, (str, os.PathLike)):
        from cxrvlp.core.training.checkpoint import sha256_file

        sha = sha256_file(source)
    label = name or ("mgca-vit-b16" if model.cfg.is_vit else "mgca-r50")
    return MGCAZeroShotAdapter(
        model, tok, model_name=f"{label} (official)", device=device, checkpoint_sha256=sha
    )




_RELEASE = "Google Drive folder of the official README (mgca.md section 8)"
METHOD_SPEC = MethodSpec(
    name=METHOD,
    description="MGCA (NeurIPS 2022): instance, token and prototype alignment",
    train=train,
    load_adapter=load_adapter,
    load_official_adapter=load_official_adapter,
    load_official_checkpoint=lazy("cxrvlp.mgca.official:load_official_checkpoint"),
    example_batch=lazy("cxrvlp.mgca.testing:example_batch"),
    configs_dir=Path(__file__).parent / "configs",
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
