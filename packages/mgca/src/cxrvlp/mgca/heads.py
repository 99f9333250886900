"""MGCA's BN-terminated 2-layer projection heads (official `GlobalEmbedding` / `LocalEmbedding`)."""

from __future__ import annotations

import torch
from torch import nn


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
