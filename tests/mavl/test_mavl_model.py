"""MAVL model and loss on small hand-checkable cases (spec §10), tiny build/forward/backward, round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cxrvlp.core import registry as core_registry
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.model import heatmaps
from cxrvlp.mavl.registry import mavl_tiny
from cxrvlp.mavl.zeroshot import score_feature, score_text


def test_registered_names():
    entries = {n: e for n, e in core_registry._MODELS.items() if e.method == "mavl"}
    assert {"mavl-r50", "mavl-tiny", "mavl-small"} <= set(entries)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = mavl_tiny()
    m.set_books(torch.randn(51, 32), torch.randn(75 * 9, 32))
    return m


def test_tiny_forward_backward_shapes(tiny):
    tiny.train()
    images = torch.randn(3, 3, 64, 64)
    out = tiny(images, need_maps=True)
    assert out.cls_logits.shape == (3, 75, 2) and out.l_emb.shape == (3, 75, 32)
    assert out.global_sim.shape == (3, 75, 9) and out.features.shape == (675, 3, 32)
    assert len(out.attention_maps) == 2 and out.attention_maps[0].shape == (3, 675, 16)
    labels = torch.randint(-1, 2, (3, 75)).float()
    labels[:, 8] = 1
    index = torch.randint(0, 51, (3, 75, 8))
    terms = MavlLoss()(
        out.cls_logits, labels, tiny.location_logits(out.l_emb, index), out.global_sim, tiny.temp
    )
    terms["loss"].backward()
    assert tiny.temp.grad is not None and tiny.classifier.weight.grad.abs().sum() > 0
    assert tiny.backbone[0].weight.grad.abs().sum() > 0
    tiny.zero_grad()
    tiny.eval()
    # the training path (no maps) computes the same numbers as the map path
    with torch.no_grad():
        a, b = tiny(images), tiny(images, need_maps=True)
    assert torch.allclose(a.cls_logits, b.cls_logits, atol=1e-6) and a.attention_maps == []
    assert torch.allclose(b.attention_maps[0].sum(-1), torch.ones(3, 675), atol=1e-5)


def test_entity_permutation_and_classifier_layout(tiny):
    tiny.eval()
    images = torch.randn(2, 3, 64, 64)
    book = tiny.concept_book.view(75, 9, -1)
    perm = torch.randperm(75)
    with torch.no_grad():
        ref = tiny(images)
        got = tiny(images, concept_book=book[perm].reshape(675, -1))
    # self-attention is permutation-equivariant: outputs permute with the entity groups
    assert torch.allclose(got.cls_logits, ref.cls_logits[:, perm], atol=1e-5)
    assert torch.allclose(got.l_emb, ref.l_emb[:, perm], atol=1e-5)
    # classifier input is aspect-major; Conv1d location_emb = Linear over the same concatenation W[:, c, k]
    feats = ref.aspect_features  # (B, E, A, D)
    w = tiny.location_emb.weight  # (T, D, A)
    lin = (
        feats.permute(0, 1, 3, 2).reshape(2, 75, -1) @ w.reshape(w.shape[0], -1).t() + tiny.location_emb.bias
    )
    assert torch.allclose(lin, ref.l_emb, atol=1e-5)


def test_feature_dropout_is_whole_vector():
    torch.manual_seed(0)
    m = mavl_tiny(feature_dropout=0.5).train()
    x = torch.randn(675, 4, 32)
    y = F.dropout1d(x, 0.5, True)
    zero = (y == 0).all(-1)
    kept = ~zero
    assert zero.any() and kept.any()
    assert torch.allclose(y[kept], x[kept] * 2)
    del m


def test_soft_target_ce_hand_values():
    # spec §10.4: S = [[1,0,0],[0,1,0]], c = [[1,0,0],[0,1,1]], tau = 1 -> i2t 0.4424, t2i 0.2200
    s = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).double()
    c = torch.tensor([[1.0, 0, 0], [0, 1, 1]]).double()
    sim = s.unsqueeze(-1).expand(2, 3, 9)
    loss = MavlLoss()(torch.zeros(2, 3, 2).double(), c, None, sim, torch.zeros(9).double())
    assert loss["global_i2t"][0].item() == pytest.approx(0.4424, abs=1e-4)
    assert loss["global_t2i"][0].item() == pytest.approx(0.2200, abs=1e-4)
    assert loss["global_loss"].item() == pytest.approx(0.06624, abs=1e-5)


def test_presence_and_location_hand_values():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[0.0, -1.0]])
    loc = torch.tensor([[[5.0, 1, 1, 1, 1, 1, 1, 1], [9.0, 0, 0, 0, 0, 0, 0, 0]]])
    labels_loc = torch.tensor([[1.0, 0.0]])  # second row (label 0) must not count
    sim = torch.zeros(1, 2, 9)
    t = MavlLoss()(logits, labels, None, sim, torch.zeros(9))
    assert t["presence_loss"].item() == pytest.approx(0.1269, abs=1e-4)
    t = MavlLoss()(logits, labels_loc, loc, sim, torch.zeros(9))
    assert t["location_loss"].item() == pytest.approx(math.log(1 + 7 * math.exp(-4)), abs=1e-5)
    # no present entity: 0 (ours), not the official NaN
    t = MavlLoss()(logits, torch.zeros(1, 2), loc, sim, torch.zeros(9))
    assert t["location_loss"].item() == 0.0


def test_zero_shot_scores_and_uniform_heatmap():
    # spec §10.10: s_normal 0.2, s_clear 0.1, s_d 0.3 for every aspect -> 0.5374
    sim = torch.tensor([0.2, 0.1, 0.3]).view(1, 3, 1).expand(1, 3, 9)
    assert score_text(sim)[0, 2].item() == pytest.approx(0.5374, abs=1e-4)
    assert torch.allclose(score_feature(torch.tensor([[[0.0, math.log(3)]]])), torch.tensor([[0.75]]))
    maps = [torch.full((2, 18, 196), 1 / 196)] * 4
    assert torch.allclose(heatmaps(maps, 9), torch.full((2, 2, 196), 1 / 196))


def test_save_pretrained_round_trip(tmp_path, tiny):
    from cxrvlp.core.training.checkpoint import load_pretrained_weights, save_pretrained

    save_pretrained(tiny, {"model_name": "mavl-tiny", "model": tiny.config.to_dict()}, tmp_path / "m")
    other = mavl_tiny()
    load_pretrained_weights(other, tmp_path / "m")
    for k, v in tiny.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


@pytest.mark.slow
def test_small_builds_with_minilm_books():
    from cxrvlp.mavl.books import books_for
    from cxrvlp.mavl.registry import mavl_small

    m = mavl_small()
    b = books_for(m.config)
    assert b["ana_book"].shape == (51, 384) and b["concept_book"].shape == (675, 384)
    m.set_books(b["ana_book"], b["concept_book"])
    with torch.no_grad():
        out = m.eval()(torch.randn(1, 3, 224, 224))
    assert out.cls_logits.shape == (1, 75, 2) and torch.isfinite(out.global_sim).all()
