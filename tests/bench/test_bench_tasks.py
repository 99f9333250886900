"""Each metric path through the tasks, with the deterministic test double."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_doubles import BlobAdapter, BorderNaNAdapter, NoMapAdapter, toy_samples
from cxrvlp.bench.datasets import BenchDataset
from cxrvlp.bench.tasks import TASK_RUNNERS, TaskContext, TaskSkipped

CLASSES = ("Atelectasis", "Cardiomegaly", "Edema", "Pneumonia")


def _ds(**kw) -> BenchDataset:
    base = dict(
        name="toy",
        reader="toy",
        classes=CLASSES,
        tasks=tuple(TASK_RUNNERS),
        test_split="test",
        val_split="val",
        train_split="train",
        expected_files="nothing",
        description="toy",
        grounding_classes=CLASSES[:2],
    )
    base.update(kw)
    return BenchDataset(**base)


def _ctx(ds, adapter=None, tmp_path=None, **opts) -> TaskContext:
    splits = {
        "train": toy_samples(40, CLASSES, 1, with_reports=True),
        "val": toy_samples(24, CLASSES, 2),
        "test": toy_samples(30, CLASSES, 3, with_reports=True),
    }
    return TaskContext(
        "toy",
        ds,
        adapter or BlobAdapter(CLASSES),
        splits.__getitem__,
        seed=0,
        batch_size=8,
        out_dir=tmp_path,
        sidecar_stem="seed0",
        options=opts,
    )


def test_zeroshot_metrics_and_thresholds(tmp_path):
    ctx = _ctx(_ds(), tmp_path=tmp_path)
    res = TASK_RUNNERS["zeroshot"](ctx)
    m = res["metrics"]
    assert m["auroc_macro"] > 0.95  # the double scores the right quadrant per class
    assert set(res["per_class"]["auroc"]) == set(CLASSES)
    assert set(res["thresholds"]) == set(CLASSES)
    assert "val" in res["threshold_choice"] and 0.8 < m["f1_macro"] <= 1.0
    assert ctx.record["prompts"]["classes"][0]["negative"] == ["No Atelectasis"]
    d = np.load(tmp_path / "seed0.npz")
    assert d["y_score"].shape == (30, 4) and d["y_true"].shape == (30, 4)


def test_zeroshot_scores_follow_sample_order():
    """Shuffling the samples must shuffle the score rows the same way (gather/argsort bookkeeping)."""
    from cxrvlp.bench.inference import class_scores
    from cxrvlp.bench.prompts import cxrclip_binary

    s = toy_samples(21, CLASSES, 5)
    a = class_scores(BlobAdapter(CLASSES), s, cxrclip_binary(CLASSES), batch_size=4)
    perm = np.random.default_rng(0).permutation(21)
    b = class_scores(BlobAdapter(CLASSES), [s[i] for i in perm], cxrclip_binary(CLASSES), batch_size=5)
    np.testing.assert_allclose(a[perm], b, rtol=1e-6)


def test_multiclass_accuracy_path():
    ds = _ds(multiclass=True, val_split=None)
    ctx = _ctx(ds)
    res = TASK_RUNNERS["zeroshot"](ctx)
    assert 0.0 <= res["metrics"]["accuracy"] <= 1.0
    assert "argmax" in res["threshold_choice"]


def test_grounding_pointing_game_and_overlap(tmp_path):
    res = TASK_RUNNERS["grounding"](_ctx(_ds(), tmp_path=tmp_path))
    m = res["metrics"]
    assert m["pointing_game_macro"] == 1.0  # the map is the image, the blob is the box
    assert m["iou_macro"] > 0.3 and m["dice_macro"] > 0.4 and m["cnr_macro"] > 1.0
    assert set(res["per_class"]) == set(CLASSES[:2])
    g = np.load(tmp_path / "seed0_grounding.npz")
    assert g["maps"].shape[1:] == g["masks"].shape[1:] == (32, 32)
    lo, hi = res["ci95"]["pointing_game_macro"]
    assert lo <= 1.0 and hi == 1.0


def test_streamed_grounding_equals_core_metrics_on_whole_arrays():
    """Per-batch AFLoc quantities, aggregated afterwards, give core's grounding_metrics on the full arrays."""
    from cxrvlp.bench import scoring
    from cxrvlp.bench.tasks.grounding import gt_mask, to_adapter_frame

    ctx = _ctx(_ds())
    res = TASK_RUNNERS["grounding"](ctx)
    adapter, cls = ctx.adapter, CLASSES[0]
    rows = [s for s in ctx.load("test") if gt_mask(s, cls) is not None]
    x = torch.stack([adapter.preprocess(s.image) for s in rows])
    maps = adapter.localize(x, [f"{cls} present"])[:, 0].numpy()
    masks = np.stack([to_adapter_frame(adapter, gt_mask(s, cls)) for s in rows])
    whole = scoring.grounding(maps, masks)
    for k in ("iou", "dice", "cnr", "pointing_game", "n"):
        assert res["per_class"][cls][k] == pytest.approx(whole[k], rel=1e-9, abs=1e-12)


