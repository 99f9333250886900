"""Shared test fixtures: the ../shared reference folder (skips cleanly when absent), 2-process torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# the shared test machinery (method_helpers.py, ddp_helpers.py) imports by name from any test folder
sys.path.insert(0, str(Path(__file__).resolve().parent))


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


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny GEMMs on a shared CPU avoid OpenMP oversubscription."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture
def ddp_checks(torchrun):
    """The two checks every method's 2-process DDP worker (tests/<m>/<m>_ddp_worker.py) is run for.

    `ddp_checks.losses(worker, tmp_path, differ=KEY)`: per rank, the DDP losses equal the single-process
    losses of that rank's shard, the DDP gradient is the mean of the per-shard gradients, and the two
    shards' `KEY` losses differ (else the equality proves nothing). `ddp_checks.training(worker, tmp_path,
    tokenizer=...)`: a few steps of the tiny recipe with 2 processes leave `final/` and finite losses.
    """
    import json
    import math
    from types import SimpleNamespace

    def losses(worker: Path, tmp_path: Path, differ: str, rel: float = 1e-3) -> list[dict]:
        torchrun(str(worker), "losses", str(tmp_path), timeout=600)
        ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
        for res in ranks:
            for k, v in res["single"].items():
                assert res["ddp"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (res["rank"], k)
            # DDP averages the per-shard gradients, nothing else is shared
            assert res["grad_rel_err"] < 1e-4, res.get("worst_param")
        assert ranks[0]["ddp"][differ] != pytest.approx(ranks[1]["ddp"][differ], rel=rel)
        return ranks

    def training(worker: Path, tmp_path: Path, tokenizer: bool) -> Path:
        torchrun(str(worker), "train", str(tmp_path), str(tmp_path / "synthetic"), timeout=1200)
        run = Path(json.loads((tmp_path / "train_rank0.json").read_text())["run"])
        assert (run / "final" / "model.safetensors").is_file()
        assert (run / "final" / "tokenizer").is_dir() == tokenizer
        history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
        values = [h["loss"] for h in history if "loss" in h]
        assert values and all(math.isfinite(v) for v in values)
        return run

    return SimpleNamespace(losses=losses, training=training)
