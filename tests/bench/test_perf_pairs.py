"""The interleaving / ratio logic of `cxrvlp-bench perf --vs-official`, with a fake runner (no timing)."""

from __future__ import annotations

import math

import pytest
import torch
from cxrvlp.bench.perf import official, pairs
from cxrvlp.bench.perf.ours import _pieces, _token_rows, _word_positions


def _fake(times: dict[str, list[float]]):
    calls: list[tuple[str, int]] = []

    def runner(arm: str, r: int) -> dict:
        calls.append((arm, r))
        t = times[arm][r]
        return {"train": {"median_s": t}, "inference": {"median_s": t / 4}}

    return runner, calls


def test_interleave_alternates_official_and_ours_round_by_round():
    runner, calls = _fake({"official": [4.0, 5.0, 6.0], "ours": [2.0, 2.5, 4.0]})
    rounds = pairs.interleave(["official", "ours"], 3, runner)
    assert calls == [("official", 0), ("ours", 0), ("official", 1), ("ours", 1), ("official", 2), ("ours", 2)]
    assert [set(r) for r in rounds] == [{"official", "ours"}] * 3


def test_ratio_is_formed_within_a_round_only():
    # round-wise ratios 2.0, 2.0, 1.5; pooling medians across rounds would give 5/2.5 = 2.0 regardless
    runner, _ = _fake({"official": [4.0, 5.0, 6.0], "ours": [2.0, 2.5, 4.0]})
    rounds = pairs.interleave(["official", "ours"], 3, runner)
    r = pairs.pair_ratios(rounds, "official", "ours", "train.median_s")
    assert r == pytest.approx([2.0, 2.0, 1.5])
    s = pairs.summarise(r)
    assert (s["n"], s["median"], s["min"], s["max"]) == (
        3,
        pytest.approx(2.0),
        pytest.approx(1.5),
        pytest.approx(2.0),
    )
    assert (
        pairs.verdict(s, 1.8) == "met" and pairs.verdict(s, 2.5) == "unmet" and pairs.verdict(s, None) == "-"
    )


def test_rounds_with_missing_or_bad_values_are_skipped_not_zeroed():
    rounds = [
        {"official": {"train": {"median_s": 3.0}}, "ours": {"train": {"median_s": 1.0}}},
        {"official": {"train": {"median_s": float("nan")}}, "ours": {"train": {"median_s": 1.0}}},
        {"official": {"train": {}}, "ours": {"train": {"median_s": 1.0}}},
        {"official": {"train": {"median_s": 2.0}}, "ours": {"train": {"median_s": 0.0}}},
        {"ours": {"train": {"median_s": 1.0}}},
    ]
    assert pairs.pair_ratios(rounds, "official", "ours", "train.median_s") == [3.0]
    assert pairs.summarise([])["median"] is None
    assert pairs.verdict(pairs.summarise([]), 1.3) == "-"


def test_compare_names_each_official_arm_and_metric():
    runner, _ = _fake({"official": [4.0, 4.0], "official_anomaly_off": [3.0, 3.0], "ours": [2.0, 2.0]})
    rounds = pairs.interleave(["official", "official_anomaly_off", "ours"], 2, runner)
    got = pairs.compare(
        rounds,
        "ours",
        ["official", "official_anomaly_off"],
        {"train_step": "train.median_s", "inference": "inference.median_s"},
    )
    assert got["official/train_step"]["median"] == pytest.approx(2.0)
    assert got["official_anomaly_off/train_step"]["median"] == pytest.approx(1.5)
    assert got["official/inference"]["median"] == pytest.approx(2.0)


def test_interleave_rejects_empty_plans():
    with pytest.raises(ValueError):
        pairs.interleave([], 1, lambda a, r: {})
    with pytest.raises(ValueError):
        pairs.interleave(["ours"], 0, lambda a, r: {})


def test_harness_parsers_drop_warmup_steps():
    mgca = {
        "train": {"per_step_s": [9.0, 4.0, 5.0, 6.0], "warmup_steps": 1, "losses": [{"train_loss": 1.5}]},
        "inference": {"per_step_s": [3.0, 1.0, 2.0], "warmup_steps": 1},
        "peak_rss_mib": 10.0,
    }
    p = official._parse_mgca(mgca)
    assert p["train"]["step_s"] == [4.0, 5.0, 6.0] and p["train"]["median_s"] == 5.0
    assert p["inference"]["median_s"] == 1.5 and p["train"]["losses_first"] == {"train_loss": 1.5}
    cz = {
        "step_s": [9.0, 1.0, 3.0],
        "warmup_not_counted": 1,
        "loss": [3.58],
        "fusion_loss_scaling": {"rows": [{"B": 64, "fwd_bwd_median_s": 7.0, "loss": 8.3}]},
    }
    p = official._parse_carzero(cz)
    assert p["train"]["median_s"] == 2.0 and p["fusion"] == {"B": 64, "median_s": 7.0, "loss": 8.3}


def test_our_token_rows_copy_the_requested_lengths():
    tok = {
        "input_ids": torch.tensor([[2, 7, 9, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0]]),
        "token_type_ids": torch.zeros(1, 5, dtype=torch.long),
    }
    rows = _token_rows(tok, [6, 3, 4], pad_to=None, vocab_lo=5, vocab_hi=50, seed=0)
    assert rows["input_ids"].shape == (3, 6)
    assert rows["attention_mask"].sum(1).tolist() == [6, 3, 4]
    for i, n in enumerate([6, 3, 4]):
        assert rows["input_ids"][i, 0] == 2 and rows["input_ids"][i, n - 1] == 3
        assert (rows["input_ids"][i, n:] == 0).all()
    wide = _token_rows(tok, [3], pad_to=8, vocab_lo=5, vocab_hi=50, seed=0)
    assert wide["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError):
        _token_rows(tok, [9], pad_to=8, vocab_lo=5, vocab_hi=50, seed=0)
    words = _word_positions(rows["attention_mask"], [6, 3, 4])
    assert words.sum(1).tolist() == [4, 1, 2]
    pieces = _pieces(words, 0.5)
    assert not (pieces & ~words).any() and not pieces[:, 1].any()
    assert math.isclose(float(_pieces(words, 0.0).sum()), 0.0)


def test_flop_count_of_grouped_convolution_backward():
    """A convolution's backward costs its forward per requested gradient, groups included (torch's own
    formula counted a depthwise backward 64x too high here)."""
    import torch
    from cxrvlp.bench.perf.ours import count_flops

    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    for groups in (1, 4, 64):
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=groups, bias=False)
        fwd = 2 * 2 * 16 * 16 * 64 * (64 // groups) * 9  # 2 FLOPs per MAC
        total, per_op = count_flops(lambda conv=conv: conv(x).sum().backward())
        assert per_op["aten.convolution"] == fwd
        assert per_op["aten.convolution_backward"] == 2 * fwd  # input and weight gradients
    w_only = torch.randn(2, 64, 16, 16)  # no input gradient asked: the weight's alone
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    _, per_op = count_flops(lambda: conv(w_only).sum().backward())
    assert per_op["aten.convolution_backward"] == 2 * 2 * 16 * 16 * 64 * 9
