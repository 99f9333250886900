"""Image-report retrieval: both directions, R@1/5/10 and label-conditioned Hit@K / Precision@K (BenchX)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import text_similarities
from cxrvlp.bench.sources import light_samples, subset
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped, label_matrix
from cxrvlp.core.data.contract import Sample

TEXT_SECTION = "longest of findings / impression (CXR-CLIP, issue #10); full report when neither exists"


def report_text(s: Sample) -> str | None:
    """The retrieval text of one study: the longer of its findings and impression sections."""
    parts = [s.sections.get(k, "") or "" for k in ("findings", "impression")]
    best = max(parts, key=len)
    if best.strip():
        return best.strip()
    return s.report.strip() if s.report and s.report.strip() else None


def unique_texts(samples: Sequence[Sample]) -> tuple[list[str], np.ndarray, list[int]]:
    """De-duplicated texts, each image's text index (N,), and the kept images' positions."""
    texts: dict[str, int] = {}
    gt, kept = [], []
    for i, s in enumerate(samples):
        t = report_text(s)
        if t is None:
            continue
        gt.append(texts.setdefault(t, len(texts)))
        kept.append(i)
    return list(texts), np.asarray(gt, dtype=np.int64), kept


def run_retrieval(ctx: TaskContext) -> dict[str, Any]:
    """Rank all unique reports for each image and all images for each report."""
    ds = ctx.dataset
    test = ctx.load(ds.test_split)
    texts, gt, kept = unique_texts(light_samples(test))  # reports only: no image decoded here
    if len(texts) < 2:
        raise TaskSkipped(f"{ds.name}: fewer than two reports with text in the {ds.test_split} split")
    images = subset(test, kept)
    ctx.record["text_section"] = TEXT_SECTION
    sim = ctx.cached(  # (N images, T texts), per (model, checkpoint, preprocessing, split, texts)
        f"retrieval-sims-{ctx.content_key([kept, texts])}",
        ds.test_split,
        lambda: text_similarities(ctx.adapter, images, texts, **ctx.pass_kw(f"{ds.name} retrieval")),
    )
    if not np.isfinite(sim).all():
        raise FloatingPointError(f"{ctx.method} on {ds.name}: non-finite similarities")
    out: dict[str, Any] = {"n_images": len(images), "n_texts": len(texts), "test_split": ds.test_split}
    metrics: dict[str, Any] = dict(scoring.retrieval(sim, gt))
    n_boot = ctx.n_bootstrap
    r_i2t, r_t2i = scoring.retrieval_ranks(sim, gt)
    ci: dict[str, Any] = {}
    for k in (1, 5, 10):
        ci[f"i2t_R@{k}"] = scoring.mean_ci((r_i2t <= k).astype(np.float64), n_boot, ctx.seed)
        ci[f"t2i_R@{k}"] = scoring.mean_ci((r_t2i <= k).astype(np.float64), n_boot, ctx.seed)
    try:
        img_lab = np.nan_to_num(label_matrix(images, ds.classes, ds.name), nan=0.0)
    except KeyError:
        img_lab = None  # reader has no class labels for this split: no class-match numbers
    if img_lab is not None:
        txt_lab = np.zeros((len(texts), img_lab.shape[1]), np.float32)
        for row, t in zip(img_lab, gt):
            txt_lab[t] = np.maximum(txt_lab[t], row)
        if ds.multiclass:  # 5x200: one class per image; a candidate is relevant when its class is the same
            ic, tc = np.argmax(img_lab, 1), np.argmax(txt_lab, 1)
            rel = ic[:, None] == tc[None, :]  # (N_img, N_txt)
            out["class_match"] = "same class (one-hot labels), as BenchX's label-conditioned retrieval"
        else:  # multi-label: relevant when image and text share a positive class
            rel = (img_lab > 0).astype(np.int64) @ (txt_lab > 0).astype(np.int64).T > 0
            out["class_match"] = "shares at least one positive class (multi-label)"
        for direction, s_, r_ in (("i2t", sim, rel), ("t2i", sim.T, rel.T)):
            q = r_.any(1)  # queries with at least one relevant candidate
            per = scoring.class_retrieval(s_[q], r_[q])
            for name, v in per.items():
                key = f"{direction}_{'class_' if name.startswith('hit') else ''}{name}"
                metrics[key] = float(v.mean()) if len(v) else None
                ci[key] = scoring.mean_ci(v, n_boot, ctx.seed)
        metrics.update(scoring.class_match(sim, img_lab, txt_lab))  # i2t class Hit@K (earlier name kept)
    out["metrics"] = metrics
    out["ci95"] = ci
    out["protocol"] = (
        "cosine/raw adapter similarity over de-duplicated texts over the whole split (BenchX ranks within "
        "batches of 16); ties broken by index; R@K = the paired text/image in the top K; class Hit@K and "
        f"P@K = BenchX's label-conditioned Hit@K / Precision@K; 95 % bootstrap over queries ({n_boot})"
    )
    return out
