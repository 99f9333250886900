"""Worker for tests/workspace/test_method_ddp_workers.py: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny AFLoc on each rank's shard of one batch gives exactly the losses the
unwrapped model gives on that shard alone (nothing is gathered: in-batch negatives of the shard, as the
official per-GPU DataParallel losses), and the DDP gradient is the mean of the per-shard gradients (DP's
gradient of the mean loss). Mode "train": a few optimizer steps of the packaged tiny config on the mirror.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ddp_helpers.py
from ddp_helpers import check_shards, split, worker_main  # noqa: E402

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

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.manual_seed(0)
    bert = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 32, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}  # fmt: skip
    model = afloc_tiny(bert=bert, resnet_width_per_group=4, text_max_length=24, image_size=32).train()
    for p in model.unused_parameters():
        p.requires_grad_(False)
    shards = split(tiny_batch(PER_RANK * world, seed=1), PER_RANK, world)
    check_shards(out_dir, model, shards, lambda module, shard: module(shard), wrap=AFLocTrainModule)


if __name__ == "__main__":
    train = ["max_steps=2", "batch_size=6", "num_threads=1", "data.synthetic_patients=24"]
    worker_main("afloc", mode_losses, train)
