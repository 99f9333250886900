"""Zero-shot grounding: pointing game, IoU and Dice at stated thresholds, CNR, on positive images only.

The ground truth (boxes rasterised, or masks) is sent through the adapter's own `preprocess`, so it lands
in exactly the frame of the map (same resize / crop / pad), whatever the method's geometry is; it is then
binarised halfway between the transformed background and foreground values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import accelerator, autocast, progress
from cxrvlp.bench.prompts import prompts_for
from cxrvlp.bench.record import prompts_record
from cxrvlp.bench.sources import light_samples, subset
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.errors import MalformedRecordError
from cxrvlp.core.metrics import grounding as _gnd
from torch.utils.data import DataLoader, Dataset


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


class _GroundItems(Dataset):
    """Rows -> (preprocessed image, ground truth in the map frame, whether there is one), in the loader."""

    def __init__(self, samples, adapter, cls: str, any_label: bool) -> None:
        self.samples, self.adapter, self.cls, self.any_label = samples, adapter, cls, any_label

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        x = self.adapter.preprocess(s.image)
        m = gt_mask(s, self.cls, any_label=self.any_label)
        has = m is not None
        frame = to_adapter_frame(self.adapter, m) if has else np.zeros(x.shape[-2:], bool)
        return x, torch.from_numpy(np.ascontiguousarray(frame)), has


def _candidates(samples: Sequence[Sample], cls: str, any_label: bool) -> list[int]:
    """Rows that may hold `cls`'s box or mask, decided without pixels (boxes, masks or a positive label)."""
    from cxrvlp.bench.datasets import class_index

    want = cls.lower().replace("_", " ")
    out = []
    for i, s in enumerate(light_samples(samples)):
        if s.boxes is not None and len(s.boxes):
            labels = [str(b).lower().replace("_", " ") for b in (s.box_labels or [])]
            if any_label or want in labels or len(labels) < len(s.boxes):
                out.append(i)
                continue
        if s.mask is not None:
            out.append(i)
            continue
        if s.labels is not None:
            try:
                j = class_index(s.classes, [cls], "grounding")[0]
            except KeyError:
                continue
            if np.asarray(s.labels)[j] == 1:
                out.append(i)  # a mask dataset: the mask is read with the pixels
    return out


def check_maps(maps: np.ndarray, border: int, where: str) -> None:
    """(B, H, W) maps: finite, except NaN on the `border`-pixel frame the adapter declares excluded."""
    if np.isinf(maps).any():
        raise FloatingPointError(f"{where}: infinite values in the localisation maps")
    nan = np.isnan(maps)
    if not nan.any():
        return
    inside = _gnd.border_mask(maps.shape[-2], maps.shape[-1], int(border))
    if (nan & inside).any():
        raise FloatingPointError(
            f"{where}: NaN in the localisation maps outside the {int(border)}-px border the adapter "
            "declares excluded (AdapterInfo.excluded_border_px)"
        )
    if not (~nan & inside).reshape(len(maps), -1).any(1).all():
        raise FloatingPointError(f"{where}: a localisation map has no finite pixel inside the border")


