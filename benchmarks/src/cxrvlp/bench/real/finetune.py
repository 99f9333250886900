"""Contrastive part of `real`: each method's small config fine-tuned on the fit rows that have text (from its
pretrained backbones and, as the baseline, from a random init), then zero-shot and linear probe on the eval
rows, scored on the same probe-test rows as the bare encoder."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How `train(config, overrides)` of each method's small config is told the image size, epochs and a random
# init. Both small configs read `model.image_pretrained` / `model.text_pretrained` (null = random init).
RANDOM_INIT = ("model.image_pretrained=null", "model.text_pretrained=null")
SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "cxrclip": ("data.image_size", "model.image_size"),
    "mgca": ("data.image_size",),
}
# Text length in tokens: the cost of a step grows ~linearly with it (MiniLM fwd+bwd on 64 texts: 3.4 s at 64
# tokens, 10.6 s at 128, measured on this 2-core CPU); most fit-row notes are short.
TEXT_KEYS: dict[str, str] = {"cxrclip": "model.text_max_length", "mgca": "model.max_words"}


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
    """key=value overrides of the method's small config for one fine-tune."""
    ov = [f"output_dir={out}", f"data.root={data_root}", "progress_bar=false"]
    if image_size is not None:
        ov += [f"{k}={image_size}" for k in SIZE_KEYS.get(method, ("data.image_size",))]
    if text_length is not None and method in TEXT_KEYS:
        ov.append(f"{TEXT_KEYS[method]}={text_length}")
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
    text_length: int | None = None,
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
            ov = finetune_overrides(m, init, run_out, data_root, image_size, epochs, text_length)
            ov += list(extra_overrides)
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
    adapter: Any, method: str, task: Any, samples: Sequence[Any], batch_size: int
) -> dict[str, Any]:
    """Zero-shot scores (the method's prompt protocol) and image features (N, D) of every row."""
    from cxrvlp.bench import inference
    from cxrvlp.bench.prompts import prompts_for

    prompts, protocol = prompts_for(method, f"real-{task.dataset}", [task.positive])
    zs = inference.class_scores(adapter, samples, prompts, batch_size=batch_size)[:, 0]
    feats = inference.features(adapter, samples, batch_size=batch_size)
    return {"zero-shot": zs, "features": feats, "protocol": protocol}
