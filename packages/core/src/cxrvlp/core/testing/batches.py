"""Synthetic batches for contract tests and timing: images and token ids of realistic shape."""

from __future__ import annotations

import torch


def random_images(batch_size: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) standard-normal images (already 'normalised')."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=g)


def random_token_batch(
    batch_size: int,
    max_length: int,
    vocab_size: int,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
    min_tokens: int = 4,
    first_word_id: int = 5,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / token_type_ids (B, L): [CLS] words [SEP] then padding, lengths varied.

    Lengths run from `min_tokens` to L (the longest row is exactly L), so padding paths are exercised.
    """
    if not 3 <= min_tokens <= max_length:
        raise ValueError(f"need 3 <= min_tokens <= max_length, got {min_tokens}, {max_length}")
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_tokens, max_length + 1, (batch_size,), generator=g)
    lengths[0] = max_length
    ids = torch.full((batch_size, max_length), pad_id, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, n - 1] = cls_id, sep_id
        ids[i, 1 : n - 1] = torch.randint(first_word_id, vocab_size, (n - 2,), generator=g)
    mask = (torch.arange(max_length)[None] < lengths[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
