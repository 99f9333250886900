"""Validation passes, best/ and top_k/ selection, early stopping and the per-epoch batch-size schedule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training import load_config, load_pretrained_weights, run_training
from cxrvlp.core.training.loop import batch_size_at, read_trainer_state
from cxrvlp.core.training.selection import BestTracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))
import robustness_tiny_task as tiny  # noqa: E402

BASE = ["progress_bar=false", "tracker=null", "batch_size=4"]


class ValTask(tiny.TinyTask):
    """The tiny task with a held-out validation split read through the collate contract."""

    evaluate = None  # validation comes from build_val_dataset only

    def build_val_dataset(self):
        return tiny.TinyDataset(tiny.TinyData(n=10, augment=False))


def _cfg(tmp_path, *extra):
    return load_config(tiny.TinyConfig, None, [*BASE, f"output_dir={tmp_path / 'run'}", *extra])


def test_tracker_best_topk_and_patience():
    t = BestTracker("val_loss", "min", keep_k=2, patience=2)
    assert t.observe({"val_loss": 3.0}, 0) == (True, True)
    assert t.observe({"val_loss": 2.0}, 1) == (True, True)
    assert t.observe({"val_loss": 2.5}, 2) == (False, True) and t.top == [(2.0, 1), (2.5, 2)]
    assert t.observe({"val_loss": 9.0}, 3) == (False, False) and t.should_stop()
    u = BestTracker("val_loss", "min", keep_k=2, patience=2)
    u.load_state_dict(json.loads(json.dumps(t.state_dict())))
    assert u.state_dict() == t.state_dict()
    with pytest.raises(ConfigError, match="not among"):
        t.observe({"val_acc": 1.0}, 4)
    m = BestTracker("auc", "max")
    assert m.observe({"auc": 0.6}, 0)[0] and not m.observe({"auc": 0.5}, 1)[0]


def test_validation_selects_best_and_keeps_top_k(tmp_path):
    class Scripted(ValTask):
        """validation_step reports a scripted loss per epoch, so the best epoch is known in advance."""

        script = [0.9, 0.4, 0.7, 0.5]

        def validation_step(self, model, batch):
            return {"loss": torch.tensor(self.script[len(self.epochs_started) - 1])}

    cfg = _cfg(tmp_path, "epochs=4", "monitor=val_loss", "keep_best_k=2", "val_batch_size=3")
    res = run_training(Scripted(cfg), cfg)
    vals = [row["val_loss"] for row in res.history if "val_loss" in row]
    assert vals == pytest.approx([0.9, 0.4, 0.7, 0.5])
    assert [row.get("best") for row in res.history if "val_loss" in row] == [True, True, False, False]
    sel = json.loads((res.output_dir / "best" / "selection.json").read_text())
    assert sel["epoch"] == 1 and sel["value"] == pytest.approx(0.4)
    assert sorted(p.name for p in (res.output_dir / "top_k").iterdir()) == ["epoch_0001", "epoch_0003"]
    # best/ holds epoch 1's weights, not the last epoch's
    best = tiny.TinyNet()
    assert load_pretrained_weights(best, res.output_dir / "best").ok
    assert not torch.equal(best.head.weight, res.model.head.weight.detach().cpu())


def test_validation_mean_is_over_rows_and_early_stop(tmp_path):
    cfg = _cfg(tmp_path, "epochs=6", "monitor=val_loss", "early_stop_patience=1", "optimizer.lr=1e-12")
    res = run_training(ValTask(cfg), cfg)
    # patience 1: the run stops right after the first evaluated epoch that does not improve
    evaluated = [row for row in res.history if "val_loss" in row]
    vals = [row["val_loss"] for row in evaluated]
    first_bad = next(i for i in range(1, len(vals)) if vals[i] >= min(vals[:i]))
    assert len(evaluated) == first_bad + 1 < 6 and any(row.get("early_stop") for row in res.history)
    # the mean over the 10 validation rows equals a direct computation (batch 4: 4 + 4 + 2, weighted)
    ds = tiny.TinyDataset(tiny.TinyData(n=10, augment=False))
    res.model.eval()
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(res.model(ds.x), ds.y).item()
    assert evaluated[-1]["val_loss"] == pytest.approx(direct, rel=1e-5)  # the final weights


def test_monitor_without_validation_is_a_config_error(tmp_path):
    class NoVal(tiny.TinyTask):
        evaluate = None

    cfg = _cfg(tmp_path, "epochs=1", "monitor=val_loss")
    with pytest.raises(ConfigError, match="needs a validation set"):
        run_training(NoVal(cfg), cfg)


def test_batch_size_schedule_steps_and_exact_resume(tmp_path):
    sched = "batch_size_schedule=[[0, 4], [1, 8], [2, 12]]"
    cfg = _cfg(tmp_path, "epochs=3", sched, "eval_every_epochs=0")
    assert [batch_size_at(cfg, e) for e in range(4)] == [4, 8, 12, 12]
    full = run_training(tiny.TinyTask(cfg), cfg)
    assert full.global_step == 24 // 4 + 24 // 8 + 24 // 12
    # the same run interrupted after epoch 1 and resumed ends with the same weights
    part = _cfg(tmp_path / "b", "epochs=3", sched, "eval_every_epochs=0", "max_steps=9", "deterministic=true")
    run_training(tiny.TinyTask(part), part)
    st = read_trainer_state(next((tmp_path / "b" / "run" / "checkpoints").iterdir()))
    assert st["steps_by_epoch"] == [6, 3, 2] and st["global_step"] == 9
    rest = _cfg(tmp_path / "b", "epochs=3", sched, "eval_every_epochs=0", "resume=auto", "deterministic=true")
    resumed = run_training(tiny.TinyTask(rest), rest)
    ref_cfg = _cfg(tmp_path / "c", "epochs=3", sched, "eval_every_epochs=0", "deterministic=true")
    ref = run_training(tiny.TinyTask(ref_cfg), ref_cfg)
    for a, b in zip(resumed.model.state_dict().values(), ref.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["batch_size_schedule=[[1, 4]]"], "start epochs"),
        (["batch_size_schedule=[[0, 4], [0, 8]]"], "start epochs"),
        (["batch_size_schedule=[[0, 4], [1, 8]]", "schedule.name=warmup_cosine"], "steps per epoch change"),
    ],
)
def test_bad_batch_schedules(tmp_path, extra, match):
    cfg = _cfg(tmp_path, "epochs=2", *extra)
    with pytest.raises(ConfigError, match=match):
        run_training(tiny.TinyTask(cfg), cfg)


def test_task_module_sums_named_losses_and_exports_the_model(tmp_path):
    """A TaskModule (model + loss-owned parameter) trains; final/ holds the model alone."""
    from cxrvlp.core.training import TaskModule, read_pretrained_config, scalar_logs, sum_losses

    class Temp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.log_t = torch.nn.Parameter(torch.zeros(()))  # a loss-owned, learned temperature

    class Module(TaskModule):
        def forward(self, batch):
            logits = self.model(batch["image"]) * self.loss.log_t.exp()
            ce = torch.nn.functional.cross_entropy(logits, batch["label"])
            return {"ce_loss": ce, "reg_loss": 0.01 * self.loss.log_t**2, "logits": logits}

    class Task(tiny.TinyTask):
        evaluate = None

        def build_model(self):
            return Module(tiny.TinyNet(), Temp())

        def training_step(self, model, batch, state):
            terms = model(batch)
            return sum_losses(terms), scalar_logs(terms)

    cfg = _cfg(tmp_path, "epochs=1", "log_every_steps=1")
    res = run_training(Task(cfg), cfg)
    assert isinstance(res.model, tiny.TinyNet)  # the exported model, not the task module
    assert read_pretrained_config(res.final_dir)["model_name"] == "tiny-cnn"
    assert load_pretrained_weights(tiny.TinyNet(), res.final_dir).ok
    assert any("ce_loss" in row and "reg_loss" in row and "logits" not in row for row in res.history)
    with pytest.raises(ValueError, match="no '\\*_loss' term"):
        sum_losses({"acc": torch.tensor(1.0)})
