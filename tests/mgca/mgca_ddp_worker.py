"""Worker for tests/workspace/test_method_ddp_workers.py: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny MGCA on each rank's shard of one batch must give exactly the losses the
unwrapped model gives on that shard alone (nothing gathered), and the DDP gradient must be the mean of the
per-shard gradients. Mode "train": a few optimizer steps of the packaged tiny config on the synthetic mirror.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ddp_helpers.py
from ddp_helpers import check_shards, split, worker_main  # noqa: E402


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
    from cxrvlp.mgca.registry import mgca_tiny
    from cxrvlp.mgca.train import MGCATrainModule

    dist.init_process_group("gloo")
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
    shards = split(tiny_batch(8 * dist.get_world_size(), seed=1), 8, dist.get_world_size())
    # model + loss: what the training loop wraps
    check_shards(out_dir, model, shards, lambda module, shard: module(shard), wrap=MGCATrainModule)


if __name__ == "__main__":
    worker_main("mgca", mode_losses, ["max_steps=2", "batch_size=6", "data.synthetic_patients=24"])