def ground_class(ctx: TaskContext, samples, cls: str, text: str, any_label: bool) -> dict[str, Any] | None:
    """Stream the rows through localize(); AFLoc's per-image quantities for the images with ground truth."""
    dev = accelerator().device
    loader = DataLoader(
        _GroundItems(samples, ctx.adapter, cls, any_label),
        batch_size=ctx.batch_size,
        num_workers=ctx.num_workers,
    )
    thr = _gnd.AFLOC_THRESHOLDS
    iou, dice, cnr, hit, example = [], [], [], [], None
    with torch.no_grad():
        for x, m, has in progress(loader, f"{ctx.dataset.name} grounding {cls}", len(loader)):
            if not has.any():
                continue
            x, m = x[has], m[has].numpy().astype(np.float64)
            with autocast(dev):
                maps = _first_map(ctx.adapter.localize(x.to(dev), [text])).float().cpu().numpy()
            check_maps(
                maps, ctx.adapter.info.excluded_border_px, f"{ctx.method} on {ctx.dataset.name}, {cls}"
            )
            hm = np.stack([_gnd.minmax_normalize(h) for h in maps.astype(np.float64)])
            iou.append(_gnd.iou_at_thresholds(hm, m, thr))  # (B, T)
            dice.append(_gnd.dice_at_thresholds(hm, m, thr))
            cnr.append(_gnd.cnr(hm, m))
            hit.append(_gnd.pointing_game(hm, m).astype(np.float64))
            if example is None:
                example = (x[0, 0].float().numpy(), maps[0], m[0] > 0.5)
    if not iou:
        return None
    iou_a, dice_a = np.concatenate(iou), np.concatenate(dice)
    with np.errstate(all="ignore"):  # as core's grounding_metrics: nanmean per threshold, then the mean
        iou_t, dice_t = np.nanmean(iou_a, 0), np.nanmean(dice_a, 0)
        out = {
            "iou": float(np.mean(iou_t)),
            "dice": float(np.mean(dice_t)),
            "cnr": float(np.nanmean(np.concatenate(cnr))),
            "pointing_game": float(np.mean(np.concatenate(hit))),
            "n": len(iou_a),
        }
    return {"metrics": out, "hits": np.concatenate(hit), "example": example}


def run_grounding(ctx: TaskContext) -> dict[str, Any]:
    """Localise each grounding class on the test images that contain it; metrics per class then macro.

    Images stream through a DataLoader (only the rows that may hold the class are read); per image only
    AFLoc's overlap / CNR / pointing numbers are kept, so memory does not grow with maps of the split.
    """
    ds = ctx.dataset
    classes = ds.grounding_classes or ds.classes
    prompts, label = prompts_for(ctx.method, ds.name, classes)
    ctx.record["prompts"] = prompts_record(prompts, label)
    split = ds.grounding_split or ds.test_split
    test = ctx.load(split)
    per_class: dict[str, dict[str, float]] = {}
    hits: list[np.ndarray] = []
    examples = []
    single = len(classes) == 1
    for cls, cp in zip(classes, prompts):
        rows = _candidates(test, cls, single)
        if not rows:
            continue
        r = ground_class(ctx, subset(test, rows), cls, cp.positive[0], single)
        if r is None:
            continue
        per_class[cls] = r["metrics"]
        hits.append(r["hits"])
        if len(examples) < 4:
            examples.append((*r["example"], cls))
    if not per_class:
        raise TaskSkipped(f"{ds.name}: no test image has a box or mask for {list(classes)}")
    keys = [k for k in next(iter(per_class.values())) if k != "n"]
    metrics = {f"{k}_macro": float(np.nanmean([pc[k] for pc in per_class.values()])) for k in keys}
    path = ctx.sidecar("_grounding.npz")
    if path is not None and examples:  # a few overlays for the plot command
        np.savez_compressed(
            path,
            images=np.stack([e[0] for e in examples]),
            maps=np.stack([e[1] for e in examples]),
            masks=np.stack([e[2] for e in examples]),
            classes=np.array([e[3] for e in examples]),
        )
    return {
        "metrics": metrics,
        "ci95": {"pointing_game_macro": scoring.macro_mean_ci(hits, ctx.n_bootstrap, ctx.seed)},
        "per_class": per_class,
        "thresholds": list(scoring.THRESHOLDS),
        "protocol": (
            "AFLoc's: maps min-max normalised to [-1, 1] per image, IoU/Dice averaged over thresholds "
            "0.1..0.5, signed CNR, pointing game = argmax inside the ground truth; positives only; no border "
            "margin; GT mapped through the adapter's preprocess; per class, then macro; 95 % bootstrap of "
            "the pointing game over images within each class"
        ),
        "test_split": split,
    }


def _first_map(maps):
    if maps is None:
        raise TaskSkipped("the adapter's localize() returns no maps")
    return maps[:, 0]  # (B, S, S)
