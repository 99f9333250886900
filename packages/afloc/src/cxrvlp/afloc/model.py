"""The AFLoc model (spec §3): ResNet-50 (224 -> 299 inside), three embedders, Bio_ClinicalBERT, no text head.

State-dict names are the official module paths (`img_encoder.model.*` torchvision ResNet-50 without fc,
`img_encoder.{global,local,local2,local_f}_embedder.*`, `text_encoder.model.*` HF BertModel), so the released
`afloc.`-prefixed keys load after stripping that prefix (`official.py`).

Shapes (paper, B images, 224 input): V2 (B, D, 38, 38), V3 (B, D, 19, 19), v_g (B, D); words / sentence
units (B, W, D) with W = text_max_length = 97 slots (the official code stores them as (B, D, W)).
The small config (NOT the paper) uses EfficientNet-Lite0 (stride-8 / stride-16 / final maps) and MiniLM-L6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from cxrvlp.afloc.config import AFLocConfig
from cxrvlp.core.encoders.text import HFTextEncoder, load_hf_text_model, merge_word_pieces, sentence_units
from cxrvlp.core.errors import ConfigError
from torch import nn


# ------------------------------------------------------------------------------------------------ image side
class _EfficientNetStages(nn.Module):
    """EfficientNet-Lite0 (timm names under `.model`) returning the stride-8, stride-16 and final maps.

    Small config only (NOT the paper's backbone): stage 2 (40 ch, stride 8) plays layer2, stage 4 (112 ch,
    stride 16) layer3, the 1280-ch head map layer4."""

    channels = (40, 112, 1280)

    def __init__(self, pretrained: bool | str | None) -> None:
        super().__init__()
        from cxrvlp.core.encoders import create_image_encoder

        try:
            enc = create_image_encoder("efficientnet-lite0", pretrained=pretrained or False)
        except ImportError as err:
            raise ConfigError(
                f"image_encoder 'efficientnet-lite0' needs its packaged weights: {err}"
            ) from err
        self.model = enc.model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        x = m.bn1(m.conv_stem(x.contiguous(memory_format=torch.channels_last)))
        maps = {}
        for i, stage in enumerate(m.blocks):
            x = stage(x)
            if i == 2:
                maps["layer2"] = x
            elif i == 4:
                maps["layer3"] = x
        maps["layer4"] = m.bn2(m.conv_head(x))
        return maps


@dataclass
class ImageSide:
    """Image-tower outputs of one forward."""

    feat_global: torch.Tensor  # (B, C4) pooled layer4, before global_embedder
    feat_layer2: torch.Tensor  # (B, C2, 38, 38)
    feat_layer3: torch.Tensor  # (B, C3, 19, 19)
    feat_layer4: torch.Tensor  # (B, C4, 10, 10)
    emb_g: torch.Tensor  # (B, D) v_g
    emb_l: torch.Tensor  # (B, D, 19, 19) V3, deep local (sentences; localisation)
    emb_l2: torch.Tensor  # (B, D, 38, 38) V2, shallow local (words)
    emb_lf: torch.Tensor | None = None  # (B, D, 10, 10) local_f_embedder(layer4): untrained, unused


class AFLocImageEncoder(nn.Module):
    """`img_encoder`: backbone (`model`) + global Linear + 1x1 conv embedders (official names)."""

    def __init__(self, cfg: AFLocConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        if cfg.image_encoder == "resnet50":
            from cxrvlp.core.encoders.resnet import build_resnet50

            # the paper: torchvision resnet50(pretrained=True) of torchvision 0.9 = IMAGENET1K_V1
            pretrained = "IMAGENET1K_V1" if cfg.image_pretrained is True else cfg.image_pretrained
            layers = tuple(cfg.resnet_layers)
            self.model = build_resnet50(
                pretrained=pretrained,
                upsample_to=cfg.upsample_to,
                layers=None if layers == (3, 4, 6, 3) else layers,
                width_per_group=cfg.resnet_width_per_group,
            )
            c2, c3, c4 = 512, 1024, 2048
        elif cfg.image_encoder == "efficientnet-lite0":
            if cfg.upsample_to is not None:
                raise ConfigError("image_encoder 'efficientnet-lite0' takes upsample_to: null")
            self.model = _EfficientNetStages(cfg.image_pretrained)
            c2, c3, c4 = _EfficientNetStages.channels
        else:
            raise ConfigError(f"unknown image_encoder '{cfg.image_encoder}'")
        self.is_resnet = cfg.image_encoder == "resnet50"
        self.global_embedder = nn.Linear(c4, d)
        self.local_embedder = nn.Conv2d(c3, d, kernel_size=1, bias=False)
        self.local2_embedder = nn.Conv2d(c2, d, kernel_size=1, bias=False)
        if cfg.local_f_embedder:
            self.local_f_embedder = nn.Conv2d(c4, d, kernel_size=1, bias=False)
        else:
            self.local_f_embedder = None

    def forward(self, images: torch.Tensor, with_lf: bool = False) -> ImageSide:
        """(B, 3, S, S) normalised -> features and embeddings (`with_lf`: also the unused layer4 map)."""
        if self.is_resnet:
            maps = self.model(images).maps
        else:
            maps = self.model(images)
        l2, l3, l4 = maps["layer2"], maps["layer3"], maps["layer4"]
        g = torch.flatten(F.adaptive_avg_pool2d(l4, 1), 1)  # (B, C4)
        lf = None
        if with_lf and self.local_f_embedder is not None:
            lf = self.local_f_embedder(l4)
        return ImageSide(
            feat_global=g,
            feat_layer2=l2,
            feat_layer3=l3,
            feat_layer4=l4,
            emb_g=self.global_embedder(g),
            emb_l=self.local_embedder(l3),
            emb_l2=self.local2_embedder(l2),
            emb_lf=lf,
        )


# ------------------------------------------------------------------------------------------------ text side
@dataclass
class TextSide:
    """Text-tower outputs of one forward; W = cfg.text_max_length slots."""

    word_emb: torch.Tensor  # (B, W, D) T_w: [CLS], words (pieces summed), [SEP], zeros
    sent_emb: torch.Tensor  # (B, W, D) T_s: [CLS], sentence means, [SEP], zeros
    report_emb: torch.Tensor  # (B, D) t_r = sum of the word slots / W
    word_units: torch.Tensor  # (B,) units the word loss uses (official cap_len of the word labels)
    sent_units: torch.Tensor  # (B,) units the sentence loss uses (1 + number of sentences)
    word_index: torch.Tensor  # (B, L') word slot of each token (-1: after [SEP])


def word_unit_count(
    word_index: torch.Tensor, bracket_mask: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Official `cap_len = #word labels not starting with "[" + 1`, vectorised over (B, L) tokens.

    A word label starts with "[" iff its first piece does ([CLS], [SEP], [UNK], ...): the count is the number
    of word-opening tokens whose token string does not start with "[", plus one. As in the official code an
    [UNK] word lowers the count, and the local loss then drops the *last* real words (spec correction 1).
    """
    opens = word_index >= 0
    opens[:, 1:] &= word_index[:, 1:] != word_index[:, :-1]
    return (opens & ~bracket_mask.bool()).sum(dim=1) + 1


