"""The frozen text books of MAVL: anatomy prompts, entity descriptions and visual-aspect sentences as CLS
embeddings of a frozen text encoder, computed once (spec §2.4, §3.1)."""

from __future__ import annotations

import torch


def assemble_concept_book(disease_book: torch.Tensor, aspect_book: torch.Tensor) -> torch.Tensor:
    """(E, T) descriptions + (N, T) aspect rows (entity-major) -> (E*(n+1), T) with n = N // E.

    As the official code: n = floor(N / E) and only the first E*n aspect rows are kept (so the 76th entity's
    8 rows are dropped when E = 75); row (n+1)*e + k is entity e, aspect k, k = 0 the description.
    """
    e, t = disease_book.shape
    n = aspect_book.shape[0] // e
    aspects = aspect_book[: e * n].reshape(e, n, t)
    return torch.cat([disease_book.unsqueeze(1), aspects], dim=1).reshape(e * (n + 1), t)
