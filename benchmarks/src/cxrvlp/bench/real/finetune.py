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

# How `train(config, overrides)` of each method's small config is told the image size, epochs and a random
# init. Both small configs read `model.image_pretrained` / `model.text_pretrained` (null = random init).
RANDOM_INIT = ("model.image_pretrained=null", "model.text_pretrained=null")
SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "cxrclip": ("data.image_size", "model.image_size"),
    "mgca": ("data.image_size",),
}


@dataclass
class TrainedModel:
    """One fine-tuned (or given) checkpoint and how it was made."""

    method: str
    init: str  # "pretrained" | "random" | "checkpoint"
    final_dir: Path
    wall_s: float | None
    note: str


def finetune_overrides(
    method: str, init: str, out: Path, data_root: Path, image_size: int | None, epochs: int | None
) -> list[str]:
    """key=value overrides of the method's small config for one fine-tune."""
    ov = [f"output_dir={out}", f"data.root={data_root}", "progress_bar=false"]
    if image_size is not None:
        ov += [f"{k}={image_size}" for k in SIZE_KEYS.get(method, ("data.image_size",))]
    if epochs is not None:
        ov.append(f"epochs={epochs}")
    if init == "random":
        ov += list(RANDOM_INIT)
    return ov


def finetune_all(
    methods: Sequence[str],
    data_root: Path,
    out: Path,
    config: str,
    image_size: int | None,
    epochs: int | None,
    extra_overrides: Sequence[str],
    inits: Sequence[str] = ("pretrained", "random"),
    log: Callable[[str], None] = print,
) -> tuple[list[TrainedModel], dict[str, str]]:
    """Train every (method, init); returns the trained models and, per method, why it did not train."""
    from cxrvlp.bench.sources import method_status

    trained, status = [], {}
    for m in methods:
        mod, why = method_status(m)
        if mod is None:
            status[m] = why or "not installed"
            continue
        for init in inits:
            run_out = out / "train" / m / init
            ov = [*finetune_overrides(m, init, run_out, data_root, image_size, epochs), *extra_overrides]
            log(f"[real] fine-tuning {m} ({config}, {init} init): {' '.join(ov)}")
            t0 = time.perf_counter()
            try:
                run = Path(mod.train(config, ov))
            except Exception as e:  # reported in the record, never hidden
                status[f"{m}/{init}"] = f"error: training failed ({type(e).__name__}: {e})"
                log(f"[real] {m} ({init}) failed: {type(e).__name__}: {e}")
                continue
            wall = time.perf_counter() - t0
            trained.append(TrainedModel(m, init, run / "final", wall, f"{config}, {init} init, {wall:.0f} s"))
            status[f"{m}/{init}"] = f"trained in {wall:.0f} s"
    return trained, status


def score_model(
    adapter: Any,
    method: str,
    task: Any,
    rows: Sequence[dict[str, str]],
    y: np.ndarray,
    root: Path,
    train_mask: np.ndarray,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """Zero-shot and linear-probe scores of the probe-test rows (the probe fits on the probe-train rows)."""
    from cxrvlp.bench import inference
    from cxrvlp.bench.prompts import prompts_for
    from cxrvlp.bench.real.manifest import manifest_samples
    from cxrvlp.bench.real.stats import probe_scores

    samples = manifest_samples(rows, root, (task.positive,))
    prompts, protocol = prompts_for(method, f"real-{task.dataset}", [task.positive])
    test = [s for s, t in zip(samples, train_mask) if not t]
    zs = inference.class_scores(adapter, test, prompts, batch_size=batch_size)[:, 0]
    feats = inference.features(adapter, samples, batch_size=batch_size)
    probe = probe_scores(feats[train_mask], y[train_mask], feats[~train_mask], seed)
    return {"zero-shot": zs, "linear probe": probe, "protocol": protocol}
