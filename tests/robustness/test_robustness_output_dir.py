"""Run folders: created when missing; never overwritten without overwrite=true; resume is the exception."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training import load_config, run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness_tiny_task as tiny  # noqa: E402

BASE = ["epochs=1", "batch_size=8", "progress_bar=false", "tracker=null"]


def _run(out: Path, *extra: str):
    cfg = load_config(tiny.TinyConfig, None, [*BASE, f"output_dir={out}", *extra])
    return run_training(tiny.TinyTask(cfg), cfg)


def test_missing_nested_folder_is_created(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    _run(out)
    assert (out / "final" / "model.safetensors").is_file() and (out / "config.yaml").is_file()


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    _run(out)
    weights = (out / "final" / "model.safetensors").read_bytes()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError) as e:
        _run(out, "seed=3")
    assert str(out) in str(e.value) and "overwrite" in str(e.value)
    assert (out / "final" / "model.safetensors").read_bytes() == weights  # untouched


def test_a_folder_with_any_content_is_protected(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "data.csv").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        _run(out)
    assert (out / "data.csv").read_text() == "x"


def test_overwrite_replaces_the_run_but_not_foreign_files(tmp_path):
    out = tmp_path / "run"
    _run(out, "epochs=2")
    (out / "notes.txt").write_text("mine")
    assert len(list((out / "checkpoints").iterdir())) == 2
    _run(out, "overwrite=true", "seed=3")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000003"]  # the old ones are gone
    assert (out / "notes.txt").read_text() == "mine"


def test_empty_existing_folder_is_fine(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert _run(out).global_step == 3


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        _run(f)
