"""Model-level checks: batched scorer = official per-call decoder, pair independence, losses, contract."""

from __future__ import annotations

import pytest
import torch
from cxrvlp.carzero.loss import carzero_loss, symmetric_ce
from cxrvlp.carzero.model import CarzeroFusion, compact_pad_memory, fusion_reference, score_pairs


@pytest.fixture(scope="module")
def fusion():
    torch.manual_seed(0)
    f = CarzeroFusion(32, nhead=4, dim_feedforward=64, num_layers=3, mlp_hidden=(48, 24, 12)).eval()
    with torch.no_grad():  # larger weights than the N(0, 0.02) init: non-uniform attention, spread logits
        for p in f.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return f


def _loop_per_pair(fusion, memory, queries):
    # the decoder run on one (memory item, query) pair at a time, through core's DecoderLayer
    n, t = memory.shape[0], queries.shape[0]
    out = torch.empty(n, t)
    maps = torch.empty(len(fusion.decoder.layers), n, t, memory.shape[1])
    for i in range(n):
        for j in range(t):
            r = fusion_reference(fusion, memory[i : i + 1], queries[j : j + 1])
            out[i, j] = r.logits[0, 0]
            for li, m in enumerate(r.maps):
                maps[li, i, j] = m[0, 0]
    return out, maps


