"""Issue 24, config / resume / output side: every bad input is a named ConfigError or CheckpointError before
anything is built, never a silently wrong run (dict overrides, ranges, registered names, empty recipes, an
offline tokenizer, crafted checkpoint files, un-restorable RNG, final/ replacement and a full disk)."""

from __future__ import annotations

import errno
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from cxrvlp.core.errors import CheckpointError, ConfigError
from cxrvlp.core.method import MethodSpec, resolve_recipe
from cxrvlp.core.training import TrainConfig, load_config, run_training
from cxrvlp.core.training import checkpoint as ck
from cxrvlp.core.training.checkpoint import read_pretrained_config, save_pretrained, sha256_file
from cxrvlp.core.training.loop import list_checkpoints
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))
import robustness_tiny_task as tiny  # noqa: E402


@dataclass
class Model:
    vit: dict[str, Any] = field(default_factory=dict)
    emb_dim: int = 8
    softmax_temperature: float = 0.07
    ratio: float = field(default=0.5, metadata={"gt": 0, "le": 1})


@dataclass
class Cfg(TrainConfig):
    model_name: str = "my-default"
    model: Model = field(default_factory=Model)


def test_dotted_override_into_a_dict_field_and_mapping_merge(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  vit: {img_size: 64, patch_size: 8, depth: 2}\n")
    assert load_config(Cfg, y, ["model.vit.depth=3"]).model.vit == {
        "img_size": 64,
        "patch_size": 8,
        "depth": 3,
    }
    merged = load_config(Cfg, y, ["model.vit={img_size: 32}"]).model.vit
    assert merged == {"img_size": 32, "patch_size": 8, "depth": 2}  # merged, nothing dropped
    assert load_config(Cfg, None, ["model.vit.a.b=1"]).model.vit == {"a": {"b": 1}}
    with pytest.raises(ConfigError, match="unknown key 'model.emb_dim.x'"):
        load_config(Cfg, None, ["model.emb_dim.x=1"])


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(
        [
            ("optimizer.lr", "gt", 0.0),
            ("model.emb_dim", "gt", 0),
            ("model.softmax_temperature", "gt", 0.0),
            ("num_workers", "ge", 0),
            ("epochs", "ge", 0),
            ("optimizer.weight_decay", "ge", 0.0),
            ("model.ratio", "gt", 0.0),
        ]
    ),
    st.integers(-5, 5),
)
def test_ranges_are_checked_at_load(rule, v):
    key, op, bound = rule
    value = float(v) if isinstance(bound, float) else v
    good = value > bound if op == "gt" else value >= bound
    if key == "model.ratio":
        good = good and value <= 1
    try:
        cfg = load_config(Cfg, None, [f"{key}={value}"])
    except ConfigError as err:
        assert not good and f"key '{key}': must be" in str(err)
        return
    assert good and cfg is not None


def test_registered_model_name_empty_yaml_and_unknown_recipe(tmp_path):
    from cxrvlp.mgca.config import MGCATrainConfig

    # a method's config: its model_name (default included) must be one of that method's registered names
    with pytest.raises(ConfigError, match=r"'model_name': 'no-such-model' is not a registered mgca model"):
        load_config(MGCATrainConfig, None, ["model_name=no-such-model"])
    with pytest.raises(ConfigError, match=r"not a registered mgca model"):
        load_config(MGCATrainConfig, None, ["model_name=cxrclip-r50"])  # another method's name
    assert load_config(MGCATrainConfig, None).model_name == "mgca-vit-b16"
    assert load_config(Cfg, None).model_name == "my-default"  # a config outside a method package: no method
    for text in ("", "# only a comment\n", "{}\n"):
        (tmp_path / "e.yaml").write_text(text)
        with pytest.raises(ConfigError, match=r"e.yaml: config file is empty"):
            load_config(Cfg, tmp_path / "e.yaml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("epochs: 1\n")
    spec = MethodSpec("m", None, None, None, tmp_path / "configs", {}, (), None)
    with pytest.raises(ConfigError, match=r"no packaged recipe 'nope'; available: \['tiny'\]"):
        resolve_recipe(spec, "nope")


def test_offline_missing_tokenizer_fails_at_once(tmp_path, monkeypatch):
    from cxrvlp.core.text.tokenize import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"not in the local hub cache \(tried .*hub/models--org--no-tok\)"):
        load_tokenizer("org/no-tok")
    with pytest.raises(ConfigError, match=r"tokenizer path '.*/missing' does not exist"):
        load_tokenizer(str(tmp_path / "missing"))


# ---- resume --------------------------------------------------------------------------------------------

