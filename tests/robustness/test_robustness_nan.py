"""Non-finite losses: detected on every micro-step; skipped (no update, counted) or stopped, with ids."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
from cxrvlp.core.errors import NonFiniteLossError
from cxrvlp.core.training import load_config, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness_tiny_task as tiny  # noqa: E402

BASE = ["batch_size=4", "progress_bar=false", "tracker=null", "log_every_steps=1"]


class RecordingTask(tiny.TinyTask):
    """Records the trainable parameters seen at every micro-step, keyed by (optimizer step, micro index)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seen: list[tuple[int, list[str], dict[str, torch.Tensor]]] = []

    def training_step(self, model, batch, state):
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.seen.append((state.global_step, list(batch["sample_ids"]), params))
        return super().training_step(model, batch, state)


def _cfg(tmp_path, *extra):
    return load_config(tiny.TinyConfig, None, [*BASE, f"output_dir={tmp_path / 'run'}", *extra])


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["nan_ids", "inf_ids"])
def test_skip_policy_skips_the_update_and_counts_it(tmp_path, caplog, kind):
    cfg = _cfg(tmp_path, "epochs=2", "nan_policy=skip", f"data.{kind}=[s005]")
    task = RecordingTask(cfg)
    with caplog.at_level(logging.WARNING, logger="cxrvlp.training"):
        res = run_training(task, cfg)
    bad_steps = [step for step, ids, _ in task.seen if "s005" in ids]
    assert len(bad_steps) == 2 and res.skipped_steps == 2 and res.global_step == 12
    by_step = {step: params for step, _, params in task.seen}
    for step in bad_steps:
        if step + 1 in by_step:  # the parameters after a skipped step equal those before it
            assert _same(by_step[step], by_step[step + 1])
    ok_step = next(s for s in range(11) if s not in bad_steps)
    assert not _same(by_step[ok_step], by_step[ok_step + 1])  # a normal step does update
    msgs = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(msgs) == 2 and all("s005" in m for m in msgs)
    assert f"step {bad_steps[0]}" in msgs[0]
    logged = [row["skipped_non_finite"] for row in res.history if "skipped_non_finite" in row]
    assert len(logged) == 2 and logged[0].count("s005") == 1
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_stop_policy_raises_with_step_and_sample_ids(tmp_path):
    cfg = _cfg(tmp_path, "epochs=1", "nan_policy=stop", "data.nan_ids=[s011]")
    with pytest.raises(NonFiniteLossError) as e:
        run_training(tiny.TinyTask(cfg), cfg)
    assert "s011" in str(e.value) and "optimizer step" in str(e.value)


def test_under_grad_accumulation_the_whole_window_is_skipped(tmp_path):
    cfg = _cfg(tmp_path, "epochs=1", "nan_policy=skip", "grad_accum_steps=2", "data.nan_ids=[s005]")
    task = RecordingTask(cfg)
    res = run_training(task, cfg)
    assert res.global_step == 3 and res.skipped_steps == 1  # 6 micro-batches, 3 optimizer steps
    bad = next(step for step, ids, _ in task.seen if "s005" in ids)
    micro = [params for step, _, params in task.seen if step == bad]
    after = [params for step, _, params in task.seen if step == bad + 1]
    assert len(micro) == 2 and _same(micro[0], micro[1])
    if after:
        assert _same(micro[0], after[0])


def test_finite_run_skips_nothing(tmp_path):
    cfg = _cfg(tmp_path, "epochs=1", "nan_policy=stop")
    res = run_training(tiny.TinyTask(cfg), cfg)
    assert res.skipped_steps == 0 and res.global_step == 6
