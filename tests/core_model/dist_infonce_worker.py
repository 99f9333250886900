"""Worker for test_core_infonce_dist.py: run under torch.distributed.run with 2 CPU processes (gloo).

Each rank takes its slice of one seeded global batch, computes the gathered losses, and rank 0 compares
them (and every rank's gradients, gathered) with a single-process computation on the concatenated batch.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from cxrvlp.core.losses import clip_loss, contrastive_loss, gather_features, gather_with_grad, sinkhorn


def _global_batch(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return a, b


def _run_case(a_all, b_all, rank, world, fn):
    # returns (mean of rank losses, per-rank grads / world concatenated) and the single-process reference
    bsz = a_all.shape[0] // world
    a = a_all[rank * bsz : (rank + 1) * bsz].clone().requires_grad_(True)
    b = b_all[rank * bsz : (rank + 1) * bsz].clone().requires_grad_(True)
    loss = fn(a, b)
    loss.backward()
    # what DDP does: average the gradients of all ranks (here: gather the local-feature grads, divide by W)
    ga = torch.cat(gather_features(a.grad / world, gather_with_grad=False))
    gb = torch.cat(gather_features(b.grad / world, gather_with_grad=False))
    ga, gb = ga.reshape(a_all.shape), gb.reshape(b_all.shape)
    losses = torch.stack(gather_features(loss.detach().reshape(1), gather_with_grad=False)).flatten()
    return losses, ga, gb


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    a_all, b_all = _global_batch(8, 16)
    scale = 1 / 0.07
    results = {}

    cases = {
        "clip_local": lambda a, b: clip_loss(a, b, scale, local_loss=True),
        "clip_global": lambda a, b: clip_loss(a, b, scale, local_loss=False),
        "clip_local_sum": lambda a, b: clip_loss(a, b, scale, local_loss=True, reduction="sum"),
        # CXR-CLIP style one-way term: local queries against gathered keys, label offset rank * B
        "one_way": lambda a, b: contrastive_loss(
            a, gather_with_grad(b), scale, label_offset=rank * a.shape[0]
        ),
    }

    # independent single-process references on the concatenated batch (plain cross_entropy)
    def ref_dir(a, b):
        return F.cross_entropy(scale * a @ b.t(), torch.arange(a.shape[0]))

    refs = {
        "clip_local": lambda a, b: (ref_dir(a, b) + ref_dir(b, a)) / 2,
        "clip_global": lambda a, b: (ref_dir(a, b) + ref_dir(b, a)) / 2,
        "clip_local_sum": lambda a, b: ref_dir(a, b) + ref_dir(b, a),
        "one_way": ref_dir,
    }
    for name, fn in cases.items():
        losses, ga, gb = _run_case(a_all, b_all, rank, world, fn)
        if rank == 0:
            a = a_all.clone().requires_grad_(True)
            b = b_all.clone().requires_grad_(True)
            ref = refs[name](a, b)
            ref.backward()
            # local loss: mean of the rank losses is the global loss; global loss: every rank has it whole
            dist_loss = losses.mean() if name != "clip_global" else losses[0]
            results[name] = {
                "loss_diff": abs(float(dist_loss - ref.detach())),
                "grad_a_diff": float((ga - a.grad).abs().max()),
                "grad_b_diff": float((gb - b.grad).abs().max()),
                "ranks_differ": bool(losses.max() - losses.min() > 1e-9),
                "loss": float(ref),
            }

    # Sinkhorn: all-reduced codes on the local halves == single-process codes on the whole batch
    scores = a_all @ b_all.t()  # (8, 8) stand-in prototype scores
    bsz = scores.shape[0] // world
    q_local = sinkhorn(scores[rank * bsz : (rank + 1) * bsz], epsilon=0.05, n_iters=3, distributed=True)
    q_all = torch.cat(gather_features(q_local, gather_with_grad=False))
    if rank == 0:
        q_ref = sinkhorn(scores, epsilon=0.05, n_iters=3, distributed=False)
        q_nondist = sinkhorn(scores[:bsz], epsilon=0.05, n_iters=3, distributed=False)
        results["sinkhorn"] = {
            "diff": float((q_all - q_ref).abs().max()),
            "local_only_diff": float((q_nondist - q_ref[:bsz]).abs().max()),
        }
        with open(out_path, "w") as fh:
            json.dump({"world": world, "results": results}, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
