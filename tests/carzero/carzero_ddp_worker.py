"""Worker for test_carzero_distributed: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny CARZero on each rank's shard of one batch gives exactly the losses the
unwrapped model gives on that shard alone (the official run gathers nothing: each process scores its own
B x B pairs), and the DDP gradient is the mean of the per-shard gradients. Mode "train": a few optimizer
steps of the packaged tiny config on the synthetic mirror.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

TEXTS = ["there is mild cardiomegaly", "no pleural effusion", "there is edema", "lungs are clear",
         "there is a small left pleural effusion", "support devices", "there is atelectasis",
         "no pneumothorax"]  # fmt: skip


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.carzero.loss import carzero_loss
    from cxrvlp.carzero.registry import carzero_tiny
    from cxrvlp.carzero.train import freeze_unused
    from cxrvlp.core.text.tokenize import build_tokenizer_from_texts, load_tokenizer, tokenize
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tok_dir = out_dir / "tok"
    if rank == 0:  # one vocabulary for both ranks (the WordPiece trainer need not number tokens alike)
        build_tokenizer_from_texts(TEXTS * 4, tok_dir, vocab_size=120)
    dist.barrier()
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    # eval mode: no dropout anywhere (HF BERT's SDPA attention dropout is not an nn.Dropout module)
    model = carzero_tiny(text_vocab_size=len(tok)).eval()
    model.set_tokenizer(tok)
    freeze_unused(model)
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4 * world, 3, 64, 64, generator=g)
    tokens = tokenize(tok, TEXTS[: 4 * world], 32, padding="max_length")
    shards = [(images[r * 4 : (r + 1) * 4], {k: v[r * 4 : (r + 1) * 4] for k, v in tokens.items()})
              for r in range(world)]  # fmt: skip

    def terms_of(m, shard):
        out = m(*shard)
        return carzero_loss(out.i2t, out.t2i)

    ddp = DDP(model)
    terms = terms_of(ddp, shards[rank])
    terms["loss"].backward()
    res = {"rank": rank, "ddp": {k: terms[k].item() for k in ("loss", "i2t_loss", "t2i_loss")}}
    grads = []
    for r in range(world):
        m = copy.deepcopy(ref)
        t = terms_of(m, shards[r])
        t["loss"].backward()
        if r == rank:
            res["single"] = {k: t[k].item() for k in ("loss", "i2t_loss", "t2i_loss")}
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    means = {n: sum(gr[n] for gr in grads) / world for n in grads[0]}
    # relative to each tensor's scale, floored at 1e-3 of the largest gradient: some gradients are zero up to
    # rounding (the key bias of every attention: softmax is shift-invariant) and have no relative precision
    floor = 1e-3 * max(m.abs().max().item() for m in means.values())
    worst = 0.0
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        mean = means[n]
        err = (p.grad - mean).abs().max().item() / max(mean.abs().max().item(), floor)
        if err > worst:
            res["worst_param"] = n
        worst = max(worst, err)
    res["grad_rel_err"] = worst
    (out_dir / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def mode_train(out_dir: Path, synth: str) -> None:
    from cxrvlp.carzero.train import train

    run = train("tiny", [f"output_dir={out_dir / 'run'}", "overwrite=true", "max_steps=2",
                         "log_every_steps=1", "batch_size=6", f"data.synthetic_dir={synth}",
                        "data.synthetic_patients=24"])  # fmt: skip
    rank = int(os.environ.get("RANK", "0"))
    (out_dir / f"train_rank{rank}.json").write_text(json.dumps({"run": str(run)}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "losses":
        mode_losses(out)
    else:
        mode_train(out, sys.argv[3])
