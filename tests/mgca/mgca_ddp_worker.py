"""Worker for test_mgca_distributed: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny MGCA on each rank's shard of one batch must give exactly the losses the
unwrapped model gives on that shard alone (nothing gathered), and the DDP gradient must be the mean of the
per-shard gradients. Mode "train": a few optimizer steps of the packaged tiny config on the synthetic mirror.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def tiny_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, 12, (n,), generator=g)
    ids = torch.zeros(n, 16, dtype=torch.long)
    for i, L in enumerate(lens.tolist()):
        ids[i, 0] = 2
        ids[i, 1 : L - 1] = torch.randint(5, 40, (L - 2,), generator=g)
        ids[i, L - 1] = 3
    return {
        "images": torch.randn(n, 3, 32, 32, generator=g),
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "piece_mask": (ids >= 35),
    }


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.core.training import sum_losses
    from cxrvlp.mgca.registry import mgca_tiny
    from cxrvlp.mgca.train import MGCATrainModule
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = mgca_tiny(
        vit={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        bert={"vocab_size": 40, "hidden_size": 32, "intermediate_size": 64, "encoder_width": 32},
        proj_hidden_dim=16,
        max_words=16,
    ).train()
    for p in model.dead_parameters():
        p.requires_grad_(False)
    for m in model.modules():  # dropout off: the two paths must see the same computation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ref = copy.deepcopy(model)
    batch = tiny_batch(8 * world, seed=1)
    shards = [{k: v[r * 8 : (r + 1) * 8] for k, v in batch.items()} for r in range(world)]
    ddp = DDP(MGCATrainModule(model))  # model + loss: what the training loop wraps
    terms = ddp(shards[rank])
    sum_losses(terms).backward()
    res = {"rank": rank, "ddp": {k: v.item() for k, v in terms.items() if k.endswith("_loss")}}
    # single process on every shard, in this process
    grads = []
    for r in range(world):
        m = copy.deepcopy(ref)
        terms = MGCATrainModule(m)(shards[r])
        sum_losses(terms).backward()
        if r == rank:
            res["single"] = {k: v.item() for k, v in terms.items() if k.endswith("_loss")}
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    worst = 0.0
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        mean = sum(g[n] for g in grads) / world
        worst = max(worst, (p.grad - mean).abs().max().item() / (mean.abs().max().item() + 1e-12))
    res["grad_rel_err"] = worst
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def mode_train(out_dir: Path, synth: str) -> None:
    from cxrvlp.mgca.train import train

    run = train(
        "tiny",
        [
            f"output_dir={out_dir / 'run'}",
            "overwrite=true",
            "max_steps=2",
            "log_every_steps=1",
            "batch_size=6",
            f"data.synthetic_dir={synth}",
            "data.synthetic_patients=24",
        ],
    )
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"train_rank{rank}.json").write_text(json.dumps({"run": str(run)}))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "losses":
        mode_losses(out)
    else:
        mode_train(out, sys.argv[3])