def test_grounding_excludes_the_declared_nan_border():
    """AFLoc's maps are NaN on a declared border: metrics on the rest, equal to core's on the same maps."""
    from cxrvlp.bench import scoring
    from cxrvlp.bench.tasks.grounding import gt_mask, to_adapter_frame

    ctx = _ctx(_ds(), adapter=BorderNaNAdapter(CLASSES, border=2))
    res = TASK_RUNNERS["grounding"](ctx)
    cls = CLASSES[0]
    rows = [s for s in ctx.load("test") if gt_mask(s, cls) is not None]
    x = torch.stack([ctx.adapter.preprocess(s.image) for s in rows])
    maps = ctx.adapter.localize(x, [f"{cls} present"])[:, 0].numpy()
    assert np.isnan(maps).any()
    masks = np.stack([to_adapter_frame(ctx.adapter, gt_mask(s, cls)) for s in rows])
    whole = scoring.grounding(maps, masks)
    assert np.isfinite(res["per_class"][cls]["iou"])
    for k in ("iou", "dice", "cnr", "pointing_game", "n"):
        assert res["per_class"][cls][k] == pytest.approx(whole[k], rel=1e-9, abs=1e-12)


def test_grounding_rejects_nan_outside_the_declared_border():
    with pytest.raises(FloatingPointError, match="outside the 2-px border"):
        TASK_RUNNERS["grounding"](_ctx(_ds(), adapter=BorderNaNAdapter(CLASSES, border=2, leak=True)))
    undeclared = BorderNaNAdapter(CLASSES, border=2)
    undeclared.info.excluded_border_px = 0  # the NaN frame is drawn but not declared
    with pytest.raises(FloatingPointError, match="outside the 0-px border"):
        TASK_RUNNERS["grounding"](_ctx(_ds(), adapter=undeclared))


def test_grounding_skips_without_maps():
    with pytest.raises(TaskSkipped, match="no maps"):
        TASK_RUNNERS["grounding"](_ctx(_ds(), adapter=NoMapAdapter(CLASSES)))


def test_retrieval_recall_and_class_match():
    res = TASK_RUNNERS["retrieval"](_ctx(_ds()))
    m = res["metrics"]
    for k in (1, 5, 10):
        assert 0.0 <= m[f"i2t_R@{k}"] <= m.get(f"i2t_R@{k * 5}", 1.0)
    assert m["i2t_R@1"] <= m["i2t_R@5"] <= m["i2t_R@10"]
    assert m["t2i_R@1"] <= m["t2i_R@10"]
    assert m["class_hit@1"] > 0.9  # the double's text embedding names the image's classes
    assert res["n_texts"] <= res["n_images"]


def test_label_conditioned_precision_at_k_by_hand():
    from cxrvlp.bench import scoring

    sim = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
    rel = np.array([[False, True, True], [True, False, False]])
    r = scoring.class_retrieval(sim, rel, ks=(1, 2))
    assert r["hit@1"].tolist() == [0.0, 0.0] and r["hit@2"].tolist() == [1.0, 0.0]
    assert r["P@1"].tolist() == [0.0, 0.0] and r["P@2"].tolist() == [0.5, 0.0]


def test_retrieval_on_a_one_class_per_image_set_reports_benchx_precision():
    import dataclasses

    one_hot = []
    for i, s in enumerate(toy_samples(30, CLASSES, 5, with_reports=True)):
        lab = np.zeros(len(CLASSES), np.float32)
        lab[i % len(CLASSES)] = 1.0
        rep = f"{CLASSES[i % len(CLASSES)]} present, case {i}."
        one_hot.append(dataclasses.replace(s, labels=lab, report=rep, sections={"findings": rep}))
    ctx = _ctx(_ds(multiclass=True), bootstrap=100)
    ctx.load = {"test": one_hot}.__getitem__
    res = TASK_RUNNERS["retrieval"](ctx)
    m, ci = res["metrics"], res["ci95"]
    for d in ("i2t", "t2i"):
        assert 0.0 <= m[f"{d}_P@10"] <= m[f"{d}_class_hit@10"] <= 1.0
        lo, hi = ci[f"{d}_P@5"]
        assert lo <= m[f"{d}_P@5"] <= hi
    assert "same class" in res["class_match"] and res["n_texts"] == 30


