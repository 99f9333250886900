"""The CARZero model: MAE ViT + BERT, and a cross-attention pair scorer shared by both directions.

Faithful to the released `CARZeroDQNWOSAGLMLP` (laihaoran/CARZero @ fa4e09c, spec §3). Module and parameter
names are the official ones after the Lightning prefix `CARZero.` (`img_encoder.model.*`,
`text_encoder.model.*`, `fusion_module.*`), so the released state dict loads strictly by name.

Shapes (B images, T texts, D width, W = text_max_length word slots, N = h*w patches):
  image: global (B, D), local (B, N, D); memory [global; local] (B, 1 + N, D)
  text:  per-layer words (B, K, W, D) -> words (B, W, D) = sum over K layers, global (B, D) = sum over layers
         of the mean over all W slots (zero pads included: /W, not /num_words); memory (T, 1 + W, D)
  i2t[i, j] = head(decoder(query = text_g[j], memory = image tokens of i))      (B, T)
  t2i[j, i] = head(decoder(query = image_g[i], memory = text tokens of j))      (T, B)

The official fusion (`TQN_Model.forward`) repeats every query once per memory item and runs the decoder on
all B x T query rows; `fusion_reference` restates exactly that through core's `TransformerDecoder`.
`score_pairs` computes the same scores with batched tensor operations and no work per pair that does not
depend on the pair: the memory LayerNorm once per memory item, layer 0's query LayerNorm / projection once per
query (broadcast), and in every layer the cheapest exact factorisation of the attention products
(`pair_plan`): with long memories and few queries (image tokens at B <= 64) the key and value projections are
folded onto the per-pair side (scores = (Wk^T q) . m, output = Wv (P m)), with short memories (compacted
text) onto the memory side (scores = y . (Wq^T k), output = sum_h P_h (V_h Wo_h^T)); otherwise plain
projections through SDPA. Nothing is repeated B-fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.carzero.config import CarzeroModelConfig
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.layers.decoder import DecoderLayer, TransformerDecoder
from torch import nn

# ----------------------------------------------------------------------------------------------- fusion


class CarzeroFusion(nn.Module):
    """`TQN_Model` (models/dqn_wo_self_atten_mlp.py): shared LayerNorm, 4 decoder layers, MLP head.

    Official quirks kept: `logit_scale` is created and never used; `decoder_norm` is the same module as the
    decoder's final `norm` (two state-dict keys, one tensor, applied 3 times: memory, queries, output); every
    layer owns an unused `self_attn`/`norm1` (no gradient), so the release loads strictly.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int = 4,
        dim_feedforward: int = 1024,
        num_layers: int = 4,
        dropout: float = 0.1,
        head: str = "mlp",
        mlp_hidden: tuple[int, ...] = (1024, 512, 256),
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.d_model, self.nhead = d_model, nhead
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))  # unused, as official
        layer = DecoderLayer(
            d_model, nhead, dim_feedforward, dropout, "relu", normalize_before=True,
            self_attention=False, keep_unused_self_attention=True,
        )  # fmt: skip
        self.decoder_norm = nn.LayerNorm(d_model)
        self.decoder = TransformerDecoder(layer, num_layers, norm=self.decoder_norm)
        self.dropout_feas = nn.Dropout(dropout)
        if head == "mlp":
            mods: list[nn.Module] = []
            width = d_model
            for h in mlp_hidden:
                mods += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
                width = h
            mods.append(nn.Linear(width, 1))
            self.mlp_head = nn.Sequential(*mods)  # indices 0/3/6/9 for three hidden layers
        elif head == "linear":
            self.mlp_head = nn.Sequential(nn.Linear(d_model, 1))  # UNVERIFIED key name of that variant
        else:
            raise ConfigError(f"fusion head must be 'mlp' or 'linear', got '{head}'")
        self.apply(lambda m: _init_fusion_weights(m, init_std))

    def forward(self, memory, queries, need_weights: bool = False, memory_mask=None) -> PairScores:
        """(N, S, D) memory, (T, D) queries -> PairScores with logits (N, T) (batched scorer)."""
        return score_pairs(self, memory, queries, need_weights=need_weights, memory_mask=memory_mask)


