"""A DETR-style transformer decoder layer, the skeleton of CARZero's fusion module and MAVL's query decoder.

Parameter names follow the layer both official code bases copied from DETR (`self_attn`, `multihead_attn`,
`linear1`, `linear2`, `norm1..3`), so their checkpoints load by name. Tensors are sequence-first as in the
official code: queries (Q, N, D), memory (M, N, D).

- `self_attention=False` skips the query-query attention (CARZero: "decoder without self-attention").
  `keep_unused_self_attention=True` still creates `self_attn`/`norm1` (never used, no gradient) so a
  released state dict that holds them loads strictly.
- `normalize_before=True` is the pre-norm variant both methods use; False is DETR's post-norm.
- `need_weights=True` returns the cross-attention probabilities averaged over heads (Q-major: (N, Q, M));
  with False the attention runs without materialising them (PyTorch's fused path), which is where the
  official training steps spend their time.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unknown activation '{name}' (relu, gelu)")


class DecoderLayer(nn.Module):
    """Cross-attention (+ optional self-attention) + FFN, pre- or post-norm, DETR parameter names."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = True,
        self_attention: bool = True,
        keep_unused_self_attention: bool = False,
    ) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.normalize_before = normalize_before
        if self_attention or keep_unused_self_attention:
            self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.norm1 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    @staticmethod
    def _pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        return x if pos is None else x + pos

    def _self_block(self, x: torch.Tensor, query_pos: torch.Tensor | None, mask) -> torch.Tensor:
        q = k = self._pos(x, query_pos)
        return self.dropout1(self.self_attn(q, k, x, attn_mask=mask, need_weights=False)[0])

    def _cross_block(self, x, memory, pos, query_pos, key_padding_mask, need_weights):
        out, attn = self.multihead_attn(
            self._pos(x, query_pos),
            self._pos(memory, pos),
            memory,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            average_attn_weights=True,
        )
        return self.dropout2(out), attn

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        tgt: torch.Tensor,  # (Q, N, D)
        memory: torch.Tensor,  # (M, N, D)
        memory_key_padding_mask: torch.Tensor | None = None,  # (N, M), True = ignore
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Q, N, D) queries attend to (M, N, D) memory -> ((Q, N, D), (N, Q, M) attention or None)."""
        x = tgt
        if self.normalize_before:
            if self.self_attention:
                x = x + self._self_block(self.norm1(x), query_pos, tgt_mask)
            out, attn = self._cross_block(
                self.norm2(x), memory, pos, query_pos, memory_key_padding_mask, need_weights
            )
            x = x + out
            x = x + self._ff_block(self.norm3(x))
        else:
            if self.self_attention:
                x = self.norm1(x + self._self_block(x, query_pos, tgt_mask))
            out, attn = self._cross_block(x, memory, pos, query_pos, memory_key_padding_mask, need_weights)
            x = self.norm2(x + out)
            x = self.norm3(x + self._ff_block(x))
        return x, attn


class TransformerDecoder(nn.Module):
    """`num_layers` deep copies of one layer and an optional final norm (`layers.{i}`, `norm`: DETR names).

    `norm` may be a module owned elsewhere (CARZero passes its `decoder_norm`, so the same parameters are
    registered twice and tied). Returns the output and, with `need_weights`, a list of per-layer (N, Q, M)
    head-averaged cross-attention maps.
    """

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(Q, N, D), (M, N, D) -> ((Q, N, D), [L x (N, Q, M)] when need_weights else [])."""
        maps: list[torch.Tensor] = []
        x = tgt
        for layer in self.layers:
            x, attn = layer(x, memory, memory_key_padding_mask, pos, query_pos, need_weights=need_weights)
            if attn is not None:
                maps.append(attn)
        if self.norm is not None:
            x = self.norm(x)
        return x, maps
