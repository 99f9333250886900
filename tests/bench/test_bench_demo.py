"""End-to-end `demo` (smoke size in CI; the full size is slow)."""

from __future__ import annotations

import json

import pytest
from cxrvlp.bench.cli import main
from cxrvlp.bench.sources import method_status


def _check(out, capsys):
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text
    md = (out / "results.md").read_text()
    assert "SYNTHETIC DATA" in md.splitlines()[2]
    assert (out / "results.csv").is_file()
    recs = [json.loads(p.read_text()) for p in (out / "runs").rglob("*.json")]
    assert recs and all(r["synthetic"] is True for r in recs)
    for m in {
        r["method"] for r in recs
    }:  # methods without an implementation are listed as skipped, never faked
        mod, why = method_status(m)
        if mod is None:
            mine = [r for r in recs if r["method"] == m]
            assert mine and all(r["status"] == "skipped" and r["reason"] == why for r in mine)
    assert {r["dataset"] for r in recs} >= {
        "chexpert",
        "chestxray14",
        "padchest",
        "openi",
        "rsna-pneumonia",
        "siim-acr",
        "covidx",
    }
    return recs


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    # one method that trains (3 steps) and one that is skipped keep this under a minute on 2 cores
    assert main(["demo", "--size", "smoke", "--methods", "cxrclip,carzero", "--out", str(out)]) == 0
    _check(out, capsys)


@pytest.mark.slow
def test_demo_full(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    recs = _check(out, capsys)
    assert any(r["status"] == "ok" for r in recs)
    errors = [
        (r["method"], r["dataset"], r["task"], r.get("reason", "")[:200])
        for r in recs
        if r["status"] == "error"
    ]
    assert not errors, errors  # e.g. AFLoc's NaN-border maps once failed every grounding dataset


def test_demo_trains_methods_in_worker_processes(tmp_path):
    """The full demo's parallel path (jobs > 1, spawned workers): results come back per method, in order."""
    from cxrvlp.bench.demo import SuitePlan, train_methods
    from cxrvlp.core.data.synthetic import write_chexpert

    names = ("nosuch-a", "nosuch-b")
    specs, seconds, summary = train_methods(names, tmp_path, tmp_path, {n: [] for n in names}, jobs=2)
    assert [s.name for s in specs] == list(names) and set(seconds) == set(names)
    assert all(s.load is None and s.skip_reason == method_status(s.name)[1] for s in specs)
    assert summary.written == []  # no plan: training only
    # with a plan each worker runs the suite on its method as soon as it is trained (here: skipped results)
    chex = write_chexpert(tmp_path / "chexpert", n_train_patients=4, n_valid=4, n_test=10, n_per_class=2,
                          image_size=32)  # fmt: skip
    plan = SuitePlan({"chexpert": str(chex)}, "smoke", 0)
    over = {n: [] for n in names}
    _, _, summary = train_methods(names, tmp_path, tmp_path / "out", over, jobs=2, plan=plan)
    by_method = {p.parts[-4] for p in summary.written}
    assert by_method == set(names) and summary.evaluated == 0 and not summary.errors
    assert all(json.loads(p.read_text())["status"] == "skipped" for p in summary.written)


def test_demo_starts_the_longest_training_first():
    """Greedy scheduling on `jobs` cores: jobs sorted by expected CPU seconds (steps x seconds per step)."""
    from cxrvlp.bench.demo import DEFAULT_CPU_S_PER_STEP, _expected_cpu_s, demo_overrides

    names = ("carzero", "cxrclip", "mavl", "afloc", "mgca")
    cost = {m: _expected_cpu_s(m, demo_overrides(m, "full")) for m in names}
    assert max(cost, key=cost.get) == "mavl" and all(c > 0 for c in cost.values())
    for m in names:  # the budget each package declares is the one the demo uses
        demo = method_status(m)[0].demo
        assert cost[m] == pytest.approx(demo.expected_cpu_s())
    assert _expected_cpu_s("nosuch", ["max_steps=10"]) == pytest.approx(10 * DEFAULT_CPU_S_PER_STEP)
    # a user's max_steps (last) wins over the package's budget
    assert _expected_cpu_s("mgca", demo_overrides("mgca", "full", ["max_steps=7"])) == pytest.approx(
        7 * method_status("mgca")[0].demo.cpu_s_per_step
    )


def test_demo_budgets_come_from_the_method_packages():
    """No per-method table in the benchmark: each package's MethodSpec.demo, budget keys only."""
    import cxrvlp.bench.demo as demo
    from cxrvlp.bench.demo import demo_overrides

    assert not hasattr(demo, "METHOD_OVERRIDES") and not hasattr(demo, "CPU_S_PER_STEP")
    for m in ("carzero", "cxrclip", "mavl", "afloc", "mgca"):
        budget = method_status(m)[0].demo
        assert budget is not None and budget.max_steps > 0 and budget.measured, m
        # budget keys only: threads and the optimiser keys of a cut run, never a model or loss key
        budget_keys = ("num_threads", "optimizer.lr", "schedule.name")
        assert all(o.split("=")[0] in budget_keys for o in budget.overrides), m
        full = demo_overrides(m, "full")
        assert full[: 1 + len(budget.train_overrides())] == ["epochs=100", *budget.train_overrides()]
        assert "max_steps=3" in demo_overrides(m, "smoke")  # the smoke size ignores the budgets