def _init_fusion_weights(module: nn.Module, std: float = 0.02) -> None:
    # Official `_init_weights`: every Linear weight (out_proj included) and MHA in_proj ~ N(0, 0.02); biases
    # keep PyTorch defaults (MHA biases 0, Linear biases U(+-1/sqrt(fan_in))).
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, 0.0, std)
        nn.init.normal_(module.out_proj.weight, 0.0, std)


@dataclass
class PairScores:
    """Output of a pair scorer for N memory items x T queries."""

    logits: torch.Tensor  # (N, T)
    maps: list[torch.Tensor] = field(default_factory=list)  # per layer (N, T, S), heads averaged
    layer_states: list[torch.Tensor] = field(default_factory=list)  # per layer (N, T, D) query states
    simr: torch.Tensor | None = None  # (N, T, D) after the final norm (the MLP-head input)


def _mha_params(attn: nn.MultiheadAttention):
    # unbind, not slicing: its backward stacks the three gradients once instead of zero-filling the whole
    # (3D, D) in_proj gradient per slice
    d = attn.embed_dim
    return attn.in_proj_weight.view(3, d, d).unbind(0), attn.in_proj_bias.view(3, d).unbind(0)


KEY_MODES = ("project", "fold_query", "fold_key")
VALUE_MODES = ("project", "fold_value", "fold_out")


def pair_plan(rows: int, n: int, t: int, s: int, d: int, h: int) -> tuple[str, str]:
    """The cheapest (key mode, value mode) by multiply-adds for one layer; every mode gives the same scores.

    rows = distinct query rows (T in layer 0, N*T after it). Keys, with y the normalised query state:
      project     k = Wk m per memory token, q = Wq y per row, scores q.k     N S D^2 + rows D^2 + N T S D
      fold_query  q~_h = Wk_h^T q_h per row, scores q~_h . m (no key proj.)  2 rows D^2 + N T H S D
      fold_key    K~_h = Wq_h^T k_h per memory token, scores y . K~_h        2 N S D^2 + N T H S D
    Values, with P the attention probabilities:
      project     v = Wv m per memory token, P v, then Wo                     N S D^2 + N T S D + N T D^2
      fold_value  c_h = P_h m per pair, then Wv_h, then Wo                    N T H S D + 2 N T D^2
      fold_out    U_h = (Wv_h m) Wo_h^T per memory token, sum_h P_h U_h       2 N S D^2 + N T H S D
    Per-memory projections pay off when many queries share them (large T, long memories use `project`);
    per-pair folding when the memory is long and T small (image tokens at B <= 64); `fold_*` on the
    memory side when the memory is short (compacted text) and rows many. Ties keep `project`.
    """
    pairs, mem = n * t, n * s
    keys = {
        "project": mem * d * d + rows * d * d + pairs * s * d,
        "fold_query": 2 * rows * d * d + pairs * h * s * d,
        "fold_key": 2 * mem * d * d + pairs * h * s * d,
    }
    values = {
        "project": mem * d * d + pairs * s * d + pairs * d * d,
        "fold_value": pairs * h * s * d + 2 * pairs * d * d,
        "fold_out": 2 * mem * d * d + pairs * h * s * d,
    }
    return min(KEY_MODES, key=keys.__getitem__), min(VALUE_MODES, key=values.__getitem__)


