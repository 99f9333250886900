"""MGCA's entry in the cxrvlp registry: named model configs and the method hooks (`get_method("mgca")`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.registry import register_model
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.model import MGCA

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
    model = MGCA(model_cfg)
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
