"""Resume a real method: `python -m cxrvlp.mgca.train tiny` SIGKILLed mid-epoch, then resumed (slow).

The tiny config builds its WordPiece vocab at start-up, and two builds can number the tokens differently,
so every run here uses one tokenizer saved beforehand (`data.tokenizer=<folder>`).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("cxrvlp.mgca") is None, reason="cxrvlp-mgca not installed"),
]

ARGS = ["tiny", "epochs=1", "save_every_steps=2", "keep_last_checkpoints=3", "seed=0"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxrvlp.mgca.train", *ARGS, f"output_dir={out}", *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_mgca_tiny_sigkill_and_resume_matches_uninterrupted(tmp_path):
    from cxrvlp.core.method import load_recipe_config
    from cxrvlp.mgca.config import MGCATrainConfig
    from cxrvlp.mgca.train import MGCATask

    cfg = load_recipe_config("mgca", MGCATrainConfig, "tiny", [f"output_dir={tmp_path / 'tok'}"])
    MGCATask(cfg).save_resources(tmp_path / "tok")
    tok = f"data.tokenizer={tmp_path / 'tok' / 'tokenizer'}"
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref, tok), check=True, capture_output=True, timeout=900, env=_env())
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out, tok), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    target = out / "checkpoints" / "step_00000006"
    deadline = time.time() + 900
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch, wherever it is after step 6
    proc.wait()
    assert not (out / "final").exists()
    subprocess.run(_cmd(out, tok, "resume=auto"), check=True, capture_output=True, timeout=900, env=_env())
    a = load_file(str(ref / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
