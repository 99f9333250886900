"""What machine a perf record was measured on, and its fp32 matmul peak measured in the same run."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from typing import Any

import torch

_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
_LIBS = ("torch", "torchvision", "transformers", "timm", "numpy", "accelerate")


def load() -> dict[str, Any]:
    """`uptime`'s load averages (1, 5, 15 min) and its raw line: the machine is shared."""
    one, five, fifteen = os.getloadavg()
    try:
        raw = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raw = ""
    return {
        "loadavg": [one, five, fifteen],
        "uptime": raw,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpuinfo() -> dict[str, Any]:
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [f for f in _FLAGS if f in flags]}


def info() -> dict[str, Any]:
    """Machine, CPU flags, torch build and library versions."""
    versions = {}
    for lib in _LIBS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "logical_cpus": os.cpu_count(),
        **_cpuinfo(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def matmul_peak(
    sizes: tuple[int, ...] = (2048, 4096), reps: int = 5, threads: int | None = None
) -> dict[str, Any]:
    """fp32 torch.matmul N x N GFLOP/s (2 N^3 / t), median of `reps` timed calls after 2 warm-up calls per
    size; `peak_gflops` = the largest median (the utilisation denominator)."""
    if threads:
        torch.set_num_threads(threads)
    per_size = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            torch.matmul(a, b)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            ts.append(time.perf_counter() - t0)
        flop = 2.0 * n**3
        per_size[str(n)] = {
            "times_s": ts,
            "gflops_median": flop / statistics.median(ts) / 1e9,
            "gflops_max": flop / min(ts) / 1e9,
        }
    return {
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "sizes": per_size,
        "peak_gflops": max(v["gflops_median"] for v in per_size.values()),
    }
