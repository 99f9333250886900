"""CARZero's entry in the cxrvlp method registry: named model configs and the method hooks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrvlp.carzero.config import BIOCLINICAL_MPBERT, VIT_B16, CarzeroModelConfig
from cxrvlp.carzero.model import Carzero, build_model
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.method import MethodSpec, PretrainedRecord, PromptChoice, lazy
from cxrvlp.core.registry import register_model

METHOD = "carzero"

# Tiny demo/test sizes (NOT the paper's): 64 px ViT with 8 px patches, 4-layer 64-d BERT, 2-layer fusion.
TINY_VIT = dict(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, qkv_bias=True,
                ln_eps=1e-6, pos_embed="sincos")  # fmt: skip
TINY_BERT = dict(
    BIOCLINICAL_MPBERT, vocab_size=2000, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
    intermediate_size=128, max_position_embeddings=128,
)  # fmt: skip


def _config(base: dict[str, Any], overrides: dict[str, Any]) -> CarzeroModelConfig:
    overrides = dict(overrides)
    vocab = overrides.pop("text_vocab_size", None)
    cfg = {**base, **overrides}
    if vocab is not None:
        cfg["text_config"] = {**cfg.get("text_config", BIOCLINICAL_MPBERT), "vocab_size": int(vocab)}
    try:
        return CarzeroModelConfig.from_dict(cfg)
    except TypeError as err:
        raise ConfigError(f"carzero model config: {err}") from err


@register_model(
    "carzero-vit-b16",
    method=METHOD,
    description="CARZero released GL-MLP: MAE ViT-B/16 + BioClinicalMPBERT + cross-attention scorer (paper)",
)
def carzero_vit_b16(**overrides) -> Carzero:
    """The released model (220.8 M parameters with a 28,996 vocabulary). Options: fusion_head="linear" (the
    paper's linear projection), fusion_memory="local" (the local-only memory variant)."""
    return build_model(_config(dict(vit=dict(VIT_B16)), overrides))


@register_model(
    "carzero-tiny",
    method=METHOD,
    description="CARZero wiring with a tiny ViT (64 px) and a 4-layer BERT: demo/tests, NOT the paper",
    paper_config=False,
)
def carzero_tiny(**overrides) -> Carzero:
    """Tiny demo model (same modules and loss, toy sizes)."""
    base = dict(
        vit=dict(TINY_VIT), text_config=dict(TINY_BERT), tokenizer=None, text_max_length=32,
        fusion_layers=2, fusion_heads=4, fusion_ffn=128, mlp_hidden=(64, 32, 16), fusion_init_std=0.15,
        fusion_dropout=0.0,
        image_size=64,
    )  # fmt: skip
    return build_model(_config(base, overrides))


@register_model(
    "carzero-small",
    method=METHOD,
    description="CARZero fusion/loss on EfficientNet-Lite0 + MiniLM-L6 (real small pretrained backbones, a "
    "linear image embedder to 384-d: NOT the paper's backbones)",
    paper_config=False,
)
def carzero_small(**overrides) -> Carzero:
    """Small real-weight variant; needs core's 'efficientnet-lite0' and 'minilm-l6' encoders."""
    from cxrvlp.core.encoders import list_image_encoders, list_text_encoders

    if "efficientnet-lite0" not in list_image_encoders() or "minilm-l6" not in list_text_encoders():
        raise ConfigError("carzero-small needs core's 'efficientnet-lite0' and 'minilm-l6' encoders")
    from cxrvlp.core.encoders.minilm import minilm_model_dir

    minilm_model_dir()  # ImportError naming the package to install, before any weights are built
    base = dict(
        image_encoder="efficientnet-lite0", image_pretrained=True, text_encoder="minilm-l6",
        text_pretrained=True, tokenizer="minilm-l6", embed_dim=384, normalisation="imagenet",
    )  # fmt: skip
    return build_model(_config(base, overrides))


def train(config: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Same run as `python -m cxrvlp.carzero.train CONFIG key=value ...`; returns the run folder."""
    from cxrvlp.carzero.train import main

    return main(config, list(overrides))


def load_adapter(pretrained_dir: str | Path, device=None):
    """Zero-shot adapter around a model saved by our training (`final/` folder or a save_model folder)."""
    from cxrvlp.carzero.zeroshot import CarzeroAdapter

    return CarzeroAdapter.from_pretrained(pretrained_dir, device=device)


def load_official_adapter(source: str | Path, name: str | None = None, device=None, tokenizer=None):
    """Zero-shot adapter of the released checkpoint (tokenizer: Laihaoran/BioClinicalMPBERT or a folder)."""
    from cxrvlp.carzero.official import load_official_checkpoint
    from cxrvlp.carzero.zeroshot import CarzeroAdapter
    from cxrvlp.core.training.checkpoint import sha256_file

    model = load_official_checkpoint(source, name=name)
    sha = sha256_file(source) if isinstance(source, (str, Path)) and Path(source).is_file() else None
    return CarzeroAdapter(model, tokenizer=tokenizer, device=device, model_name=name or "carzero-vit-b16",
                          source=source, checkpoint_sha256=sha)  # fmt: skip




METHOD_SPEC = MethodSpec(
    name=METHOD,
    description="CARZero (CVPR 2024): cross-attention image-text pair scorer, symmetric CE on i2t and t2i",
    train=train,
    load_adapter=load_adapter,
    load_official_adapter=load_official_adapter,
    load_official_checkpoint=lazy("cxrvlp.carzero.official:load_official_checkpoint"),
    example_batch=lazy("cxrvlp.carzero.testing:example_batch"),
    configs_dir=Path(__file__).parent / "configs",
    prompts={"*": PromptChoice("carzero-there-is", official=True)},
    image_size_keys=("data.image_size", "model.image_size"),
    text_length_key="model.text_max_length",
    pretrained=(
        PretrainedRecord(
            "carzero-vit-b16",
            "CARZero_best_model.ckpt",
            "Google Drive link in the official README (laihaoran/CARZero)",
            224,
            "cxr-mae",
            "Laihaoran/BioClinicalMPBERT",
            97,
            notes="PyTorch Lightning 1.1.4 checkpoint; state_dict keys prefixed 'CARZero.'; GL-MLP variant",
        ),
    ),
)
