"""Worker for test_afloc_distributed: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny AFLoc on each rank's shard of one batch gives exactly the losses the
unwrapped model gives on that shard alone (nothing is gathered: in-batch negatives of the shard, as the
official per-GPU DataParallel losses), and the DDP gradient is the mean of the per-shard gradients (DP's
gradient of the mean loss). Mode "train": a few optimizer steps of the packaged tiny config on the mirror.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

PER_RANK = 4


def tiny_batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    # vocab: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK] 5 "." 6..29 words, 30..39 "##" pieces
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, 24, dtype=torch.long)
    for i in range(n):
        L = int(torch.randint(6, 20, (1,), generator=g))
        ids[i, 0] = 2
        ids[i, 1 : L - 1] = torch.randint(6, 40, (L - 2,), generator=g)
        ids[i, 1] = 6
        ids[i, L // 2] = 5
        ids[i, L - 1] = 3
    return {
        "images": torch.randn(n, 3, 32, 32, generator=g),
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "token_type_ids": torch.zeros_like(ids),
        "piece_mask": ids >= 30,
        "bracket_mask": ids <= 4,
    }


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.afloc.registry import afloc_tiny
    from cxrvlp.afloc.train import AFLocTrainModule
    from cxrvlp.core.training import sum_losses
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    bert = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}  # fmt: skip
    model = afloc_tiny(bert=bert, resnet_width_per_group=4, text_max_length=24, image_size=32).train()
    for p in model.unused_parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(model)
    batch = tiny_batch(PER_RANK * world, seed=1)
    shards = [{k: v[r * PER_RANK : (r + 1) * PER_RANK] for k, v in batch.items()} for r in range(world)]

    def losses(module, shard):
        terms = module(shard)
        total = sum_losses(terms)
        total.backward()
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}

    ddp = DDP(AFLocTrainModule(model))
    res = {"rank": rank, "ddp": losses(ddp, shards[rank])}
    grads = []
    for r in range(world):
        m = AFLocTrainModule(copy.deepcopy(ref))
        single = losses(m, shards[r])
        if r == rank:
            res["single"] = single
        grads.append({n: p.grad.clone() for n, p in m.model.named_parameters() if p.grad is not None})
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
    from cxrvlp.afloc.train import train

    run = train("tiny", [f"output_dir={out_dir / 'run'}", "overwrite=true", "max_steps=2",
                         "log_every_steps=1",
                         "batch_size=6", "num_threads=1", f"data.synthetic_dir={synth}",
                         "data.synthetic_patients=24"])  # fmt: skip
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"train_rank{rank}.json").write_text(json.dumps({"run": str(run)}))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "losses":
        mode_losses(out)
    else:
        mode_train(out, sys.argv[3])