def test_linear_probe_fractions_and_seed():
    res = TASK_RUNNERS["linear_probe"](_ctx(_ds(), fractions=(0.1, 1.0)))
    assert set(res["fractions"]) == {"10%", "100%"}
    assert res["fractions"]["10%"]["n_train"] < res["fractions"]["100%"]["n_train"] == 40
    assert res["metrics"]["auroc_macro@100%"] > 0.9
    assert res["feature_dim"] == 8


def test_linear_probe_100_percent_once_and_features_from_the_cache(tmp_path):
    ctx = _ctx(_ds(), fractions=(0.1, 1.0))
    ctx.cache_dir, ctx.fingerprint, ctx.first_seed = tmp_path, (lambda split: f"fixed {split}"), 0
    first = TASK_RUNNERS["linear_probe"](ctx)
    assert "100%" in first["fractions"] and len(list(tmp_path.glob("*.npy"))) == 3  # train, val, test
    ctx2 = _ctx(_ds(), fractions=(0.1, 1.0))
    ctx2.cache_dir, ctx2.fingerprint, ctx2.first_seed, ctx2.seed = tmp_path, ctx.fingerprint, 0, 1
    second = TASK_RUNNERS["linear_probe"](ctx2)
    assert set(second["fractions"]) == {"10%"} and "reported once" in second["protocol"]
    assert len(ctx2.record["cache_hits"]) == 3  # no feature re-extracted for the second seed


def test_segmentation_label_fractions_stream_from_a_disk_cache(tmp_path):
    ctx = _ctx(_ds(), seg_epochs=2, seg_max_train=16, seg_fractions=(0.25, 1.0), bootstrap=50)
    ctx.cache_dir, ctx.fingerprint = tmp_path, lambda split: f"toy {split}"
    res = TASK_RUNNERS["segmentation"](ctx)
    m = res["metrics"]
    for k in ("25%", "100%"):  # no headline that rewards empty masks: Dice on positives and on all, apart
        assert 0.0 <= m[f"dice_all_images@{k}"] <= 1.0 and "dice" not in m
        assert m[f"dice_positives@{k}"] is None or 0.0 <= m[f"dice_positives@{k}"] <= 1.0
        lo, hi = res["ci95"][f"dice_all_images@{k}"]
        assert lo <= m[f"dice_all_images@{k}"] <= hi
    assert res["fractions"]["25%"]["n_train"] < res["fractions"]["100%"]["n_train"] == 16
    assert res["final_train_loss"] is not None and np.isfinite(res["final_train_loss"])
    maps = sorted(tmp_path.glob("*segmaps*"))
    assert len(maps) == 2 and all((d / "meta.json").is_file() for d in maps)  # train and test, on disk
    ctx2 = _ctx(_ds(), seg_epochs=2, seg_max_train=16, seg_fractions=(1.0,), bootstrap=0)
    ctx2.cache_dir, ctx2.fingerprint, ctx2.seed = tmp_path, ctx.fingerprint, 1
    TASK_RUNNERS["segmentation"](ctx2)
    assert len(ctx2.record["cache_hits"]) == 2  # the next seed reads the maps, encodes nothing


def test_segmentation_skips_without_encoder():
    with pytest.raises(TaskSkipped, match="image_encoder"):
        TASK_RUNNERS["segmentation"](_ctx(_ds(), adapter=NoMapAdapter(CLASSES)))


