"""Every CARZero config dataclass: model, data (core's `MimicSourceConfig`), loss and the training run.
Defaults are the released model's values.

The released variant (spec §3.1) is GL-MLP: global+local tokens as decoder memory, a 4-layer cross-attention
decoder without self-attention, a 4-layer ReLU MLP head. `fusion_head="linear"` gives the paper's linear
projection (`CARZero_model_dqn_wo_self_atten_gl`), `fusion_memory="local"` the local-only memory
(`CARZero_model_dqn_wo_self_atten`, experiment "CARZero_Local"); both are options, not the release.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cxrvlp.core.data.pretraining import MimicSourceConfig
from cxrvlp.core.encoders.text import BERT_BASE_CASED
from cxrvlp.core.training import TrainConfig

# Laihaoran/BioClinicalMPBERT is a BERT-base; its vocabulary size is read from the checkpoint when importing
# (the spec assumes 28,996, the Bio_ClinicalBERT cased vocabulary).
BIOCLINICAL_MPBERT = dict(BERT_BASE_CASED)

# MAE/M3AE ViT-B/16 (MRM class): fixed 2-D sin-cos position embedding, LN eps 1e-6.
VIT_B16 = dict(
    img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True,
    ln_eps=1e-6, pos_embed="sincos",
)  # fmt: skip


@dataclass
class CarzeroModelConfig:
    """Everything that builds a CARZero model (saved as JSON next to the weights)."""

    image_encoder: str = (
        "vit"  # "vit" (MAE ViT, timm names) or a core image-encoder name (efficientnet-lite0)
    )
    vit: dict[str, Any] = field(default_factory=lambda: dict(VIT_B16))
    image_pretrained: str | bool | None = None  # ViT: a local M3AE/MAE file; core encoders: True = packaged
    text_encoder: str = "bert"  # "bert" (HF BertModel + pooler, as released) or "minilm-l6" (small config)
    text_config: dict[str, Any] = field(default_factory=lambda: dict(BIOCLINICAL_MPBERT))
    text_pretrained: str | bool | None = None  # hub name / folder ("Laihaoran/BioClinicalMPBERT")
    tokenizer: str | None = (
        "Laihaoran/BioClinicalMPBERT"  # hub name / folder / vocab.txt; None: built at train
    )
    text_max_length: int = 97  # [paper] padding="max_length", 97; also the number of word slots
    text_last_n_layers: int = 4  # [paper] sum of the last 4 hidden states
    text_attn_implementation: str = "sdpa"  # "eager" as transformers 4.35.2 (same numbers up to rounding)
    # [ours] linear embedders to the fusion width when the encoders' widths differ (small config); the
    # release has identity embedders (None).
    embed_dim: int | None = None
    fusion_layers: int = 4
    fusion_heads: int = 4
    fusion_ffn: int = 1024
    fusion_dropout: float = 0.1
    fusion_head: Literal["mlp", "linear"] = "mlp"  # released: mlp (768-1024-512-256-1); paper text: linear
    mlp_hidden: tuple[int, ...] = (1024, 512, 256)
    # [paper] N(0, 0.02) for every fusion Linear / MHA projection. At small widths this leaves the logits
    # constant to float precision (a 64-d tiny model does not train); tiny/small configs raise it ([ours]).
    fusion_init_std: float = 0.02
    fusion_memory: Literal["global_local", "local"] = "global_local"  # released: global_local
    # [ours, CHANGES the numbers] mask the zero-padded text slots out of the t2i memory (official: attended)
    text_padding_mask: bool = False
    # [ours, EXACT up to rounding] fold the identical zero-pad slots of the t2i memory into one weighted slot
    compact_text_pads: bool = True
    image_size: int = 224
    normalisation: str = "cxr-mae"  # (x - 0.4978) / 0.2449 on all three channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = asdict(self)
        d["mlp_hidden"] = list(self.mlp_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CarzeroModelConfig:
        d = dict(d)
        if "mlp_hidden" in d:
            d["mlp_hidden"] = tuple(d["mlp_hidden"])
        return cls(**d)


@dataclass
class CarzeroLossConfig:
    """Loss weights (`ce_loss_weight` of the released yaml): total = w_i2t * L(i2t) + w_t2i * L(t2i)."""

    i2t_weight: float = 1.0
    t2i_weight: float = 1.0


@dataclass
class CarzeroDataConfig(MimicSourceConfig):
    """MIMIC-CXR source (core's `MimicSourceConfig`) + how a CARZero sample is drawn (see data.py)."""

    views: list[str] = field(default_factory=lambda: ["PA", "AP"])  # [paper] Frontal/Lateral == "Frontal"
    # [paper] the authors' master CSV (mimic-cxr-label-LLM_report-xinhuo-chexpertformat.csv) or any CSV with
    # `Path` and the LLM column; rows are matched to images by file name (dicom id).
    llm_csv: str | None = None
    llm_column: str = "xinhuo"  # [paper] iFlytek Spark rewrite (issue #8); "LLM Report Impression" = Vicuna
    impression_column: str = "Report Impression"  # used from llm_csv when present, else the report section
    text_sections: list[str] = field(default_factory=lambda: ["impression"])  # report sections, in order
    stop_at_word_count: int | None = 5  # [paper] the exact-equality early stop (spec corrections 1)
    exclude_file: str | None = None  # [paper] the noise list as text, one image file name per line
    transform: str = "carzero"
    image_size: int | None = None  # None: the preset's (224)
    normalisation: str | None = None  # None: the preset's (cxr-mae)


@dataclass
class CarzeroTrainConfig(TrainConfig):
    """A CARZero run: the shared loop's settings plus model, data and loss sections.

    The released recipe's batch curriculum (64 -> 128 -> 256) is core's `batch_size_schedule`; its
    validation (val_loss, batch 256, best kept, patience 10) is core's `val_batch_size` / `monitor` /
    `keep_best_k` / `early_stop_patience` (configs/carzero_vit_b16.yaml).
    """

    model_name: str = "carzero-vit-b16"
    model: CarzeroModelConfig = field(default_factory=CarzeroModelConfig)
    data: CarzeroDataConfig = field(default_factory=CarzeroDataConfig)
    loss: CarzeroLossConfig = field(default_factory=CarzeroLossConfig)
    tokenizer_vocab_size: int = 2000  # only when model.tokenizer is null: WordPiece built from the sentences
    pad_to_longest: bool = True  # EXACT speed-up: BERT masks pads and words are re-padded to 97 slots
