"""A crafted pickle whose __reduce__ would run code is refused, and the code does not run."""

from __future__ import annotations

import pathlib
import pickle

import pytest
import torch
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training import extract_state_dict, safe_load


class Evil:
    """Unpickling this calls Path.touch(marker)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _evil_ckpt(path: pathlib.Path, marker: pathlib.Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": Evil(marker)}, path)


def test_the_crafted_payload_really_runs_code_with_a_plain_unpickle(tmp_path):
    # Proof that the payload is dangerous: an ordinary unpickle creates the marker file.
    marker = tmp_path / "proof-marker"
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"x": Evil(marker)}, f, protocol=2)
    with open(p, "rb") as f:
        pickle.load(f)  # noqa: S301 - deliberately unsafe, on our own file
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["torch-zip", "legacy-pickle"])
def test_safe_load_refuses_and_marker_is_not_created(tmp_path, fmt):
    marker = tmp_path / "pwned-marker"
    p = tmp_path / ("evil.ckpt" if fmt == "torch-zip" else "evil.pth")
    if fmt == "torch-zip":
        _evil_ckpt(p, marker)
    else:
        with open(p, "wb") as f:
            pickle.dump({"state_dict": {"w": torch.zeros(2)}, "x": Evil(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError) as e:
        safe_load(p)
    msg = str(e.value)
    assert str(p) in msg and "refused" in msg and "run code" in msg
    assert not marker.exists()


def test_safe_load_does_not_turn_the_evil_global_into_a_stub_unless_named(tmp_path):
    marker = tmp_path / "m"
    p = tmp_path / "evil.ckpt"
    _evil_ckpt(p, marker)
    with pytest.raises(CheckpointError):
        safe_load(p, stub_globals=["omegaconf.dictconfig.DictConfig"])
    assert not marker.exists()


def test_a_clean_file_next_to_it_still_loads(tmp_path):
    p = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, p)
    assert torch.equal(extract_state_dict(safe_load(p))["w"], torch.ones(2))
