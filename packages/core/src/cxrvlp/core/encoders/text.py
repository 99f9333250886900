"""HF BERT-family text encoder (layer aggregation, pooling) and vectorised word-piece -> word merging.

Word merging follows GLoRIA / AFLoc / CARZero / MGCA (`aggregate_tokens` in their code): walking the tokens up
to the first [SEP], a token not starting with "##" starts a new word and "##" pieces are added (summed) to the
current word; [CLS] is the first word; [SEP] is appended as its own word; tokens after it are dropped and the
word sequence is zero-padded. The official loops do this per token in Python; here one scatter_add does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from cxrvlp.core.encoders.base import TextEncoderOutput, register_text_encoder
from cxrvlp.core.errors import ConfigError
from torch import nn

# BERT-base, cased vocabulary of 28,996 (emilyalsentzer/Bio_ClinicalBERT and the BERT-base checkpoints the
# methods start from) as a transformers BertConfig dict: what the methods' text configs default to
BERT_BASE_CASED: dict = dict(
    vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12, initializer_range=0.02, pad_token_id=0,
)  # fmt: skip

POOLINGS = ("cls", "eos", "mean", "pooler", "none")
LAYER_AGGREGATIONS = ("sum", "mean", "last", "concat")


# ------------------------------------------------------------------------------------ word-piece merging
def continuation_table(tokenizer) -> torch.Tensor:
    """(V,) bool: True for ids whose token is a WordPiece continuation ("##...")."""
    vocab = tokenizer.get_vocab()
    table = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    for tok, idx in vocab.items():
        if tok.startswith("##"):
            table[idx] = True
    return table


def token_prefix_table(tokenizer, prefix: str) -> torch.Tensor:
    """(V,) bool: True for ids whose token string starts with `prefix` (e.g. "[" for AFLoc's unit count)."""
    vocab = tokenizer.get_vocab()
    table = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    for tok, idx in vocab.items():
        if tok.startswith(prefix):
            table[idx] = True
    return table


@dataclass
class MergedWords:
    """Words built from word pieces; W = out_len positions, zero / pad beyond `num_words`."""

    embeddings: (
        torch.Tensor
    )  # (B, W, D) or (B, K, W, D): sums of the pieces' vectors, zeros after the last word
    word_mask: torch.Tensor  # (B, W) bool, True for real word slots ([CLS] and [SEP] included)
    num_words: torch.Tensor  # (B,) number of word slots used
    word_index: torch.Tensor  # (B, L) word slot of every token, -1 for dropped tokens (after [SEP])
    first_token_ids: torch.Tensor  # (B, W) id of each word's first piece, pad_token_id beyond num_words
    weights: torch.Tensor | None = None  # (B, W) summed token weights, when given


def word_index_from_ids(
    input_ids: torch.Tensor, continuation: torch.Tensor, sep_token_id: int, close_at_end: bool = True
) -> torch.Tensor:
    """(B, L) word slot per token (-1 = dropped): new word at each non-"##" token, stop after first [SEP].

    continuation: (V,) table from `continuation_table` or a (B, L) bool mask. close_at_end=False drops the
    last, still open word of a row without [SEP] (MGCA never closes it).
    """
    cont = continuation.to(input_ids.device)
    cont = cont[input_ids] if cont.dim() == 1 else cont.bool()  # (B, L)
    is_sep = input_ids == sep_token_id
    seps_before = torch.cumsum(is_sep.long(), dim=1) - is_sep.long()
    valid = seps_before == 0  # tokens up to and including the first [SEP]
    starts = ~cont & valid
    starts[:, 0] = valid[:, 0]  # the first token always opens a word
    word_index = torch.cumsum(starts.long(), dim=1) - 1
    word_index = torch.where(valid, word_index, torch.full_like(word_index, -1))
    if not close_at_end:
        no_sep = ~is_sep.any(dim=1, keepdim=True)  # (B, 1)
        last = word_index.max(dim=1, keepdim=True).values
        word_index = torch.where(no_sep & (word_index == last), torch.full_like(word_index, -1), word_index)
    return word_index


def merge_word_pieces(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    continuation: torch.Tensor,
    sep_token_id: int,
    out_len: int | None = None,
    token_weights: torch.Tensor | None = None,
    close_at_end: bool = True,
    pad_token_id: int = 0,
) -> MergedWords:
    """Sum word-piece vectors into words (GLoRIA / AFLoc / CARZero / MGCA convention), vectorised.

    hidden: (B, L, D) or (B, K, L, D) (K layers); input_ids (B, L); out_len: word slots W (default L, as the
    official code pads back to the token length). token_weights (B, L) are summed per word the same way
    (MGCA passes its shifted [CLS]-attention weights here).
    """
    bsz, seq = input_ids.shape
    width = out_len or seq
    word_index = word_index_from_ids(input_ids, continuation, sep_token_id, close_at_end)
    num_words = (word_index.max(dim=1).values + 1).clamp(max=width)
    dump = torch.where(
        (word_index < 0) | (word_index >= width), torch.full_like(word_index, width), word_index
    )
    # scatter into W + 1 slots; slot W collects the dropped tokens and is cut off
    if hidden.dim() == 3:
        idx = dump[:, :, None].expand(-1, -1, hidden.shape[-1])
        out = hidden.new_zeros(bsz, width + 1, hidden.shape[-1]).scatter_add(1, idx, hidden)
        embeddings = out[:, :width]  # (B, W, D)
    elif hidden.dim() == 4:
        idx = dump[:, None, :, None].expand(-1, hidden.shape[1], -1, hidden.shape[-1])
        out = hidden.new_zeros(bsz, hidden.shape[1], width + 1, hidden.shape[-1]).scatter_add(2, idx, hidden)
        embeddings = out[:, :, :width]  # (B, K, W, D)
    else:
        raise ValueError(f"hidden must be (B, L, D) or (B, K, L, D), got shape {tuple(hidden.shape)}")
    slots = torch.arange(width, device=input_ids.device)
    word_mask = slots[None] < num_words[:, None]
    # the first piece of word w is the token where word_index first equals w
    is_first = torch.ones_like(word_index, dtype=torch.bool)
    is_first[:, 1:] = word_index[:, 1:] != word_index[:, :-1]
    first_slot = torch.where(is_first & (dump < width), dump, torch.full_like(dump, width))
    first_ids = torch.full((bsz, width + 1), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    first_ids.scatter_(1, first_slot, input_ids)
    first_ids = first_ids[:, :width]
    first_ids = torch.where(word_mask, first_ids, torch.full_like(first_ids, pad_token_id))
    weights = None
    if token_weights is not None:
        w = token_weights.new_zeros(bsz, width + 1).scatter_add(1, dump, token_weights)
        weights = w[:, :width]
    return MergedWords(embeddings, word_mask, num_words, word_index, first_ids, weights)


@dataclass
class SentenceUnits:
    """AFLoc sentence units: [CLS], one mean vector per sentence, [SEP], zero padding."""

    embeddings: torch.Tensor  # (B, W, D) or (B, K, W, D)
    num_sentences: torch.Tensor  # (B,) k; AFLoc's unit count for the local loss is k + 1 ([CLS] + sentences)
    unit_mask: torch.Tensor  # (B, W) bool over the k + 2 used slots


def sentence_units(
    merged: MergedWords, period_token_id: int, embeddings: torch.Tensor | None = None
) -> SentenceUnits:
    """Group merged words into AFLoc's sentence units (`aggregate_tokens_sent_as_units`), vectorised.

    Boundaries are the "." words and the final [SEP]; the word just before [SEP] is never a boundary (a
    trailing "." joins the last sentence). Unit 0 = [CLS]; unit 1 + i = mean of the words strictly between
    boundaries i - 1 and i (words 1.. for the first); then the [SEP] vector; zeros after. An empty sentence
    (two "." in a row) is NaN, as in the official code. Rows must end with a [SEP] word (tokenizers add it).
    `embeddings` defaults to merged.embeddings; pass e.g. its layer sum instead (the same numbers).
    """
    emb = merged.embeddings if embeddings is None else embeddings
    bsz, width = merged.word_mask.shape
    pos = torch.arange(width, device=emb.device)[None]  # (1, W)
    sep_pos = (merged.num_words - 1)[:, None]  # (B, 1) slot of the [SEP] word
    # a "." word is a single "." piece: its first piece is "." and the next token starts another word
    is_period = (merged.first_token_ids == period_token_id) & merged.word_mask
    n_pieces = torch.zeros(bsz, width + 1, dtype=torch.long, device=emb.device)
    dump = torch.where(merged.word_index < 0, torch.full_like(merged.word_index, width), merged.word_index)
    n_pieces.scatter_add_(1, dump.clamp(max=width), torch.ones_like(dump))
    is_period &= n_pieces[:, :width] == 1
    boundary = (is_period & (pos != sep_pos - 1) & (pos < sep_pos)) | (pos == sep_pos)
    n_sent = boundary.sum(1)  # (B,) boundaries = sentences (the last one closed by [SEP])
    sent_of_word = torch.cumsum(boundary.long(), dim=1) - boundary.long()  # boundaries strictly before
    member = (pos > 0) & (pos < sep_pos) & ~boundary
    slot = torch.where(member, 1 + sent_of_word, torch.full_like(sent_of_word, width))  # dump slot W
    counts = torch.zeros(bsz, width + 1, dtype=emb.dtype, device=emb.device)
    counts.scatter_add_(1, slot, member.to(emb.dtype))
    word_dim = emb.dim() - 2  # 1 for (B, W, D), 2 for (B, K, W, D)
    if word_dim not in (1, 2):
        raise ValueError(f"embeddings must be (B, W, D) or (B, K, W, D), got shape {tuple(emb.shape)}")

    def per_slot(x: torch.Tensor) -> torch.Tensor:  # (B, W) -> broadcastable against emb
        x = x.expand(bsz, width)
        return x[:, :, None] if word_dim == 1 else x[:, None, :, None]

    size = list(emb.shape)
    size[word_dim] = width + 1
    sums = emb.new_zeros(size).scatter_add(word_dim, per_slot(slot).expand_as(emb), emb)
    sums = sums.narrow(word_dim, 0, width)
    cnt = per_slot(counts[:, :width])
    is_sent = (pos >= 1) & (pos <= n_sent[:, None])  # slots 1..k
    out = torch.where(per_slot(is_sent), sums / cnt, torch.zeros_like(sums))  # 0 / 0 -> NaN, as official
    cls_vec = emb.narrow(word_dim, 0, 1)  # keeps the word axis, length 1
    sep_vec = emb.gather(word_dim, per_slot(sep_pos).narrow(word_dim, 0, 1).expand_as(cls_vec))
    out = torch.where(per_slot(pos == 0), cls_vec, out)
    out = torch.where(per_slot(pos == n_sent[:, None] + 1), sep_vec, out)
    unit_mask = (pos <= n_sent[:, None] + 1).expand(bsz, width)
    return SentenceUnits(out, n_sent, unit_mask)


def word_strings(
    tokenizer, input_ids: torch.Tensor, word_index: torch.Tensor, pad: str = "[PAD]"
) -> list[list[str]]:
    """Word labels as the official code builds them ("##" stripped, pieces joined), padded with "[PAD]".

    For display and label-based rules (sentence boundaries); not needed for the embeddings.
    """
    width = input_ids.shape[1]
    rows = []
    for ids, widx in zip(input_ids.tolist(), word_index.tolist()):
        words: list[str] = []
        for tok, w in zip(tokenizer.convert_ids_to_tokens(ids), widx):
            if w < 0:
                continue
            piece = tok[2:] if tok.startswith("##") else tok
            if w == len(words):
                words.append(piece)
            else:
                words[w] += piece
        rows.append(words + [pad] * (width - len(words)))
    return rows


# ------------------------------------------------------------------------------------ encoder
def aggregate_layers(hidden_states: tuple[torch.Tensor, ...], last_n: int, how: str) -> torch.Tensor:
    """Combine the last `last_n` hidden states (never the embedding output when last_n <= depth)."""
    if how not in LAYER_AGGREGATIONS:
        raise ConfigError(f"layer_aggregation must be one of {LAYER_AGGREGATIONS}, got '{how}'")
    if how == "last" or last_n == 1:
        return hidden_states[-1]
    layers = torch.stack(hidden_states[-last_n:], dim=1)  # (B, K, L, D)
    if how == "sum":
        return layers.sum(1)
    if how == "mean":
        return layers.mean(1)
    return torch.cat(hidden_states[-last_n:], dim=-1)  # (B, L, K*D)


def pool_tokens(features: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor | None:
    """(B, L, D) -> (B, D): [CLS] (index 0), eos (the [SEP] at mask.sum-1, CXR-CLIP) or masked mean."""
    if pooling == "cls":
        return features[:, 0]
    if pooling == "eos":
        idx = attention_mask.long().sum(-1) - 1  # (B,)
        return features[torch.arange(features.shape[0], device=features.device), idx]
    if pooling == "mean":
        m = attention_mask.to(features.dtype).unsqueeze(-1)
        return (features * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if pooling == "none":
        return None
    raise ConfigError(f"pooling must be one of {POOLINGS}, got '{pooling}'")


class HFTextEncoder(nn.Module):
    """A transformers encoder (`self.model`) with layer aggregation and pooling; returns TextEncoderOutput.

    `last_hidden_state` of the output holds the *aggregated* token features (e.g. the sum of the last 4
    layers for GLoRIA/AFLoc/CARZero); `hidden_states` holds every layer when `return_hidden_states`.
    """

    def __init__(
        self,
        model: nn.Module,
        last_n_layers: int = 1,
        layer_aggregation: str = "sum",
        pooling: str = "cls",
        output_attentions: bool = False,
        return_hidden_states: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        if layer_aggregation not in LAYER_AGGREGATIONS:
            raise ConfigError(
                f"layer_aggregation must be one of {LAYER_AGGREGATIONS}, got '{layer_aggregation}'"
            )
        depth = model.config.num_hidden_layers
        if not 1 <= last_n_layers <= depth:
            raise ConfigError(f"last_n_layers must be in 1..{depth}, got {last_n_layers}")
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ConfigError("pooling='pooler' needs a model built with its pooling layer")
        self.model = model
        self.last_n_layers = last_n_layers
        self.layer_aggregation = layer_aggregation
        self.pooling = pooling
        self.output_attentions = output_attentions
        self.return_hidden_states = return_hidden_states

    @property
    def hidden_size(self) -> int:
        """Width of one layer's token features (x last_n_layers for 'concat')."""
        h = self.model.config.hidden_size
        return h * self.last_n_layers if self.layer_aggregation == "concat" else h

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> TextEncoderOutput:
        """Encode (B, L) token ids; position_ids can be forced (MGCA's all-zero positions)."""
        need_layers = self.last_n_layers > 1 or self.return_hidden_states
        kwargs = {}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=need_layers,
            output_attentions=self.output_attentions,
            return_dict=True,
            **kwargs,
        )
        if need_layers:
            feats = aggregate_layers(out.hidden_states, self.last_n_layers, self.layer_aggregation)
        else:
            feats = out.last_hidden_state  # (B, L, D)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            pooled = pool_tokens(feats, attention_mask, self.pooling)
        attn = out.attentions[-1] if self.output_attentions and out.attentions else None
        return TextEncoderOutput(
            last_hidden_state=feats,
            attention_mask=attention_mask,
            pooled=pooled,
            hidden_states=tuple(out.hidden_states) if self.return_hidden_states else None,
            attentions=attn,
        )


def _resolve_attn(attn_implementation: str | None, output_attentions: bool) -> str:
    if attn_implementation is None:
        return "eager" if output_attentions else "sdpa"
    if output_attentions and attn_implementation != "eager":
        raise ConfigError(
            f"output_attentions=True needs attn_implementation='eager' (got '{attn_implementation}'): "
            "fused attention does not return probabilities"
        )
    return attn_implementation


def load_hf_text_model(
    pretrained: str | Path | None = None,
    config=None,
    attn_implementation: str = "sdpa",
    add_pooling_layer: bool = True,
) -> nn.Module:
    """A transformers AutoModel from a hub name / local folder, or built from a config (object or dict)."""
    from transformers import AutoModel, BertConfig, PretrainedConfig

    if (pretrained is None) == (config is None):
        raise ConfigError("give exactly one of `pretrained` (hub name or folder) and `config`")
    if config is not None:
        if isinstance(config, dict):
            config = BertConfig(**config)
        if not isinstance(config, PretrainedConfig):
            raise ConfigError(f"config must be a transformers config or a dict, got {type(config).__name__}")
        return AutoModel.from_config(
            config, attn_implementation=attn_implementation, add_pooling_layer=add_pooling_layer
        )
    try:
        return AutoModel.from_pretrained(
            str(pretrained), attn_implementation=attn_implementation, add_pooling_layer=add_pooling_layer
        )
    except OSError as err:
        raise ConfigError(
            f"cannot load text model '{pretrained}': not a local folder and the hub copy is not reachable or "
            f"cached (offline?). Pass a local folder or a config. Cause: {err}"
        ) from err


@register_text_encoder("bert")
def build_bert_encoder(
    pretrained: str | Path | None = None,
    config=None,
    last_n_layers: int = 1,
    layer_aggregation: str = "sum",
    pooling: str = "cls",
    attn_implementation: str | None = None,
    add_pooling_layer: bool = True,
    output_attentions: bool = False,
    return_hidden_states: bool = False,
) -> HFTextEncoder:
    """BERT family text encoder from a hub name / local folder (`pretrained`) or a BertConfig (`config`).

    Defaults: SDPA attention (eager when attentions are requested), [CLS] pooling of the last layer.
    GLoRIA/AFLoc/CARZero: last_n_layers=4, layer_aggregation="sum"; CXR-CLIP: pooling="eos".
    """
    attn = _resolve_attn(attn_implementation, output_attentions)
    model = load_hf_text_model(pretrained, config, attn, add_pooling_layer)
    return HFTextEncoder(
        model, last_n_layers, layer_aggregation, pooling, output_attentions, return_hidden_states
    )
