"""Time one CXR-CLIP training step (forward + loss + backward + AdamW) at the official measured batch (2).

    python -m cxrvlp.bench.perf.cxrclip_step [--variant r50|swint|both] [--batch 2] [--steps 3] [--threads 2]
                                             [--pad max_length|longest]

Prints our median step time next to the official code's (speed_notes.md: 7.8 s R50, 7.5 s Swin-T on a
2-core CPU, fp32, 2 threads, random init). Full-size paper models (Bio_ClinicalBERT sizes, 256-token
training padding unless --pad longest, the EXACT speed-up our training uses), random images and reports of
realistic length (60-200 tokens). A script, not a test: CPU timings are noisy (+-20 %).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

OFFICIAL_STEP_S = {"r50": 7.8, "swint": 7.5}


def _tokens(b: int, vocab: int, max_len: int, pad: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    lens = torch.randint(60, 201, (b,), generator=g)
    ids = torch.zeros(b, max_len, dtype=torch.long)
    for i, n in enumerate(lens.tolist()):
        ids[i, 0], ids[i, n - 1] = 101, 102  # Bio_ClinicalBERT [CLS] / [SEP]
        ids[i, 1 : n - 1] = torch.randint(1000, vocab, (n - 2,), generator=g)
    tok = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    if pad == "longest":
        from cxrvlp.cxrclip.model import trim_padding

        tok = trim_padding(tok)
    return tok


def time_variant(variant: str, batch_size: int, steps: int, pad: str) -> list[float]:
    """Seconds per training step (the first step is a warm-up and not reported)."""
    from cxrvlp.cxrclip.loss import CxrClipLoss
    from cxrvlp.cxrclip.registry import cxrclip_r50, cxrclip_swint

    torch.manual_seed(0)
    model = (cxrclip_r50 if variant == "r50" else cxrclip_swint)().train()
    loss_fn = CxrClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.text_config["vocab_size"]
    images, views = torch.randn(2, batch_size, 3, 224, 224, generator=g)
    t1 = _tokens(batch_size, vocab, 256, pad, g)
    t2 = _tokens(batch_size, vocab, 256, pad, g)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = model(images, views, t1, t2)
        loss = loss_fn(
            out["image_embeddings"], out["image_view_embeddings"], out["text_embeddings"],
            out["text_embeddings2"], out["logit_scale"],
        )["loss"]  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["r50", "swint", "both"], default="both")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pad", choices=["max_length", "longest"], default="longest")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = ["r50", "swint"] if args.variant == "both" else [args.variant]
    print(f"CXR-CLIP train step, batch {args.batch}, fp32, {args.threads} threads, text padding {args.pad}")
    print(f"{'variant':<10}{'ours (median s)':>18}{'official (s)':>14}{'speed-up':>10}")
    for v in variants:
        med = statistics.median(time_variant(v, args.batch, args.steps, args.pad))
        off = OFFICIAL_STEP_S[v]
        print(f"{v:<10}{med:>18.2f}{off:>14.1f}{off / med:>9.2f}x")
    print(
        "official: speed_notes.md (2-core CPU, torch 2.14.1); compare on the same machine and threads only."
    )


if __name__ == "__main__":
    main()
