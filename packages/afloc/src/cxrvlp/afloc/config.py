"""Every config dataclass of AFLoc: the model (sizes, temperatures, loss weights), the data and the run.

Defaults = the paper's (spec §3-5).

Values come from the official `afloc/config.yaml` (HEAD 940e3d7) unless a comment says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cxrvlp.core.data.pretraining import MimicSourceConfig
from cxrvlp.core.encoders.text import BERT_BASE_CASED
from cxrvlp.core.training.config import TrainConfig

# emilyalsentzer/Bio_ClinicalBERT (BERT-base, cased vocab of 28,996) as a transformers BertConfig dict
# (the official config names no initializer_range: left to transformers' default, the same 0.02)
BIO_CLINICAL_BERT: dict[str, Any] = {k: v for k, v in BERT_BASE_CASED.items() if k != "initializer_range"}

IMAGE_ENCODERS = ("resnet50", "efficientnet-lite0")


@dataclass
class AFLocConfig:
    """Everything that defines an AFLoc model. The joint width D is the BERT hidden size (no text projection).

    Image side (spec §3.2): ResNet-50 on the 224 input upsampled to 299 (bilinear, align_corners=True);
    layer2 (38x38) -> 1x1 conv -> V2, layer3 (19x19) -> 1x1 conv -> V3, pooled layer4 -> Linear -> v_g.
    Text side: sum of the last 4 BERT layers; word pieces summed into words; sentence units; report = mean
    over all `text_max_length` word slots (zeros included).
    """

    # "efficientnet-lite0": the small config's real ImageNet backbone (NOT the paper's; configs/small.yaml)
    image_encoder: Literal["resnet50", "efficientnet-lite0"] = "resnet50"
    # None: random init; True: the paper's init (torchvision IMAGENET1K_V1 for ResNet-50, the packaged
    # ImageNet weights for EfficientNet-Lite0); a weights name or a file
    image_pretrained: bool | str | None = None
    upsample_to: int | None = 299  # GLoRIA legacy, part of the method (ResNet-50 only)
    # bottleneck blocks per stage and inner width (ResNet-50: 3, 4, 6, 3 / 64); smaller for the tiny config
    resnet_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    resnet_width_per_group: int = 64
    image_size: int = 224  # input size S of the training and zero-shot transforms
    normalisation: Literal["mean0.5-std0.5", "imagenet"] = "mean0.5-std0.5"
    # the BERT's transformers config (used when text_pretrained is None, and for sizes)
    bert: dict[str, Any] = field(default_factory=lambda: dict(BIO_CLINICAL_BERT))
    # hub id / local folder / "minilm-l6" whose weights initialise the BERT (paper: Bio_ClinicalBERT)
    text_pretrained: str | None = None
    tokenizer: str = "emilyalsentzer/Bio_ClinicalBERT"
    attn_implementation: str = "sdpa"  # "eager" is the official code's; same numbers up to rounding
    text_max_length: int = 97  # data.text.word_num, [CLS]/[SEP] included; also the report-mean divisor
    last_n_layers: int = 4
    cls_token_id: int = 101  # Bio_ClinicalBERT ids; training / adapters take them from the tokenizer
    sep_token_id: int = 102
    period_token_id: int = 119  # "." (sentence boundary)
    temp1: float = 4.0  # attention sharpening
    temp2: float = 5.0  # LogSumExp aggregation over units
    temp3: float = 10.0  # logits scale (global and local)
    use_global_report_loss: bool = True
    use_local_sent_loss: bool = True
    use_local_word_loss: bool = True
    global_report_loss_weight: float = 1.0
    local_sent_loss_weight: float = 1.0
    local_word_loss_weight: float = 1.0
    # `local_f_embedder` (Conv 2048 -> D on layer4) exists iff the official `use_ce_loss` is truthy. No loss
    # and no evaluation uses it (it stays at its random init); the released checkpoint very probably has it
    # (spec §8), so the paper config builds it and training freezes it (it never gets a gradient).
    local_f_embedder: bool = True
    # memory bound of the batched local losses: texts per einsum chunk (None: all at once; same numbers)
    text_chunk: int | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.bert["hidden_size"])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for save_pretrained / config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AFLocConfig:
        """Inverse of `to_dict`; unknown keys are a `ConfigError` naming them."""
        from cxrvlp.core.errors import ConfigError

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"AFLocConfig: unknown keys {unknown}")
        d = dict(d)
        if d.get("resnet_layers") is not None:
            d["resnet_layers"] = tuple(d["resnet_layers"])
        if "bert" in d:
            d["bert"] = {**BIO_CLINICAL_BERT, **dict(d["bert"] or {})}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """`ConfigError` for a value no code path accepts."""
        from cxrvlp.core.errors import ConfigError

        if self.image_encoder not in IMAGE_ENCODERS:
            raise ConfigError(
                f"AFLocConfig.image_encoder: '{self.image_encoder}' is not one of {IMAGE_ENCODERS}"
            )
        if self.normalisation not in ("mean0.5-std0.5", "imagenet"):
            raise ConfigError(
                f"AFLocConfig.normalisation: '{self.normalisation}' is not 'mean0.5-std0.5'/'imagenet'"
            )
        depth = int(self.bert.get("num_hidden_layers", 12))
        if not 1 <= self.last_n_layers <= depth:
            raise ConfigError(f"AFLocConfig.last_n_layers must be in 1..{depth}, got {self.last_n_layers}")


@dataclass
class AFLocDataConfig(MimicSourceConfig):
    """MIMIC-CXR source (core's `MimicSourceConfig`: root, reports, cache, split / val_split, on_error,
    synthetic mirror) + AFLoc's fields. The official split column is `split_with_MS` (train / validate; its
    MS-CXR exclusion list is not public): here the official MIMIC-CXR split."""

    image_size: int = 224
    # None: the model's tokenizer; "build": a WordPiece vocab trained on the cleaned reports (tiny demo)
    tokenizer: str | None = None
    build_vocab_size: int = 600


@dataclass
class AFLocTrainConfig(TrainConfig):
    """The full AFLoc run: core loop settings + model + data."""

    model_name: str = "afloc-r50"
    model: AFLocConfig = field(default_factory=AFLocConfig)
    data: AFLocDataConfig = field(default_factory=AFLocDataConfig)
    # emulate k DataParallel replicas in one process: the batch is cut into k chunks, each a full forward and
    # loss, the losses averaged (official: 2 GPUs x 64 under Lightning DP; see train.py)
    dp_replicas: int = 1

    def validate(self) -> None:
        """Cross-checks run by core's load_config before anything is built."""
        from cxrvlp.core.errors import ConfigError

        TrainConfig.validate(self)
        if self.dp_replicas < 1:
            raise ConfigError(f"key 'dp_replicas': must be >= 1, got {self.dp_replicas!r}")
