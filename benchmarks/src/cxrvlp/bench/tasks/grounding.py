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

CLASS_PROTOCOL = (
    "AFLoc's: maps min-max normalised to [-1, 1] per image, IoU/Dice averaged over thresholds "
    "0.1..0.5, signed CNR, pointing game = argmax inside the ground truth; positives only; no border "
    "margin; GT mapped through the adapter's preprocess; per class, then macro; 95 % bootstrap of "
    "the pointing game over images within each class"
)
PHRASE_PROTOCOL = (
    "AFLoc's MS-CXR: one query per (image, phrase), the phrase as the text, ground truth = the "
    "union of the image's boxes with that phrase; maps min-max normalised to [-1, 1], IoU/Dice "
    "averaged over thresholds 0.1..0.5, signed CNR, pointing game; per MS-CXR category, then "
    "macro; 95 % bootstrap of the pointing game"
)


def gt_mask(sample: Sample, cls: str, any_label: bool = False) -> np.ndarray | None:
    """(H, W) uint8 mask of class `cls` in the sample's own pixels, from its mask or boxes; None if absent.

    Boxes count when their label names `cls`; with `any_label` (single-class datasets such as RSNA, whose
    boxes say "Lung Opacity") every box counts. Box edges are clamped to the image before slicing (a
    negative coordinate must never wrap around as a Python index); a box that is empty or lies wholly
    outside the image is a `MalformedRecordError` naming the image (the readers reject such boxes first).
    """
    if sample.mask is not None:
        m = np.asarray(sample.mask)
        if m.ndim == 3:
            names = [c.lower() for c in sample.classes] if len(sample.classes) == m.shape[0] else None
            m = m[names.index(cls.lower())] if names and cls.lower() in names else m.max(axis=0)
        return (m > 0).astype(np.uint8) if m.any() else None
    if sample.boxes is not None and len(sample.boxes):
        labels = [str(b).lower().replace("_", " ") for b in sample.box_labels]
        want = cls.lower().replace("_", " ")
        keep = [k for k in range(len(sample.boxes)) if any_label or k >= len(labels) or labels[k] == want]
        return box_mask(sample, keep)
    return None


def box_mask(sample: Sample, keep: Sequence[int]) -> np.ndarray | None:
    """(H, W) uint8 union of the sample's boxes `keep` (xyxy, its own pixels); None if that is empty.

    Box edges are clamped to the image before slicing; an empty box or one wholly outside the image is a
    `MalformedRecordError` naming the image."""
    h, w = sample.image.shape[:2]
    m = np.zeros((h, w), np.uint8)
    boxes = np.asarray(sample.boxes, np.float64)
    for k in keep:
        x0, y0, x1, y1 = boxes[k]
        given = [float(x0), float(y0), float(x1), float(y1)]
        x0, x1 = np.clip([x0, x1], 0, w)  # NaN stays NaN and fails the check below
        y0, y1 = np.clip([y0, y1], 0, h)
        ok = np.isfinite([x0, y0, x1, y1]).all()
        c0, c1 = (int(np.floor(x0)), int(np.ceil(x1))) if ok else (0, 0)
        r0, r1 = (int(np.floor(y0)), int(np.ceil(y1))) if ok else (0, 0)
        if not (ok and c1 > c0 and r1 > r0):
            why = f"box {given} is empty or outside the {w}x{h} image"
            raise MalformedRecordError(sample.image_path, k, why)
        m[r0:r1, c0:c1] = 1
    return m if m.any() else None


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
    loader = DataLoader(
        _GroundItems(samples, ctx.adapter, cls, any_label),
        batch_size=ctx.batch_size,
        num_workers=ctx.num_workers,
    )
    iou, dice, cnr, hit, example = [], [], [], [], None
    with torch.no_grad():
        for x, m, has in progress(loader, f"{ctx.dataset.name} grounding {cls}", len(loader)):
            if not has.any():
                continue
            x, m = x[has], m[has].numpy().astype(np.float64)
            maps = _localize(ctx, x, text, cls)
            for acc, v in zip((iou, dice, cnr, hit), _per_image(maps, m)):
                acc.append(v)
            if example is None:
                example = (x[0, 0].float().numpy(), maps[0], m[0] > 0.5)
    if not iou:
        return None
    return {"metrics": _summary(iou, dice, cnr, hit), "hits": np.concatenate(hit), "example": example}


def _localize(ctx: TaskContext, x: torch.Tensor, text: str, what: str) -> np.ndarray:
    """(B, S, S) maps of `text` on the batch `x`, checked (finite outside the declared border)."""
    with autocast(accelerator().device):
        maps = _first_map(ctx.adapter.localize(x.to(accelerator().device), [text])).float().cpu().numpy()
    check_maps(maps, ctx.adapter.info.excluded_border_px, f"{ctx.method} on {ctx.dataset.name}, {what}")
    return maps