def test_batched_scorer_equals_per_pair_decoder(fusion):
    torch.manual_seed(1)
    memory, queries = torch.randn(3, 7, 32), torch.randn(4, 32)
    ref, ref_maps = _loop_per_pair(fusion, memory, queries)
    with torch.no_grad():
        fast = score_pairs(fusion, memory, queries)
        with_maps = score_pairs(fusion, memory, queries, need_weights=True)
        official = fusion_reference(fusion, memory, queries)
    assert ref.std() > 0.05
    torch.testing.assert_close(fast.logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_maps.logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(official.logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(with_maps.maps), ref_maps, rtol=1e-5, atol=1e-6)


def test_scorer_gradients_equal_reference(fusion):
    torch.manual_seed(2)
    memory, queries = torch.randn(4, 6, 32, requires_grad=True), torch.randn(4, 32, requires_grad=True)
    grads = []
    for fn in (score_pairs, fusion_reference):
        fusion.zero_grad()
        loss = symmetric_ce(fn(fusion, memory, queries).logits)[0]
        g = torch.autograd.grad(loss, [memory, queries, fusion.decoder_norm.weight])
        grads.append(g)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pair_independence_and_permutation(fusion):
    torch.manual_seed(3)
    memory, queries = torch.randn(5, 7, 32), torch.randn(5, 32)
    with torch.no_grad():
        full = score_pairs(fusion, memory, queries).logits
        alone = score_pairs(fusion, memory[2:3], queries[4:5]).logits
        perm = torch.tensor([3, 0, 4, 1, 2])
        permuted = score_pairs(fusion, memory[perm], queries.flip(0)).logits
    torch.testing.assert_close(alone[0, 0], full[2, 4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(permuted, full[perm].flip(1), rtol=1e-5, atol=1e-5)


def test_memory_mask_equals_dropping_the_slots(fusion):
    torch.manual_seed(4)
    memory, queries = torch.randn(2, 9, 32), torch.randn(3, 32)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 6:] = True
    with torch.no_grad():
        masked = score_pairs(fusion, memory, queries, memory_mask=mask).logits
        cut = score_pairs(fusion, memory[:, :6], queries).logits
        masked_maps = score_pairs(fusion, memory, queries, need_weights=True, memory_mask=mask).logits
    torch.testing.assert_close(masked, cut, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked_maps, cut, rtol=1e-5, atol=1e-5)


def test_tied_norm_and_unused_modules(fusion):
    assert fusion.decoder.norm is fusion.decoder_norm
    keys = fusion.state_dict().keys()
    assert "decoder_norm.weight" in keys and "decoder.norm.weight" in keys
    assert "decoder.layers.0.self_attn.in_proj_weight" in keys and "decoder.layers.0.norm1.weight" in keys
    fusion.zero_grad(set_to_none=True)
    score_pairs(fusion, torch.randn(2, 5, 32), torch.randn(2, 32)).logits.sum().backward()
    no_grad = {k for k, p in fusion.named_parameters() if p.grad is None}
    assert "logit_scale" in no_grad and "decoder.layers.0.self_attn.in_proj_weight" in no_grad
    assert "decoder.layers.0.norm1.weight" in no_grad and "decoder_norm.weight" not in no_grad
    fusion.zero_grad(set_to_none=True)


def test_loss_values_from_the_spec():
    m = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    terms = carzero_loss(m, m.t())
    assert abs(terms["i2t_row_ce"].item() - 0.126928) < 1e-6
    assert abs(terms["i2t_col_ce"].item() - 0.180924) < 1e-6
    assert abs(terms["i2t_loss"].item() - 0.153926) < 1e-6
    assert abs(terms["loss"].item() - 0.307853) < 1e-6
    assert abs(symmetric_ce(torch.eye(3))[0].item() - 0.551445) < 1e-6


def test_compacted_pad_memory_gives_the_same_scores_and_gradients(fusion):
    torch.manual_seed(5)
    t, s = 4, 12
    first = torch.tensor([3, 5, 12, 4])  # row 2 has no pad slot
    words = torch.randn(t, s, 32)
    words = torch.where(torch.arange(s)[None, :, None] < first[:, None, None], words, torch.zeros(()))
    words.requires_grad_(True)
    queries = torch.randn(3, 32, requires_grad=True)
    full = score_pairs(fusion, words, queries).logits
    mem, bias, _ = compact_pad_memory(words, first)
    assert mem.shape[1] == 12  # max(first) + 1 capped at S
    mem2, bias2, _ = compact_pad_memory(words[[0, 1, 3]], first[[0, 1, 3]])
    assert mem2.shape[1] == 6
    small = score_pairs(fusion, mem2, queries, memory_bias=bias2).logits
    torch.testing.assert_close(small, full[[0, 1, 3]], rtol=1e-5, atol=1e-5)
    g_full = torch.autograd.grad(full[[0, 1, 3]].sum(), [queries])[0]
    g_small = torch.autograd.grad(small.sum(), [queries])[0]
    torch.testing.assert_close(g_small, g_full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("key_mode", ["project", "fold_query", "fold_key"])
@pytest.mark.parametrize("value_mode", ["project", "fold_value", "fold_out"])
def test_every_factorisation_gives_the_reference_scores_maps_and_gradients(fusion, key_mode, value_mode):
    torch.manual_seed(6)
    memory = torch.randn(3, 7, 32, requires_grad=True)
    queries = torch.randn(5, 32, requires_grad=True)
    bias = torch.randn(3, 7) * 0.5  # stands for compacted pad slots
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 5:] = True
    ref = fusion_reference(fusion, memory, queries)
    ours = score_pairs(fusion, memory, queries, need_weights=True, modes=(key_mode, value_mode))
    torch.testing.assert_close(ours.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(ours.maps), torch.stack(ref.maps), rtol=1e-5, atol=1e-6)
    params = [memory, queries] + [p for p in fusion.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad(symmetric_ce(ref.logits[:, :3])[0], params, allow_unused=True)
    g_ours = torch.autograd.grad(symmetric_ce(ours.logits[:, :3])[0], params, allow_unused=True)
    for a, b in zip(g_ours, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the plan's modes with a mask and an additive bias equal forcing the plain projections
    kw = {"memory_mask": mask, "memory_bias": bias}
    masked = score_pairs(fusion, memory, queries, modes=(key_mode, value_mode), **kw)
    plain = score_pairs(fusion, memory, queries, modes=("project", "project"), **kw)
    torch.testing.assert_close(masked.logits, plain.logits, rtol=1e-5, atol=1e-5)


def test_pair_plan_picks_the_cheapest_factorisation():
    from cxrvlp.carzero.model import pair_plan

    # released sizes at B = 64: image tokens (197) fold per pair; compacted text (15 slots) folds per memory
    assert pair_plan(64 * 64, 64, 64, 197, 768, 4) == ("fold_query", "fold_value")
    assert pair_plan(64 * 64, 64, 64, 15, 768, 4) == ("fold_key", "fold_out")
    # many heads and many queries sharing each long memory: the plain projections
    assert pair_plan(1024 * 1024, 1024, 1024, 197, 768, 12) == ("project", "project")


@pytest.mark.parametrize("modes", [("fold_query", "fold_value"), ("fold_key", "fold_out")])
def test_factorisations_agree_in_train_mode_under_the_same_dropout_draws(modes):
    # every mode draws its dropout masks on tensors of the same shapes in the same order, so one seed gives
    # the same masks: the rescaled (non-normalised) attention rows must give the same outputs
    torch.manual_seed(0)
    f = CarzeroFusion(32, nhead=4, dim_feedforward=64, num_layers=2, mlp_hidden=(24,), dropout=0.3).train()
    memory, queries = torch.randn(3, 9, 32), torch.randn(4, 32)
    torch.manual_seed(7)  # need_weights: the explicit-softmax path for the plain projections too (not SDPA)
    plain = score_pairs(f, memory, queries, need_weights=True, modes=("project", "project")).logits
    torch.manual_seed(7)
    folded = score_pairs(f, memory, queries, modes=modes).logits
    torch.manual_seed(8)
    other_draw = score_pairs(f, memory, queries, modes=modes).logits
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    assert (other_draw - plain).abs().max() > 1e-3  # dropout is really on