BASE = ["batch_size=4", "progress_bar=false", "tracker=null", "data.n=8"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _trained(tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    cfg = load_config(tiny.TinyConfig, None, [*BASE, f"output_dir={out}", "epochs=1"])
    run_training(tiny.TinyTask(cfg), cfg)
    return out, list_checkpoints(out / "checkpoints")[0]


def _rehash(ckpt: Path) -> None:
    """Keep the SHA-256 manifest in step with a crafted file (a checkpoint crafted as a whole)."""
    p = ckpt / "trainer_state.json"
    st_ = json.loads(p.read_text())
    st_["files"] = {rel: sha256_file(ckpt / rel) for rel in st_["files"]}
    p.write_text(json.dumps(st_))


def _resume(out, *extra):
    cfg = load_config(tiny.TinyConfig, None, [*BASE, f"output_dir={out}", "epochs=2", "resume=auto", *extra])
    return run_training(tiny.TinyTask(cfg), cfg)


def test_crafted_checkpoint_files_are_named(tmp_path, caplog):
    out, ckpt = _trained(tmp_path)
    good = {n: (ckpt / n).read_bytes() for n in ("optimizer.bin", "model.safetensors", "random_states_0.pkl")}
    torch.save({"state": Evil()}, ckpt / "optimizer.bin")
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"optimizer.bin: refused to load"):
        _resume(out)
    (ckpt / "optimizer.bin").write_bytes(good["optimizer.bin"])
    (ckpt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{junk}\x00")
    _rehash(ckpt)
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated or corrupt"):
        _resume(out)
    (ckpt / "model.safetensors").write_bytes(good["model.safetensors"])
    torch.save({"random_state": Evil()}, ckpt / "random_states_0.pkl")
    _rehash(ckpt)
    with pytest.raises(
        CheckpointError, match=r"random_states_0.pkl: refused .* resume_allow_rng_mismatch=true"
    ):
        _resume(out)
    with caplog.at_level(logging.WARNING, "cxrvlp.core.training"):
        res = _resume(out, "resume_allow_rng_mismatch=true")
    assert res.global_step == 4 and "un-restored RNG" in caplog.text


def test_rng_not_restored_is_detected(tmp_path):
    import random

    states = {
        "random_state": random.getstate(),
        "numpy_random_seed": None,
        "torch_manual_seed": torch.get_rng_state(),
    }
    random.random()
    with pytest.raises(CheckpointError, match="RNG states were not restored"):
        ck.check_rng_restored(states, tmp_path)
    assert ck.check_rng_restored(states, tmp_path, allow=True) is False


# ---- save_pretrained -----------------------------------------------------------------------------------


def _saved(d: Path) -> float:
    return read_pretrained_config(d)["config"]["v"]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_final_is_swapped_never_missing(tmp_path, monkeypatch):
    final = tmp_path / "final"
    save_pretrained(nn.Linear(2, 2), {"v": 1}, final)
    seen = []
    real = ck._exchange

    def spy(a, b):
        ok = real(a, b)
        seen.append((ok, final.is_dir() and _saved(final)))
        return ok

    monkeypatch.setattr(ck, "_exchange", spy)
    save_pretrained(nn.Linear(2, 2), {"v": 2}, final)
    assert _saved(final) == 2 and _leftovers(tmp_path) == []
    if seen[0][0]:  # the filesystem exchanged: final/ was the new folder right after the one syscall
        assert seen[0][1] == 2


def test_crash_between_the_fallback_renames_is_recovered(tmp_path, monkeypatch):
    final = tmp_path / "final"
    save_pretrained(nn.Linear(2, 2), {"v": 1}, final)
    monkeypatch.setattr(ck, "_exchange", lambda a, b: False)
    real = ck.os.replace

    def crash_second(src, dst):
        if Path(dst) == final:  # old -> .final.old-<pid> done; new -> final/ not yet
            raise KeyboardInterrupt("killed between the renames")
        return real(src, dst)

    monkeypatch.setattr(ck.os, "replace", crash_second)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(nn.Linear(2, 2), {"v": 2}, final)
    monkeypatch.setattr(ck.os, "replace", real)
    assert not final.exists()
    assert ck.recover_pretrained_dir(final) == final and _saved(final) == 1  # the old one, complete
    save_pretrained(nn.Linear(2, 2), {"v": 3}, final)
    assert _saved(final) == 3 and _leftovers(tmp_path) == []


def test_disk_full_is_a_clear_error_and_leaves_no_temp_folder(tmp_path, monkeypatch):
    final = tmp_path / "final"
    save_pretrained(nn.Linear(2, 2), {"v": 1}, final)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(CheckpointError, match=r"final: no space left on the device .* nothing was replaced"):
        save_pretrained(nn.Linear(2, 2), {"v": 2}, final)
    assert _saved(final) == 1 and _leftovers(tmp_path) == []
