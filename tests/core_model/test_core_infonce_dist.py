"""Two gloo CPU processes: gathered InfoNCE losses and gradients equal the single-process global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("dist_infonce_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_infonce_matches_single_process(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2
    for name in ("clip_local", "clip_global", "clip_local_sum", "one_way"):
        r = res["results"][name]
        assert r["loss"] > 0.1, name  # a non-trivial loss, so gradients are non-trivial too
        assert r["loss_diff"] < 1e-6, (name, r)
        assert r["grad_a_diff"] < 1e-6, (name, r)
        assert r["grad_b_diff"] < 1e-6, (name, r)
    # with a local loss each rank sees a different part of the batch, so its own loss differs
    assert res["results"]["clip_local"]["ranks_differ"]
    s = res["results"]["sinkhorn"]
    assert s["diff"] < 1e-6
    assert s["local_only_diff"] > 1e-3  # the per-rank (non-distributed) codes are genuinely different
