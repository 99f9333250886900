"""`cxrvlp-bench perf` on a tiny config: every JSON field present, positive, finite (no timing asserts)."""

from __future__ import annotations

import json
import math

from cxrvlp.bench.cli import main


def _pos(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_perf_sweep_writes_sane_json_and_table(tmp_path):
    rc = main([
        "perf", "--models", "cxrclip-tiny", "--batch-sizes", "2", "--steps", "1", "--warmup", "0",
        "--infer-steps", "1", "--threads", "1", "--peak-sizes", "128", "--peak-reps", "2", "--in-process",
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert rc == 0
    doc = json.loads((tmp_path / "perf.json").read_text())
    assert doc["schema"] == "cxrvlp-perf/1" and doc["kind"] == "sweep"
    m = doc["machine"]
    assert m["versions"]["torch"] and isinstance(m["cpu_flags"], list) and m["logical_cpus"] >= 1
    assert len(doc["load_before"]["loadavg"]) == 3
    assert _pos(doc["matmul_peak"]["peak_gflops"])
    (rec,) = doc["records"]
    assert "error" not in rec, rec.get("error")
    assert rec["workload"]["model"] == "cxrclip-tiny" and rec["threads"] == 1
    tr, inf = rec["train"], rec["inference"]
    for x in (
        tr["median_s"],
        tr["samples_per_s"],
        tr["flops_per_sample"],
        inf["median_s"],
        inf["samples_per_s"],
        inf["flops_per_sample"],
        rec["peak_rss_mib"],
        rec["params_trainable"],
    ):
        assert _pos(x), rec
    assert tr["losses_finite"] and tr["losses"] and all(k.endswith("_loss") for k in tr["losses"][0])
    # train FLOPs (forward + backward) exceed the no-grad inference pass per sample
    assert tr["flops_per_sample"] > inf["flops_per_sample"]
    d = rec["derived"]
    assert 0 < d["train_util_of_peak"] < 100 and _pos(d["train_gflops_per_s"])
    table = (tmp_path / "perf_table.md").read_text()
    assert "| cxrclip-tiny | 2 | fp32 |" in table
