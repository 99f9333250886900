"""The MGCA model: image encoder (ViT-B/16 or ResNet-50) + med BERT, BN projection heads, 500 prototypes.

The small config (NOT the paper) swaps in EfficientNet-Lite0 and a MiniLM-L6-sized med BERT; heads, losses
(the ResNet-50 branch of CTA: uniform patch weights) and wiring stay MGCA's.

State-dict names are ours; `official.py` maps the released keys (`img_encoder_q.*`, `text_encoder_q.*`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.core.encoders import create_image_encoder
from cxrvlp.core.encoders.packaged import INSTALL_HINT, resolve_pretrained_source
from cxrvlp.core.encoders.text import merge_word_pieces
from cxrvlp.core.errors import ConfigError
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# MGCA's text encoder: the BLIP-"med" BERT (HF BERT names, no token-type embeddings, dead cross-attention).
#
# Faithful quirk: the official encoder passes the all-zero `token_type_ids` in the `position_ids` slot, so
# every
# token gets position embedding row 0 (a bag-of-words encoder). `fix_position_ids=True` uses 0..L-1.
# All layers run SDPA; only the [CLS] query row of the last layer's attention probabilities is computed
# explicitly (MGCA weights words by it).
# ----------------------------------------------------------------------------------------------------------
_MASK_VALUE = -10000.0  # the official additive key-padding mask


class BertEmbeddings(nn.Module):
    """word + absolute position embedding, LayerNorm, dropout (no token-type table)."""

    def __init__(self, cfg: MedBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # Persistent, as in the official med.py (it is in the released state dict).
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1)))

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)  # (B, L, D)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head attention with HF names (query/key/value)."""

    def __init__(self, cfg: MedBertConfig, kv_width: int | None = None) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = d // self.num_heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(kv_width or d, d)
        self.value = nn.Linear(kv_width or d, d)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cls_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, D), additive mask (B, 1, 1, L) -> context (B, L, D), [CLS] row probs (B, H, L) or None."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        p = self.dropout.p if self.dropout.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, d)
        probs = None
        if cls_probs:
            scores = (q[:, :, :1] @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, L)
            probs = (scores + mask).softmax(dim=-1)[:, :, 0]  # (B, H, L)
        B, H, L, d = ctx.shape
        return ctx.transpose(1, 2).reshape(B, L, H * d), probs


class BertSelfOutput(nn.Module):
    """dense -> dropout -> LayerNorm(+ residual)."""

    def __init__(self, cfg: MedBertConfig, in_dim: int | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim or cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    """HF `attention.{self,output}` pair."""

    def __init__(self, cfg: MedBertConfig, kv_width: int | None = None) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertSelfOutput(cfg)


class BertIntermediate(nn.Module):
    """dense -> GELU (erf)."""

    def __init__(self, cfg: MedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention + FFN; `crossattention` exists only for the state dict (the official mode="text" never
    runs it)."""

    def __init__(self, cfg: MedBertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        if cfg.add_cross_attention:
            self.crossattention = BertAttention(cfg, kv_width=cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, in_dim=cfg.intermediate_size)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cls_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx, probs = self.attention.self(x, mask, cls_probs)
        x = self.attention.output(ctx, x)
        x = self.output(self.intermediate(x), x)
        return x, probs


class BertEncoderStack(nn.Module):
    """HF `encoder.layer.N`."""

    def __init__(self, cfg: MedBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class MedBertModel(nn.Module):
    """The med BERT without pooler; returns last hidden states and the last layer's [CLS] attention row."""

    def __init__(self, cfg: MedBertConfig, fix_position_ids: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.fix_position_ids = fix_position_ids
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoderStack(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # BERT init: N(0, 0.02) for Linear / Embedding, zero biases, LayerNorm (1, 0).
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.initializer_range)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids / mask -> hidden (B, L, D), last-layer [CLS] attention probabilities (B, H, L)."""
        B, L = input_ids.shape
        if self.fix_position_ids:
            pos = self.embeddings.position_ids[:, :L]
        else:
            pos = torch.zeros_like(input_ids)  # official: token_type_ids (zeros) land in position_ids
        x = self.embeddings(input_ids, pos)
        dtype = x.dtype
        mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * _MASK_VALUE  # (B, 1, 1, L)
        probs = None
        n = len(self.encoder.layer)
        for i, layer in enumerate(self.encoder.layer):
            x, p = layer(x, mask, cls_probs=(i == n - 1))
            if p is not None:
                probs = p
        return x, probs


def load_bert_prefix_weights(
    model: MedBertModel, name_or_path: str | Path, fold_token_type: bool = False
) -> list[str]:
    """Initialise from a HF BERT (the paper: Bio_ClinicalBERT): embeddings (word, position, LayerNorm) and the
    first `num_hidden_layers` layers; token-type table, pooler and later layers are discarded, cross-attention
    keeps its random init (as `from_pretrained` with the med config does). Every other key of `model` must
    load (else `CheckpointMismatchError`). Returns the discarded checkpoint keys.

    fold_token_type: add the token-type row 0 to every position embedding row. A HF BERT adds that row to
    every token, so the result computes exactly the pretrained BERT's hidden states (positions 0..L-1)."""
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(str(name_or_path))
    sd = {k.removeprefix("bert."): v for k, v in hf.state_dict().items()}
    own = model.state_dict()
    take = {}
    for k, v in sd.items():
        if k.startswith("encoder.layer."):
            idx = int(k.split(".")[2])
            if idx >= model.cfg.num_hidden_layers:
                continue
        if k in own and own[k].shape == v.shape:
            take[k] = v
    missing = [
        k for k in own if k not in take and ".crossattention." not in k and not k.endswith("position_ids")
    ]
    if missing:
        from cxrvlp.core.errors import CheckpointMismatchError

        raise CheckpointMismatchError(missing, [], [], source=f"BERT init '{name_or_path}'")
    if fold_token_type:
        tt = sd.get("embeddings.token_type_embeddings.weight")
        if tt is None:
            from cxrvlp.core.errors import CheckpointMismatchError

            raise CheckpointMismatchError(
                ["embeddings.token_type_embeddings.weight"], [], [], source=f"BERT init '{name_or_path}'"
            )
        key = "embeddings.position_embeddings.weight"
        take[key] = take[key] + tt[0]  # (P, D) + (D,)
    model.load_state_dict(take, strict=False)
    return sorted(k for k in sd if k not in take)


# ----------------------------------------------------------------------------------------------------------
# MGCA's BN-terminated 2-layer projection heads (official `GlobalEmbedding` / `LocalEmbedding`).
# ----------------------------------------------------------------------------------------------------------
class GlobalHead(nn.Sequential):
    """Linear -> BN -> ReLU -> Linear -> BN(affine=False) on (B, D_in); keys 0/1/3/4 as the official."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
            nn.BatchNorm1d(out_dim, affine=False),
        )


class LocalHead(nn.Sequential):
    """The same with 1x1 Conv1d over tokens: (B, N, D_in) -> (B, N, out); BN over batch x tokens."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Conv1d(in_dim, hidden_dim, kernel_size=1),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden_dim, out_dim, kernel_size=1),
            nn.BatchNorm1d(out_dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, N, out)


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
