"""Parity with the official MAVL code: every tensor of the public fixture (README tolerances)."""

from __future__ import annotations

import pytest
from cxrvlp.core.testing import float64_twin, judge_parity
from cxrvlp.mavl.testing import run_parity_fixture
from safetensors.torch import load_file


def _tolerance(name: str) -> tuple[float, float]:
    """(rtol, atol) of the fixture README / config.json for one tensor."""
    if name.endswith("grad_norms") or name.endswith("temp_grad"):
        return 1e-3, 1e-6
    if "cross_attn" in name or name.startswith("grd.heat"):
        return 1e-4, 1e-7
    if name.startswith("train.loss"):
        return 1e-5, 1e-6
    return 1e-4, 1e-5


@pytest.fixture(scope="module")
def parity(shared_dir):
    fixture = shared_dir / "parity" / "mavl"
    return run_parity_fixture(fixture), load_file(str(fixture / "outputs.safetensors")), fixture


def test_every_tensor_matches_policy(parity):
    """Core's parity policy: fixture tolerance + k x |ours fp32 - ours fp64| (twin only when needed)."""
    ours, ref, fixture = parity
    report = judge_parity(ours, ref, _tolerance, lambda: float64_twin(run_parity_fixture, fixture))
    report.assert_ok()


def test_every_fixture_tensor_is_returned_with_its_shape(parity):
    """Names and shapes; the values are judged by core's parity policy above (a plain fixed-tolerance check
    fails on other kernel paths for the ill-conditioned train-mode tensors: issue 19)."""
    ours, ref, _ = parity
    assert set(ours) == set(ref)
    for name, want in ref.items():
        assert ours[name].shape == want.shape, (name, ours[name].shape, want.shape)
