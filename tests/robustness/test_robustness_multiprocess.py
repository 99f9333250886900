"""Two CPU processes (gloo): a NaN on one rank is skipped on both; resume after a kill under torchrun.

The CI test forks the already-imported test process into two ranks (seconds instead of a minute of imports
per rank); the slow tests go through the real `torchrun` launcher.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "robustness_tiny_task.py"
sys.path.insert(0, str(HERE))
import robustness_tiny_task as tiny  # noqa: E402

ARGS = ["batch_size=4", "progress_bar=false", "tracker=null", "save_every_steps=2"]


def _torchrun(out: Path, *extra: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, str(SCRIPT), *ARGS, f"output_dir={out}", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _finals(stdout: str) -> dict[int, dict[str, str]]:
    rows = {}
    # the checksum is a float repr: a number pattern, so a line glued to the next one still parses
    for m in re.finditer(r"FINAL \S+ rank=(\d) step=(\d+) skipped=(\d+) checksum=([-+0-9.eEinfa]+)", stdout):
        rows[int(m.group(1))] = {"step": m.group(2), "skipped": m.group(3), "checksum": m.group(4)}
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, overrides: list[str], queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    # The forked child inherits the parent's single-process accelerate singletons: start afresh.
    from accelerate.state import AcceleratorState, GradientState
    from cxrvlp.core.training import load_config, run_training

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        cfg = load_config(tiny.TinyConfig, None, overrides)
        res = run_training(tiny.TinyTask(cfg), cfg)
        params = torch.cat([p.detach().double().flatten() for p in res.model.parameters()])
        queue.put((rank, res.global_step, res.skipped_steps, params.tolist()))
    except BaseException as e:  # report instead of hanging the parent
        queue.put((rank, "error", repr(e), None))
        raise


def _fork_two_ranks(overrides: list[str], timeout: float = 240.0) -> dict[int, tuple]:
    # Import torch.optim's lazy torch._dynamo once here, not in each child.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, overrides, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            rank, *rest = queue.get(timeout=timeout)
            results[rank] = tuple(rest)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    return results


@pytest.mark.skipif(sys.platform != "linux", reason="forks the test process")
def test_nan_on_one_rank_is_skipped_on_every_rank(tmp_path):
    # 24 samples, 2 ranks x 4 per batch: 3 steps per epoch; s005 is in one rank's batch once per epoch.
    # Without the all-reduced decision the clean rank would step on NaN gradients (or DDP would hang).
    out = tmp_path / "run"
    results = _fork_two_ranks(
        [*ARGS, f"output_dir={out}", "epochs=2", "nan_policy=skip", "data.nan_ids=[s005]"]
    )
    assert set(results) == {0, 1}, results
    (step0, skipped0, params0), (step1, skipped1, params1) = results[0], results[1]
    assert step0 == step1 == 6 and skipped0 == skipped1 == 2, results
    assert params0 == params1  # identical replicas
    assert all(v == v for v in params0)  # finite: NaN != NaN
    ckpt = out / "checkpoints" / "step_00000006"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in ckpt.iterdir()}


@pytest.mark.slow
def test_torchrun_two_processes_nan_skip(tmp_path):
    proc = _torchrun(tmp_path / "run", "epochs=2", "nan_policy=skip", "data.nan_ids=[s005]")
    assert proc.returncode == 0, proc.stderr[-4000:]
    finals = _finals(proc.stdout)
    assert set(finals) == {0, 1} and finals[0] == finals[1]
    assert finals[0]["step"] == "6" and finals[0]["skipped"] == "2"
    weights = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.slow
def test_two_process_kill_and_resume_matches_uninterrupted(tmp_path):
    ref = _torchrun(tmp_path / "ref", "epochs=3")
    assert ref.returncode == 0, ref.stderr[-4000:]
    killed = _torchrun(tmp_path / "run", "epochs=3", "--kill-at-step", "5")
    assert killed.returncode != 0
    resumed = _torchrun(tmp_path / "run", "epochs=3", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
