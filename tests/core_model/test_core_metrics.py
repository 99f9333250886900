"""Metrics against scikit-learn, hand-computed values and the AFLoc grounding fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cxrvlp.core.metrics import (
    AFLOC_THRESHOLDS,
    border_mask,
    choose_thresholds,
    class_match_relevance,
    classification_metrics,
    cnr,
    dedupe_texts,
    dice_at_thresholds,
    dice_per_image,
    grounding_metrics,
    iou_at_thresholds,
    iou_per_image,
    minmax_normalize,
    multiclass_accuracy,
    pointing_game,
    relevance_from_targets,
    retrieval_metrics,
    retrieval_ranks,
)
from sklearn.metrics import f1_score, roc_auc_score


# ------------------------------------------------------------------ classification
def test_classification_matches_sklearn_with_nan_labels():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.4).astype(float)
    s = y * 0.8 + rng.normal(0, 0.5, y.shape)
    y[rng.random(y.shape) < 0.2] = np.nan
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 0.0)  # class 2: no positive -> skipped
    rep = classification_metrics(s, y, class_names=["a", "b", "c"])
    for c in range(2):
        keep = ~np.isnan(y[:, c])
        assert rep.auroc[c] == pytest.approx(roc_auc_score(y[keep, c], s[keep, c]))
        assert rep.n_labelled[c] == keep.sum()
    assert math.isnan(rep.auroc[2]) and rep.skipped == [2]
    assert rep.macro()["auroc"] == pytest.approx(np.mean(rep.auroc[:2]))
    assert set(rep.per_class()) == {"a", "b", "c"}
    with pytest.raises(ValueError):
        classification_metrics(s, np.full_like(y, 2.0))
    with pytest.raises(ValueError):
        classification_metrics(s[:, :2], y)


def test_thresholds_chosen_on_validation_and_applied():
    rng = np.random.default_rng(1)
    y_val = (rng.random((200, 2)) < 0.3).astype(float)
    s_val = y_val + rng.normal(0, 0.6, y_val.shape)
    thr = choose_thresholds(s_val, y_val)
    # brute force: the chosen threshold gives the best F1 among all candidate thresholds on validation
    for c in range(2):
        cand = np.unique(s_val[:, c])
        pred = s_val[None, :, c] >= cand[:, None]  # every candidate threshold at once
        tp = (pred & (y_val[None, :, c] == 1)).sum(1)
        f1s = 2 * tp / (pred.sum(1) + y_val[:, c].sum())
        assert f1_score(y_val[:, c], s_val[:, c] >= thr[c]) == pytest.approx(f1s.max())
    y_te = (rng.random((100, 2)) < 0.3).astype(float)
    s_te = y_te + rng.normal(0, 0.6, y_te.shape)
    rep = classification_metrics(s_te, y_te, thresholds=thr)
    for c in range(2):
        pred = s_te[:, c] >= thr[c]
        assert rep.f1[c] == pytest.approx(f1_score(y_te[:, c], pred))
        assert rep.accuracy[c] == pytest.approx(np.mean(pred == y_te[:, c]))
    youden = choose_thresholds(s_val, y_val, criterion="youden")
    assert np.isfinite(youden).all() and not np.allclose(youden, thr)
    with pytest.raises(ValueError):
        choose_thresholds(s_val, y_val, criterion="acc")
    assert multiclass_accuracy(np.eye(3)[[0, 1, 2, 0]], [0, 1, 1, 0]) == 0.75


# ------------------------------------------------------------------ retrieval
def test_retrieval_hand_values():
    sim = np.array([[0.9, 0.1, 0.3], [0.2, 0.1, 0.8], [0.5, 0.4, 0.3]])
    ranks = retrieval_ranks(sim, [0, 1, 2])
    assert ranks.tolist() == [1, 3, 3]
    m = retrieval_metrics(sim, [0, 1, 2], ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(1 / 3)
    assert m["mean_rank"] == pytest.approx(7 / 3) and m["median_rank"] == 3
    # cxrclip.md §10.13: reports [A, A, B] -> 2 unique candidates, identity-like setup gives R@1 = 1
    texts, target = dedupe_texts(["A", "A", "B"])
    assert texts == ["A", "B"] and target.tolist() == [0, 0, 1]
    sim2 = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m2 = retrieval_metrics(sim2, target, ks=(1,))
    assert m2["recall@1"] == 1.0 and m2["mean_rank"] == 1.0
    # text -> image over the same pool: text "A" has two relevant images, both ranked top
    rel = relevance_from_targets(target, 2)
    t2i = retrieval_metrics(sim2.T, rel.T, ks=(1, 2))
    assert t2i["recall@1"] == 1.0 and t2i["precision@2"] == pytest.approx((2 / 2 + 1 / 2) / 2)


def test_class_match_hit_and_precision():
    q = np.array([0, 1])
    cand = np.array([0, 0, 1, 2])
    rel = class_match_relevance(q, cand)
    sim = np.array([[0.1, 0.9, 0.8, 0.2], [0.9, 0.8, 0.1, 0.7]])
    m = retrieval_metrics(sim, rel, ks=(1, 2, 3))
    assert m["recall@1"] == 0.5 and m["recall@3"] == 0.5  # query 1's class item is ranked last
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["precision@3"] == pytest.approx((1 / 3 + 0) / 2)
    multi = class_match_relevance(np.array([[1, 0, 1]]), np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0]]), "any")
    assert multi.tolist() == [[True, True, False]]
    exact = class_match_relevance(np.array([[1, 0, 1]]), np.array([[1, 0, 1], [1, 0, 0]]))
    assert exact.tolist() == [[True, False]]


# ------------------------------------------------------------------ grounding
def test_grounding_hand_values():
    h = np.zeros((1, 4, 4))
    h[0, 1:3, 1:3] = 1.0
    gt = np.zeros((1, 4, 4))
    gt[0, 1:3, 1:4] = 1
    assert iou_at_thresholds(h, gt, [0.5])[0, 0] == pytest.approx(4 / 6)
    assert dice_at_thresholds(h, gt, [0.5])[0, 0] == pytest.approx(8 / 10)
    assert np.isnan(iou_at_thresholds(h, gt, [2.0])[0, 0])  # empty prediction -> NaN (AFLoc)
    assert pointing_game(h, gt).tolist() == [True]
    assert pointing_game(h, 1 - gt).tolist() == [False]
    assert pointing_game(h, 1 - gt, ties="any").tolist() == [False]
    # CNR: in = {1,1,1,1,0,0}, out = zeros -> (4/6) / sqrt(var_in)
    a = np.array([1, 1, 1, 1, 0, 0.0])
    assert cnr(h, gt)[0] == pytest.approx(a.mean() / math.sqrt(a.var()))
    # NaN pixels are ignored everywhere
    hn = h.copy()
    hn[0, 0, :] = np.nan
    assert iou_at_thresholds(hn, gt, [0.5])[0, 0] == pytest.approx(4 / 6)
    assert border_mask(6, 6, 2).sum() == 4
    n = minmax_normalize(np.array([[np.nan, 2.0], [4.0, 3.0]]))
    assert np.isnan(n[0, 0]) and n[1, 0] == 1.0 and n[0, 1] == -1.0
    g = grounding_metrics(np.concatenate([h, h]), np.concatenate([gt, 1 - gt]), [0.5], categories=["x", "y"])
    assert g["pointing_game"] == 0.5 and g["iou"] == pytest.approx((4 / 6 + 0.0) / 2)


def test_grounding_matches_afloc_fixture(shared_dir):
    from safetensors.torch import load_file

    d = shared_dir / "parity" / "afloc"
    out, inp = load_file(str(d / "outputs.safetensors")), load_file(str(d / "inputs.safetensors"))
    np.testing.assert_array_equal(AFLOC_THRESHOLDS, out["grounding/thresholds"].numpy())
    raw = out["grounding/heatmap_224"].double().numpy().copy()
    raw[:, ~border_mask(224, 224, 14)] = np.nan
    norm = np.stack([minmax_normalize(x) for x in raw])
    ref = out["grounding/heatmap_norm_224"].double().numpy()
    np.testing.assert_array_equal(np.isnan(norm), np.isnan(ref))
    np.testing.assert_allclose(norm[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-4)
    gt = inp["grounding/gt_mask"].numpy()
    np.testing.assert_allclose(iou_at_thresholds(ref, gt), out["grounding/iou"].numpy(), atol=1e-3)
    np.testing.assert_allclose(cnr(ref, gt), out["grounding/cnr"].numpy(), atol=1e-3)


# ------------------------------------------------------------------ segmentation
def test_segmentation_dice_rules():
    pred = np.zeros((3, 2, 2))
    gt = np.zeros((3, 2, 2))
    pred[0, 0, :] = 0.9
    gt[0, 0, 0] = 1  # dice 2*1/(2+1)
    pred[1, 0, 0] = 0.9  # empty gt, non-empty prediction -> 0
    # row 2: both empty -> 1
    np.testing.assert_allclose(dice_per_image(pred, gt), [2 / 3, 0.0, 1.0])
    np.testing.assert_allclose(iou_per_image(pred, gt), [1 / 2, 0.0, 1.0])
    np.testing.assert_allclose(dice_per_image(pred, gt, threshold=0.95), [0.0, 1.0, 1.0])


def test_threshold_sweep_matches_direct_count():
    rng = np.random.default_rng(3)
    h = rng.random((3, 16, 16))
    h[0, :2] = np.nan
    gt = (rng.random((3, 16, 16)) < 0.3).astype(float)
    thr = np.linspace(0.0, 1.0, 37)
    iou, dice = iou_at_thresholds(h, gt, thr), dice_at_thresholds(h, gt, thr)
    for i in range(3):
        valid = np.isfinite(h[i])
        g = (gt[i] >= 1) & valid
        for j, t in enumerate(thr):
            p = (np.nan_to_num(h[i], nan=-1) > t) & valid
            if p.sum() == 0:
                assert np.isnan(iou[i, j]) and np.isnan(dice[i, j])
                continue
            assert iou[i, j] == pytest.approx((p & g).sum() / (p | g).sum())
            assert dice[i, j] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
