"""Contrastive part of `real`: each method's small config fine-tuned on the fit rows that have text (from its
pretrained backbones and, as the baseline, from a random init), then zero-shot and linear probe on the eval
rows, scored on the same probe-test rows as the bare encoder."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainedModel:
    """One fine-tuned (or given) checkpoint and how it was made."""

    method: str
    init: str  # "pretrained" | "random" | "checkpoint"
    final_dir: Path
    wall_s: float | None
    note: str


def finetune_overrides(
    method: str,
    init: str,
    out: Path,
    data_root: Path,
    image_size: int | None,
    epochs: int | None,
    text_length: int | None = None,
) -> list[str]:
    """key=value overrides of the method's small config for one fine-tune (keys from its MethodSpec).

    Text length in tokens matters: a step's cost grows ~linearly with it (MiniLM fwd+bwd on 64 texts: 3.4 s at
    64 tokens, 10.6 s at 128 on a 2-core CPU), and most fit-row notes are short.
    """
    from cxrvlp.core.method import overrides_for_size
    from cxrvlp.core.registry import get_method

    spec = get_method(method)
    ov = [f"output_dir={out}", f"data.root={data_root}", "progress_bar=false"]
    ov += overrides_for_size(spec, image_size, text_length)
    if epochs is not None:
        ov.append(f"epochs={epochs}")
    if init == "random":
        ov += list(spec.random_init_overrides)
    return ov


@dataclass
class _Job:
    method: str
    init: str
    out: Path
    overrides: list[str]


def finetune_all(
    methods: Sequence[str],
    data_root: Path,
    out: Path,
    config: str,
    image_size: int | None,
    epochs: int | None,
    extra_overrides: Sequence[str],
    inits: Sequence[str] = ("pretrained", "random"),
    text_length: int | None = None,
    log: Callable[[str], None] = print,
    parallel: int = 1,
) -> tuple[list[TrainedModel], dict[str, str]]:
    """Train every (method, init); returns the trained models and, per run, how it went.

    parallel > 1 runs that many fine-tunes at once, each `python -m cxrvlp.<method>.train` in its own process
    with cpu_count / parallel threads (on 2 cores, two 1-thread runs finish sooner than the same two runs one
    after the other with 2 threads each: small depthwise convolutions and short sequences scale poorly)."""
    from cxrvlp.bench.sources import method_status

    jobs, status = [], {}
    for m in methods:
        mod, why = method_status(m)
        if mod is None:
            status[m] = why or "not installed"
            continue
        for init in inits:
            run_out = out / "train" / m / init
            ov = finetune_overrides(m, init, run_out, data_root, image_size, epochs, text_length)
            jobs.append(_Job(m, init, run_out, ov + list(extra_overrides)))
    if parallel > 1:
        trained = _run_parallel(jobs, config, parallel, status, log)
    else:
        trained = [t for j in jobs if (t := _run_inline(j, config, status, log)) is not None]
    return trained, status


def _run_inline(job: _Job, config: str, status: dict[str, str], log: Callable[[str], None]):
    from cxrvlp.core.registry import get_method

    key = f"{job.method}/{job.init}"
    log(f"[real] fine-tuning {job.method} ({config}, {job.init} init): {' '.join(job.overrides)}")
    t0 = time.perf_counter()
    try:
        run = Path(get_method(job.method).train(config, job.overrides))
    except Exception as e:  # reported in the record, never hidden
        status[key] = f"error: training failed ({type(e).__name__}: {e})"
        log(f"[real] {key} failed: {type(e).__name__}: {e}")
        return None
    wall = time.perf_counter() - t0
    status[key] = f"trained in {wall:.0f} s"
    return TrainedModel(job.method, job.init, run / "final", wall, f"{config}, {job.init} init, {wall:.0f} s")


def _run_parallel(jobs: list[_Job], config: str, parallel: int, status: dict[str, str], log) -> list:
    import os
    import subprocess
    import sys

    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, done = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < parallel:
            j = pending.pop(0)
            j.out.parent.mkdir(parents=True, exist_ok=True)
            logf = open(j.out.parent / f"{j.init}.log", "w")  # noqa: SIM115  (closed when the run ends)
            cmd = [sys.executable, "-m", f"cxrvlp.{j.method}.train", config, *j.overrides]
            log(
                f"[real] fine-tuning {j.method} ({config}, {j.init} init, {threads} thread(s)): "
                + " ".join(cmd[3:])
            )
            running.append(
                (
                    j,
                    subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env),
                    logf,
                    time.perf_counter(),
                )
            )
        time.sleep(1.0)
        for item in list(running):
            j, proc, logf, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logf.close()
            wall = time.perf_counter() - t0
            key = f"{j.method}/{j.init}"
            final = j.out / "final"
            if proc.returncode == 0 and final.is_dir():
                status[key] = f"trained in {wall:.0f} s ({threads} thread(s), {parallel} runs at once)"
                done[key] = TrainedModel(
                    j.method, j.init, final, wall, f"{config}, {j.init} init, {wall:.0f} s"
                )
            else:
                tail = (j.out.parent / f"{j.init}.log").read_text(errors="replace").strip().splitlines()[-3:]
                status[key] = f"error: training exited with {proc.returncode}: {' | '.join(tail)}"
            log(f"[real] {key}: {status[key]}")
    return [done[k] for k in (f"{j.method}/{j.init}" for j in jobs) if k in done]


def score_model(
    adapter: Any,
    method: str,
    dataset: str,
    classes: Sequence[str],
    samples: Sequence[Any],
    batch_size: int,
    zs_rows: np.ndarray,
) -> dict[str, Any]:
    """Zero-shot scores (N, C) under the method's prompt protocol for the rows in `zs_rows` (NaN elsewhere:
    only held-out rows are ever scored zero-shot), and image features (N, D) of every row."""
    from cxrvlp.bench import inference
    from cxrvlp.bench.prompts import prompts_for

    prompts, protocol = prompts_for(method, f"real-{dataset}", list(classes))
    zs = np.full((len(samples), len(classes)), np.nan)
    picked = [s for s, k in zip(samples, zs_rows) if k]
    zs[zs_rows] = inference.class_scores(adapter, picked, prompts, batch_size=batch_size)
    feats = inference.features(adapter, samples, batch_size=batch_size)
    return {"zero-shot": zs, "features": feats, "protocol": protocol}
