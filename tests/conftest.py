"""Shared test fixtures: the ../shared reference folder (skips cleanly when absent), 2-process torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    env = os.environ.get("CXRVLP_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if c.is_dir() and (c / "specs").is_dir():
            return c
    return None


SHARED = _shared_dir()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder; skips the test when it is absent (a user's checkout has none)."""
    if SHARED is None:
        pytest.skip("../shared is absent (reference data only exists in the project's CI/dev machines)")
    return SHARED


def pytest_configure(config):
    # Deterministic, quiet, offline tests.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _restore_torch_global_state():
    """Tests must not leak process-wide torch settings (thread count, deterministic mode) into later tests.

    Parity tolerances (1e-5 on ResNet-50 outputs) are tighter than the rounding difference between 1 and 2
    intra-op threads, so a leaked `set_num_threads(1)` turns a passing parity test into a failing one.
    """
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    default_dtype = torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_default_dtype(default_dtype)


def free_port() -> int:
    """A free TCP port on the loopback interface (the rendezvous of a local process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(*prefix: str):
    def run(*args: str, timeout: int, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", *prefix, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return run


@pytest.fixture
def torchrun():
    """`torchrun(*args, timeout=...)`: `python -m torch.distributed.run --nproc_per_node=2 ... *args`
    (a script path or `-m module` and its arguments); asserts success and returns the completed process."""

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        port = f"--master_port={free_port()}"
        return _launcher("torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", port)(*args, **kw)

    return run


@pytest.fixture
def accelerate_launch():
    """`accelerate_launch(config_file, *args, timeout=...)`: `accelerate launch --config_file F` on a free
    port (`-m module` and its arguments follow); asserts success and returns the completed process."""

    def run(config_file, *args: str, **kw) -> subprocess.CompletedProcess:
        launch = _launcher("accelerate.commands.launch", "--config_file", str(config_file))
        return launch("--main_process_port", str(free_port()), *args, **kw)

    return run
