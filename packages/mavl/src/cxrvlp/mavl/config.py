"""Every MAVL config dataclass: model, data (core's MIMIC source + MAVL's labels), loss and the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cxrvlp.core.data.pretraining import MimicSourceConfig
from cxrvlp.core.training.config import TrainConfig

BIO_CLINICAL_BERT = "emilyalsentzer/Bio_ClinicalBERT"


@dataclass
class MavlModelConfig:
    """Sizes and choices of one MAVL model; defaults are the paper's (`MAVL_resnet.yaml`)."""

    # mavl (the paper) | medklip (MAVL's base, spec §3.6: 75 description queries, per-query Linear heads
    # `cl_fc` / `classifier`, plain Dropout, trunk `res_features` without ImageNet init, no pool/temp/global
    # loss)
    variant: str = "mavl"
    backbone: str = "resnet50"  # resnet50 (paper) | tiny-cnn (ours, tests) | efficientnet-lite0 (ours, small)
    image_pretrained: Any = None  # resnet50: path to torchvision weights; efficientnet-lite0: True = packaged
    image_size: int = 224
    normalisation: str = "imagenet"
    d_model: int = 256
    num_layers: int = 4  # N
    nhead: int = 4  # H
    dim_feedforward: int = 1024  # hard-coded officially
    decoder_dropout: float = 0.1  # hard-coded officially
    feature_dropout: float = (
        0.1  # `dropout`: Dropout2d on (Q, B, D) = whole-vector dropout per (query, image)
    )
    self_attention: bool = True
    pool_heads: int = 8
    text_dim: int = 768
    n_entities: int = 75
    n_aspects: int = 9  # description + 8 aspects
    n_landmarks: int = 51
    attribute_set_size: int = 2
    temperature_init: float = 0.07  # temp = log(1 / 0.07) per aspect
    tiny_channels: int = 64  # tiny-cnn width (ours)
    # Text side (used only to build the books, once): encoder, tokenizer and length.
    text_encoder: str | None = BIO_CLINICAL_BERT
    text_max_length: int = 128  # pretraining length (the official zero-shot scripts use 64)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MavlDataConfig(MimicSourceConfig):
    """MIMIC-CXR source (core's `MimicSourceConfig`) + where MAVL's labels come from.

    `split` may join several split names with "+": the official run trains on train + validate + test
    (pitfall 4) and validates on `val_split` = test (also trained on).
    """

    split: str = "train+validate+test"  # [paper]
    val_split: str | None = "test"  # [paper] per-epoch validation loss on the test split
    views: list[str] | None = None  # None: every view in the metadata (official: all views in the JSON)
    label_matrix_npy: str | None = None  # official landmark_observation_adj_mtx.npy
    label_json: list[str] | None = None  # official rad_graph_metric_{train,validate,test}.json
    transform: str = "mavl"
    augment: bool = True  # False: the eval transform in training too (ours, tiny demo)
    image_size: int | None = None
    normalisation: str | None = None


@dataclass
class MavlLossConfig:
    """Loss weights (`MAVL_resnet.yaml`)."""

    ce_weight: float = 1.0  # `ce`
    location_weight: float = 1.0
    cl_global: float = 0.1


@dataclass
class MavlTrainConfig(TrainConfig):
    """A MAVL run: the shared loop's settings plus model, data and loss sections."""

    model_name: str = "mavl-r50"
    model: MavlModelConfig = field(default_factory=MavlModelConfig)
    data: MavlDataConfig = field(default_factory=MavlDataConfig)
    loss: MavlLossConfig = field(default_factory=MavlLossConfig)
