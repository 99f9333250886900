"""Every CXR-CLIP config dataclass: model, data, loss and the training run (paper values as defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cxrvlp.core.data.pretraining import MimicSourceConfig
from cxrvlp.core.encoders.text import BERT_BASE_CASED
from cxrvlp.core.training import TrainConfig

# emilyalsentzer/Bio_ClinicalBERT (BERT-base, cased vocab of 28,996)
BIO_CLINICAL_BERT = dict(BERT_BASE_CASED)


@dataclass
class CxrClipModelConfig:
    """Everything that builds a CXR-CLIP model (saved as JSON next to the weights)."""

    image_encoder: str = "resnet50"  # a core image-encoder name: resnet50 | swin-tiny | efficientnet-lite0
    image_encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"sync_batchnorm": True})
    image_pretrained: str | bool | None = None  # e.g. "IMAGENET1K_V1", a hub name or a local file/folder
    text_encoder: str = "bert"  # "bert" (HF BertModel, as the paper) or a core text-encoder name
    text_config: dict[str, Any] = field(default_factory=lambda: dict(BIO_CLINICAL_BERT))
    text_pretrained: str | bool | None = None  # e.g. "emilyalsentzer/Bio_ClinicalBERT" or a local folder
    tokenizer: str | None = "emilyalsentzer/Bio_ClinicalBERT"  # hub name / folder; None = built at train time
    text_max_length: int = 256
    proj_dim: int = 512
    temperature_init: float = 0.07
    normalisation: str = "imagenet"  # official: ImageNet stats for ResNet, 0.5/0.5 for Swin (pitfall P5)
    image_size: int = 224

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)


@dataclass
class CxrClipDataConfig(MimicSourceConfig):
    """MIMIC-CXR source (core's `MimicSourceConfig`) + how a CXR-CLIP sample is drawn."""

    views: list[str] | None = None  # None: every image of the study (official), e.g. ["PA", "AP"] to filter
    view_sampling: str = "official"  # "official" (P1 quirk) | "distinct_views" (fix)
    back_translation: str | None = None  # JSON {section text: back-translated text}
    chexpert_root: str | None = None  # add CheXpert as prompt reports (needs prompt_json)
    prompt_json: str | None = None  # the official datasets/train_prompts_all.json
    # GLoRIA's chexpert_5x200.csv: its patients are removed from CheXpert pretraining as officially
    # (223,414 -> 216,478 images), else the 5x200 zero-shot score of an M,C model is contaminated
    chexpert_5x200_csv: str | None = None
    allow_5x200_overlap: bool = False  # True: train on CheXpert without that exclusion (not the paper's)
    transform: str = "cxrclip-r50"  # core transform preset (cxrclip-r50 | cxrclip-swint)
    image_size: int | None = None  # None: the preset's (224)


@dataclass
class CxrClipLossConfig:
    """Loss weights (`configs/loss/cxr_clip.yaml`); 0 / 0 gives the plain-CLIP ablation."""

    i2i_weight: float = 1.0
    t2t_weight: float = 0.5
    loss_ratio: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class CxrClipTrainConfig(TrainConfig):
    """A CXR-CLIP run: the shared loop's settings plus model, data and loss sections."""

    model_name: str = "cxrclip-r50"
    model: CxrClipModelConfig = field(default_factory=CxrClipModelConfig)
    data: CxrClipDataConfig = field(default_factory=CxrClipDataConfig)
    loss: CxrClipLossConfig = field(default_factory=CxrClipLossConfig)
    tokenizer_vocab_size: int = 2000  # only when model.tokenizer is null: WordPiece built from the reports
    pad_to_longest: bool = True  # EXACT speed-up: pads cut to the batch's longest (EOS pooling is masked)
    sync_batchnorm_on_cpu: bool = False  # torch cannot sync BN across CPU processes: plain BN there
