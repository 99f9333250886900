"""AFLoc in the cxrvlp registry: named model configs and the method contract (get_method("afloc"))."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from cxrvlp.afloc.config import BIO_CLINICAL_BERT, AFLocConfig
from cxrvlp.afloc.model import AFLoc
from cxrvlp.core.method import MethodSpec, PretrainedRecord, PromptChoice, lazy
from cxrvlp.core.registry import register_model

METHOD = "afloc"

# The paper: ResNet-50 (ImageNet IMAGENET1K_V1 at training start) + Bio_ClinicalBERT, 768-d, temps 4/5/10.
PAPER = AFLocConfig()

# Tiny (NOT the paper's sizes): a 1-block-per-stage bottleneck ResNet (same names and stage widths), no 299
# upsampling, 64 px; a 4-layer 64-wide BERT over a vocabulary built from the training reports.
TINY = AFLocConfig(
    resnet_layers=(1, 1, 1, 1),
    resnet_width_per_group=16,
    upsample_to=None,
    image_size=64,
    bert={
        **BIO_CLINICAL_BERT,
        "vocab_size": 600,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 128,
    },
    tokenizer="build",
    cls_token_id=2,
    sep_token_id=3,
    period_token_id=5,
    local_f_embedder=False,
)

# all-MiniLM-L6-v2 as the BERT: 6 layers, 384 wide, 12 heads, uncased vocab of 30522
MINILM_BERT = {
    **BIO_CLINICAL_BERT,
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}

# Small real-weight variant (NOT the paper's backbones): AFLoc's embedders, three losses and protocol on
# EfficientNet-Lite0 (ImageNet; stride-8 / stride-16 / final maps) + MiniLM-L6 (D = 384), ImageNet statistics.
SMALL = AFLocConfig(
    image_encoder="efficientnet-lite0",
    image_pretrained=True,
    upsample_to=None,
    normalisation="imagenet",
    bert=MINILM_BERT,
    text_pretrained="minilm-l6",
    tokenizer="minilm-l6",
    cls_token_id=101,
    sep_token_id=102,
    period_token_id=1012,
    local_f_embedder=False,
)

CONFIGS: dict[str, AFLocConfig] = {"afloc-r50": PAPER, "afloc-tiny": TINY, "afloc-small": SMALL}


def with_overrides(base: AFLocConfig, overrides: Mapping[str, Any]) -> AFLocConfig:
    d = base.to_dict()
    for k, v in overrides.items():
        d[k] = {**d[k], **v} if k == "bert" and isinstance(v, Mapping) else v
    return AFLocConfig.from_dict(d)


@register_model(
    "afloc-r50", method=METHOD, description="AFLoc ResNet-50 (224->299) + Bio_ClinicalBERT (paper)"
)
def afloc_r50(**overrides: Any) -> AFLoc:
    """The paper's model (random init unless image_pretrained / text_pretrained are given)."""
    return AFLoc(with_overrides(PAPER, overrides))


@register_model(
    "afloc-tiny",
    method=METHOD,
    description="tiny AFLoc for demos/tests (NOT the paper's sizes)",
    paper_config=False,
)
def afloc_tiny(**overrides: Any) -> AFLoc:
    """1-block ResNet + 4-layer 64-wide BERT; same modules, losses and wiring."""
    return AFLoc(with_overrides(TINY, overrides))


@register_model(
    "afloc-small",
    method=METHOD,
    description="AFLoc embedders/losses on EfficientNet-Lite0 + MiniLM-L6 (NOT the paper's backbones)",
    paper_config=False,
)
def afloc_small(**overrides: Any) -> AFLoc:
    """EfficientNet-Lite0 + MiniLM-L6 with their packaged weights; AFLoc's embedders and losses."""
    return AFLoc(with_overrides(SMALL, overrides))


