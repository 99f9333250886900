"""Time one MGCA training step (forward + backward + AdamW) at the official batch (8) on this machine.

    python -m cxrvlp.bench.perf.mgca_step [--variant vit|resnet50|both] [--batch 8] [--steps 3] [--threads 2]

Prints our median step time next to the official code's (speed_notes.md: 12.9 s ViT, 8.4 s ResNet-50 on a
2-core CPU, fp32, 2 threads, random init, realistic shapes). Full-size paper models, random init, random
images and captions of realistic length (40-100 of 112 tokens). A script, not a test: CPU timings are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

OFFICIAL_STEP_S = {"vit": 12.9, "resnet50": 8.4}


def _batch(b: int, vocab: int, max_words: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(40, 101, (b,), generator=g)
    ids = torch.zeros(b, max_words, dtype=torch.long)
    for i, n in enumerate(lens.tolist()):
        ids[i, 0], ids[i, n - 1] = 101, 102  # Bio_ClinicalBERT [CLS] / [SEP]
        ids[i, 1 : n - 1] = torch.randint(1000, vocab, (n - 2,), generator=g)
    return {
        "images": torch.randn(b, 3, 224, 224, generator=g),
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "piece_mask": torch.rand(b, max_words, generator=g) < 0.15,
    }


def time_variant(variant: str, batch_size: int, steps: int) -> list[float]:
    """Seconds per training step of the full-size paper model (first step = warm-up, not reported)."""
    from cxrvlp.mgca.config import MGCAConfig
    from cxrvlp.mgca.model import MGCA
    from cxrvlp.mgca.train import MGCATrainModule

    torch.manual_seed(0)
    model = MGCA(MGCAConfig(image_encoder="vit-b16" if variant == "vit" else "resnet50")).train()
    for p in model.dead_parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5, weight_decay=0.05)
    batch = _batch(batch_size, model.cfg.bert.vocab_size, model.cfg.max_words)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        out = MGCATrainModule(model).run(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["vit", "resnet50", "both"], default="both")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = ["vit", "resnet50"] if args.variant == "both" else [args.variant]
    print(f"MGCA train step, batch {args.batch}, fp32, {args.threads} threads ({torch.__version__})")
    print(f"{'variant':<10}{'ours (median s)':>18}{'official (s)':>14}{'speed-up':>10}")
    for v in variants:
        med = statistics.median(time_variant(v, args.batch, args.steps))
        off = OFFICIAL_STEP_S[v]
        print(f"{v:<10}{med:>18.2f}{off:>14.1f}{off / med:>9.2f}x")
    print(
        "official: speed_notes.md (2-core CPU, torch 2.14.1); compare on the same machine and threads only."
    )


if __name__ == "__main__":
    main()
