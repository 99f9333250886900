"""Worker for test_mavl_distributed: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny MAVL on each rank's shard of one batch gives exactly the losses of the
unwrapped model on that shard alone (nothing gathered, as officially), and the DDP gradient is the mean of
the per-shard gradients. Mode "train": a few optimizer steps of the packaged tiny recipe on the synthetic
mirror with 2 processes.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _terms(model, batch):
    from cxrvlp.mavl.loss import MavlLoss

    net = getattr(model, "module", model)
    out = model(batch["images"])
    loc = net.location_logits(out.l_emb, batch["location_index"])
    return MavlLoss()(out.cls_logits, batch["labels"], loc, out.global_sim, net.temp)


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.mavl.registry import mavl_tiny
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = mavl_tiny(decoder_dropout=0.0, feature_dropout=0.0)
    model.set_books(torch.randn(51, 32), torch.randn(675, 32))
    model.eval()  # BatchNorm on running statistics: the shard and the full batch see the same computation
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    n = 4
    labels = torch.randint(-1, 2, (n * world, 75), generator=g).float()
    batch = {"images": torch.randn(n * world, 3, 64, 64, generator=g), "labels": labels,
             "location_index": torch.randint(0, 51, (n * world, 75, 8), generator=g)}  # fmt: skip
    shards = [{k: v[r * n : (r + 1) * n] for k, v in batch.items()} for r in range(world)]
    ddp = DDP(model)
    t = _terms(ddp, shards[rank])
    t["loss"].backward()
    names = ("presence_loss", "location_loss", "global_loss", "loss")
    res = {"rank": rank, "ddp": {k: t[k].item() for k in names}}
    grads = []
    for r in range(world):
        m = copy.deepcopy(ref)
        lo = _terms(m, shards[r])
        lo["loss"].backward()
        if r == rank:
            res["single"] = {k: lo[k].item() for k in names}
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    worst = 0.0
    for k, p in model.named_parameters():
        if p.grad is None:
            continue
        mean = sum(gr[k] for gr in grads) / world
        worst = max(worst, (p.grad - mean).abs().max().item() / (mean.abs().max().item() + 1e-12))
    res["grad_rel_err"] = worst
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def mode_train(out_dir: Path) -> None:
    from cxrvlp.mavl.train import train

    run = train("tiny", [f"output_dir={out_dir / 'run'}", "max_steps=3", "batch_size=4", "epochs=1",
                        "log_every_steps=1", "overwrite=true"])  # fmt: skip
    if dist.is_initialized() and dist.get_rank() == 0 or not dist.is_initialized():
        (out_dir / "train_rank0.json").write_text(json.dumps({"run": str(run)}))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    {"losses": mode_losses, "train": mode_train}[mode](out)