def _attention_logits(mode, y, mem, wq, bq, wk, bk, h: int, scale: float) -> torch.Tensor:
    """Scaled scores (N, H, T, S) of queries y (R, T, D) (R = 1: shared by all memory items) on mem (N, S, D).

    Exact rewrites of (Wq y + bq)_h . (Wk m + bk)_h * scale: the bracket is multiplied out in a different
    order, no term is dropped (the ones constant over S still cancel in the softmax, as in the official code).
    """
    r, t, d = y.shape
    n, s, _ = mem.shape
    dh = d // h
    if mode == "fold_key":
        k = F.linear(mem, wk, bk).view(n, s, h, dh)
        k_t = torch.einsum("nshc,hcd->nhsd", k, wq.view(h, dh, d)) * scale  # (N, H, S, D): Wq_h^T k_h
        k_b = torch.einsum("nshc,hc->nhs", k, bq.view(h, dh)) * scale  # bq_h . k_h
        if r == 1:  # one (N*H*S, D) x (D, T) product
            out = (k_t.reshape(n * h * s, d) @ y[0].t()).view(n, h, s, t).transpose(2, 3)
        else:
            out = torch.matmul(y, k_t.reshape(n, h * s, d).transpose(1, 2)).view(n, t, h, s).transpose(1, 2)
        return out + k_b[:, :, None, :]
    q = F.linear(y, wq, bq).view(r, t, h, dh) * scale
    if mode == "fold_query":
        q_t = torch.einsum("rthc,hcd->rhtd", q, wk.view(h, dh, d))  # (R, H, T, D): Wk_h^T q_h
        q_b = torch.einsum("rthc,hc->rht", q, bk.view(h, dh))[..., None]  # q_h . bk_h, constant over S
        if r == 1:  # one (N*S, D) x (D, H*T) product
            out = (mem.reshape(n * s, d) @ q_t[0].reshape(h * t, d).t()).view(n, s, h, t).permute(0, 2, 3, 1)
        else:
            out = torch.matmul(q_t.reshape(n, h * t, d), mem.transpose(1, 2)).view(n, h, t, s)
        return out + q_b
    if mode != "project":
        raise ConfigError(f"key mode must be one of {KEY_MODES}, got '{mode}'")
    k = F.linear(mem, wk, bk).view(n, s, h, dh).permute(0, 2, 3, 1)  # (N, H, dh, S)
    return torch.matmul(q.transpose(1, 2), k)  # (R, H, T, dh) x (N, H, dh, S) -> (N, H, T, S)


def _attention_output(mode, probs, mem, wv, bv, out_proj: nn.Linear, h: int, dropped: bool) -> torch.Tensor:
    """out_proj(concat_h P_h (Wv m + bv)_h) as (N, T, D) for probabilities (N, H, T, S); exact rewrites.

    dropped: P went through dropout (its rows do not sum to 1)."""
    n, _, t, s = probs.shape
    d = mem.shape[-1]
    dh = d // h
    if mode == "fold_out":
        v = F.linear(mem, wv, bv).view(n, s, h, dh)
        wo = out_proj.weight.view(d, h, dh)
        u = torch.einsum("nshc,ehc->nhse", v, wo)  # (N, H, S, D): (Wv_h m + bv_h) Wo_h^T
        p = probs.transpose(1, 2).reshape(n, t, h * s)
        return torch.baddbmm(out_proj.bias, p, u.reshape(n, h * s, d))
    if mode == "fold_value":
        c = torch.matmul(probs.reshape(n, h * t, s), mem).view(n, h, t, d)  # P_h m
        o = torch.einsum("nhtd,hcd->nthc", c, wv.view(h, dh, d))  # Wv_h (P_h m)
        if dropped:  # + bv_h * sum_s P_h: dropout rescaled P, so its rows no longer sum to 1
            o = o + bv.view(h, dh) * probs.sum(dim=-1).transpose(1, 2)[..., None]
        else:
            o = o + bv.view(h, dh)
        return out_proj(o.reshape(n, t, d))
    if mode != "project":
        raise ConfigError(f"value mode must be one of {VALUE_MODES}, got '{mode}'")
    v = F.linear(mem, wv, bv).view(n, s, h, dh).transpose(1, 2)  # (N, H, S, dh)
    return out_proj(torch.matmul(probs, v).transpose(1, 2).reshape(n, t, d))


