"""Worker for tests/workspace/test_method_ddp_workers.py: run by torchrun with 2 CPU processes (gloo).

Mode "losses": a DDP-wrapped tiny CARZero on each rank's shard of one batch gives exactly the losses the
unwrapped model gives on that shard alone (the official run gathers nothing: each process scores its own
B x B pairs), and the DDP gradient is the mean of the per-shard gradients. Mode "train": a few optimizer
steps of the packaged tiny config on the synthetic mirror.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ddp_helpers.py
from ddp_helpers import check_shards, worker_main  # noqa: E402

TEXTS = ["there is mild cardiomegaly", "no pleural effusion", "there is edema", "lungs are clear",
         "there is a small left pleural effusion", "support devices", "there is atelectasis",
         "no pneumothorax"]  # fmt: skip


def mode_losses(out_dir: Path) -> None:
    from cxrvlp.carzero.loss import carzero_loss
    from cxrvlp.carzero.registry import carzero_tiny
    from cxrvlp.carzero.train import freeze_unused
    from cxrvlp.core.text.tokenize import build_tokenizer_from_texts, load_tokenizer, tokenize

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
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4 * world, 3, 64, 64, generator=g)
    tokens = tokenize(tok, TEXTS[: 4 * world], 32, padding="max_length")
    shards = [(images[r * 4 : (r + 1) * 4], {k: v[r * 4 : (r + 1) * 4] for k, v in tokens.items()})
              for r in range(world)]  # fmt: skip

    def terms_of(m, shard):
        out = m(*shard)
        terms = carzero_loss(out.i2t, out.t2i)
        return {k: terms[k] for k in ("loss", "i2t_loss", "t2i_loss")}

    check_shards(out_dir, model, shards, terms_of, floor=1e-3)


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker_main("carzero", mode_losses, ["max_steps=2", "batch_size=6", "data.synthetic_patients=24"])
