"""Worker for tests/workspace/test_method_ddp_workers.py: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny MAVL on each rank's shard of one batch gives exactly the losses of the
unwrapped model on that shard alone (nothing gathered, as officially), and the DDP gradient is the mean of
the per-shard gradients. Mode "train": a few optimizer steps of the packaged tiny recipe on the synthetic
mirror with 2 processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ddp_helpers.py
from ddp_helpers import check_shards, split, worker_main  # noqa: E402


def _terms(model, batch):
    from cxrvlp.mavl.loss import MavlLoss

    net = getattr(model, "module", model)
    out = model(batch["images"])
    loc = net.location_logits(out.l_emb, batch["location_index"])
    return MavlLoss()(out.cls_logits, batch["labels"], loc, out.global_sim, net.temp)


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.mavl.registry import mavl_tiny

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.manual_seed(0)
    model = mavl_tiny(decoder_dropout=0.0, feature_dropout=0.0)
    model.set_books(torch.randn(51, 32), torch.randn(675, 32))
    model.eval()  # BatchNorm on running statistics: the shard and the full batch see the same computation
    g = torch.Generator().manual_seed(1)
    n = 4
    labels = torch.randint(-1, 2, (n * world, 75), generator=g).float()
    batch = {"images": torch.randn(n * world, 3, 64, 64, generator=g), "labels": labels,
             "location_index": torch.randint(0, 51, (n * world, 75, 8), generator=g)}  # fmt: skip
    names = ("presence_loss", "location_loss", "global_loss", "loss")
    shards = split(batch, n, world)
    check_shards(out_dir, model, shards, lambda m, shard: {k: _terms(m, shard)[k] for k in names})


if __name__ == "__main__":
    worker_main("mavl", mode_losses, ["max_steps=3", "batch_size=4", "epochs=1"])
