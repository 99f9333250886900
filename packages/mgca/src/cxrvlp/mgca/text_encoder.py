"""MGCA's text encoder: the BLIP-"med" BERT (HF BERT names, no token-type embeddings, dead cross-attention).

Faithful quirk: the official encoder passes the all-zero `token_type_ids` in the `position_ids` slot, so every
token gets position embedding row 0 (a bag-of-words encoder). `fix_position_ids=True` uses 0..L-1.
All layers run SDPA; only the [CLS] query row of the last layer's attention probabilities is computed
explicitly (MGCA weights words by it).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from cxrvlp.mgca.config import MedBertConfig
from torch import nn

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
