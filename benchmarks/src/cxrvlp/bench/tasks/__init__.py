"""Benchmark tasks: each takes a `TaskContext` and returns the metrics part of a result record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped
from cxrvlp.bench.tasks.classification import run_zeroshot
from cxrvlp.bench.tasks.finetune import run_finetune
from cxrvlp.bench.tasks.grounding import run_grounding
from cxrvlp.bench.tasks.linear_probe import run_linear_probe
from cxrvlp.bench.tasks.retrieval import run_retrieval
from cxrvlp.bench.tasks.segmentation import run_segmentation

TASK_RUNNERS: dict[str, Callable[[TaskContext], dict[str, Any]]] = {
    "zeroshot": run_zeroshot,
    "grounding": run_grounding,
    "retrieval": run_retrieval,
    "linear_probe": run_linear_probe,
    "segmentation": run_segmentation,
    "finetune": run_finetune,
}

__all__ = ["TASK_RUNNERS", "TaskContext", "TaskSkipped"]
