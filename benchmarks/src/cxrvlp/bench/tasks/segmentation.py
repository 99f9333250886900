"""Segmentation fine-tuning: an smp U-Net decoder trained over each method's frozen image encoder (Dice).

Needs `adapter.image_encoder`: an nn.Module whose forward returns `ImageEncoderOutput` (optional part of
the adapter; methods whose adapters lack it are skipped with that reason). The encoder is frozen (as in
MGCA's segmenter); its maps are streamed through a DataLoader once per split into float16 memmaps on disk
(cached across seeds and label fractions), and only the decoder is trained, reading mini-batches from disk.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import accelerator, autocast, progress
from cxrvlp.bench.sources import subset
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped
from cxrvlp.bench.tasks.grounding import gt_mask, to_adapter_frame
from cxrvlp.bench.tasks.linear_probe import FRACTIONS, subsample
from cxrvlp.core.zeroshot import adapter_image_encoder
from torch import nn
from torch.utils.data import DataLoader, Dataset


def encoder_pyramid(out, image_size: int) -> list[torch.Tensor]:
    """ImageEncoderOutput -> feature maps (B, C, h, w), finest first; patch tokens become a grid."""
    feats = [m for m in out.maps.values() if m.ndim == 4]
    if out.local_feat is not None and out.grid_size is not None:
        b, n, d = out.local_feat.shape
        h, w = out.grid_size
        feats.append(out.local_feat.transpose(1, 2).reshape(b, d, h, w))  # (B, D, h, w)
    if not feats:
        raise TaskSkipped("the image encoder returns neither feature maps nor a patch grid")
    by_stride: dict[int, torch.Tensor] = {}
    for f in feats:  # one map per stride; keep the widest
        s = image_size // f.shape[-1]
        if s >= 2 and (s & (s - 1)) == 0 and (s not in by_stride or f.shape[1] > by_stride[s].shape[1]):
            by_stride[s] = f
    if not by_stride:
        raise TaskSkipped("no encoder map at a power-of-two stride of the input")
    return [by_stride[s] for s in sorted(by_stride)]


class FrozenEncoderUnet(nn.Module):
    """smp U-Net decoder over cached encoder maps: zero-channel skips stand in for missing strides."""

    def __init__(self, pyramid: list[torch.Tensor], image_size: int, width: int = 32) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.image_size = image_size
        strides = [image_size // f.shape[-1] for f in pyramid]
        self.depth = int(math.log2(max(strides)))
        self.channels = {s: f.shape[1] for s, f in zip(strides, pyramid)}
        enc_ch = [3] + [self.channels.get(2**k, 0) for k in range(1, self.depth + 1)]
        dec_ch = [max(width // 2 ** min(k, 2), 8) for k in range(self.depth)]
        self.decoder = UnetDecoder(encoder_channels=enc_ch, decoder_channels=dec_ch, n_blocks=self.depth)
        self.head = SegmentationHead(dec_ch[-1], 1, kernel_size=3)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Maps (finest first) -> (B, 1, S, S) logits."""
        b = pyramid[0].shape[0]
        by_stride = {self.image_size // f.shape[-1]: f for f in pyramid}
        feats = [pyramid[0].new_zeros(b, 3, self.image_size, self.image_size)]
        for k in range(1, self.depth + 1):
            s = 2**k
            size = self.image_size // s
            feats.append(by_stride.get(s, pyramid[0].new_zeros(b, 0, size, size)))
        return self.head(self.decoder(feats))


class _SegItems(Dataset):
    """Samples -> (index, preprocessed image, ground-truth mask in the adapter's frame), in the loader."""

    def __init__(self, samples, adapter, cls: str) -> None:
        self.samples, self.adapter, self.cls = samples, adapter, cls

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        x = self.adapter.preprocess(s.image)
        m = gt_mask(s, self.cls, any_label=True)
        y = np.zeros(x.shape[-2:], bool) if m is None else to_adapter_frame(self.adapter, m)
        return i, x, torch.from_numpy(np.ascontiguousarray(y))


class EncodedSplit:
    """A split's frozen encoder maps and masks in float16 / bool memmaps on disk, read batch by batch.

    Written once per (model, checkpoint, preprocessing, dataset, split) under the run's cache (or a
    temporary folder); training and scoring index it, so memory does not grow with the split.
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.n, self.size = int(meta["n"]), int(meta["size"])
        self.levels = [
            np.lib.format.open_memmap(folder / f"level{k}.npy", mode="r") for k in range(meta["levels"])
        ]
        self.masks = np.lib.format.open_memmap(folder / "masks.npy", mode="r")

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Maps (finest first, float32) and (B, 1, S, S) float masks of rows `idx` (sorted for disk reads)."""
        idx = np.asarray(idx)
        pyr = [torch.from_numpy(np.asarray(lv[idx], np.float32)) for lv in self.levels]
        return pyr, torch.from_numpy(np.asarray(self.masks[idx], np.float32)).unsqueeze(1)


def encode_split(ctx: TaskContext, split: str, cls: str, limit: int | None, folder: Path) -> EncodedSplit:
    """Stream `split` through the frozen encoder into `folder` (skipped when a finished copy is there)."""
    if (folder / "meta.json").is_file():
        ctx.record.setdefault("cache_hits", []).append(f"{folder.name} (segmentation maps)")
        return EncodedSplit(folder)
    samples = ctx.load(split)
    if limit:
        samples = subset(samples, range(min(int(limit), len(samples))))
    if not len(samples):
        raise TaskSkipped(f"{ctx.dataset.name}: the {split} split is empty")
    enc, dev = adapter_image_encoder(ctx.adapter), accelerator().device
    enc.eval()
    folder.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        _SegItems(samples, ctx.adapter, cls),
        batch_size=ctx.batch_size,
        num_workers=ctx.num_workers,
    )
    levels, masks, size = None, None, None
    bar = progress(loader, f"{ctx.dataset.name} {split} encoder maps", len(loader))
    with torch.no_grad():
        for idx, x, y in bar:
            size = x.shape[-1]
            with autocast(dev):
                pyr = encoder_pyramid(enc(x.to(dev)), size)
            if levels is None:  # shapes known after the first batch
                n = len(samples)
                levels = [
                    np.lib.format.open_memmap(
                        folder / f"level{k}.npy", mode="w+", dtype=np.float16, shape=(n, *f.shape[1:])
                    )
                    for k, f in enumerate(pyr)
                ]
                masks = np.lib.format.open_memmap(
                    folder / "masks.npy", mode="w+", dtype=np.bool_, shape=(n, size, size)
                )
            i = idx.numpy()
            for lv, f in zip(levels, pyr):
                lv[i] = f.float().cpu().numpy().astype(np.float16)
            masks[i] = y.numpy()
    for lv in (*levels, masks):
        lv.flush()
    meta = {"n": len(samples), "size": int(size), "levels": len(levels)}
    (folder / "meta.json").write_text(json.dumps(meta))  # written last: marks the copy finished
    return EncodedSplit(folder)


