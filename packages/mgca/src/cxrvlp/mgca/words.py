"""MGCA's word-piece aggregation (`aggregate_tokens` of the official encoder), vectorised.

Official rules (spec §3.2, parity README recipe 2): scan positions i = 0 .. L-2 (the token list is zipped with
the L-1 [CLS] attentions `a`, so token i is paired with a[i] = attention to token i+1: the off-by-one quirk);
a `##` piece joins the current word (features and weights summed); any other token closes it and opens a new
one; at [SEP] the current word is closed, [SEP] is appended as its own word and the scan stops. A report that
never reaches [SEP] inside the scan (truncated at max length) loses its last open word. Words are right-padded
with zero vectors / zero weight to `num_slots`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AggregatedWords:
    """Word-level text features; slot 0 is [CLS]."""

    feats: torch.Tensor  # (B, S, D) summed token features, zero in pad slots
    weights: torch.Tensor  # (B, S) summed token weights, zero in pad slots
    pad_mask: torch.Tensor  # (B, S) bool, True for "[PAD]" slots (after the last word)
    word_index: torch.Tensor  # (B, L) slot of each token, -1 when the token is not in any word
    num_words: torch.Tensor  # (B,) words per sample (incl. [CLS] and [SEP])


def aggregate_word_pieces(
    hidden: torch.Tensor,
    cls_attn: torch.Tensor,
    input_ids: torch.Tensor,
    piece_mask: torch.Tensor | None,
    sep_token_id: int,
    num_slots: int,
    shift_weights: bool = True,
) -> AggregatedWords:
    """hidden (B, L, D), cls_attn (B, L) [CLS]->token attention (column 0 = [CLS] itself), ids (B, L),
    piece_mask (B, L) True for `##` tokens -> words in `num_slots` slots.

    shift_weights=True pairs token i with the attention to token i+1 (the official quirk); False uses its own.
    """
    B, L, D = hidden.shape
    device = hidden.device
    n_scan = L - 1  # official: zip of L tokens with L-1 attentions
    pos = torch.arange(L, device=device)
    scanned = (pos < n_scan).expand(B, L)
    is_sep = (input_ids == sep_token_id) & scanned
    has_sep = is_sep.any(dim=1)  # (B,)
    # first scanned [SEP] (or L when none): tokens after it are never visited
    sep_pos = torch.where(
        has_sep, is_sep.float().argmax(dim=1), torch.full_like(has_sep, L, dtype=torch.long)
    )
    visited = scanned & (pos[None, :] <= sep_pos[:, None])  # (B, L)
    pieces = piece_mask.bool() if piece_mask is not None else torch.zeros_like(visited)
    starts = visited & ~pieces
    starts[:, 0] = visited[:, 0]  # the first token always opens a word
    word_index = torch.cumsum(starts.long(), dim=1) - 1  # (B, L)
    num_words = starts.sum(dim=1)  # (B,)
    # no [SEP] reached: the last open word is never closed, hence dropped
    num_words = torch.where(has_sep, num_words, num_words - 1)
    keep = visited & (word_index < num_words[:, None]) & (word_index >= 0)
    word_index = torch.where(keep, word_index, torch.full_like(word_index, -1))

    if shift_weights:
        w_tok = torch.cat([cls_attn[:, 1:], cls_attn.new_zeros(B, 1)], dim=1)  # token i <- attention to i+1
    else:
        w_tok = cls_attn
    slot = torch.where(keep, word_index, torch.full_like(word_index, num_slots))  # dump slot for the rest
    feats = hidden.new_zeros(B, num_slots + 1, D).scatter_add_(1, slot[:, :, None].expand(B, L, D), hidden)
    weights = w_tok.new_zeros(B, num_slots + 1).scatter_add_(1, slot, w_tok.to(w_tok.dtype))
    pad_mask = torch.arange(num_slots, device=device)[None, :] >= num_words[:, None]
    return AggregatedWords(
        feats=feats[:, :num_slots],
        weights=weights[:, :num_slots],
        pad_mask=pad_mask,
        word_index=word_index,
        num_words=num_words,
    )


def word_strings(tokens: list[list[str]], agg: AggregatedWords, num_slots: int) -> list[list[str]]:
    """The word strings per sample (as the official `sents`): pieces joined without `##`, then "[PAD]"."""
    out = []
    idx = agg.word_index.tolist()
    for b, toks in enumerate(tokens):
        words = [""] * int(agg.num_words[b])
        for t, w in zip(toks, idx[b]):
            if w >= 0:
                words[w] += t[2:] if t.startswith("##") else t
        out.append(words + ["[PAD]"] * (num_slots - len(words)))
    return out