def score_pairs(
    fusion: CarzeroFusion,
    memory: torch.Tensor,
    queries: torch.Tensor,
    need_weights: bool = False,
    return_states: bool = False,
    memory_mask: torch.Tensor | None = None,
    memory_bias: torch.Tensor | None = None,
    modes: tuple[str, str] | None = None,
) -> PairScores:
    """Score every (memory item n, query t) pair with the fusion's weights, batched.

    memory (N, S, D) un-normalised tokens; queries (T, D) un-normalised global vectors; memory_mask (N, S)
    True = ignore (None: the official behaviour, nothing masked). Same maths as `fusion_reference` (up to
    float rounding), with no work repeated per pair that does not depend on the pair: the memory LayerNorm
    runs once per memory item, layer 0's query LayerNorm and projection once per query; each layer picks
    the cheapest exact factorisation of its key and value products (`pair_plan`; `modes` forces one; the
    plain projections without maps go through SDPA). need_weights returns the head-averaged attention maps.
    memory_bias (N, S) is added to every attention score (`compact_pad_memory` uses it to stand for repeated
    slots).
    """
    ln = fusion.decoder_norm
    n, s, d = memory.shape
    t = queries.shape[0]
    h = fusion.nhead
    scale = 1.0 / math.sqrt(d // h)
    mem = ln(memory)  # (N, S, D)
    x: torch.Tensor = ln(queries)[None]  # (1, T, D): broadcast over N until layer 0's residual
    bias = None
    if memory_bias is not None:
        bias = memory_bias.to(mem.dtype)[:, None, None, :]
    if memory_mask is not None:
        bias = torch.zeros(n, 1, 1, s, dtype=mem.dtype, device=mem.device) if bias is None else bias
        bias = bias.masked_fill(memory_mask[:, None, None, :].bool(), float("-inf"))
    maps: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    for layer in fusion.decoder.layers:
        attn = layer.multihead_attn
        (wq, wk, wv), (bq, bk, bv) = _mha_params(attn)
        key_mode, value_mode = modes or pair_plan(x.shape[0] * t, n, t, s, d, h)
        dropped = fusion.training and attn.dropout > 0
        if key_mode == value_mode == "project" and not need_weights:  # fused attention (SDPA)
            q = F.linear(layer.norm2(x), wq, bq).view(x.shape[0], t, h, d // h).transpose(1, 2)
            k = F.linear(mem, wk, bk).view(n, s, h, d // h).transpose(1, 2)  # (N, H, S, dh)
            v = F.linear(mem, wv, bv).view(n, s, h, d // h).transpose(1, 2)
            o = F.scaled_dot_product_attention(
                q.expand(n, -1, -1, -1), k, v, attn_mask=bias, dropout_p=attn.dropout if dropped else 0.0
            )  # (N, H, T, dh)
            attn_out = attn.out_proj(o.transpose(1, 2).reshape(n, t, d))
        else:
            scores = _attention_logits(key_mode, layer.norm2(x), mem, wq, bq, wk, bk, h, scale)
            if bias is not None:
                scores = scores + bias
            probs = scores.softmax(dim=-1)  # (N, H, T, S)
            if need_weights:
                maps.append(probs.mean(dim=1))  # (N, T, S)
            if dropped:
                probs = F.dropout(probs, attn.dropout, training=True)
            attn_out = _attention_output(value_mode, probs, mem, wv, bv, attn.out_proj, h, dropped)
        x = x + layer.dropout2(attn_out)
        x = x + layer._ff_block(layer.norm3(x))  # (N, T, D)
        if return_states:
            states.append(x)
    if x.shape[0] != n:  # zero decoder layers: still one row per pair
        x = x.expand(n, -1, -1)
    simr = fusion.decoder.norm(x)
    logits = fusion.mlp_head(fusion.dropout_feas(simr)).squeeze(-1)  # (N, T)
    return PairScores(logits, maps, states, simr if return_states else None)


def compact_pad_memory(
    memory: torch.Tensor, first_pad: torch.Tensor, mask: torch.Tensor | None = None, keep: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Drop the repeated zero-pad slots of a text memory, keeping their attention weight (EXACT).

    memory (T, S, D) whose slots first_pad[j]..S-1 are zero vectors (the word slots after [SEP]: identical
    after the LayerNorm, so identical keys and values). Keeps the first max(first_pad) + keep slots and adds
    log(P_j / c_j) to the c_j kept pad slots of row j (P_j = its total pad count): softmax then gives the
    pads the same total weight and the output is unchanged up to rounding. The head-averaged maps of the
    compacted memory are not the full-length ones; use it where no maps are read (training).
    Returns (memory (T, S', D), bias (T, S'), mask (T, S') or None).
    """
    t, s, _ = memory.shape
    width = min(s, int(first_pad.max()) + keep)
    pos = torch.arange(width, device=memory.device)[None]  # (1, S')
    first = first_pad[:, None].to(memory.device)
    total = (s - first).clamp(min=0)  # P_j
    kept = (width - first).clamp(min=0)  # c_j
    ratio = torch.where(
        kept > 0, total.double() / kept.clamp(min=1).double(), torch.ones_like(total.double())
    )
    bias = torch.where(pos >= first, ratio.log(), torch.zeros_like(ratio)).to(memory.dtype)
    return memory[:, :width], bias, (mask[:, :width] if mask is not None else None)


def fusion_reference(
    fusion: CarzeroFusion, memory: torch.Tensor, queries: torch.Tensor, need_weights: bool = True
) -> PairScores:
    """The official `TQN_Model.forward`, restated: queries repeated per memory item, decoder on N x T rows.

    memory (N, S, D), queries (T, D) -> logits (N, T) and per-layer (N, T, S) maps. The official call keeps
    PyTorch MHA's default need_weights=True (the unfused path); kept here as the default.
    """
    n = memory.shape[0]
    mem = fusion.decoder_norm(memory.transpose(0, 1))  # (S, N, D)
    q = fusion.decoder_norm(queries.unsqueeze(1).repeat(1, n, 1))  # (T, N, D): the B-fold repeat
    out, maps = fusion.decoder(q, mem, need_weights=need_weights)  # (T, N, D), [(N, T, S)]
    out = fusion.dropout_feas(out).transpose(0, 1)  # (N, T, D)
    return PairScores(fusion.mlp_head(out).squeeze(-1), maps, [], None)


# ----------------------------------------------------------------------------------------------- text


class CarzeroTextEncoder(nn.Module):
    """`BertEncoder` (models/text_model.py): last 4 hidden states, word pieces summed into words per layer.

    The official loop walks the ids per token (`aggregate_tokens`); here core's `merge_word_pieces` does it
    with one scatter_add. Word slots = `width` (97): the merged words are zero-padded to it whatever the
    token length, so running BERT on trimmed padding gives the same numbers (BERT masks the pads).
    """

    def __init__(self, model: nn.Module, width: int, last_n_layers: int = 4) -> None:
        super().__init__()
        self.model = model
        self.width = width
        self.last_n_layers = last_n_layers
        self.register_buffer("continuation", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.sep_token_id = 102

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def set_tokenizer(self, tokenizer) -> None:
        """Read the word-piece table ("##" ids) and the [SEP] id from the tokenizer used for the inputs."""
        from cxrvlp.core.encoders.text import continuation_table

        self.continuation = continuation_table(tokenizer).to(self.continuation.device)
        self.sep_token_id = int(tokenizer.sep_token_id)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> dict[str, torch.Tensor]:
        """(B, L) tokens -> words_per_layer (B, K, W, D), words (B, W, D), global (B, D), num_words (B,)."""
        from cxrvlp.core.encoders.text import merge_word_pieces

        if self.continuation.numel() == 0:
            raise ConfigError("CarzeroTextEncoder: call set_tokenizer(tokenizer) before encoding text")
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True,
            **kwargs,
        )  # fmt: skip
        hidden = torch.stack(out.hidden_states[-self.last_n_layers :], dim=1)  # (B, K, L, D)
        merged = merge_word_pieces(
            hidden, input_ids, self.continuation, self.sep_token_id, out_len=self.width
        )
        per_layer = merged.embeddings  # (B, K, W, D), exact zeros after the last word
        return {
            "hidden_last": hidden,
            "words_per_layer": per_layer,
            "words": per_layer.sum(dim=1),  # (B, W, D)
            "global": per_layer.mean(dim=2).sum(dim=1),  # (B, D): mean over all W slots, then layer sum
            "num_words": merged.num_words,
            "word_mask": merged.word_mask,
        }


# ----------------------------------------------------------------------------------------------- model


@dataclass
class CarzeroOutput:
    """Features and the two B x T logit matrices of one forward."""

    img_emb_g: torch.Tensor  # (B, D)
    img_emb_l: torch.Tensor  # (B, N, D)
    text_emb_g: torch.Tensor  # (T, D)
    text_emb_l: torch.Tensor  # (T, W, D)
    i2t: torch.Tensor  # (B, T)
    t2i: torch.Tensor  # (T, B)
    extra: dict[str, Any] = field(default_factory=dict)


class Carzero(nn.Module):
    """CARZero (released GL-MLP variant by default). `forward(images, tokens)` -> CarzeroOutput."""

    def __init__(self, config: CarzeroModelConfig) -> None:
        super().__init__()
        self.config = config
        if config.image_encoder == "vit":
            from cxrvlp.core.encoders.vit import ViTConfig, ViTEncoder, load_vit_weights

            # model.image_size drives the ViT input size (one key for the size overrides)
            self.img_encoder = ViTEncoder(ViTConfig(**{**config.vit, "img_size": config.image_size}))
            if config.image_pretrained:
                load_vit_weights(self.img_encoder, config.image_pretrained, "")
        else:
            from cxrvlp.core.encoders import create_image_encoder

            pretrained = config.image_pretrained if config.image_pretrained is not None else False
            self.img_encoder = create_image_encoder(config.image_encoder, pretrained=pretrained)
        if config.text_encoder == "bert":
            from cxrvlp.core.encoders.text import load_hf_text_model

            bert = load_hf_text_model(
                config.text_pretrained or None,
                None if config.text_pretrained else dict(config.text_config),
                config.text_attn_implementation,
                add_pooling_layer=True,
            )
        else:
            from cxrvlp.core.encoders import create_text_encoder

            pretrained = config.text_pretrained if config.text_pretrained is not None else False
            bert = create_text_encoder(config.text_encoder, pretrained=pretrained).model
        self.text_encoder = CarzeroTextEncoder(bert, config.text_max_length, config.text_last_n_layers)
        img_dim = self._image_dim()
        txt_dim = self.text_encoder.hidden_size
        d = config.embed_dim
        if d is None:
            if img_dim != txt_dim:
                raise ConfigError(
                    f"image width {img_dim} != text width {txt_dim}: set model.embed_dim (linear embedders, "
                    "ours) or use encoders of the same width (the release: 768 and 768)"
                )
            d = img_dim
        # [ours when not Identity] the release's global/local embedders are nn.Identity
        self.img_global_embedder = nn.Identity() if img_dim == d else nn.Linear(img_dim, d)
        self.img_local_embedder = nn.Identity() if img_dim == d else nn.Linear(img_dim, d)
        self.text_global_embedder = nn.Identity() if txt_dim == d else nn.Linear(txt_dim, d)
        self.text_local_embedder = nn.Identity() if txt_dim == d else nn.Linear(txt_dim, d)
        self.fusion_module = CarzeroFusion(
            d, config.fusion_heads, config.fusion_ffn, config.fusion_layers, config.fusion_dropout,
            config.fusion_head, tuple(config.mlp_hidden), config.fusion_init_std,
        )  # fmt: skip
        self.embed_dim = d

    def _image_dim(self) -> int:
        dim = getattr(self.img_encoder, "out_dim", None) or getattr(self.img_encoder, "feature_dim", None)
        if dim:
            return int(dim)
        with torch.no_grad():
            x = torch.zeros(1, 3, self.config.image_size, self.config.image_size)
            return int(self.img_encoder.eval()(x).global_feat.shape[-1])

    def set_tokenizer(self, tokenizer) -> None:
        """The tokenizer whose ids the text inputs hold (word-piece table for word merging)."""
        self.text_encoder.set_tokenizer(tokenizer)

    # ------------------------------------------------------------------------------ encoders
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> global (B, D), local (B, N, D) (row-major patches)."""
        out = self.img_encoder(images)
        return self.img_global_embedder(out.global_feat), self.img_local_embedder(out.local_feat)

    def encode_text(self, input_ids, attention_mask, token_type_ids=None, return_all: bool = False):
        """(T, L) tokens -> global (T, D), words (T, W, D) [, the text encoder's dict]."""
        out = self.text_encoder(input_ids, attention_mask, token_type_ids)
        g, w = self.text_global_embedder(out["global"]), self.text_local_embedder(out["words"])
        return (g, w, out) if return_all else (g, w)

    # ------------------------------------------------------------------------------ memories
    def image_memory(self, img_g: torch.Tensor, img_l: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, D) [global; local] (released) or (B, N, D) local only."""
        if self.config.fusion_memory == "local":
            return img_l
        return torch.cat([img_g[:, None], img_l], dim=1)

    def text_memory(self, txt_g: torch.Tensor, txt_l: torch.Tensor, word_mask=None):
        """(T, 1 + W, D) memory and its (T, 1 + W) padding mask (None unless `text_padding_mask`)."""
        mask = None
        if self.config.fusion_memory == "local":
            mem = txt_l
            if self.config.text_padding_mask and word_mask is not None:
                mask = ~word_mask
        else:
            mem = torch.cat([txt_g[:, None], txt_l], dim=1)
            if self.config.text_padding_mask and word_mask is not None:
                mask = torch.cat([torch.zeros_like(word_mask[:, :1]), ~word_mask], dim=1)
        return mem, mask

    # ------------------------------------------------------------------------------ scoring
    def score_i2t(self, img_g, img_l, txt_g, need_weights: bool = False, return_states: bool = False):
        """i2t[i, j]: memory = image i tokens, query = text j global -> PairScores (B, T)."""
        return score_pairs(
            self.fusion_module, self.image_memory(img_g, img_l), txt_g, need_weights, return_states
        )

    def score_t2i(
        self, img_g, txt_g, txt_l, word_mask=None, need_weights=False, return_states=False, compact=None
    ):
        """t2i[j, i]: memory = text j tokens, query = image i global -> PairScores (T, B).

        compact (default: config.compact_text_pads, off when maps are asked for) scores against the memory
        with its trailing zero-pad slots folded into one weighted slot (`compact_pad_memory`, EXACT).
        """
        mem, mask = self.text_memory(txt_g, txt_l, word_mask)
        compact = self.config.compact_text_pads if compact is None else compact
        if compact and word_mask is not None and not need_weights:
            first = word_mask.sum(dim=1) + (0 if self.config.fusion_memory == "local" else 1)
            mem, bias, mask = compact_pad_memory(mem, first, mask)
            return score_pairs(self.fusion_module, mem, img_g, False, return_states, mask, bias)
        return score_pairs(self.fusion_module, mem, img_g, need_weights, return_states, mask)

    def forward(self, images: torch.Tensor, tokens: dict[str, torch.Tensor]) -> CarzeroOutput:
        """Training forward: every (image, text) pair of the batch scored in both directions."""
        img_g, img_l = self.encode_image(images)
        txt_g, txt_l, tout = self.encode_text(
            tokens["input_ids"], tokens["attention_mask"], tokens.get("token_type_ids"), return_all=True
        )
        i2t = self.score_i2t(img_g, img_l, txt_g).logits  # (B, T)
        t2i = self.score_t2i(img_g, txt_g, txt_l, tout["word_mask"]).logits  # (T, B)
        return CarzeroOutput(img_g, img_l, txt_g, txt_l, i2t, t2i)


def build_model(config: CarzeroModelConfig | dict[str, Any]) -> Carzero:
    """A Carzero model from a config (dataclass or dict)."""
    if isinstance(config, dict):
        config = CarzeroModelConfig.from_dict(config)
    return Carzero(config)


def save_model(model: Carzero, out_dir, tokenizer=None, extra: dict[str, Any] | None = None):
    """`save_pretrained` (safetensors + config.json) plus the tokenizer in `out_dir/tokenizer/`."""
    from pathlib import Path

    from cxrvlp.core.training.checkpoint import save_pretrained

    out = save_pretrained(
        model, {"model": model.config.to_dict(), **(extra or {})}, out_dir, model_name="carzero"
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(str(Path(out) / "tokenizer"))
    return out


def load_pretrained(pretrained_dir) -> tuple[Carzero, Any]:
    """(model, tokenizer folder or name) from a folder written by `save_model` / training; strict load."""
    from pathlib import Path

    from cxrvlp.core.training.checkpoint import load_pretrained_weights, read_pretrained_config

    doc = read_pretrained_config(pretrained_dir)
    mcfg = dict(doc["config"]["model"], image_pretrained=None, text_pretrained=None)
    model = build_model(mcfg)
    load_pretrained_weights(model, pretrained_dir, strict=True)
    tok_dir = Path(pretrained_dir) / "tokenizer"
    return model.eval(), (tok_dir if tok_dir.is_dir() else model.config.tokenizer)
