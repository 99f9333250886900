"""Image-report retrieval: image->text and text->image R@1/5/10 and class-match Hit@K."""

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
    sim = text_similarities(
        ctx.adapter, images, texts, batch_size=ctx.batch_size, desc=f"{ds.name} retrieval"
    )
    if not np.isfinite(sim).all():
        raise FloatingPointError(f"{ctx.method} on {ds.name}: non-finite similarities")
    out: dict[str, Any] = {"n_images": len(images), "n_texts": len(texts), "test_split": ds.test_split}
    metrics = dict(scoring.retrieval(sim, gt))
    try:
        img_lab = np.nan_to_num(label_matrix(images, ds.classes, ds.name), nan=0.0)
    except KeyError:
        img_lab = None  # reader has no class labels for this split: no class-match numbers
    if img_lab is not None:
        txt_lab = np.zeros((len(texts), img_lab.shape[1]), np.float32)
        for row, t in zip(img_lab, gt):
            txt_lab[t] = np.maximum(txt_lab[t], row)
        metrics.update(scoring.class_match(sim, img_lab, txt_lab))
    out["metrics"] = metrics
    out["protocol"] = "cosine/raw adapter similarity over de-duplicated texts; ties broken by index"
    return out
