"""Helpers for tests of method packages (parity with official code)."""

from cxrvlp.core.testing.parity import (
    DEFAULT_K,
    ParityReport,
    TensorVerdict,
    default_dtype,
    judge_parity,
    run_in_float64,
    to_dtype,
)

__all__ = [
    "DEFAULT_K",
    "ParityReport",
    "TensorVerdict",
    "default_dtype",
    "judge_parity",
    "run_in_float64",
    "to_dtype",
]
