"""InfoNCE, Sinkhorn and GLoRIA local alignment: hand-computed spec values, parity fixtures, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cxrvlp.core.losses import (
    LogitScale,
    clip_loss,
    contrastive_labels,
    contrastive_loss,
    cross_entropy_from_logits,
    lengths_to_mask,
    local_alignment_loss,
    local_similarity,
    sinkhorn,
    swapped_prediction_loss,
)

D64 = torch.float64


# ---------------------------------------------------------------- InfoNCE
def test_clip_loss_mgca_ita_example():
    # mgca.md §10: v = I2, t = [[0.6,0.8],[0.8,0.6]], tau 0.07
    # -> each direction log(1+e^{0.2/0.07}), sum 5.8260
    v = torch.eye(2, dtype=D64)
    t = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=D64)
    l_ab, l_ba = clip_loss(v, t, 1 / 0.07, reduction="none")
    each = math.log(1 + math.exp(0.2 / 0.07))
    assert l_ab.item() == pytest.approx(each, abs=1e-6) and l_ba.item() == pytest.approx(each, abs=1e-6)
    assert clip_loss(v, t, 1 / 0.07, reduction="sum").item() == pytest.approx(5.8260, abs=1e-4)
    assert clip_loss(v, t, 1 / 0.07).item() == pytest.approx(each, abs=1e-6)


def test_afloc_global_example():
    # afloc.md §10: image [[1,0],[0,1]], text [[1,0],[1,1]], temp3 = 10 on cosines
    v = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D64), dim=1)
    t = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D64), dim=1)
    i2t, t2i = clip_loss(v, t, 10.0, reduction="none")
    assert i2t.item() == pytest.approx(0.0264617, abs=1e-7)
    assert t2i.item() == pytest.approx(0.3465963, abs=1e-7)


def test_cross_entropy_from_logits_carzero_example():
    # carzero.md §10.3: i2t = [[2,0],[1,3]] -> row CE 0.126928, column CE 0.180924
    m = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=D64)
    assert cross_entropy_from_logits(m).item() == pytest.approx(0.126928, abs=1e-6)
    assert cross_entropy_from_logits(m.t()).item() == pytest.approx(0.180924, abs=1e-6)


def test_soft_targets_mavl_example():
    # mavl.md §10.4: S = [[1,0,0],[0,1,0]], c = [[1,0,0],[0,1,1]], tau 1 -> i2t 0.4424, t2i 0.2200
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=D64)
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=D64)
    i2t = cross_entropy_from_logits(s, soft_targets=c, class_reduction="mean")
    t2i = cross_entropy_from_logits(s.t(), soft_targets=c.t(), class_reduction="mean")
    assert i2t.item() == pytest.approx(0.4424, abs=1e-4)
    assert t2i.item() == pytest.approx(0.2200, abs=1e-4)
    # one-hot soft targets with class_reduction="sum" are plain CE
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    hard = contrastive_loss(q, k, 2.0)
    soft = contrastive_loss(q, k, 2.0, soft_targets=torch.eye(5))
    assert soft.item() == pytest.approx(hard.item(), abs=1e-6)


def test_cxrclip_identity_example_and_label_offset():
    # cxrclip.md §10.5: identity embeddings, t = 1 -> CE = ln(1 + e^-1)
    e = torch.eye(2, dtype=D64)
    assert contrastive_loss(e, e, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-7)
    # local queries against a 4-row "gathered" key set: rank 1 of 2 targets rows 2, 3
    keys = torch.eye(4, dtype=D64)
    assert contrastive_labels(2, rank=1).tolist() == [2, 3]
    lo = contrastive_loss(keys[2:], keys, 5.0, label_offset=2)
    wrong = contrastive_loss(keys[2:], keys, 5.0, label_offset=0)
    assert lo.item() < 0.1 < wrong.item()


def test_logit_scale_learned_and_fixed():
    ls = LogitScale(0.07)
    assert ls().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert ls.logit_scale.requires_grad
    ls().backward()
    assert ls.logit_scale.grad is not None
    fixed = LogitScale(0.1, learnable=False)
    assert not any(p.requires_grad for p in fixed.parameters()) and fixed().item() == pytest.approx(10.0)
    clamped = LogitScale(0.001, max_scale=100.0)
    assert clamped().item() == pytest.approx(100.0)


def test_clip_loss_permutation_invariance_and_bad_reduction():
    g = torch.Generator().manual_seed(0)
    a, b = (
        F.normalize(torch.randn(6, 4, generator=g), dim=1),
        F.normalize(torch.randn(6, 4, generator=g), dim=1),
    )
    perm = torch.randperm(6, generator=g)
    assert clip_loss(a, b, 10.0).item() == pytest.approx(clip_loss(a[perm], b[perm], 10.0).item(), abs=1e-6)
    l_ab, l_ba = clip_loss(a, b, 10.0, reduction="none")
    s_ba, s_ab = clip_loss(b, a, 10.0, reduction="none")
    assert l_ab.item() == pytest.approx(s_ab.item(), abs=1e-6) and l_ba.item() == pytest.approx(s_ba.item())
    with pytest.raises(ValueError):
        clip_loss(a, b, reduction="avg")


# ---------------------------------------------------------------- Sinkhorn
def test_sinkhorn_properties():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(6, 20, generator=g), dim=1) @ F.normalize(torch.randn(20, 20), dim=1).t()
    q = sinkhorn(scores, 0.05, 3)
    assert q.shape == (6, 20)
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    # invariance to a constant shift of all scores, and the stabilised path agrees
    torch.testing.assert_close(sinkhorn(scores + 0.3, 0.05, 3), q, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sinkhorn(scores, 0.05, 3, subtract_max=True), q, atol=1e-6, rtol=1e-5)
    # identical scores -> uniform codes; and the CPA loss is then ln K (mgca.md §10)
    flat = torch.zeros(4, 500)
    torch.testing.assert_close(sinkhorn(flat), torch.full((4, 500), 1 / 500))
    l_ab, l_ba = swapped_prediction_loss(flat, flat)
    assert ((l_ab + l_ba) / 2).item() == pytest.approx(math.log(500), abs=1e-4)
    # small epsilon -> near one-hot on the argmax
    peaked = sinkhorn(torch.eye(4) * 0.5, epsilon=0.01, n_iters=3)
    assert (peaked.argmax(1) == torch.arange(4)).all() and peaked.max(1).values.min() > 0.99


def test_sinkhorn_matches_mgca_fixture(shared_dir):
    from safetensors.torch import load_file

    for variant in ("vit", "resnet50"):
        out = load_file(str(shared_dir / "parity" / "mgca" / variant / "outputs.safetensors"))
        for side in ("img", "report"):
            q = sinkhorn(out[f"{side}_proto_logits"], epsilon=0.05, n_iters=3)
            torch.testing.assert_close(q, out[f"{side}_code"], atol=1e-6, rtol=1e-5)
        l_ab, l_ba = swapped_prediction_loss(out["img_proto_logits"], out["report_proto_logits"], 0.2)
        torch.testing.assert_close(l_ab, out["loss_proto_i2t"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(l_ba, out["loss_proto_t2i"], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- local alignment
def _loop_reference(regions, units, lengths, t1=4.0, t2=5.0):
    # the official structure: one text at a time, sliced to its length, explicit two-step softmax
    sims = []
    for i in range(units.shape[0]):
        q = units[i, : lengths[i]]  # (U_i, D)
        col = []
        for j in range(regions.shape[0]):
            c = regions[j]  # (R, D)
            a = torch.softmax(c @ q.t(), dim=1)  # (R, U_i) over words
            a = torch.softmax(a.t() * t1, dim=1)  # (U_i, R) over regions
            att = a @ c
            r = (q * att).sum(1) / (q.norm(dim=1) * att.norm(dim=1)).clamp(min=1e-8)
            col.append(torch.log(torch.exp(t2 * r).sum()))
        sims.append(torch.stack(col))
    return torch.stack(sims, dim=1)  # (I, T)


def test_local_alignment_spec_example():
    # afloc.md §10: D=2, grid 1x2, two texts with 2 units
    img = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]], dtype=D64)
    txt = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]], dtype=D64)
    mask = torch.ones(2, 2, dtype=torch.bool)
    s = local_similarity(img, txt, mask)
    torch.testing.assert_close(
        s, torch.tensor([[5.6323, 5.3124], [5.0895, 5.5663]], dtype=D64), atol=1e-4, rtol=0
    )
    i2t, t2i, logits, attn = local_alignment_loss(img, txt, mask)
    assert i2t.item() == pytest.approx(0.0242391, abs=1e-7)
    assert t2i.item() == pytest.approx(0.0401973, abs=1e-7)
    torch.testing.assert_close(
        attn[0], torch.tensor([[0.8639, 0.1361], [0.1361, 0.8639]], dtype=D64), atol=1e-4, rtol=0
    )
    # all r_t equal -> s = log T + temp2 * r
    same = torch.ones(1, 3, 2, dtype=D64)
    assert local_similarity(same, same, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(
        math.log(3) + 5.0, abs=1e-9
    )


def test_local_alignment_masking_chunking_and_scale():
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(3, 12, 8, generator=g, dtype=D64)
    units = torch.randn(3, 7, 8, generator=g, dtype=D64)
    lengths = torch.tensor([7, 3, 5])
    mask = lengths_to_mask(lengths, 7)
    ref = _loop_reference(regions, units, lengths)
    s = local_similarity(regions, units, mask)
    torch.testing.assert_close(s, ref, atol=1e-10, rtol=0)
    # garbage in padded units must not matter
    junk = units.clone()
    junk[~mask] = 1e3
    torch.testing.assert_close(local_similarity(regions, junk, mask), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(local_similarity(regions, units, mask, text_chunk=2), ref, atol=1e-12, rtol=0)
    # not scale invariant: attention uses raw dot products (afloc.md §10)
    assert (local_similarity(regions, units * 2, mask) - s).abs().max() > 1e-3
    mean = local_similarity(regions, units, mask, aggregate="mean")
    torch.testing.assert_close(mean, torch.log(torch.exp(s) / lengths[None].to(D64)))
    assert lengths_to_mask(torch.tensor([2]), 5, start=1).tolist() == [[False, True, True, False, False]]


def test_local_alignment_matches_afloc_fixture(shared_dir):
    from safetensors.torch import load_file

    out = load_file(str(shared_dir / "parity" / "afloc" / "outputs.safetensors"))
    for level, img_key, txt_key in (
        ("word", "fwd/img_emb_l2", "fwd/text_emb_w"),
        ("sent", "fwd/img_emb_l", "fwd/text_emb_s"),
    ):
        regions = out[img_key].flatten(2).transpose(1, 2)  # (B, R, D)
        units = out[txt_key].transpose(1, 2)  # (B, 97, D)
        lengths = out[f"loss/cap_lens_{level}"]
        i2t, t2i, logits, attn = local_alignment_loss(
            regions, units, lengths_to_mask(lengths, units.shape[1])
        )
        torch.testing.assert_close(logits, out[f"loss/{level}_logits"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(i2t, out[f"loss/{level}_i2t"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(t2i, out[f"loss/{level}_t2i"], atol=1e-4, rtol=1e-4)
        h = out[img_key].shape[-1]
        for i in range(len(lengths)):
            n = int(lengths[i])
            got = attn[i, :n].reshape(n, h, h)
            torch.testing.assert_close(got, out[f"attn/{level}_row{i}"], atol=1e-7, rtol=1e-3)


def test_local_alignment_runs_in_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    regions, units = torch.randn(2, 6, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask = torch.ones(2, 3, dtype=torch.bool)
    ref = local_similarity(regions, units, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = local_similarity(regions, units, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref)
