"""The MGCA model: image encoder (ViT-B/16 or ResNet-50) + med BERT, BN projection heads, 500 prototypes.

The small config (NOT the paper) swaps in EfficientNet-Lite0 and a MiniLM-L6-sized med BERT; heads, losses
(the ResNet-50 branch of CTA: uniform patch weights) and wiring stay MGCA's.

State-dict names are ours; `official.py` maps the released keys (`img_encoder_q.*`, `text_encoder_q.*`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.core.encoders import create_image_encoder
from cxrvlp.core.encoders.packaged import INSTALL_HINT, resolve_pretrained_source
from cxrvlp.core.encoders.text import merge_word_pieces
from cxrvlp.core.errors import ConfigError
from cxrvlp.mgca.config import MGCAConfig
from cxrvlp.mgca.heads import GlobalHead, LocalHead
from cxrvlp.mgca.text_encoder import MedBertModel, load_bert_prefix_weights
from torch import nn


def _efficientnet_lite0(pretrained: bool | str | None) -> nn.Module:
    """core's EfficientNet-Lite0 (True: the packaged ImageNet weights); ConfigError when they are absent."""
    try:
        return create_image_encoder("efficientnet-lite0", pretrained=pretrained or False)
    except ImportError as err:
        raise ConfigError(
            f"image_encoder 'efficientnet-lite0' with image_pretrained=true needs its weights: "
            f"{INSTALL_HINT} ({err})"
        ) from err


@dataclass
class ImageSide:
    """Image-tower outputs of one forward."""

    img_feat: torch.Tensor  # (B, D_g) ViT [CLS] / ResNet pooled layer4 / EfficientNet pooled final map
    patch_feat: torch.Tensor  # (B, N_p, D_l) ViT patches / ResNet layer3 / EfficientNet final 7x7, row-major
    img_emb_prenorm: torch.Tensor  # (B, E)
    patch_emb_prenorm: torch.Tensor  # (B, N_p, E)
    img_emb: torch.Tensor  # (B, E) unit norm (v)
    patch_emb: torch.Tensor  # (B, N_p, E) unit norm (P)
    cls_attn: torch.Tensor | None  # (B, heads, N_p + 1) last ViT block [CLS] row; None for ResNet
    grid_size: tuple[int, int] | None = None


@dataclass
class TextSide:
    """Text-tower outputs of one forward (word slots = max_words - 1 after the [CLS] slot)."""

    last_hidden_state: torch.Tensor  # (B, L', D) L' = batch's longest + 1 (<= max length)
    cls_attn: torch.Tensor  # (B, heads, L') last-layer [CLS] attention probabilities
    report_feat: torch.Tensor  # (B, D)
    word_feat: torch.Tensor  # (B, S-1, D)
    word_attn: torch.Tensor  # (B, S-1) summed (shifted) [CLS] attention per word
    word_pad_mask: torch.Tensor  # (B, S-1) bool
    report_emb_prenorm: torch.Tensor  # (B, E)
    word_emb_prenorm: torch.Tensor  # (B, S-1, E)
    report_emb: torch.Tensor  # (B, E) unit norm (t)
    word_emb: torch.Tensor  # (B, S-1, E) unit norm (W)
    word_index: torch.Tensor  # (B, L') word slot of each token (-1: none), slot 0 = [CLS]


@dataclass
class MGCAOutput:
    """One forward: both sides and, when asked, the losses."""

    image: ImageSide
    text: TextSide
    loss: Any = None  # an MGCALossOutput when MGCATrainModule ran the losses


