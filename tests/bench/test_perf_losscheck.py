"""The same-weights loss check of `cxrvlp-bench perf --vs-official` (losscheck.py): term mapping, comparison,
the JSON/table update of `--loss-check-only`, and our side on an exported tiny model. The real check against
the official code (its venv under /work/perfenv) is `slow` and skipped where that is absent."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from cxrvlp.bench.cli import main
from cxrvlp.bench.perf import losscheck, official

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "perf" / "results"
PERFENV = Path(os.environ.get("CXRVLP_PERFENV", "/work/perfenv"))
HARNESSES = Path(__file__).resolve().parents[3] / "shared" / "perf_official"


def test_compare_terms_equal_within_tolerance_and_not_beyond():
    tm = [("a", "x"), ("b", "y")]
    rec = losscheck.compare_terms({"a": 2.0, "b": 1.0}, {"x": 2.0 + 1e-5, "y": 1.0}, tm)
    assert rec["equal"] and rec["compared"] == ["a->x", "b->y"] and not rec["missing"]
    assert rec["max_abs_diff"] == pytest.approx(1e-5)
    bad = losscheck.compare_terms({"a": 2.0, "b": 1.0}, {"x": 2.01, "y": 1.0}, tm)
    assert not bad["equal"] and [r["equal"] for r in bad["terms"]] == [False, True]
    assert bad["terms"][0]["rel_diff"] == pytest.approx(0.005)
    assert "a official 2 vs ours 2.01" in losscheck.summary_text(bad)


def test_a_missing_or_non_finite_term_is_never_equal():
    miss = losscheck.compare_terms({"a": 1.0}, {}, [("a", "x")])
    assert not miss["equal"] and miss["missing"] == ["a->x"]
    nan = losscheck.compare_terms({"a": math.nan}, {"x": math.nan}, [("a", "x")])
    assert not nan["equal"]
    assert not losscheck.compare_terms({}, {}, [])["equal"]  # nothing compared is not a pass


def test_compare_tensors_checks_shape_and_scale():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (ok,) = losscheck.compare_tensors({"i2t": a}, {"l": a + 1e-6}, [("i2t", "l")])
    assert ok["equal"] and ok["spread_official"] == pytest.approx(3.0)
    (far,) = losscheck.compare_tensors({"i2t": a}, {"l": a + 0.01}, [("i2t", "l")])
    assert not far["equal"]
    (shape,) = losscheck.compare_tensors({"i2t": a}, {"l": a.t().reshape(4)}, [("i2t", "l")])
    assert not shape["equal"] and "shape" in shape["why"]


def test_every_comparison_has_a_term_map_naming_what_its_harness_logs():
    for comp in official.COMPARISONS.values():
        assert losscheck.TERM_MAPS[comp.method], comp.id
    # MGCA / AFLoc / MAVL official names are the ones their harness JSON records for the first step
    for cid in ("mgca-vit-b8", "mgca-r50-b8", "afloc-r50-b8", "mavl-r50-b8"):
        path = RESULTS / f"vs_official_{cid}.json"
        if not path.is_file():
            pytest.skip(f"{path} absent")
        first = json.loads(path.read_text())["rounds"][0]["official"]["train"]["losses_first"]
        method = official.COMPARISONS[cid].method
        assert {o for o, _ in losscheck.TERM_MAPS[method]} <= set(first), (cid, sorted(first))


def _fake_official_dir(root: Path, method: str) -> tuple[Path, Path]:
    (root / "src" / method).mkdir(parents=True)
    py = root / "venv_shared" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    harness = root / "harness"
    (harness / method).mkdir(parents=True)
    (harness / method / "step_time.py").write_text("")
    return root, harness


def _timed_doc(cid: str) -> dict:
    rnd = {
        "official": {"train": {"median_s": 2.0, "losses_first": {"train_loss": 3.0}}, "peak_rss_mib": 10},
        "ours": {"train": {"median_s": 1.0, "losses": [{"ita_loss": 1.0}]}, "peak_rss_mib": 10},
    }
    return {
        "schema": "cxrvlp-perf/1",
        "kind": "vs_official",
        "comparison": cid,
        "method": "mgca",
        "machine": {"cpu_model": "cpu", "cpu_flags": [], "logical_cpus": 2, "versions": {"torch": "x"}},
        "rounds": [rnd],
        "ratios": {"official/train_step": {"n": 1, "median": 2.0, "min": 2.0, "max": 2.0, "per_pair": [2.0]}},
        "verdict": {"official/train_step": "met"},
        "target_train": 1.3,
        "notes": "",
        "loss_check": {"equal_values_checked": False, "why_not_equal": "old text"},
    }


@pytest.mark.parametrize("equal", [True, False])
def test_loss_check_only_updates_the_loss_fields_and_the_table_not_the_timings(tmp_path, monkeypatch, equal):
    cid = "mgca-r50-b8"
    root, harness = _fake_official_dir(tmp_path / "perfenv", "mgca")
    out = tmp_path / "results"
    out.mkdir()
    doc = _timed_doc(cid)
    (out / f"vs_official_{cid}.json").write_text(json.dumps(doc))
    ours = {"ita_loss": 4.0, "cta_loss": 10.0, "cpa_loss": 6.0, "loss": 20.0 if equal else 20.5}
    off = {"train_loss_ita": 4.0, "train_loss_local": 10.0, "train_loss_proto": 6.0, "train_loss": 20.0}
    seen = {}

    def fake_check(comp, paths, timeout=None, log=None):
        seen["paths"] = paths
        rec = {"mode": losscheck.MODE, **losscheck.compare_terms(off, ours, losscheck.TERM_MAPS["mgca"])}
        return rec

    monkeypatch.setattr(losscheck, "check", fake_check)
    argv = ["perf", "--vs-official", str(root), "--harness-dir", str(harness), "--loss-check-only"]
    rc = main([*argv, "--comparisons", cid, "--out", str(out)])
    assert rc == (0 if equal else 1)
    assert seen["paths"].src == root / "src" / "mgca"
    new = json.loads((out / f"vs_official_{cid}.json").read_text())
    assert new["rounds"] == doc["rounds"] and new["ratios"] == doc["ratios"]  # timings untouched
    lc = new["loss_check"]
    assert lc["equal_values_checked"] is True and lc["equal"] is equal and "why_not_equal" not in lc
    same = lc["same_weights_and_batch"]
    assert [r["official"] for r in same["terms"]] == [o for o, _ in losscheck.TERM_MAPS["mgca"]]
    assert lc["official_first_step"] == {"train_loss": 3.0}  # the first-step record stays, labelled
    table = (out / "perf_table.md").read_text()
    assert "equal values checked: False" not in table
    if equal:
        assert "same weights and batch: equal (terms train_loss_ita=ita_loss 4" in table
    else:
        assert "same weights and batch: NOT equal: train_loss official 20 vs ours 20.5" in table


def test_loss_check_only_without_a_timed_json_fails_cleanly(tmp_path):
    root, harness = _fake_official_dir(tmp_path / "perfenv", "mgca")
    argv = ["perf", "--vs-official", str(root), "--harness-dir", str(harness), "--loss-check-only"]
    assert main([*argv, "--comparisons", "mgca-r50-b8", "--out", str(tmp_path / "none")]) == 1


def test_our_side_imports_an_official_state_dict_strictly_and_reproduces_the_loss(tmp_path):
    """Round trip on mgca-tiny: our weights exported under the official key names, the batch in the
    official layout (caption_ids, '##' pieces from a vocab), through our importer: the same loss terms."""
    from cxrvlp.core.registry import create_model
    from cxrvlp.mgca.official import ours_to_official
    from cxrvlp.mgca.train import MGCATrainModule

    torch.manual_seed(0)
    model = create_model("mgca-tiny").eval()
    c = model.cfg
    vocab = [f"w{i}" if i % 4 else f"##p{i}" for i in range(c.bert.vocab_size)]
    b, length = 3, 12
    ids = torch.randint(c.sep_token_id + 1, c.bert.vocab_size, (b, length))
    ids[:, 0] = c.sep_token_id - 1
    mask = torch.ones(b, length, dtype=torch.long)
    for i, n in enumerate((12, 9, 6)):
        ids[i, n - 1] = c.sep_token_id
        ids[i, n:] = 0
        mask[i, n:] = 0
    size = int(c.vit.get("img_size", 64)) if c.is_vit else 224
    imgs = torch.rand(b, 3, size, size) * 2 - 1
    piece = torch.tensor([w.startswith("##") for w in vocab])[ids]
    with torch.no_grad():
        want = MGCATrainModule(model).eval()(
            {"images": imgs, "input_ids": ids, "attention_mask": mask, "piece_mask": piece}
        )
    sd = ours_to_official(model.state_dict(), "vit" if c.is_vit else "resnet50")
    rec = {
        "method": "mgca",
        "state_dict": sd,
        "batch": {"imgs": imgs, "caption_ids": ids, "attention_mask": mask},
        "extra": {"vocab": vocab, "variant": "vit" if c.is_vit else "resnet50"},
    }
    got = losscheck.our_side(rec, tmp_path, name="mgca-tiny")
    for k in ("ita_loss", "cta_loss", "cpa_loss"):
        assert got[k] == pytest.approx(float(want[k]), rel=1e-6), k
    assert got["loss"] == pytest.approx(sum(float(want[k]) for k in ("ita_loss", "cta_loss", "cpa_loss")))
    sd.pop(next(iter(sd)))  # strict: a missing official key is an error, not a silent partial load
    with pytest.raises(Exception, match="(?i)missing"):
        losscheck.our_side(rec, tmp_path, name="mgca-tiny")


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(
    not (PERFENV / "venv_shared" / "bin" / "python").exists() or not HARNESSES.is_dir(),
    reason="needs the official MGCA code + venv (/work/perfenv, CXRVLP_PERFENV) and shared/perf_official",
)
def test_mgca_r50_loss_equals_the_official_code_on_the_same_weights_and_batch():
    comp = official.COMPARISONS["mgca-r50-b8"]
    paths = official.resolve_paths(comp.method, PERFENV, HARNESSES)
    rec = losscheck.check(comp, paths, timeout=1800)
    assert not rec.get("error"), rec.get("error")
    assert rec["equal"], losscheck.summary_text(rec)
