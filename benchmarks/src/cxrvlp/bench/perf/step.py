"""Time one training step (forward + backward + AdamW) of any registered model, through its method's contract.

    python -m cxrvlp.bench.perf.step --model mgca-vit-b16 --batch 8 --text-length 112 --steps 3 --threads 2

The task module and the synthetic batch come from the method's `MethodSpec.example_batch` (random init,
random images, token rows of varied length up to --text-length): nothing here knows a method's internals.
It prints our seconds per step (median after one warm-up step) and the loss terms of the first step. It
prints no speed-up: a ratio to the official code is only ever measured side by side, in one interleaved run
on one machine (`../shared/perf_official/<method>/`), never against a figure from another machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def time_steps(model_name: str, batch_size: int, steps: int, text_length: int | None) -> dict:
    """{"model", "batch", "step_s": [...], "median_s", "first_terms"} for `steps` timed steps."""
    from cxrvlp.core.registry import get_method, get_model_entry
    from cxrvlp.core.training import sum_losses

    spec = get_method(get_model_entry(model_name).method)
    if spec.example_batch is None:
        raise SystemExit(f"{spec.name} provides no example_batch")
    torch.manual_seed(0)
    kw = {} if text_length is None else {"text_length": text_length}
    module, batch = spec.example_batch(model_name, batch_size, **kw)
    module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    times, first = [], None
    for i in range(steps + 1):
        t0 = time.perf_counter()
        terms = module(batch)
        loss = sum_losses(terms)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if first is None:
            first = {k: float(v) for k, v in terms.items() if k.endswith("_loss")}
        if i:  # step 0 is the warm-up
            times.append(dt)
    return {
        "model": model_name,
        "batch": batch_size,
        "threads": torch.get_num_threads(),
        "step_s": times,
        "median_s": statistics.median(times),
        "first_terms": first,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a registered model name (cxrvlp models)")
    ap.add_argument("--batch", type=int, default=8, help="per-step batch size")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--text-length", type=int, default=None, help="token rows up to this length")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(time_steps(args.model, args.batch, args.steps, args.text_length), indent=1))


if __name__ == "__main__":
    main()
