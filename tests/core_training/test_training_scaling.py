"""Gradient checkpointing, torch.compile of the task module, the accumulation warning (training.scaling)."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cxrvlp.core.registry import get_method, installed_methods
from cxrvlp.core.training import sum_losses
from cxrvlp.core.training.scaling import (
    accumulation_warning,
    compile_task_module,
    enable_gradient_checkpointing,
)

METHODS = sorted(installed_methods())


def _step(module: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one training step (same dropout draws for every call)."""
    torch.manual_seed(1)
    module.train()
    module.zero_grad(set_to_none=True)
    loss = sum_losses(module(batch))
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _example(method: str):
    torch.manual_seed(0)
    return get_method(method).example_batch(f"{method}-tiny", 4)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(method):
    module, batch = _example(method)
    plain = copy.deepcopy(module)  # before wrapping: the wrappers close over their own blocks
    wrapped = enable_gradient_checkpointing(module)
    assert wrapped >= 2, "every tiny model has at least one stack of transformer blocks"
    assert enable_gradient_checkpointing(module) == 0  # idempotent: nothing is wrapped twice
    loss_ref, grads_ref = _step(plain, batch)
    loss, grads = _step(module, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-7)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-5, atol=1e-7, msg=k)


def test_batchnorm_stacks_are_not_checkpointed():
    bn_stack = torch.nn.ModuleList(
        [torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)) for _ in range(3)]
    )
    assert enable_gradient_checkpointing(torch.nn.Sequential(*bn_stack)) == 0
    assert enable_gradient_checkpointing(torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 1)) == 0  # no stack


def test_compiled_task_module_gives_the_same_loss_and_gradients():
    module, batch = _example("mgca")
    plain = copy.deepcopy(module)
    names = list(module.state_dict())
    compile_task_module(module, backend="aot_eager")  # autograd traced and replayed; no C++ build in CI
    assert list(module.state_dict()) == names  # saved folders and checkpoints keep their keys
    loss_ref, grads_ref = _step(plain, batch)
    loss, grads = _step(module, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for k in grads_ref:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6, msg=k)


def _history_losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.slow
def test_training_switches_run_through_the_loop_with_the_same_losses(tmp_path):
    """mgca tiny, 2 optimizer steps: plain vs gradient_checkpointing=true + compile=true (aot_eager)."""
    spec = get_method("mgca")
    common = [f"data.synthetic_dir={tmp_path / 'synth'}", "data.synthetic_patients=12", "epochs=1",
              "max_steps=2", "batch_size=4", "log_every_steps=1", "progress_bar=false"]  # fmt: skip
    plain = Path(spec.train("tiny", [f"output_dir={tmp_path / 'plain'}", *common]))
    # the second run reads the first one's vocabulary (a rebuilt WordPiece vocab need not be bit-identical)
    switched = spec.train("tiny", [
        f"output_dir={tmp_path / 'switched'}", *common, f"data.tokenizer={plain / 'tokenizer'}",
        "gradient_checkpointing=true", "compile=true", "compile_backend=aot_eager",
    ])  # fmt: skip
    losses = _history_losses(plain)
    assert len(losses) == 2
    assert _history_losses(Path(switched)) == pytest.approx(losses, rel=1e-5)


def test_gradient_checkpointing_on_a_cnn_only_model_is_refused(tmp_path):
    import sys

    from cxrvlp.core.errors import ConfigError
    from cxrvlp.core.training import load_config, run_training

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))
    import robustness_tiny_task as tiny

    overrides = [f"output_dir={tmp_path / 'run'}", "gradient_checkpointing=true"]
    cfg = load_config(tiny.TinyConfig, None, overrides)
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        run_training(tiny.TinyTask(cfg), cfg)


def test_accumulation_warning_names_the_negatives_of_one_micro_batch():
    cfg = SimpleNamespace(grad_accum_steps=4, batch_size=32, batch_size_schedule=None)
    local = accumulation_warning(SimpleNamespace(in_batch_negatives="local"), cfg, 2)
    assert "32 per process" in local and "nothing is gathered" in local and "4x larger" in local
    gathered = accumulation_warning(SimpleNamespace(in_batch_negatives="gathered"), cfg, 2)
    assert "gathered over the 2 processes (32 per process x 2)" in gathered
    assert accumulation_warning(SimpleNamespace(in_batch_negatives="local"), SimpleNamespace(
        grad_accum_steps=1, batch_size=32, batch_size_schedule=None), 2) is None  # fmt: skip
    assert accumulation_warning(SimpleNamespace(), cfg, 2) is None  # a task without in-batch negatives


@pytest.mark.parametrize("method", METHODS)
def test_each_task_declares_the_negatives_its_loss_uses(method):
    """`in_batch_negatives` agrees with the loss code: "gathered" exactly where loss.py all-gathers."""
    import importlib

    task_cls = next(
        obj for name, obj in vars(importlib.import_module(f"cxrvlp.{method}.train")).items()
        if inspect.isclass(obj) and name.endswith("Task") and obj.__module__ == f"cxrvlp.{method}.train"
    )  # fmt: skip
    loss_src = inspect.getsource(importlib.import_module(f"cxrvlp.{method}.loss"))
    gathers = "gather_with_grad(" in loss_src or "gather_features(" in loss_src
    assert task_cls.in_batch_negatives == ("gathered" if gathers else "local")