def train(config: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Same run as `python -m cxrvlp.afloc.train CONFIG key=value ...`; returns the run folder."""
    from cxrvlp.afloc.train import train as _train

    return _train(config, tuple(overrides))


def load_pretrained(pretrained_dir: str | os.PathLike) -> tuple[AFLoc, dict[str, Any]]:
    """(model, config.json document) of a `final/` folder written by training."""
    from cxrvlp.core.training.checkpoint import load_pretrained_weights, read_pretrained_config

    doc = read_pretrained_config(pretrained_dir)
    cfg = doc["config"]
    model_cfg = AFLocConfig.from_dict(cfg["model"] if "model" in cfg else cfg)
    # every weight comes from the folder: no hub / packaged initialisation
    model = AFLoc(dataclasses.replace(model_cfg, image_pretrained=None, text_pretrained=None))
    model.cfg = model_cfg
    load_pretrained_weights(model, pretrained_dir)
    return model, doc


def load_adapter(pretrained_dir: str | os.PathLike, device: str | torch.device | None = None, **kw: Any):
    """Zero-shot adapter of a model trained with this package."""
    from cxrvlp.afloc.data import AFLocTokenizer
    from cxrvlp.afloc.zeroshot import AFLocZeroShotAdapter

    model, doc = load_pretrained(pretrained_dir)
    tok_dir = Path(pretrained_dir) / "tokenizer"
    tok = AFLocTokenizer.from_pretrained(
        tok_dir if tok_dir.is_dir() else model.cfg.tokenizer, model.cfg.text_max_length
    )
    return AFLocZeroShotAdapter(
        model, tok, model_name=doc.get("model_name", METHOD), device=device,
        checkpoint_sha256=doc.get("weights_sha256"), **kw,
    )  # fmt: skip


def load_official_adapter(
    source: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    device: str | torch.device | None = None,
    tokenizer: str | os.PathLike | None = None,
    **kw: Any,
):
    """Zero-shot adapter of the released checkpoint (tokenizer: Bio_ClinicalBERT unless given)."""
    from cxrvlp.afloc.data import AFLocTokenizer
    from cxrvlp.afloc.official import load_official_checkpoint
    from cxrvlp.afloc.zeroshot import AFLocZeroShotAdapter

    model = load_official_checkpoint(source, name=name or "afloc-r50")
    tok = AFLocTokenizer.from_pretrained(tokenizer or model.cfg.tokenizer, model.cfg.text_max_length)
    model.cfg = dataclasses.replace(
        model.cfg,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        period_token_id=tok.period_token_id,
    )
    sha = None
    if isinstance(source, (str, os.PathLike)):
        from cxrvlp.core.training.checkpoint import sha256_file

        sha = sha256_file(source)
    adapter = AFLocZeroShotAdapter(
        model, tok, model_name="afloc-r50 (official)", device=device, checkpoint_sha256=sha, **kw
    )
    adapter.info.extra["import"] = {
        k: v for k, v in getattr(model, "import_info", {}).items() if k != "missing"
    }
    return adapter



_RELEASE = "Google Drive folder of the official README (afloc.md section 8)"



METHOD_SPEC = MethodSpec(
    name=METHOD,
    description="AFLoc (Nat. Biomed. Eng. 2025): multi-level alignment for annotation-free localisation",
    train=train,
    load_adapter=load_adapter,
    load_official_adapter=load_official_adapter,
    load_official_checkpoint=lazy("cxrvlp.afloc.official:load_official_checkpoint"),
    example_batch=lazy("cxrvlp.afloc.testing:example_batch"),
    configs_dir=Path(__file__).parent / "configs",
    # the official classification prompt ensembles are not in the benchmark's sets; "Findings suggesting X."
    # vs "No evidence of X." follows their fallback wording ('Findings suggesting x' / 'no x.'): ours
    prompts={"*": PromptChoice("findings-suggesting", official=False)},
    image_size_keys=("data.image_size", "model.image_size"),
    text_length_key="model.text_max_length",
    pretrained=(
        PretrainedRecord(
            "afloc-r50", "Pretrained_CXR.ckpt", _RELEASE, 224, "mean0.5-std0.5",
            "emilyalsentzer/Bio_ClinicalBERT", 97,
            notes="PyTorch-Lightning 1.1.4 .ckpt ('afloc.' keys, OmegaConf hparams); 224 -> 299 inside",
        ),
    ),
)  # fmt: skip
