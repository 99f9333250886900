"""Test doubles for the benchmark's own tests: a deterministic adapter and toy samples.

`BlobAdapter` is a TEST DOUBLE, never registered as a method. Class k of a toy image is "present" when a
bright square sits in region k; the adapter scores region brightness, so a correct pipeline yields high
AUROC / pointing game, and a pipeline that mixes up rows, classes or frames does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.encoders.base import ImageEncoderOutput
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts

S = 32  # adapter frame size
REGIONS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (row, col) quadrant per class index


def toy_samples(
    n: int, classes: Sequence[str], seed: int, size: int = 48, with_reports: bool = False
) -> list[Sample]:
    """n images (size x size, not square-resampled) with a blob in the quadrant of each positive class."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (0.2 + 0.05 * rng.standard_normal((size, size + 8))).astype(np.float32)
        lab = (rng.random(len(classes)) < 0.4).astype(np.float32)
        if i < len(classes) * 2:  # every class has positives and negatives
            lab[:] = 0
            lab[i % len(classes)] = float(i < len(classes))
        boxes, blabels = [], []
        h, w = img.shape
        for c in np.flatnonzero(lab):
            r, q = REGIONS[c % 4]
            y0, x0 = r * h // 2 + h // 8, q * w // 2 + w // 8
            img[y0 : y0 + h // 4, x0 : x0 + w // 4] += 0.6
            boxes.append([x0, y0, x0 + w // 4, y0 + h // 4])
            blabels.append(classes[c])
        report = " ".join(f"{classes[c]} present." for c in np.flatnonzero(lab)) or f"normal study {i}."
        out.append(
            Sample(
                image=np.clip(img, 0, 1),
                image_path=f"toy/{seed}/{i}.png",
                dataset="toy",
                classes=tuple(classes),
                labels=lab,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                box_labels=blabels,
                report=report if with_reports else None,
                sections={"findings": report} if with_reports else {},
                patient_id=f"p{i}",
            )
        )
    return out


class _TinyEncoder(torch.nn.Module):
    """Average-pool pyramid of the image: stands in for a method's image encoder."""

    def forward(self, x: torch.Tensor) -> ImageEncoderOutput:
        maps = {"s4": F.avg_pool2d(x, 4), "s8": F.avg_pool2d(x, 8)}  # (B, 3, 8, 8), (B, 3, 4, 4)
        return ImageEncoderOutput(global_feat=x.mean((2, 3)), maps=maps)


class BlobAdapter:
    """Deterministic adapter over toy images (a test double; never registered as a method)."""

    def __init__(self, classes: Sequence[str], with_encoder: bool = True) -> None:
        self.classes = [c.lower() for c in classes]
        self.info = AdapterInfo(
            method="blob-test-double",
            model_name="blob",
            image_size=S,
            normalisation="mean0.5-std0.5",
            zero_shot_protocol="test double: quadrant brightness (not from any paper)",
            grounding="test double: the image itself",
            checkpoint_sha256="0" * 64,
        )
        self.image_encoder = _TinyEncoder() if with_encoder else None

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize to S x S (no crop) and normalise with mean/std 0.5."""
        t = torch.from_numpy(np.asarray(image, np.float32))[None, None]
        t = F.interpolate(t, size=(S, S), mode="bilinear", align_corners=False)[0]
        return ((t - 0.5) / 0.5).expand(3, S, S).contiguous()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 4) quadrant means."""
        return F.avg_pool2d(images[:, :1], S // 2).flatten(1)  # (B, 4)

    def _class_col(self, text: str) -> int:
        t = text.lower()
        for k, c in enumerate(self.classes):
            if c in t:
                return k % 4
        return 0

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Each text -> a one-hot over the quadrants of the classes it names."""
        out = torch.zeros(len(texts), 4)
        for i, t in enumerate(texts):
            for k, c in enumerate(self.classes):
                if c in t.lower():
                    out[i, k % 4] = 1.0
        return out

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, 4) x (P, 4) -> (B, P), brightness counted above the darkest possible quadrant."""
        return (image_emb + 1.0) @ text_emb.T - text_emb.sum(1)[None] * 0.5

    def classify(self, image_emb: torch.Tensor, classes: Sequence[ClassPrompts]) -> torch.Tensor:
        """(B, C): brightness of the quadrant of each class named in its first positive prompt."""
        cols = [self._class_col(c.positive[0] if c.positive else c.name) for c in classes]
        return image_emb[:, cols]

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 8): quadrant means and stds."""
        q = images[:, 0].unfold(1, S // 2, S // 2).unfold(2, S // 2, S // 2)  # (B, 2, 2, S/2, S/2)
        return torch.cat([q.mean((-1, -2)).flatten(1), q.std((-1, -2)).flatten(1)], 1)

    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, P, S, S): the image inside the quadrant of the prompt's class, its minimum elsewhere."""
        b = images.shape[0]
        out = images[:, :1].amin((2, 3), keepdim=True).expand(b, len(texts), S, S).clone()
        h = S // 2
        for p, t in enumerate(texts):
            r, q = REGIONS[self._class_col(t)]
            out[:, p, r * h : (r + 1) * h, q * h : (q + 1) * h] = images[
                :, 0, r * h : (r + 1) * h, q * h : (q + 1) * h
            ]
        return out


class NoMapAdapter(BlobAdapter):
    """The same double without localisation maps or an encoder."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__(classes, with_encoder=False)

    def localize(self, images, texts):
        return None


class BorderNaNAdapter(BlobAdapter):
    """The double with AFLoc's protocol: maps NaN on a declared `border`-px frame (inside too: `leak`)."""

    def __init__(self, classes: Sequence[str], border: int = 2, leak: bool = False) -> None:
        super().__init__(classes)
        self.info.excluded_border_px = border
        self.border, self.leak = border, leak

    def localize(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """BlobAdapter's maps, NaN on the border (and at the centre pixel when `leak`)."""
        out = super().localize(images, texts)
        b = self.border
        out[..., :b, :] = out[..., -b:, :] = out[..., :, :b] = out[..., :, -b:] = float("nan")
        if self.leak:
            out[..., S // 2, S // 2] = float("nan")
        return out
