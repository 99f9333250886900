"""cxrclip's entry in the cxrvlp method registry: named model configs and the method hooks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrvlp.core.encoders.packaged import require_small_backbones
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.method import DemoBudget, PretrainedRecord, PromptChoice, method_spec, with_text_vocab
from cxrvlp.core.registry import register_model
from cxrvlp.cxrclip.config import BIO_CLINICAL_BERT, CxrClipModelConfig
from cxrvlp.cxrclip.model import CxrClip, build_model

METHOD = "cxrclip"

# The tiny demo/test model: a small HF Swin on 64 px input and a 2-layer BERT (NOT the paper's sizes).
TINY_SWIN = dict(
    image_size=64, patch_size=4, embed_dim=32, depths=[1, 1, 1], num_heads=[1, 2, 4], window_size=4,
    drop_path_rate=0.0,
)  # fmt: skip
TINY_BERT = dict(
    BIO_CLINICAL_BERT, vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128, max_position_embeddings=128,
)  # fmt: skip


def _config(base: dict[str, Any], overrides: dict[str, Any]) -> CxrClipModelConfig:
    cfg = with_text_vocab({**base, **overrides}, BIO_CLINICAL_BERT)
    try:
        return CxrClipModelConfig(**cfg)
    except TypeError as err:
        raise ConfigError(f"cxrclip model config: {err}") from err


R50 = dict(image_encoder="resnet50", image_encoder_kwargs={"sync_batchnorm": True}, normalisation="imagenet")
SWINT = dict(image_encoder="swin-tiny", image_encoder_kwargs={}, normalisation="mean0.5-std0.5")


@register_model("cxrclip-r50", method=METHOD, description="CXR-CLIP ResNet-50 + Bio_ClinicalBERT (paper)")
def cxrclip_r50(**overrides) -> CxrClip:
    """The paper's ResNet-50 variant (133.3 M parameters)."""
    return build_model(_config(R50, overrides))


@register_model("cxrclip-swint", method=METHOD, description="CXR-CLIP Swin-Tiny + Bio_ClinicalBERT (paper)")
def cxrclip_swint(**overrides) -> CxrClip:
    """The paper's Swin-Tiny variant (136.6 M parameters)."""
    return build_model(_config(SWINT, overrides))


@register_model(
    "cxrclip-tiny",
    method=METHOD,
    description="CXR-CLIP wiring with a tiny Swin (64 px) and a 2-layer BERT: demo/tests, NOT the paper",
    paper_config=False,
)
def cxrclip_tiny(**overrides) -> CxrClip:
    """Tiny demo model (same modules and losses, toy sizes)."""
    base = dict(
        image_encoder="swin-tiny",
        image_encoder_kwargs=dict(TINY_SWIN),
        text_config=dict(TINY_BERT),
        tokenizer=None,
        text_max_length=128,
        proj_dim=64,
        normalisation="mean0.5-std0.5",
        image_size=64,
    )
    return build_model(_config(base, overrides))


@register_model(
    "cxrclip-small",
    method=METHOD,
    description="CXR-CLIP losses on EfficientNet-Lite0 + MiniLM-L6 (real small pretrained backbones; "
    "NOT the paper's backbones)",
    paper_config=False,
)
def cxrclip_small(**overrides) -> CxrClip:
    """Small real-weight variant; needs core's 'efficientnet-lite0' and 'minilm-l6' encoders."""
    require_small_backbones("cxrclip-small")
    base = dict(
        image_encoder="efficientnet-lite0",
        image_encoder_kwargs={},
        image_pretrained=True,  # the packaged ImageNet weights
        text_encoder="minilm-l6",
        text_pretrained=True,  # the packaged all-MiniLM-L6-v2 weights
        tokenizer="minilm-l6",  # resolved by core.text.load_tokenizer (portable saved config)
        normalisation="imagenet",
    )
    return build_model(_config(base, overrides))


def _release(model: str, data: str, norm: str) -> PretrainedRecord:
    stem = f"{'r50' if model == 'cxrclip-r50' else 'swint'}_{data}"
    return PretrainedRecord(
        model,
        f"{stem}.tar",
        "kakaocdn links of the official README (cxrclip.md section 8)",
        224,
        norm,
        "emilyalsentzer/Bio_ClinicalBERT",
        256,
        notes=f"trained on {data.upper()} (M: MIMIC, C: CheXpert, "
        "C: ChestX-ray14); torch.save dict, key 'model'",
    )


def label_data_overrides(roots: Mapping[str, Path]) -> list[str]:
    """The paper's "M,C" recipe: CheXpert (if at hand) as prompt reports, its 5x200 patients removed.

    Uses the prompt bank and 5x200 list that sit in the root (the synthetic CheXpert mirror writes both; for
    the real CheXpert give `data.prompt_json` / `data.chexpert_5x200_csv` yourself)."""
    from cxrvlp.core.data.chexpert import default_csv
    from cxrvlp.core.data.synthetic.prompts import PROMPT_BANK_FILE

    root = roots.get("chexpert")
    if root is None:
        return []
    root = Path(root)
    five = next((root / n for n in default_csv("5x200") if (root / n).is_file()), None)  # core's file names
    if not (root / PROMPT_BANK_FILE).is_file() or five is None:
        return []
    return [
        f"data.chexpert_root={root}",
        f"data.prompt_json={root / PROMPT_BANK_FILE}",
        f"data.chexpert_5x200_csv={five}",
    ]


METHOD_SPEC = method_spec(
    METHOD,
    demo=DemoBudget(
        # 1000 steps left Pneumothorax, its most negated class, at 0.49 on ChestX-ray14 (one draw); 1500: 0.55
        1500,
        0.09,
        measured="1500 steps + CheXpert prompts: CheXpert / CXR14 0.912 / 0.792, min class 0.52 (12-07 demo)",
    ),
    label_data_overrides=label_data_overrides,
    description="CXR-CLIP (MICCAI 2023): image-text, image-label and multi-view contrastive losses",
    prompts={
        "*": PromptChoice("cxrclip-binary", official=True),
        "rsna-pneumonia": PromptChoice("biovil-pneumonia", official=True),
        "chexpert-5x200": PromptChoice("gloria-5x200", official=True),
    },
    pretrained=tuple(
        _release(m, d, "imagenet" if m == "cxrclip-r50" else "mean0.5-std0.5")
        for m in ("cxrclip-r50", "cxrclip-swint")
        for d in ("m", "mc", "mcc")
    ),
)