class MGCA(nn.Module):
    """MGCA dual encoder (image and text sides, prototypes); the losses live in `MGCALoss`."""

    def __init__(self, cfg: MGCAConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MGCAConfig()
        if cfg.is_vit:
            pretrained = cfg.image_pretrained
            self.image_encoder = create_image_encoder("vit-b16", pretrained=pretrained, **cfg.vit)
            g_dim = l_dim = self.image_encoder.out_dim
        elif cfg.image_encoder == "resnet50":
            # The official code uses ResNet50_Weights.DEFAULT (= IMAGENET1K_V2 on torchvision >= 0.13).
            pretrained = "IMAGENET1K_V2" if cfg.image_pretrained is True else cfg.image_pretrained
            self.image_encoder = create_image_encoder(
                "resnet50", pretrained=pretrained, upsample_to=299, local_from="layer3"
            )
            g_dim, l_dim = 2048, 1024
        elif cfg.image_encoder == "efficientnet-lite0":
            # Small config only (NOT the paper's backbone). Global = the 1280-d average-pooled final map;
            # local = that final 7x7 map as 49 tokens of 1280 (ViT: its patch tokens; ResNet-50: layer3). The
            # finer 14x14 stage is only 112 wide; the final map keeps both sides on the same features.
            self.image_encoder = _efficientnet_lite0(cfg.image_pretrained)
            g_dim = l_dim = self.image_encoder.feature_dim  # 1280
        else:
            raise ValueError(
                f"unknown image_encoder '{cfg.image_encoder}' (vit-b16 | resnet50 | efficientnet-lite0)"
            )
        self.feature_dim = g_dim  # linear-probe input size
        h, e = cfg.proj_hidden_dim, cfg.emb_dim
        self.image_global_head = GlobalHead(g_dim, h, e)
        self.image_local_head = LocalHead(l_dim, h, e)
        self.text_encoder = MedBertModel(cfg.bert, fix_position_ids=cfg.fix_position_ids)
        if cfg.text_pretrained:
            load_bert_prefix_weights(
                self.text_encoder,
                resolve_pretrained_source(cfg.text_pretrained),
                fold_token_type=cfg.text_fold_token_type,
            )
        t_dim = cfg.bert.hidden_size
        self.text_global_head = GlobalHead(t_dim, h, e)
        self.text_local_head = LocalHead(t_dim, h, e)
        self.prototypes = nn.Linear(e, cfg.num_prototypes, bias=False)
        # Dead in the official code (use_local_atten=False) but in every released state dict: kept so that
        # import / export is lossless. They never receive gradients.
        self.unused_patch_local_attn = nn.MultiheadAttention(e, 1, batch_first=True)
        self.unused_word_local_attn = nn.MultiheadAttention(e, 1, batch_first=True)

    def dead_parameters(self) -> list[nn.Parameter]:
        """Parameters no forward ever uses (official dead MHA layers and BERT cross-attention blocks).

        AdamW skips a parameter whose grad is None, so freezing them (as training does, which DDP needs) is
        exactly the official update."""
        dead = [*self.unused_patch_local_attn.parameters(), *self.unused_word_local_attn.parameters()]
        for layer in self.text_encoder.encoder.layer:
            if hasattr(layer, "crossattention"):
                dead += list(layer.crossattention.parameters())
        return dead

    # ------------------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, need_attention: bool | None = None) -> ImageSide:
        """(B, 3, 224, 224) normalised (`cfg.normalisation`) -> features, projected (pre/post L2) global and
        patch embeddings."""
        if need_attention is None:
            need_attention = self.cfg.is_vit
        if self.cfg.is_vit:
            out = self.image_encoder(images, attention="cls" if need_attention else None)
            cls_attn = out.attentions[:, :, 0] if out.attentions is not None else None  # (B, H, N+1)
        else:
            out = self.image_encoder(images)
            cls_attn = None
        img_feat, patch_feat = out.global_feat, out.local_feat
        g = self.image_global_head(img_feat)
        p = self.image_local_head(patch_feat)
        return ImageSide(
            img_feat=img_feat,
            patch_feat=patch_feat,
            img_emb_prenorm=g,
            patch_emb_prenorm=p,
            img_emb=F.normalize(g, dim=-1),
            patch_emb=F.normalize(p, dim=-1),
            cls_attn=cls_attn,
            grid_size=out.grid_size,
        )

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        piece_mask: torch.Tensor | None = None,
    ) -> TextSide:
        """Token ids (B, L) -> report / word features and embeddings (words padded to max_words slots)."""
        n_slots = max(self.cfg.max_words, input_ids.shape[1])
        # Pad only to the batch's longest + 1: exact for real tokens under the attention mask, and the +1
        # keeps the longest report's [SEP] inside the official scan window (positions 0 .. L-2).
        longest = int(attention_mask.sum(dim=1).max())
        keep = min(longest + 1, input_ids.shape[1])
        input_ids, attention_mask = input_ids[:, :keep], attention_mask[:, :keep]
        if piece_mask is not None:
            piece_mask = piece_mask[:, :keep]
        hidden, probs = self.text_encoder(input_ids, attention_mask)  # (B, L', D), (B, H, L')
        cls_attn = probs.mean(dim=1)  # (B, L') mean over heads of [CLS] -> token j
        # Official scan: the L tokens are zipped with the L-1 attentions to tokens 1..L-1, so only positions
        # 0..L-2 are visited and token i carries the attention to token i+1 (off-by-one kept by default).
        n = input_ids.shape[1] - 1
        weights = cls_attn[:, :n] if self.cfg.fix_word_weight_shift else cls_attn[:, 1:]
        pieces = (
            piece_mask[:, :n]
            if piece_mask is not None
            else torch.zeros_like(input_ids[:, :n], dtype=torch.bool)
        )
        agg = merge_word_pieces(
            hidden[:, :n],
            input_ids[:, :n],
            pieces,
            sep_token_id=self.cfg.sep_token_id,
            out_len=n_slots,
            token_weights=weights,
            close_at_end=False,  # a report cut before its [SEP] loses its last open word (official)
        )
        report_feat, word_feat = agg.embeddings[:, 0], agg.embeddings[:, 1:]
        g = self.text_global_head(report_feat)
        w = self.text_local_head(word_feat)
        return TextSide(
            last_hidden_state=hidden,
            cls_attn=probs,
            report_feat=report_feat,
            word_feat=word_feat,
            word_attn=agg.weights[:, 1:],
            word_pad_mask=~agg.word_mask[:, 1:],
            report_emb_prenorm=g,
            word_emb_prenorm=w,
            report_emb=F.normalize(g, dim=-1),
            word_emb=F.normalize(w, dim=-1),
            word_index=agg.word_index,
        )

    def forward(self, batch: dict) -> MGCAOutput:
        """batch with `images`, `input_ids`, `attention_mask` (and `piece_mask`) -> both sides.

        The losses are not here: `cxrvlp.mgca.train.MGCATrainModule` (model + `MGCALoss`, what DDP wraps)
        runs them, prototypes included."""
        img = self.encode_image(batch["images"], need_attention=self.cfg.is_vit and self.cfg.bidirectional)
        txt = self.encode_text(batch["input_ids"], batch["attention_mask"], batch.get("piece_mask"))
        return MGCAOutput(img, txt, None)

    @torch.no_grad()
    def normalize_prototypes_(self) -> None:
        """L2-normalise the prototype rows in place (the official forward does it before every use)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1, p=2))


def load_pretrained(pretrained_dir) -> tuple[MGCA, dict]:
    """(model, config.json document) of a `final/` folder written by training."""
    from cxrvlp.core.training.checkpoint import load_trained_model

    return load_trained_model(pretrained_dir, MGCAConfig.from_dict, MGCA)
