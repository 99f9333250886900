"""The parity judge of cxrvlp.core.testing (synthetic tensors; no fixtures)."""

from __future__ import annotations

import warnings

import pytest
import torch
from cxrvlp.core.testing import (
    DEFAULT_K,
    default_dtype,
    float64_twin,
    judge_parity,
    run_in_float64,
    simulated_float32_rounding,
    to_dtype,
)
from cxrvlp.core.testing.parity import ParityAllowanceWarning
from torch import nn

TOL = (1e-4, 1e-5)


def _ref(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g)


def test_within_fixture_tolerance_passes_without_twin():
    ref = {"a": _ref(), "ids": torch.arange(5)}
    ours = {"a": ref["a"] + 5e-6, "ids": torch.arange(5)}
    report = judge_parity(ours, ref, TOL)
    assert report.ok and report.failures == [] and report.allowance_used == []
    report.assert_ok()


def test_beyond_tolerance_fails_without_twin():
    ref = {"a": _ref()}
    report = judge_parity({"a": ref["a"] + 1e-3}, ref, TOL)
    assert not report.ok and report.failures[0].startswith("a:")
    with pytest.raises(AssertionError, match="a: max abs err"):
        report.assert_ok()


def test_allowance_from_rounding_noise_passes_and_is_named():
    ref = {"bn": _ref(), "loss": torch.tensor(2.0)}
    exact = ref["bn"].double()
    noise = torch.zeros(64, dtype=torch.float64)
    noise[3] = 2e-4  # one ill-conditioned element: float32 rounding moves it 2e-4
    ours = {"bn": (exact + noise).float(), "loss": torch.tensor(2.0)}
    twin = {"bn": exact, "loss": torch.tensor(2.0, dtype=torch.float64)}
    # the reference's own rounding error is another draw of the same size, elsewhere in the tensor
    ref["bn"] = (exact - 2 * noise.roll(5)).float()
    assert not judge_parity(ours, ref, TOL).ok  # fixture tolerance alone fails
    report = judge_parity(ours, ref, TOL, twin)
    assert report.ok and report.allowance_used == ["bn"]
    with pytest.warns(ParityAllowanceWarning, match="bn"):
        report.assert_ok()
    assert "allowance bn" in report.summary()


def test_error_larger_than_k_times_noise_fails():
    exact = _ref().double()
    ours = {"x": (exact + 1e-4).float()}  # rounding moves it ~1e-4 ...
    ref = {"x": (exact + 1e-4 + (DEFAULT_K + 1) * 1e-4 + 2e-3).float()}  # ... but the reference is further
    report = judge_parity(ours, ref, TOL, {"x": exact})
    assert not report.ok and report.allowance_used == []
    assert "fp32 rounding noise" in report.failures[0]


def test_modelling_error_is_not_rescued_by_an_honest_twin():
    # A wrong scale is in our float32 AND our float64 result: d stays at rounding level, the error fails.
    exact = _ref().double()
    wrong = exact * 1.01
    report = judge_parity({"x": wrong.float()}, {"x": exact.float()}, TOL, {"x": wrong})
    assert not report.ok


def test_twin_far_from_float32_is_not_rounding():
    # A twin that differs by more than max_noise x the tensor's scale gives no allowance (a dtype bug).
    exact = _ref().double()
    report = judge_parity({"x": exact.float()}, {"x": (exact + 0.05).float()}, TOL, {"x": exact + 0.2})
    assert not report.ok and "not float32 rounding" in report.failures[0]


def test_k_zero_is_the_fixture_tolerance():
    exact = _ref().double()
    ours, ref = {"x": (exact + 1e-4).float()}, {"x": (exact - 1e-4).float()}
    assert judge_parity(ours, ref, TOL, {"x": exact}).ok
    assert not judge_parity(ours, ref, TOL, {"x": exact}, k=0).ok


def test_tolerance_forms_integers_nans_shapes_and_names():
    ref = {"a": torch.tensor([1.0, float("nan")]), "ids": torch.tensor([1, 2]), "s": torch.zeros(2, 2)}
    ours = {"a": torch.tensor([1.0 + 5e-4, float("nan")]), "ids": torch.tensor([1, 3]), "s": torch.zeros(4)}
    by_name = judge_parity(ours, ref, {"a": (1e-3, 0.0), "ids": (0, 0), "s": TOL})
    by_fn = judge_parity(ours, ref, lambda n: (1e-3, 0.0) if n == "a" else TOL)
    for report in (by_name, by_fn):
        bad = {f.split(":")[0] for f in report.failures}
        assert bad == {"ids", "s"}
    nan_moved = judge_parity({"a": torch.tensor([float("nan"), 1.0])}, {"a": ref["a"]}, TOL)
    assert "NaN positions differ" in nan_moved.failures[0]
    names = judge_parity({"a": ref["a"], "extra": torch.ones(1)}, {"a": ref["a"], "gone": torch.ones(1)}, TOL)
    assert any("gone" in f for f in names.failures) and any("extra" in f for f in names.failures)


def test_lazy_twin_only_runs_when_needed():
    calls = []
    exact = _ref().double()

    def twin():
        calls.append(1)
        return {"x": exact}

    assert judge_parity({"x": exact.float()}, {"x": exact.float()}, TOL, twin).ok
    assert calls == []
    ours, ref = {"x": (exact + 1e-4).float()}, {"x": (exact - 1e-4).float()}
    assert judge_parity(ours, ref, TOL, twin).allowance_used == ["x"] and calls == [1]


def test_run_in_float64_casts_floats_keeps_ids_and_restores_default_dtype():
    emb = nn.Embedding(10, 4)
    lin = nn.Linear(4, 2)

    def fn(model, batch):
        h = model[0](batch["ids"]) * batch["scale"] + torch.ones(())  # torch.ones: default dtype
        return model[1](h)

    model = nn.Sequential(emb, lin)
    batch = {"ids": torch.tensor([[1, 2, 3]]), "scale": torch.tensor(0.5)}
    out32 = fn(model, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out64 = run_in_float64(fn, model, batch)
    assert out64.dtype == torch.float64 and lin.weight.dtype == torch.float64
    assert batch["ids"].dtype == torch.long  # caller's batch untouched, ids never cast
    assert torch.allclose(out64.float(), out32, atol=1e-6)
    assert torch.get_default_dtype() == torch.float32
    with default_dtype(torch.float64):
        assert torch.zeros(1).dtype == torch.float64
    assert (
        to_dtype((torch.ones(1), [torch.ones(1, dtype=torch.int32)]), torch.float64)[1][0].dtype
        == torch.int32
    )


def test_simulated_rounding_is_an_independent_float32_sized_draw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(8, 16, dtype=torch.float64)
    exact = model(x)
    with simulated_float32_rounding(seed=1):
        a = model(x)
    with simulated_float32_rounding(seed=1):
        b = model(x)
    rel = ((a - exact).abs().max() / exact.abs().max()).item()
    assert torch.equal(a, b) and 1e-9 < rel < 1e-5  # seeded, float32-sized (2^-24 = 6e-8 per op)
    assert torch.equal(model(x), exact)  # hook removed
    assert torch.equal(model.float()(x.float()), model(x.float()))  # float32 runs are never touched

    def run(inp, dtype=torch.float32):
        return {"y": model.to(dtype)(inp.to(dtype))}

    twin = float64_twin(run, x)
    assert twin["y"].dtype == torch.float64 and not torch.equal(twin["y"], exact)
