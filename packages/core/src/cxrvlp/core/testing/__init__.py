"""Helpers for tests of method packages (parity with official code)."""

from cxrvlp.core.testing.parity import (
    DEFAULT_K,
    ParityReport,
    TensorVerdict,
    default_dtype,
    float64_twin,
    judge_parity,
    run_in_float64,
    simulated_float32_rounding,
    to_dtype,
)

__all__ = [
    "DEFAULT_K",
    "ParityReport",
    "TensorVerdict",
    "default_dtype",
    "float64_twin",
    "judge_parity",
    "run_in_float64",
    "simulated_float32_rounding",
    "to_dtype",
]
