"""Checkpoint helpers: foreign formats, key surgery, strict loading report, pretrained folders."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from cxrvlp.core.training import (
    apply_key_map,
    extract_state_dict,
    load_pretrained_weights,
    load_safetensors,
    load_state_dict_strict,
    read_pretrained_config,
    safe_load,
    save_pretrained,
    save_safetensors,
    sha256_file,
    strip_prefixes,
)
from cxrvlp.core.training.checkpoint import is_stub, stub_to_plain
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.decoder = nn.Module()
        self.decoder.norm = self.norm  # CARZero ties decoder.norm to decoder_norm
        self.out = nn.Linear(4, 4)


def sd_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lightning_ckpt_loads_with_weights_only(tmp_path):
    net = Net()
    ckpt = {
        "epoch": 20,
        "global_step": 33137,
        "pytorch-lightning_version": "1.5.10",
        "state_dict": {f"mgca.{k}": v for k, v in net.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]}],
        "hyper_parameters": {"emb_dim": 128, "img_encoder": "vit_base"},
    }
    p = tmp_path / "last.ckpt"
    torch.save(ckpt, p)
    sd = strip_prefixes(extract_state_dict(safe_load(p)), "mgca.")
    fresh = Net()
    assert load_state_dict_strict(fresh, sd).ok
    assert sd_equal(fresh.state_dict(), net.state_dict())


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict"])
def test_pth_tar_dicts_and_ddp_prefix(tmp_path, key):
    net = Net()
    obj = {key: {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3, "config": {"a": [1, 2]}}
    p = tmp_path / "model-best.tar"
    torch.save(obj, p)
    sd = extract_state_dict(safe_load(p))
    assert sd_equal(sd, net.state_dict())


def test_plain_state_dict_and_missing_state_dict():
    net = Net()
    assert sd_equal(extract_state_dict(net.state_dict()), net.state_dict())
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict({"epoch": 1, "config": {}}, source="x.pth")


def test_truncated_and_garbage_files_give_clear_errors(tmp_path):
    p = tmp_path / "m.pth"
    torch.save({"w": torch.randn(64, 64)}, p)
    data = p.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all" * 10)
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("cut.pth", "junk.pth", "empty.pth"):
        with pytest.raises(CheckpointError) as e:
            safe_load(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_load(tmp_path / "missing.pth")


def test_stub_globals_read_config_objects_without_running_them(tmp_path, monkeypatch):
    # A stand-in for Lightning's AttributeDict / an OmegaConf node living in a module we create here.
    mod = types.ModuleType("fakelightning_parsing")

    class AttributeDict(dict):
        def __setstate__(self, state):  # would run on a normal unpickle
            raise AssertionError("real class code ran")

    AttributeDict.__module__ = "fakelightning_parsing"
    AttributeDict.__qualname__ = "AttributeDict"
    mod.AttributeDict = AttributeDict
    monkeypatch.setitem(sys.modules, "fakelightning_parsing", mod)
    hp = AttributeDict(lr=2e-5, img_encoder="vit_base")
    hp.__dict__["extra"] = 1
    p = tmp_path / "pl.ckpt"
    torch.save({"state_dict": Net().state_dict(), "hyper_parameters": hp}, p)
    monkeypatch.delitem(sys.modules, "fakelightning_parsing")
    with pytest.raises(CheckpointError, match="fakelightning_parsing.AttributeDict"):
        safe_load(p)
    obj = safe_load(p, stub_globals=["fakelightning_parsing.AttributeDict"])
    assert is_stub(obj["hyper_parameters"])
    assert stub_to_plain(obj["hyper_parameters"]) == {"lr": 2e-5, "img_encoder": "vit_base", "extra": 1}
    assert set(extract_state_dict(obj)) == set(Net().state_dict())


def test_strip_prefixes_and_key_map():
    sd = {"CARZero.img.a": torch.zeros(1), "CARZero.txt.b": torch.ones(1), "other": torch.zeros(2)}
    out = strip_prefixes(sd, ["CARZero."])
    assert set(out) == {"img.a", "txt.b", "other"}
    mapped = apply_key_map(out, [(r"^img\.", "image_encoder."), (r"^other$", None), (r"\.b$", ".bias")])
    assert set(mapped) == {"image_encoder.a", "txt.bias"}
    with pytest.raises(CheckpointError, match="two keys map"):
        apply_key_map({"a.x": torch.zeros(1), "b.x": torch.zeros(1)}, [(r"^[ab]\.", "")])


def test_strict_load_lists_every_problem_and_loads_nothing():
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in Net().state_dict().items()}
    del sd["head.bias"]
    sd["enc.0.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as e:
        load_state_dict_strict(net, sd, source="ckpt.pth")
    msg = str(e.value)
    assert "ckpt.pth" in msg and "head.bias" in msg and "extra.weight" in msg and "enc.0.weight" in msg
    assert e.value.missing == ["head.bias"] and e.value.unexpected == ["extra.weight"]
    assert e.value.mismatched == [("enc.0.weight", (5, 3), (4, 3))]
    assert sd_equal(net.state_dict(), before)  # strict failure loads nothing
    report = load_state_dict_strict(net, sd, strict=False)
    assert not report.ok and report.missing == ["head.bias"]
    assert torch.equal(net.head.weight, sd["head.weight"])  # matching keys were loaded
    ok = load_state_dict_strict(
        net, sd, strict=False, ignore_missing=[r"head\.bias"], ignore_unexpected=["extra"]
    )
    assert ok.missing == [] and ok.unexpected == []


def test_save_pretrained_round_trip_with_tied_weights(tmp_path):
    m = Tied()
    with torch.no_grad():
        m.norm.weight.uniform_()
    out = save_pretrained(m, {"model": {"name": "tied-test"}, "lr": 1e-4}, tmp_path / "final")
    assert sorted(x.name for x in out.iterdir()) == ["config.json", "model.safetensors"]
    doc = read_pretrained_config(out)
    assert doc["model_name"] == "tied-test" and doc["config"]["lr"] == 1e-4
    assert doc["weights_sha256"] == sha256_file(out / "model.safetensors")
    fresh = Tied()
    assert load_pretrained_weights(fresh, out, verify_hash=True).ok
    assert torch.equal(fresh.norm.weight, m.norm.weight) and fresh.decoder.norm is fresh.norm
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_save_pretrained_refuses_non_empty_without_overwrite(tmp_path):
    save_pretrained(Net(), {"model_name": "n"}, tmp_path / "f")
    with pytest.raises(CheckpointError, match="not empty"):
        save_pretrained(Net(), {"model_name": "n"}, tmp_path / "f", overwrite=False)


def test_corrupt_pretrained_folder(tmp_path):
    out = save_pretrained(Net(), {"model_name": "n"}, tmp_path / "f")
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained_weights(Net(), out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        read_pretrained_config(out)


def test_safetensors_round_trip_and_metadata(tmp_path):
    sd = {"a": torch.randn(3, 2), "b": torch.arange(4)}
    p = save_safetensors(sd, tmp_path / "x.safetensors", metadata={"source": "test"})
    back = load_safetensors(p)
    assert sd_equal(back, sd)
    assert json.loads(json.dumps(sha256_file(p)))  # a hex digest string
