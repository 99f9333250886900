"""Resume: SIGKILL mid-epoch, a kill while a checkpoint is written, a corrupt latest checkpoint."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training import load_config, run_training
from cxrvlp.core.training.loop import list_checkpoints, read_trainer_state
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import robustness_tiny_task as tiny  # noqa: E402

SCRIPT = HERE / "robustness_tiny_task.py"
# 24 samples / batch 4 = 6 steps per epoch; checkpoints every 2 steps (mid-epoch) and at each epoch end.
ARGS = [
    "epochs=3",
    "batch_size=4",
    "save_every_steps=2",
    "keep_last_checkpoints=2",
    "progress_bar=false",
    "tracker=null",
    "deterministic=false",  # CPU kernels used here are deterministic; the flag is tested elsewhere
]


def _run(out: Path, *extra: str, task_cls=tiny.TinyTask):
    # Same intra-op thread count as the subprocess runs (bit-identical weights need the same reduction
    # order); the autouse fixture in tests/conftest.py restores the thread count after the test.
    torch.set_num_threads(1)
    cfg = load_config(tiny.TinyConfig, None, [*ARGS, f"output_dir={out}", *extra])
    return run_training(task_cls(cfg), cfg)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "model.safetensors"))


def _assert_identical(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    diffs = {k: (wa[k].double() - wb[k].double()).abs().max().item() for k in wa}
    assert all(torch.equal(wa[k], wb[k]) for k in wa), diffs


def _subprocess(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *ARGS, f"output_dir={out}", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of 18 optimizer steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = _run(out)
    assert res.global_step == 18
    return out


def test_reference_run_layout(reference):
    ckpts = list_checkpoints(reference / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000018", "step_00000016"]  # keep_last_checkpoints=2
    assert (reference / "config.yaml").is_file() and (reference / "final" / "config.json").is_file()
    assert not [p for p in (reference / "checkpoints").iterdir() if p.name.startswith(".tmp")]


class _Crash(Exception):
    pass


class CrashingTask(tiny.TinyTask):
    def training_step(self, model, batch, state):
        if state.global_step >= 9:
            raise _Crash
        return super().training_step(model, batch, state)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(reference, tmp_path):
    out = tmp_path / "run"
    proc = _subprocess(out, "--kill-at-step", "9")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (out / "final").exists()
    latest = list_checkpoints(out / "checkpoints")[0]
    st = read_trainer_state(latest)
    assert (st["global_step"], st["epoch"], st["step_in_epoch"]) == (8, 1, 2)  # mid-epoch
    res = _run(out, "resume=auto")
    assert res.global_step == 18
    _assert_identical(reference, out)
    assert res.history == read_trainer_state(reference / "checkpoints" / "step_00000018")["history"]


def _check_kill_in_save_then_resume(reference: Path, out: Path) -> None:
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ".tmp-step_00000008" in names and "step_00000008" not in names
    assert list_checkpoints(out / "checkpoints")[0].name == "step_00000006"
    _run(out, "resume=auto")
    _assert_identical(reference, out)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(reference, tmp_path, monkeypatch):
    # Saves happen at steps 2, 4, 6 (end of epoch 0) and 8: crash inside the 4th, after its files are
    # written to the temp folder and before the rename.
    from cxrvlp.core.training import loop

    calls = {"n": 0}
    real = loop.fsync_tree

    def crashing_fsync(folder):
        if ".tmp-" in str(folder):
            calls["n"] += 1
            if calls["n"] == 4:
                raise _Crash
        return real(folder)

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "fsync_tree", crashing_fsync)
    with pytest.raises(_Crash):
        _run(out)
    monkeypatch.setattr(loop, "fsync_tree", real)
    _check_kill_in_save_then_resume(reference, out)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(reference, tmp_path):
    out = tmp_path / "run"
    proc = _subprocess(out, "--kill-in-save", "4")
    assert proc.returncode == -9, proc.stderr[-3000:]
    _check_kill_in_save_then_resume(reference, out)


def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _run(out, task_cls=CrashingTask)
    latest = list_checkpoints(out / "checkpoints")[0]
    assert latest.name == "step_00000008"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_trainer_state(latest)
    with pytest.raises(CheckpointError, match="step_00000008"):
        _run(out, f"resume={latest}")  # an explicit path is never silently replaced
    with caplog.at_level(logging.WARNING, logger="cxrvlp.training"):
        res = _run(out, "resume=auto")
    assert any("step_00000008" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    assert res.global_step == 18
    _assert_identical(reference, out)


def test_resume_auto_with_every_checkpoint_corrupt_refuses(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _run(out, task_cls=CrashingTask)
    for ck in list_checkpoints(out / "checkpoints"):
        (ck / "trainer_state.json").write_text("{")
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        _run(out, "resume=auto")


def test_resume_refuses_a_changed_batch_geometry(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _run(out, task_cls=CrashingTask)
    with pytest.raises(CheckpointError, match="steps per epoch"):
        _run(out, "resume=auto", "batch_size=6")


def test_resume_auto_on_a_fresh_folder_starts_from_scratch(tmp_path):
    out = tmp_path / "fresh"
    res = _run(out, "resume=auto", "epochs=1")
    assert res.global_step == 6 and (out / "final" / "model.safetensors").is_file()
    shutil.rmtree(out)


def test_private_transform_generators_are_reseeded_per_sample(tmp_path):
    # The transform draws from its own numpy Generator (like core's transforms.Compose); without the
    # loop's per-item `transform.reseed`, the resumed run would restart that stream and diverge.
    ref = tmp_path / "ref"
    _run(ref, "data.private_rng=true")
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        _run(out, "data.private_rng=true", task_cls=CrashingTask)
    _run(out, "data.private_rng=true", "resume=auto")
    _assert_identical(ref, out)
