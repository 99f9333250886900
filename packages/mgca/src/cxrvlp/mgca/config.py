"""Every MGCA config dataclass: the model (sizes, temperatures, loss weights, named fixes of official
quirks), the pretraining data and the training run (paper values as defaults)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cxrvlp.core.data.pretraining import MimicSourceConfig
from cxrvlp.core.training.config import TrainConfig


@dataclass
class MedBertConfig:
    """The BLIP-"med" BERT of MGCA (defaults = the official `bert_config.json`)."""

    vocab_size: int = 28996
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    encoder_width: int = 768  # width of the (never executed) cross-attention keys/values
    add_cross_attention: bool = True  # the dead cross-attention blocks are in the official state dict
    initializer_range: float = 0.02


@dataclass
class MGCAConfig:
    """Everything that defines an MGCA model; defaults are the paper's ViT-B/16 run (CLI values)."""

    # "efficientnet-lite0": the small config's real ImageNet backbone (NOT the paper's; configs/small.yaml)
    image_encoder: Literal["vit-b16", "resnet50", "efficientnet-lite0"] = "vit-b16"
    # ViT sizes (embed_dim, depth, num_heads, mlp_ratio, img_size, patch_size, ...) for "vit-b16"
    vit: dict[str, Any] = field(default_factory=dict)
    # None: random init; True: the paper's init (DeiT-B/16 IN-1k / torchvision IMAGENET1K_V2; for
    # efficientnet-lite0 the packaged ImageNet weights); a name or file
    image_pretrained: bool | str | None = None
    # Image normalisation of the training AND zero-shot transforms (a key of core's NORMALISATIONS). The
    # paper: mean 0.5 / std 0.5; the small config's EfficientNet ImageNet weights need "imagenet".
    normalisation: Literal["mean0.5-std0.5", "imagenet"] = "mean0.5-std0.5"
    # Input size S the model was trained at (training records data.image_size here, so the zero-shot adapter
    # preprocesses at the same size); None: the ViT's img_size, else 224 (the paper's).
    image_size: int | None = None
    bert: MedBertConfig = field(default_factory=MedBertConfig)
    # Hub id or local folder of a BERT whose embeddings + first `num_hidden_layers` layers initialise the
    # text encoder (the paper: Bio_ClinicalBERT), or "minilm-l6" (the packaged all-MiniLM-L6-v2 folder);
    # None: random init.
    text_pretrained: str | None = None
    # True: add the BERT's token-type row 0 to every position embedding at init. The med BERT has no
    # token-type table, and a HF BERT added that row to every token in pretraining, so folding it in starts
    # the text tower as exactly the pretrained encoder (official init: dropped; the small config folds it).
    text_fold_token_type: bool = False
    tokenizer: str = "emilyalsentzer/Bio_ClinicalBERT"  # hub id, folder, or "minilm-l6"
    sep_token_id: int = 102  # [SEP] of the tokenizer (Bio_ClinicalBERT: 102)
    max_words: int = 112
    emb_dim: int = 128
    proj_hidden_dim: int = 2048
    num_prototypes: int = 500
    softmax_temperature: float = 0.07  # ITA
    local_temperature: float = 0.1  # CTA
    proto_temperature: float = 0.2  # CPA
    epsilon: float = 0.05  # Sinkhorn
    sinkhorn_iterations: int = 3
    lambda_1: float = 1.0
    lambda_2: float = 1.0
    lambda_3: float = 1.0
    bidirectional: bool = True
    freeze_prototypes_epochs: int = 1
    # Named fixes of official bugs (faithful = False):
    fix_position_ids: bool = False  # True: tokens get positions 0..L-1 (official: every token position 0)
    fix_word_weight_shift: bool = False  # True: a word is weighted by its own tokens' [CLS] attention

    @property
    def is_vit(self) -> bool:
        return self.image_encoder.startswith("vit")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for save_pretrained / config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MGCAConfig:
        """Inverse of `to_dict`; unknown keys are a `ConfigError` naming them."""
        from cxrvlp.core.errors import ConfigError

        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"MGCAConfig: unknown keys {unknown}")
        bert = d.pop("bert", {}) or {}
        bnames = {f.name for f in dataclasses.fields(MedBertConfig)}
        bad = sorted(set(bert) - bnames)
        if bad:
            raise ConfigError(f"MGCAConfig.bert: unknown keys {bad}")
        cfg = cls(bert=MedBertConfig(**bert), **d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """`ConfigError` for a value no code path accepts (image encoder, normalisation)."""
        from cxrvlp.core.errors import ConfigError

        encoders = ("vit-b16", "resnet50", "efficientnet-lite0")
        if self.image_encoder not in encoders:
            raise ConfigError(f"MGCAConfig.image_encoder: '{self.image_encoder}' is not one of {encoders}")
        if self.normalisation not in ("mean0.5-std0.5", "imagenet"):
            raise ConfigError(
                f"MGCAConfig.normalisation: '{self.normalisation}' is not 'mean0.5-std0.5' or 'imagenet'"
            )


@dataclass
class MGCADataConfig(MimicSourceConfig):
    """MIMIC-CXR source (core's `MimicSourceConfig`: root, cache, on_error, synthetic) + MGCA's fields."""

    image_size: int = 224  # crop size (resize-pad to round(S * 256 / 224) first, as the official 256/224)
    data_pct: float = 1.0
    # None: the model's tokenizer (hub id / folder / "minilm-l6"); "build": a WordPiece vocab trained on the
    # captions
    tokenizer: str | None = None
    build_vocab_size: int = 1000


@dataclass
class MGCATrainConfig(TrainConfig):
    """The full MGCA run: core loop settings + model + data."""

    model_name: str = "mgca-vit-b16"
    model: MGCAConfig = field(default_factory=MGCAConfig)
    data: MGCADataConfig = field(default_factory=MGCADataConfig)

    def validate(self) -> None:
        """Cross-checks run by core's load_config before anything is built (issue 24)."""
        from cxrvlp.core.errors import ConfigError

        TrainConfig.validate(self)
        vit = self.model.vit or {}
        if self.model.is_vit and "img_size" in vit and vit["img_size"] != self.data.image_size:
            raise ConfigError(
                f"key 'model.vit.img_size': {vit['img_size']!r} differs from key 'data.image_size' "
                f"{self.data.image_size!r} (the ViT would get images of the wrong size)"
            )
        if (
            self.model.is_vit
            and isinstance(vit.get("img_size"), int)
            and isinstance(vit.get("patch_size"), int)
        ):
            if vit["patch_size"] <= 0 or vit["img_size"] % vit["patch_size"]:
                raise ConfigError(
                    f"key 'model.vit.patch_size': {vit['patch_size']!r} must divide model.vit.img_size "
                    f"{vit['img_size']!r}"
                )
        if not 0 < self.data.data_pct <= 1:
            raise ConfigError(f"key 'data.data_pct': must be in (0, 1], got {self.data.data_pct!r}")