class AFLoc(nn.Module):
    """AFLoc dual encoder; `forward(batch)` -> (ImageSide, TextSide); the losses are `AFLocLoss`."""

    def __init__(self, cfg: AFLocConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or AFLocConfig()
        cfg.validate()
        self.img_encoder = AFLocImageEncoder(cfg)
        if cfg.text_pretrained:
            from cxrvlp.core.encoders.packaged import resolve_model_source

            bert = load_hf_text_model(
                str(resolve_model_source(cfg.text_pretrained)), attn_implementation=cfg.attn_implementation
            )
            if bert.config.hidden_size != cfg.embed_dim:
                raise ConfigError(
                    f"text_pretrained '{cfg.text_pretrained}' has hidden size {bert.config.hidden_size}, "
                    f"config.bert says {cfg.embed_dim} (AFLoc's joint width is the BERT width)"
                )
        else:
            bert = load_hf_text_model(config=dict(cfg.bert), attn_implementation=cfg.attn_implementation)
        # official: `BertEncoder.model` = AutoModel with output_hidden_states; pooler present, unused
        self.text_encoder = HFTextEncoder(bert, last_n_layers=cfg.last_n_layers, layer_aggregation="sum")

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters no loss reaches (BERT pooler, `local_f_embedder`): Adam never updates them (grad None),
        so freezing them for training is exact and lets plain DDP run."""
        out = list(self.text_encoder.model.pooler.parameters()) if self.text_encoder.model.pooler else []
        if self.img_encoder.local_f_embedder is not None:
            out += list(self.img_encoder.local_f_embedder.parameters())
        return out

    # ----------------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, with_lf: bool = False) -> ImageSide:
        """(B, 3, S, S) -> `ImageSide`."""
        return self.img_encoder(images, with_lf=with_lf)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        piece_mask: torch.Tensor,
        bracket_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> TextSide:
        """Token ids (B, L <= text_max_length) -> words, sentence units, report embedding and unit counts.

        piece_mask (B, L): token is a "##" continuation; bracket_mask (B, L): token string starts with "["
        (both from `AFLocTokenizer`). BERT runs on the batch's longest row only: exact for every real token
        (the attention mask hides padding), and the word slots are padded back to W = text_max_length.
        """
        width = self.cfg.text_max_length
        if input_ids.shape[1] > width:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed text_max_length {width}")
        keep = int(attention_mask.sum(dim=1).max())
        ids, mask = input_ids[:, :keep], attention_mask[:, :keep]
        tt = token_type_ids[:, :keep] if token_type_ids is not None else torch.zeros_like(ids)
        hidden = self.text_encoder(ids, mask, tt).last_hidden_state  # (B, keep, D) sum of the last 4 layers
        merged = merge_word_pieces(
            hidden, ids, piece_mask[:, :keep], sep_token_id=self.cfg.sep_token_id, out_len=width
        )
        words = merged.embeddings  # (B, W, D), zeros after [SEP]
        sents = sentence_units(merged, self.cfg.period_token_id)
        return TextSide(
            word_emb=words,
            sent_emb=sents.embeddings,
            report_emb=words.sum(dim=1) / width,  # mean over all W slots, zeros included (official)
            word_units=word_unit_count(merged.word_index, bracket_mask[:, :keep]),
            sent_units=sents.num_sentences + 1,
            word_index=merged.word_index,
        )

    def forward(self, batch: dict) -> tuple[ImageSide, TextSide]:
        """batch: `images`, `input_ids`, `attention_mask`, `piece_mask`, `bracket_mask` (+ token_type_ids)
        -> (ImageSide, TextSide)."""
        img = self.encode_image(batch["images"])
        txt = self.encode_text(
            batch["input_ids"],
            batch["attention_mask"],
            batch["piece_mask"],
            batch["bracket_mask"],
            batch.get("token_type_ids"),
        )
        return img, txt


def load_pretrained(pretrained_dir) -> tuple[AFLoc, dict]:
    """(model, config.json document) of a `final/` folder written by training."""
    from cxrvlp.core.training.checkpoint import load_trained_model

    return load_trained_model(pretrained_dir, AFLocConfig.from_dict, AFLoc)