def _maps_folder(ctx: TaskContext, split: str, cls: str, limit: int | None, tmp: Path) -> Path:
    """Where a split's maps live: the run's cache keyed like every cached feature, else a temp folder."""
    key = ctx.cache_key(f"segmaps:{cls}:{limit}", split)
    if key is None:
        return tmp / split
    return ctx.cache_dir / f"{ctx.method}__{ctx.dataset.name}__{split}__segmaps__{key}"


def train_decoder(
    ctx: TaskContext, train: EncodedSplit, rows: np.ndarray, epochs: int, lr: float
) -> tuple[FrozenEncoderUnet, list[float]]:
    """Fit the decoder on `rows` of the encoded training split (mini-batches read from disk)."""
    torch.manual_seed(ctx.seed)
    pyr0, _ = train.batch(rows[:2])
    model = FrozenEncoderUnet(pyr0, train.size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    bs = max(2, min(ctx.batch_size, 16))
    g = torch.Generator().manual_seed(ctx.seed)
    losses = []
    for _ in range(epochs):
        model.train()
        perm = rows[torch.randperm(len(rows), generator=g).numpy()]
        for i in range(0, len(perm), bs):
            j = np.sort(perm[i : i + bs])
            if len(j) < 2:
                continue  # BatchNorm in the decoder needs two samples
            pyr, y = train.batch(j)
            loss = dice_bce(model(pyr), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return model, losses


def score_decoder(model: FrozenEncoderUnet, test: EncodedSplit, bs: int) -> tuple[np.ndarray, ...]:
    """Per test image: hard Dice at 0.5, whether it has a finding, whether the prediction is empty."""
    model.eval()
    d, pos, empty = [], [], []
    with torch.no_grad():
        for i in range(0, len(test), bs):
            pyr, y = test.batch(np.arange(i, min(i + bs, len(test))))
            pred = (torch.sigmoid(model(pyr)) > 0.5).numpy()[:, 0]
            gt = y.numpy()[:, 0] > 0.5
            d.append(scoring.dice(pred, gt))
            pos.append(gt.reshape(len(gt), -1).any(1))
            empty.append(~pred.reshape(len(pred), -1).any(1))
    return np.concatenate(d), np.concatenate(pos), np.concatenate(empty)


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - soft Dice, smooth 1), as MAVL's segmentation fine-tuning."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    soft_dice = (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return nn.functional.binary_cross_entropy_with_logits(logits, target) + 1 - soft_dice


def run_segmentation(ctx: TaskContext) -> dict[str, Any]:
    """Train a decoder on 1/10/100 % of the training images (seeded subsample); Dice at 0.5 on test."""
    ds = ctx.dataset
    if adapter_image_encoder(ctx.adapter) is None:
        raise TaskSkipped("the adapter exposes no image_encoder (needed to put a decoder over it)")
    if ds.train_split is None:
        raise TaskSkipped(f"{ds.name}: no training split")
    cls = (ds.grounding_classes or ds.classes)[0]
    opts = ctx.options
    epochs, limit = int(opts.get("seg_epochs", 20)), opts.get("seg_max_train")
    lr = float(opts.get("seg_lr", 5e-4))
    fractions = tuple(opts.get("seg_fractions", FRACTIONS))
    n_boot = ctx.n_bootstrap
    with tempfile.TemporaryDirectory(prefix="cxrvlp-seg-") as tmp:
        train = encode_split(
            ctx, ds.train_split, cls, limit, _maps_folder(ctx, ds.train_split, cls, limit, Path(tmp))
        )
        test = encode_split(
            ctx, ds.test_split, cls, None, _maps_folder(ctx, ds.test_split, cls, None, Path(tmp))
        )
        train_pos = np.asarray(train.masks.reshape(len(train), -1).any(1))
        metrics: dict[str, Any] = {}
        ci: dict[str, Any] = {}
        per_fraction: dict[str, Any] = {}
        for frac in fractions:
            rows = subsample(len(train), frac, ctx.seed, train_pos[:, None].astype(np.float32))
            model, losses = train_decoder(ctx, train, rows, epochs, lr)
            d, pos, empty = score_decoder(model, test, max(2, min(ctx.batch_size, 16)))
            k = f"{int(round(frac * 100))}%"
            m = {
                "dice_positives": float(d[pos].mean()) if pos.any() else None,
                "dice_all_images": float(d.mean()),
                "empty_on_negatives": float(empty[~pos].mean()) if (~pos).any() else None,
            }
            per_fraction[k] = {
                **m,
                "n_train": int(len(rows)),
                "final_train_loss": losses[-1] if losses else None,
            }
            for name, v in m.items():
                metrics[f"{name}@{k}"] = v
            ci[f"dice_positives@{k}"] = scoring.mean_ci(d[pos], n_boot, ctx.seed) if pos.sum() > 1 else None
            ci[f"dice_all_images@{k}"] = scoring.mean_ci(d, n_boot, ctx.seed)
        n_test, n_pos = len(test), int(pos.sum())
        del train, test  # memmaps closed before the temporary folder goes
    return {
        # Dice on the images with a finding is the headline: on all images, an all-empty prediction scores
        # 1 on every negative image (0.833 on a smoke run whose Dice on positives was 0.000)
        "metrics": metrics,
        "ci95": ci,
        "fractions": per_fraction,
        "n_positive_test": n_pos,
        "n_train": int(len(train_pos)),
        "n_test": n_test,
        "epochs": epochs,
        "final_train_loss": per_fraction[f"{int(round(fractions[-1] * 100))}%"]["final_train_loss"],
        "protocol": (
            "frozen adapter.image_encoder (maps cached on disk, float16), smp UnetDecoder (zero-channel "
            "skips where the encoder has no map), BCE + soft Dice, AdamW wd 0.05, trained on each label "
            "fraction of "
            "the training images (subsampled with this seed); Dice at 0.5 on positive test images (headline) "
            "and on all test images (empty GT scores 1 iff prediction empty), reported separately; 95 % "
            f"percentile bootstrap over test images ({n_boot} resamples)"
        ),
    }
