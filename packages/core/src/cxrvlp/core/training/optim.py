"""Optimizer construction from `OptimizerConfig`, plus the weight-decay split some methods use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training.config import OptimizerConfig
from torch import nn


def build_optimizer(cfg: OptimizerConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """torch Adam / AdamW / SGD over `params` (tensors or param-group dicts; groups may override lr/wd).

    Adam uses coupled L2 weight decay (AFLoc, CARZero); AdamW decoupled (MGCA, CXR-CLIP, MAVL).
    """
    params = list(params)
    if not params:
        raise ConfigError("optimizer: the model has no trainable parameters")
    extra: dict[str, Any] = {}
    if cfg.foreach is not None:
        extra["foreach"] = cfg.foreach
    if cfg.fused is not None:
        extra["fused"] = cfg.fused
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **extra
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **extra
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            **extra,
        )
    raise ConfigError(f"optimizer.name: unknown optimizer '{cfg.name}'")


def split_decay_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_names: Sequence[str] = (),
    skip_1d: bool = True,
) -> list[dict[str, Any]]:
    """Two param groups: with `weight_decay`, and without for 1-D tensors/biases and the named params.

    `no_decay_names` are exact parameter names (e.g. MAVL's "temp"). Frozen parameters are left out.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in no_decay_names or (skip_1d and (p.ndim <= 1 or name.endswith(".bias"))):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
