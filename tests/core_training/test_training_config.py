"""Typed YAML configs: loading, dotted overrides, type checks, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training import TrainConfig, config_to_dict, load_config, save_config
from cxrvlp.core.training.config import config_from_dict


@dataclass
class ModelSection:
    name: str = "tiny"
    dims: tuple[int, int] = (4, 8)
    layers: list[int] = field(default_factory=lambda: [1, 2])
    pool: Literal["cls", "mean"] = "cls"
    temperature: float | None = None
    root: Path | None = None


@dataclass
class MethodConfig(TrainConfig):
    model: ModelSection = field(default_factory=ModelSection)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file():
    cfg = load_config(MethodConfig, None, [])
    assert cfg == MethodConfig()


def test_file_and_overrides_reach_nested_dataclasses(tmp_path):
    p = write(tmp_path, "epochs: 3\noptimizer:\n  lr: 2.0e-5\n  betas: [0.5, 0.999]\nmodel:\n  pool: mean\n")
    cfg = load_config(
        MethodConfig, p, ["optimizer.lr=1e-4", "model.dims=[2, 3]", "model.temperature=0.07", "resume=auto"]
    )
    assert cfg.epochs == 3
    assert cfg.optimizer.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string: accepted for floats
    assert cfg.optimizer.betas == (0.5, 0.999) and isinstance(cfg.optimizer.betas, tuple)
    assert cfg.model.dims == (2, 3) and cfg.model.pool == "mean" and cfg.model.temperature == 0.07
    assert cfg.resume == "auto"


def test_int_is_accepted_for_float_and_null_for_optional(tmp_path):
    cfg = load_config(MethodConfig, None, ["optimizer.lr=1", "max_steps=null", "model.root=/data/x"])
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.max_steps is None
    assert cfg.model.root == Path("/data/x")


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lrr=1", "optimizer.lrr"),
        ("epochs=two", "epochs"),
        ("epochs=1.5", "epochs"),
        ("overwrite=1", "overwrite"),
        ("mixed_precision=fp8", "mixed_precision"),
        ("model.dims=[1, 2, 3]", "model.dims"),
        ("model.layers=[1, x]", "model.layers[1]"),
        ("optimizer.lr=null", "optimizer.lr"),
        ("epochs.sub=1", "epochs.sub"),
        ("model=3", "model"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(MethodConfig, None, [override])
    assert f"'{key}'" in str(e.value)
    assert override in str(e.value)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(MethodConfig, None, ["epochs"])


def test_bad_file_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "optimizer:\n  lr: 1.0e-4\n  momentun: 0.9\n")
    with pytest.raises(ConfigError) as e:
        load_config(MethodConfig, p)
    assert "optimizer.momentun" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_in_file_names_key_and_file(tmp_path):
    p = write(tmp_path, "batch_size: [8]\n")
    with pytest.raises(ConfigError) as e:
        load_config(MethodConfig, p)
    assert "'batch_size'" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("text", ["a: [1, 2\n", "- 1\n- 2\n", "just a string\n", "x: {y: 1\n"])
def test_malformed_yaml_names_the_file(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(MethodConfig, p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(MethodConfig, tmp_path / "nope.yaml")


def test_empty_file_is_an_error(tmp_path):
    # issue 24: an empty file silently meant every default; defaults are asked for by passing no file
    with pytest.raises(ConfigError, match="config file is empty"):
        load_config(MethodConfig, write(tmp_path, ""))
    assert load_config(MethodConfig, None) == MethodConfig()


def test_save_then_load_round_trip(tmp_path):
    cfg = load_config(MethodConfig, None, ["model.dims=[3, 5]", "schedule.name=warmup_cosine", "seed=7"])
    out = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert load_config(MethodConfig, out) == cfg
    assert config_from_dict(MethodConfig, config_to_dict(cfg)) == cfg
    assert not list((tmp_path / "sub").glob(".*tmp"))  # the temp file was renamed away


def test_mapping_override_merges_into_section():
    cfg = load_config(MethodConfig, None, ["optimizer={name: sgd, momentum: 0.9}"])
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.lr == MethodConfig().optimizer.lr
