"""Zero-shot grounding: pointing game, IoU and Dice at stated thresholds, CNR, on positive images only.

The ground truth (boxes rasterised, or masks) is sent through the adapter's own `preprocess`, so it lands
in exactly the frame of the map (same resize / crop / pad), whatever the method's geometry is; it is then
binarised halfway between the transformed background and foreground values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import map_images
from cxrvlp.bench.prompts import prompts_for
from cxrvlp.bench.record import prompts_record
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.errors import MalformedRecordError


def gt_mask(sample: Sample, cls: str, any_label: bool = False) -> np.ndarray | None:
    """(H, W) uint8 mask of class `cls` in the sample's own pixels, from its mask or boxes; None if absent.

    Boxes count when their label names `cls`; with `any_label` (single-class datasets such as RSNA, whose
    boxes say "Lung Opacity") every box counts. Box edges are clamped to the image before slicing (a
    negative coordinate must never wrap around as a Python index); a box that is empty or lies wholly
    outside the image is a `MalformedRecordError` naming the image (the readers reject such boxes first).
    """
    h, w = sample.image.shape[:2]
    if sample.mask is not None:
        m = np.asarray(sample.mask)
        if m.ndim == 3:
            names = [c.lower() for c in sample.classes] if len(sample.classes) == m.shape[0] else None
            m = m[names.index(cls.lower())] if names and cls.lower() in names else m.max(axis=0)
        return (m > 0).astype(np.uint8) if m.any() else None
    if sample.boxes is not None and len(sample.boxes):
        labels = [str(b).lower().replace("_", " ") for b in sample.box_labels]
        want = cls.lower().replace("_", " ")
        m = np.zeros((h, w), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(sample.boxes, np.float64)):
            if not any_label and k < len(labels) and labels[k] != want:
                continue
            given = [float(x0), float(y0), float(x1), float(y1)]
            x0, x1 = np.clip([x0, x1], 0, w)  # NaN stays NaN and fails the check below
            y0, y1 = np.clip([y0, y1], 0, h)
            ok = np.isfinite([x0, y0, x1, y1]).all()
            c0, c1 = (int(np.floor(x0)), int(np.ceil(x1))) if ok else (0, 0)
            r0, r1 = (int(np.floor(y0)), int(np.ceil(y1))) if ok else (0, 0)
            if not (ok and c1 > c0 and r1 > r0):
                raise MalformedRecordError(
                    sample.image_path, k, f"box {given} is empty or outside the {w}x{h} image"
                )
            m[r0:r1, c0:c1] = 1
        return m if m.any() else None
    return None


def to_adapter_frame(adapter, mask: np.ndarray) -> np.ndarray:
    """Map a mask through the adapter's preprocess: (H, W) -> (S, S) bool in the map's frame."""
    fg = adapter.preprocess(mask.astype(np.float32))[0].float().numpy()
    bg = adapter.preprocess(np.zeros_like(mask, dtype=np.float32))[0].float().numpy()
    one = adapter.preprocess(np.ones_like(mask, dtype=np.float32))[0].float().numpy()
    mid = (bg + one) / 2.0
    sign = np.sign(one - bg)  # normalisation keeps order, but be safe with flipped intensities
    return (sign * (fg - mid)) > 0


def run_grounding(ctx: TaskContext) -> dict[str, Any]:
    """Localise each grounding class on the test images that contain it; metrics per class then macro."""
    ds = ctx.dataset
    classes = ds.grounding_classes or ds.classes
    prompts, label = prompts_for(ctx.method, ds.name, classes)
    ctx.record["prompts"] = prompts_record(prompts, label)
    split = ds.grounding_split or ds.test_split
    test = ctx.load(split)
    per_class: dict[str, dict[str, float]] = {}
    examples = []
    for cls, cp in zip(classes, prompts):
        single = len(classes) == 1
        items = [(s, m) for s in test if (m := gt_mask(s, cls, any_label=single)) is not None]
        if not items:
            continue
        samples = [s for s, _ in items]
        text = cp.positive[0]
        maps = map_images(  # (N, S, S): one prompt per call keeps memory at N*S*S
            ctx.adapter,
            samples,
            lambda x, t=text: _first_map(ctx.adapter.localize(x, [t])),
            batch_size=ctx.batch_size,
            num_workers=ctx.num_workers,
            desc=f"{ds.name} grounding {cls}",
        )
        masks = np.stack([to_adapter_frame(ctx.adapter, m) for _, m in items])  # (N, S, S)
        per_class[cls] = {k: v for k, v in scoring.grounding(maps, masks).items() if "@" not in k}
        if len(examples) < 4:
            examples.append((samples[0], maps[0], items[0][1], cls))
    if not per_class:
        raise TaskSkipped(f"{ds.name}: no test image has a box or mask for {list(classes)}")
    keys = [k for k in next(iter(per_class.values())) if k != "n"]
    metrics = {f"{k}_macro": float(np.nanmean([pc[k] for pc in per_class.values()])) for k in keys}
    path = ctx.sidecar("_grounding.npz")
    if path is not None and examples:  # a few overlays for the plot command
        s0 = [ctx.adapter.preprocess(e[0].image)[0].float().numpy() for e in examples]
        np.savez_compressed(
            path,
            images=np.stack(s0),
            maps=np.stack([e[1] for e in examples]),
            masks=np.stack([to_adapter_frame(ctx.adapter, e[2]) for e in examples]),
            classes=np.array([e[3] for e in examples]),
        )
    return {
        "metrics": metrics,
        "per_class": per_class,
        "thresholds": list(scoring.THRESHOLDS),
        "protocol": (
            "AFLoc's: maps min-max normalised to [-1, 1] per image, IoU/Dice averaged over thresholds "
            "0.1..0.5, signed CNR, pointing game = argmax inside the ground truth; positives only; no border "
            "margin; GT mapped through the adapter's preprocess; per class, then macro"
        ),
        "test_split": split,
    }


def _first_map(maps):
    if maps is None:
        raise TaskSkipped("the adapter's localize() returns no maps")
    return maps[:, 0]  # (B, S, S)