class _ConvEncoder(torch.nn.Module):
    """A trainable stand-in encoder: one conv, pooled per quadrant (so the head can see where blobs are)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        from cxrvlp.core.encoders.base import ImageEncoderOutput

        f = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(1)  # (B, 8)
        return ImageEncoderOutput(global_feat=f)


def test_finetune_end_to_end_chooses_lr_on_validation_and_leaves_the_adapter_alone():
    adapter = BlobAdapter(CLASSES)
    adapter.image_encoder = _ConvEncoder()
    before = {k: v.clone() for k, v in adapter.image_encoder.state_dict().items()}
    ctx = _ctx(_ds(), adapter=adapter, fractions=(0.25, 1.0), ft_lrs=(1e-3, 1e-2), ft_epochs=3, bootstrap=50)
    res = TASK_RUNNERS["finetune"](ctx)
    for k in ("25%", "100%"):
        f = res["fractions"][k]
        assert f["lr"] in (1e-3, 1e-2) and set(f["val_auroc_macro_by_lr"]) == {"0.001", "0.01"}
        lo, hi = res["ci95"][f"auroc_macro@{k}"]
        assert 0.0 <= lo <= res["metrics"][f"auroc_macro@{k}"] <= hi <= 1.0
    assert res["fractions"]["25%"]["n_train"] < res["fractions"]["100%"]["n_train"] == 40
    assert all(torch.equal(before[k], v) for k, v in adapter.image_encoder.state_dict().items())


def test_finetune_is_not_run_unless_asked():
    from cxrvlp.bench.datasets import DEFAULT_TASKS
    from cxrvlp.bench.runner import RunOptions

    assert "finetune" in TASK_RUNNERS and "finetune" not in RunOptions().tasks == DEFAULT_TASKS


def test_zeroshot_and_retrieval_scores_come_from_the_disk_cache(tmp_path, monkeypatch):
    """Zero-shot scores and retrieval similarities are cached per (model, split images, prompts / texts): a
    rerun encodes nothing, and another prompt set is computed anew, not read from the first one's file."""
    ctx = _ctx(_ds())
    ctx.cache_dir, ctx.fingerprint = tmp_path, (lambda split: f"fixed {split}")
    first = TASK_RUNNERS["zeroshot"](ctx)
    TASK_RUNNERS["retrieval"](ctx)
    assert len(list(tmp_path.glob("*zeroshot-scores*.npy"))) == 2  # test and val
    assert len(list(tmp_path.glob("*retrieval-sims*.npy"))) == 1
    calls = []

    class Counting(BlobAdapter):
        def encode_images(self, x):
            calls.append(len(x))
            return super().encode_images(x)

    ctx2 = _ctx(_ds(), adapter=Counting(CLASSES))
    ctx2.cache_dir, ctx2.fingerprint = tmp_path, ctx.fingerprint
    again = TASK_RUNNERS["zeroshot"](ctx2)
    TASK_RUNNERS["retrieval"](ctx2)
    assert calls == [] and len(ctx2.record["cache_hits"]) == 3
    assert again["metrics"] == first["metrics"]
    ctx3 = _ctx(_ds(), adapter=Counting(CLASSES))
    ctx3.cache_dir, ctx3.fingerprint = tmp_path, ctx.fingerprint
    import cxrvlp.bench.tasks.classification as zs

    # another prompt set (as recorded in the result, which keys the cache)
    monkeypatch.setattr(zs, "prompts_record", lambda p, label: {"other prompts": [c.name for c in p]})
    TASK_RUNNERS["zeroshot"](ctx3)
    assert calls and "cache_hits" not in ctx3.record


def _phrase_ctx(samples, **kw) -> TaskContext:
    return TaskContext(
        "toy", _ds(grounding_queries="phrases", **kw), BlobAdapter(CLASSES), {"test": samples}.__getitem__,
        seed=0, batch_size=8,
    )  # fmt: skip


def test_phrase_grounding_queries_each_phrase_with_its_own_boxes():
    """MS-CXR as AFLoc evaluates it: one map per (image, phrase), the phrase as the text. Here each box's
    phrase names its class, so the figures equal the class-prompt grounding of the same boxes."""
    import dataclasses

    from cxrvlp.bench.tasks.grounding import phrase_queries

    base = toy_samples(30, CLASSES, 3)
    samples = [
        dataclasses.replace(s, meta={"phrases": [f"Small {b} opacity." for b in s.box_labels]}) for s in base
    ]
    res = TASK_RUNNERS["grounding"](_phrase_ctx(samples))
    n_boxes = sum(b in CLASSES[:2] for s in samples for b in s.box_labels)  # the grounding classes' boxes
    assert res["n_queries"] == n_boxes and "phrase" in res["protocol"]
    by_class = TASK_RUNNERS["grounding"](_ctx(_ds()))
    assert set(res["per_class"]) == set(by_class["per_class"]) == set(CLASSES[:2])
    for c, figs in by_class["per_class"].items():
        for k in ("iou", "dice", "cnr", "pointing_game", "n"):
            assert res["per_class"][c][k] == pytest.approx(figs[k], rel=1e-9, abs=1e-12), (c, k)
    # two boxes with the same phrase (case and spaces aside) on one image: one query, their union
    s0 = next(s for s in samples if len(s.boxes))
    two = dataclasses.replace(
        s0,
        boxes=np.concatenate([s0.boxes[:1], s0.boxes[:1] + 2]),
        box_labels=[s0.box_labels[0]] * 2,
        meta={"phrases": ["Left effusion", " left EFFUSION"]},
    )
    assert phrase_queries([two]) == [(0, "Left effusion", s0.box_labels[0], (0, 1))]


def test_phrase_grounding_names_the_image_whose_phrases_do_not_match_its_boxes():
    import dataclasses

    from cxrvlp.core.errors import MalformedRecordError

    s0 = next(s for s in toy_samples(30, CLASSES, 3) if len(s.boxes))
    bad = dataclasses.replace(s0, meta={"phrases": []})
    with pytest.raises(MalformedRecordError, match=s0.image_path):
        TASK_RUNNERS["grounding"](_phrase_ctx([bad]))
