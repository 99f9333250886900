"""What the methods' 2-process DDP workers share (tests/<m>/<m>_ddp_worker.py, run by torchrun).

A worker builds its tiny model and one batch per rank, then calls `check_shards`: rank r's DDP-wrapped
module on shard r must give the losses the unwrapped module gives on shard r alone (nothing is gathered),
and the DDP gradient must be the mean of the per-shard gradients. `worker_main` dispatches the two modes
("losses", "train"); the tests read what they write with the `ddp_checks` fixture of tests/conftest.py.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _scalars(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: v.item() for k, v in terms.items() if isinstance(v, torch.Tensor) and v.ndim == 0}


def _run(module: nn.Module, shard: Any, terms_of: Callable[[nn.Module, Any], dict[str, torch.Tensor]]):
    """Forward + backward of one shard; the total is `terms["loss"]`, else the sum of the `*_loss` terms."""
    from cxrvlp.core.training import sum_losses

    terms = terms_of(module, shard)
    total = terms["loss"] if "loss" in terms else sum_losses(terms)
    total.backward()
    return {**_scalars(terms), "loss": total.item()}


def check_shards(
    out_dir: Path,
    model: nn.Module,
    shards: Sequence[Any],
    terms_of: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    floor: float = 0.0,
) -> None:
    """Write `rank{r}.json`: the DDP and single-process losses of shard r and the worst gradient gap.

    `wrap(model)` is the module DDP wraps (a task module, or the model itself); gradients are compared on
    `model`'s parameters, relative to each tensor's scale floored at `floor` x the largest mean gradient
    (some gradients are zero up to rounding, e.g. attention key biases, and have no relative precision).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world = dist.get_rank(), dist.get_world_size()
    ref = copy.deepcopy(model)
    res: dict[str, Any] = {"rank": rank, "ddp": _run(DDP(wrap(model)), shards[rank], terms_of)}
    grads = []
    for r in range(world):
        m = copy.deepcopy(ref)
        single = _run(wrap(m), shards[r], terms_of)
        if r == rank:
            res["single"] = single
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    means = {n: sum(g[n] for g in grads) / world for n in grads[0]}
    low = max(floor * max(m.abs().max().item() for m in means.values()), 1e-12)
    worst = 0.0
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        err = (p.grad - means[n]).abs().max().item() / max(means[n].abs().max().item(), low)
        if err > worst:
            res["worst_param"] = n
        worst = max(worst, err)
    res["grad_rel_err"] = worst
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def split(batch: dict[str, torch.Tensor], per_rank: int, world: int) -> list[dict[str, torch.Tensor]]:
    """Rank r's shard of `batch`: rows r * per_rank .. (r + 1) * per_rank."""
    return [{k: v[r * per_rank : (r + 1) * per_rank] for k, v in batch.items()} for r in range(world)]


def train_tiny(method: str, out_dir: Path, overrides: Sequence[str]) -> None:
    """A few optimizer steps of the method's packaged tiny recipe; every rank writes its run folder."""
    from cxrvlp.core.registry import get_method

    base = [f"output_dir={out_dir / 'run'}", "overwrite=true", "log_every_steps=1"]
    run = get_method(method).train("tiny", [*base, *overrides])
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"train_rank{rank}.json").write_text(json.dumps({"run": str(run)}))


def worker_main(method: str, mode_losses: Callable[[Path], None], train_overrides: Sequence[str]) -> None:
    """`WORKER losses OUT` or `WORKER train OUT SYNTHETIC_DIR` (as the `ddp_checks` fixture passes them)."""
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "losses":
        mode_losses(out)
    else:
        train_tiny(method, out, [*train_overrides, f"data.synthetic_dir={sys.argv[3]}"])