def _per_image(maps: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
    """AFLoc's per-image quantities of (B, S, S) maps against (B, S, S) ground truth: IoU (B, T), Dice (B, T),
    CNR (B,), pointing-game hit (B,)."""
    thr = _gnd.AFLOC_THRESHOLDS
    hm = np.stack([_gnd.minmax_normalize(h) for h in maps.astype(np.float64)])
    return (
        _gnd.iou_at_thresholds(hm, m, thr),
        _gnd.dice_at_thresholds(hm, m, thr),
        _gnd.cnr(hm, m),
        _gnd.pointing_game(hm, m).astype(np.float64),
    )


def _summary(iou: list, dice: list, cnr: list, hit: list) -> dict[str, float]:
    """One class's figures from its per-image quantities (as core's grounding_metrics: nanmean per
    threshold, then the mean over thresholds)."""
    iou_a, dice_a = np.concatenate(iou), np.concatenate(dice)
    with np.errstate(all="ignore"):
        return {
            "iou": float(np.mean(np.nanmean(iou_a, 0))),
            "dice": float(np.mean(np.nanmean(dice_a, 0))),
            "cnr": float(np.nanmean(np.concatenate(cnr))),
            "pointing_game": float(np.mean(np.concatenate(hit))),
            "n": len(iou_a),
        }


def run_grounding(ctx: TaskContext) -> dict[str, Any]:
    """Localise each grounding class on the test images that contain it; metrics per class then macro.

    Images stream through a DataLoader (only the rows that may hold the class are read); per image only
    AFLoc's overlap / CNR / pointing numbers are kept, so memory does not grow with maps of the split.
    """
    ds = ctx.dataset
    if ds.grounding_queries == "phrases":
        return run_phrase_grounding(ctx)
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
    return _result(ctx, per_class, hits, examples, split, protocol=CLASS_PROTOCOL)


def _result(
    ctx: TaskContext, per_class: dict, hits: list, examples: list, split: str, protocol: str, **extra
) -> dict[str, Any]:
    """Macro over classes, the pointing game's bootstrap CI, a few overlays for the plot command."""
    keys = [k for k in next(iter(per_class.values())) if k != "n"]
    metrics = {f"{k}_macro": float(np.nanmean([pc[k] for pc in per_class.values()])) for k in keys}
    path = ctx.sidecar("_grounding.npz")
    if path is not None and examples:
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
        **extra,
        "thresholds": list(scoring.THRESHOLDS),
        "protocol": protocol,
        "test_split": split,
    }


def phrase_queries(samples: Sequence[Sample]) -> list[tuple[int, str, str, tuple[int, ...]]]:
    """(row, phrase, category, box indices) per (image, phrase), read without pixels.

    AFLoc's MS-CXR protocol (`get_annotation`): boxes of one image that share the lower-cased phrase are one
    query whose ground truth is their union (the official sums them; every metric reads mask > 0). A row
    whose `meta["phrases"]` does not name each box is a MalformedRecordError naming the image.
    """
    out = []
    for i, s in enumerate(light_samples(samples)):
        phrases = list((s.meta or {}).get("phrases") or [])
        n = 0 if s.boxes is None else len(s.boxes)
        if n == 0:
            continue
        if len(phrases) != n:
            raise MalformedRecordError(s.image_path, "boxes", f"{n} boxes but {len(phrases)} phrases")
        groups: dict[str, list[int]] = {}
        for k, ph in enumerate(phrases):
            groups.setdefault(str(ph).strip().lower(), []).append(k)
        for ks in groups.values():
            out.append((i, str(phrases[ks[0]]).strip(), str(s.box_labels[ks[0]]), tuple(ks)))
    return out


class _PhraseItems(Dataset):
    """(image, phrase) queries -> (preprocessed image, its boxes' union in the map frame), in the loader."""

    def __init__(self, samples, adapter, queries) -> None:
        self.samples, self.adapter, self.queries = samples, adapter, queries

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, j: int):
        row, _, _, boxes = self.queries[j]
        s = self.samples[row]
        m = box_mask(s, boxes)
        if m is None:
            raise MalformedRecordError(s.image_path, "boxes", "the phrase's boxes cover no pixel")
        return self.adapter.preprocess(s.image), torch.from_numpy(to_adapter_frame(self.adapter, m)), j


def run_phrase_grounding(ctx: TaskContext) -> dict[str, Any]:
    """MS-CXR as AFLoc evaluates it: one map per (image, phrase) with the phrase itself as the query; figures
    per category (the boxes' MS-CXR category), then the macro over categories."""
    ds = ctx.dataset
    split = ds.grounding_split or ds.test_split
    test = ctx.load(split)
    queries = phrase_queries(test)
    if ds.grounding_classes:  # the categories the benchmark grounds (MS-CXR: all 8)
        keep = {c.lower() for c in ds.grounding_classes}
        queries = [q for q in queries if q[2].lower() in keep]
    if not queries:
        raise TaskSkipped(f"{ds.name}: no test image has a phrase with a box")
    ctx.record["prompts"] = {"protocol": "the MS-CXR phrase of each box (AFLoc's use_cxr_text=True)"}
    # one phrase per forward: every query has its own text
    loader = DataLoader(_PhraseItems(test, ctx.adapter, queries), batch_size=1, num_workers=ctx.num_workers)
    found: dict[str, list[list[np.ndarray]]] = {}
    examples = []
    with torch.no_grad():
        for x, m, j in progress(loader, f"{ds.name} phrase grounding", len(loader)):
            _, phrase, cat, _ = queries[int(j[0])]
            maps = _localize(ctx, x, phrase, cat)
            m = m.numpy().astype(np.float64)
            for acc, v in zip(found.setdefault(cat, [[], [], [], []]), _per_image(maps, m)):
                acc.append(v)
            if len(examples) < 4:
                examples.append((x[0, 0].float().numpy(), maps[0], m[0] > 0.5, cat))
    per_class = {cat: _summary(*parts) for cat, parts in sorted(found.items())}
    hits = [np.concatenate(found[c][3]) for c in per_class]
    return _result(ctx, per_class, hits, examples, split, n_queries=len(queries), protocol=PHRASE_PROTOCOL)


def _first_map(maps):
    if maps is None:
        raise TaskSkipped("the adapter's localize() returns no maps")
    return maps[:, 0]  # (B, S, S)
