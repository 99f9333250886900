"""The run loop: methods x datasets x tasks x seeds -> one result JSON each (resumable)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.bench.datasets import DEFAULT_TASKS
from cxrvlp.bench.inference import accelerator
from cxrvlp.bench.record import (
    adapter_record,
    is_finished,
    package_versions,
    result_path,
    write_result,
)
from cxrvlp.bench.sources import DataSource, MethodSpec
from cxrvlp.bench.tasks import TASK_RUNNERS, TaskContext, TaskSkipped
from cxrvlp.core.errors import DatasetNotFoundError

log = logging.getLogger("cxrvlp.bench")

# Tasks whose result does not depend on the seed run once (seed = the first one given).
DETERMINISTIC_TASKS = ("zeroshot", "grounding", "retrieval")


@dataclass
class RunOptions:
    """What the loop runs and how."""

    tasks: Sequence[str] = DEFAULT_TASKS
    seeds: Sequence[int] = (0,)
    batch_size: int = 32
    skip_existing: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    stop_on_error: bool = False  # tests and CI want failures loud; a long sweep records them and goes on


@dataclass
class RunSummary:
    """Counts of what happened, and the paths written."""

    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    evaluated: int = 0  # results with status "ok" (a run of only skipped methods evaluated nothing)

    def add(self, other: RunSummary) -> None:
        """Fold another run's summary into this one (the demo's per-method workers)."""
        self.written += other.written
        self.skipped_existing += other.skipped_existing
        self.errors += other.errors
        self.evaluated += other.evaluated


def run_suite(
    methods: Sequence[MethodSpec], sources: dict[str, DataSource], out_dir: str | Path, opts: RunOptions
) -> RunSummary:
    """Run every (method, dataset, task, seed); write one JSON each under out_dir/runs/."""
    out_dir = Path(out_dir)
    summary = RunSummary()
    main_process = accelerator().is_main_process  # every process computes, only the main one writes
    versions = package_versions()
    for src in sources.values():
        src.check()  # fail before any model loads when a root is missing
        src.resolve_classes()  # data-defined class lists (CARZero's PadChest) before any result is keyed
    for spec in methods:
        adapter = None
        for dname, src in sources.items():
            ds = src.dataset
            for task in opts.tasks:
                if not ds.supports(task):
                    continue
                seeds = list(opts.seeds)[:1] if task in DETERMINISTIC_TASKS else list(opts.seeds)
                for seed in seeds:
                    path = result_path(out_dir, spec.name, dname, task, seed)
                    if opts.skip_existing and is_finished(path):
                        summary.skipped_existing.append(path)
                        continue
                    base = {
                        "method": spec.name,
                        "dataset": dname,
                        "task": task,
                        "seed": seed,
                        "synthetic": src.synthetic,
                        "data_root": str(src.root),
                        "dataset_description": ds.description,
                        "classes": list(ds.classes),
                        "checkpoint": {"source": spec.source, "sha256": spec.checkpoint_sha256},
                        "versions": versions,
                    }
                    if spec.load is None:
                        if main_process:
                            write_result(path, {**base, "status": "skipped", "reason": spec.skip_reason})
                        summary.written.append(path)
                        continue
                    if adapter is None:
                        adapter = spec.load()
                    rec = _run_one(spec, adapter, src, task, seed, out_dir, path, opts)
                    rec = {**base, **rec}
                    if src.derived:  # splits that are not the dataset's own (how they were made)
                        rec["derived_splits"] = dict(src.derived)
                    if main_process:
                        write_result(path, rec)
                    summary.written.append(path)
                    summary.evaluated += rec["status"] == "ok"
                    if rec["status"] == "error":
                        summary.errors.append((path, rec["reason"]))
    return summary


def _run_one(
    spec: MethodSpec,
    adapter,
    src: DataSource,
    task: str,
    seed: int,
    out_dir: Path,
    path: Path,
    opts: RunOptions,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    ctx = TaskContext(
        method=spec.name,
        dataset=src.dataset,
        adapter=adapter,
        load=src.load,
        seed=seed,
        batch_size=opts.batch_size,
        out_dir=path.parent if accelerator().is_main_process else None,
        sidecar_stem=path.stem,
        options=dict(opts.task_options),
        cache_dir=(out_dir / "cache") if accelerator().is_main_process else None,
        fingerprint=src.fingerprint if hasattr(src, "fingerprint") else None,
        first_seed=list(opts.seeds)[0],
    )
    info = adapter_record(adapter.info)
    rec: dict[str, Any] = {
        "adapter": info,
        "image_size": info.get("image_size"),
        "normalisation": info.get("normalisation"),
        "zero_shot_protocol": info.get("zero_shot_protocol"),
    }
    if spec.checkpoint_sha256 is None and info.get("checkpoint_sha256"):
        rec["checkpoint"] = {"source": spec.source, "sha256": info["checkpoint_sha256"]}
    t0 = time.perf_counter()
    try:
        res = TASK_RUNNERS[task](ctx)
        rec.update(status="ok", **res)
    except TaskSkipped as e:
        rec.update(status="skipped", reason=str(e))
    except DatasetNotFoundError:
        raise  # a missing file is the user's to fix, never a silent skip
    except Exception as e:
        if opts.stop_on_error:
            raise
        log.error("%s/%s/%s seed %d failed: %s", spec.name, src.dataset.name, task, seed, e)
        rec.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    rec.update(ctx.record)
    rec["wall_s"] = round(time.perf_counter() - t0, 3)
    return rec
