"""Image transforms for chest X-rays (OpenCV / numpy), deterministic under a seed, and per-method presets.

Every op takes and returns a 2-D numpy array (H, W), uint8 or float32; random ops draw from the
`numpy.random.Generator` passed to them, so a pipeline built with a seed is reproducible. The official
pipelines all start from an 8-bit image (`cv2.imread(path, 0)` or PIL), so the presets quantise the
float [0, 1] image to uint8 first (`ToUint8`) and divide by 255 at `ToTensor`, like torchvision.

`build_transform(preset, train)` returns a callable (H, W) float32 [0, 1] -> (3, S, S) float32 tensor
(three identical channels, then the preset's normalisation). Presets follow each spec's "Inputs" section:

| preset | train | eval | norm |
|---|---|---|---|
| mgca | long side->256 (INTER_AREA) + zero pad, RandomCrop 224 | same, CenterCrop 224 | 0.5/0.5 |
| carzero | as mgca + HFlip p=0.3, Affine(30, 0.1, 0.9-1.1), jitter(b, c 0.8-1.2) | as mgca eval | cxr-mae |
| afloc | long side->224 + pad, CenterCrop 224 (no augmentation) | same | 0.5/0.5 |
| cxrclip-r50 | RandomResizedCrop(224, 0.8-1.1), CLAHE(1-4, p=.5), jitter | short->224 (PIL), crop | in |
| cxrclip-swint | as cxrclip-r50 | as cxrclip-r50 | 0.5/0.5 |
| mavl | RandomResizedCrop(224, 0.2-1, bicubic), HFlip 0.5, RandomAugment(2, 7) | Resize 224x224 | in |
| imagenet | RandomResizedCrop(224) | short->256, CenterCrop 224 | in |

(in = ImageNet mean/std)

Known approximations: torchvision resizes PIL images with antialiasing; here downscaling uses
`INTER_AREA` and upscaling `INTER_LINEAR`/`INTER_CUBIC` (max abs difference a few grey levels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from cxrvlp.core.errors import ConfigError

NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mean0.5-std0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "cxr-mae": ((0.4978, 0.4978, 0.4978), (0.2449, 0.2449, 0.2449)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def _resize(img: np.ndarray, h: int, w: int, interp: str) -> np.ndarray:
    """cv2.resize to (h, w); 'bilinear'/'bicubic' use INTER_AREA when shrinking (antialiasing)."""
    if (h, w) == img.shape[:2]:
        return img
    flag = INTERP[interp]
    if interp in ("bilinear", "bicubic") and h < img.shape[0] and w < img.shape[1]:
        flag = cv2.INTER_AREA
    out = cv2.resize(img, (w, h), interpolation=flag)
    if img.dtype == np.float32:
        out = np.clip(out, 0.0, 1.0)
    return out


def _max_value(img: np.ndarray) -> float:
    return 255.0 if img.dtype == np.uint8 else 1.0


def _cast_like(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if ref.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class Op:
    """Base of every op: `op(img, rng) -> img` on (H, W) arrays."""

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ToUint8(Op):
    """float [0, 1] -> uint8 (the 8-bit image every official pipeline starts from)."""

    def __call__(self, img, rng):
        if img.dtype == np.uint8:
            return img
        return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


class ResizeLongestPad(Op):
    """Longer side -> size keeping aspect (int() truncation), zero-pad the other side symmetrically
    (floor before, ceil after): MGCA/CARZero/AFLoc's `resize_img` (300x200 -> 256x170 + 43/43)."""

    def __init__(self, size: int, interp: str = "area", pad_value: float = 0.0):
        self.size, self.interp, self.pad_value = size, interp, pad_value

    def __call__(self, img, rng):
        h, w = img.shape[:2]
        s = self.size
        if h >= w:  # ties: the first axis counts as the longer one, as `list.index(max)` does
            nh, nw = s, int(float(w) * (s / float(h)))
        else:
            nh, nw = int(float(h) * (s / float(w))), s
        nh, nw = max(nh, 1), max(nw, 1)
        out = cv2.resize(img, (nw, nh), interpolation=INTERP[self.interp])
        ph, pw = s - nh, s - nw
        top, left = ph // 2, pw // 2
        return np.pad(
            out, ((top, ph - top), (left, pw - left)), mode="constant", constant_values=self.pad_value
        )


class ResizeShortSide(Op):
    """Shorter side -> size keeping aspect (torchvision `Resize(int)`: long = int(size * long / short)).

    interp="pil-bilinear" resizes a uint8 image with PIL exactly as torchvision does on a PIL image (its
    bilinear filter antialiases when shrinking): the official eval path of methods that load with PIL."""

    def __init__(self, size: int, interp: str = "bilinear"):
        self.size, self.interp = size, interp

    def __call__(self, img, rng):
        h, w = img.shape[:2]
        if h <= w:
            nh, nw = self.size, int(self.size * w / h)
        else:
            nh, nw = int(self.size * h / w), self.size
        if self.interp == "pil-bilinear":
            from PIL import Image

            if img.dtype != np.uint8:
                raise TypeError("pil-bilinear resizes uint8 images (put ToUint8 first)")
            return np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        return _resize(img, nh, nw, self.interp)


class Resize(Op):
    """Resize to exactly (size, size), aspect not kept (torchvision `Resize([s, s])`)."""

    def __init__(self, size: int, interp: str = "bilinear"):
        self.size, self.interp = size, interp

    def __call__(self, img, rng):
        return _resize(img, self.size, self.size, self.interp)


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad symmetrically up to (size, size) when smaller (torchvision crop behaviour)."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="constant")


class CenterCrop(Op):
    """torchvision `CenterCrop`: top = int(round((h - s) / 2)); pads with zeros when the image is smaller."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img, rng):
        img = _pad_to(img, self.size)
        h, w = img.shape[:2]
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return img[top : top + self.size, left : left + self.size]


class RandomCrop(Op):
    """torchvision `RandomCrop(size)`: uniform top-left corner."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img, rng):
        img = _pad_to(img, self.size)
        h, w = img.shape[:2]
        top = int(rng.integers(0, h - self.size + 1))
        left = int(rng.integers(0, w - self.size + 1))
        return img[top : top + self.size, left : left + self.size]


class RandomResizedCrop(Op):
    """torchvision `RandomResizedCrop`: 10 tries of (area scale, log-uniform ratio), else a centre crop."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interp: str = "bilinear",
    ):
        self.size, self.scale, self.ratio, self.interp = size, tuple(scale), tuple(ratio), interp

    def get_params(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = h * w
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(self.scale[0], self.scale[1])
            ar = math.exp(rng.uniform(log_r[0], log_r[1]))
            cw = int(round(math.sqrt(target * ar)))
            ch = int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
        in_ratio = w / h
        if in_ratio < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = h, int(round(h * max(self.ratio)))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, img, rng):
        top, left, ch, cw = self.get_params(img.shape[0], img.shape[1], rng)
        crop = img[top : top + ch, left : left + cw]
        return _resize(crop, self.size, self.size, self.interp)


class RandomHorizontalFlip(Op):
    """Flip left-right with probability p (off by default: CXR laterality carries meaning)."""

    def __init__(self, p: float = 0.0):
        self.p = p

    def __call__(self, img, rng):
        if self.p > 0 and rng.random() < self.p:
            return np.ascontiguousarray(img[:, ::-1])
        return img


class RandomAffine(Op):
    """torchvision `RandomAffine(degrees, translate, scale)` about the image centre, zero fill."""

    def __init__(
        self,
        degrees: float = 0.0,
        translate: tuple[float, float] | None = None,
        scale: tuple[float, float] | None = None,
        shear: float = 0.0,
        interp: str = "nearest",
    ):
        self.degrees, self.translate, self.scale, self.shear, self.interp = (
            degrees,
            translate,
            scale,
            shear,
            interp,
        )

    def __call__(self, img, rng):
        h, w = img.shape[:2]
        angle = float(rng.uniform(-self.degrees, self.degrees)) if self.degrees else 0.0
        tx = ty = 0
        if self.translate is not None:
            tx = int(round(rng.uniform(-self.translate[0] * w, self.translate[0] * w)))
            ty = int(round(rng.uniform(-self.translate[1] * h, self.translate[1] * h)))
        sc = float(rng.uniform(*self.scale)) if self.scale is not None else 1.0
        sh = float(rng.uniform(-self.shear, self.shear)) if self.shear else 0.0
        # torchvision rotates counter-clockwise for positive angles in image coordinates, like cv2.
        m = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), angle, sc)
        if sh:
            shear_m = np.array([[1.0, math.tan(math.radians(sh)), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            shear_m[0, 2] = -shear_m[0, 1] * (h - 1) * 0.5
            m = (np.vstack([m, [0.0, 0.0, 1.0]]) @ shear_m)[:2]
        m[0, 2] += tx
        m[1, 2] += ty
        return cv2.warpAffine(img, m, (w, h), flags=INTERP[self.interp], borderValue=0)


class ColorJitter(Op):
    """torchvision `ColorJitter` for grayscale: brightness and contrast factors in random order.

    Saturation and hue leave a 3-identical-channel image unchanged, so they are accepted and ignored.
    A float b means the range [max(0, 1 - b), 1 + b]; a pair is used as given.
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.brightness = self._range(brightness)
        self.contrast = self._range(contrast)
        self.saturation, self.hue = saturation, hue

    @staticmethod
    def _range(v) -> tuple[float, float] | None:
        if v is None or v == 0:
            return None
        if isinstance(v, Sequence):
            return float(v[0]), float(v[1])
        return max(0.0, 1.0 - float(v)), 1.0 + float(v)

    def __call__(self, img, rng):
        order = rng.permutation(4)  # torchvision permutes all four; draw the same number of values
        b = float(rng.uniform(*self.brightness)) if self.brightness else None
        c = float(rng.uniform(*self.contrast)) if self.contrast else None
        out = img.astype(np.float32)
        mx = _max_value(img)
        for idx in order:
            if idx == 0 and b is not None:
                out = np.clip(out * b, 0, mx)
            elif idx == 1 and c is not None:
                mean = float(np.mean(np.rint(out))) if img.dtype == np.uint8 else float(np.mean(out))
                out = np.clip(c * out + (1.0 - c) * mean, 0, mx)
        return _cast_like(out, img)


class CLAHE(Op):
    """albumentations `CLAHE(clip_limit=4.0)`: clip limit ~ U(1, clip_limit), 8x8 tiles, applied with p."""

    def __init__(self, clip_limit: float | tuple[float, float] = 4.0, tile_grid: int = 8, p: float = 0.5):
        self.clip_limit = (1.0, float(clip_limit)) if not isinstance(clip_limit, Sequence) else clip_limit
        self.tile_grid, self.p = tile_grid, p

    def __call__(self, img, rng):
        if rng.random() >= self.p:
            return img
        limit = float(rng.uniform(*self.clip_limit))
        u8 = ToUint8()(img, rng)
        out = cv2.createCLAHE(clipLimit=limit, tileGridSize=(self.tile_grid, self.tile_grid)).apply(u8)
        return out if img.dtype == np.uint8 else out.astype(np.float32) / 255.0


class RandomAugment(Op):
    """ALBEF-style RandAugment (MAVL): N ops drawn with replacement, each applied with p=0.5 at magnitude M.

    Ops: Identity, AutoContrast, Equalize, Brightness, Sharpness, ShearX, ShearY, TranslateX, TranslateY,
    Rotate; geometric ops fill with grey 128 as ALBEF does.
    """

    OPS = (
        "Identity",
        "AutoContrast",
        "Equalize",
        "Brightness",
        "Sharpness",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
    )

    def __init__(self, n: int = 2, m: int = 7, max_level: int = 10, fill: int = 128):
        self.n, self.m, self.max_level, self.fill = n, m, max_level, fill

    def _apply(self, name: str, img: np.ndarray, rng) -> np.ndarray:
        lvl = self.m / self.max_level
        h, w = img.shape[:2]
        if name == "Identity":
            return img
        if name == "AutoContrast":
            lo, hi = int(img.min()), int(img.max())
            if hi <= lo:
                return img
            return np.clip((img.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        if name == "Equalize":
            return cv2.equalizeHist(img)
        if name == "Brightness":
            f = lvl * 1.8 + 0.1
            return np.clip(img.astype(np.float32) * f, 0, 255).astype(np.uint8)
        if name == "Sharpness":
            f = lvl * 1.8 + 0.1
            k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
            blur = cv2.filter2D(img, -1, k).astype(np.float32)
            out = img.astype(np.float32).copy()
            inner = blur[1:-1, 1:-1] + f * (out[1:-1, 1:-1] - blur[1:-1, 1:-1])
            out[1:-1, 1:-1] = inner
            return np.clip(out, 0, 255).astype(np.uint8)
        sign = -1.0 if rng.random() > 0.5 else 1.0
        if name in ("ShearX", "ShearY"):
            s = sign * lvl * 0.3
            m = np.float32([[1, s, 0], [0, 1, 0]]) if name == "ShearX" else np.float32([[1, 0, 0], [s, 1, 0]])
        elif name in ("TranslateX", "TranslateY"):
            off = sign * lvl * 10.0
            m = (
                np.float32([[1, 0, -off], [0, 1, 0]])
                if name == "TranslateX"
                else np.float32([[1, 0, 0], [0, 1, -off]])
            )
        else:  # Rotate
            m = cv2.getRotationMatrix2D((w / 2, h / 2), sign * lvl * 30.0, 1)
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=self.fill)

    def __call__(self, img, rng):
        u8 = ToUint8()(img, rng)
        for idx in rng.integers(0, len(self.OPS), size=self.n):
            if rng.random() < 0.5:
                u8 = self._apply(self.OPS[int(idx)], u8, rng)
        return u8 if img.dtype == np.uint8 else u8.astype(np.float32) / 255.0


def to_tensor(img: np.ndarray, norm: str = "none", channels: int = 3) -> torch.Tensor:
    """(H, W) uint8 or float [0, 1] -> (C, H, W) float32 normalised with `NORMALISATIONS[norm]`."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0).expand(channels, -1, -1).clone()  # (C, H, W)
    mean, std = NORMALISATIONS[norm]
    m = torch.tensor(mean[:channels], dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std[:channels], dtype=torch.float32).view(-1, 1, 1)
    return (t - m) / s


class Compose:
    """A seeded pipeline of ops ending in `to_tensor`; reseeds itself once per DataLoader worker."""

    def __init__(self, ops: Sequence[Op], norm: str, seed: int | None = None, channels: int = 3):
        self.ops, self.norm, self.seed, self.channels = list(ops), norm, seed, channels
        self.rng = np.random.default_rng(seed)
        self._worker: tuple[int, int] | None = None

    def _maybe_reseed(self) -> None:
        # Forked DataLoader workers inherit the same generator state: give each worker its own stream.
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.id) if info is not None else None
        if key is not None and key != self._worker:
            base = self.seed if self.seed is not None else info.seed
            self.rng = np.random.default_rng([int(base) % (2**63), info.id])
            self._worker = key

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream (inside a DataLoader worker too: the per-worker stream is replaced)."""
        self.seed, self.rng = seed, np.random.default_rng(seed)
        info = torch.utils.data.get_worker_info()
        # Record the worker so `_maybe_reseed` does not override this explicit per-item reseed.
        self._worker = (os.getpid(), info.id) if info is not None else None

    def apply_numpy(self, image: np.ndarray) -> np.ndarray:
        """Run the ops only: (H, W) -> (S, S) array (uint8 or float)."""
        self._maybe_reseed()
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) grayscale image, got shape {image.shape}")
        out = image
        for op in self.ops:
            out = op(out, self.rng)
        return out

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(self.apply_numpy(image), self.norm, self.channels)  # (3, S, S)

    def __repr__(self) -> str:
        inner = ", ".join(repr(o) for o in self.ops)
        return f"Compose([{inner}], norm={self.norm!r}, seed={self.seed})"


@dataclass(frozen=True)
class PresetInfo:
    """What a result JSON records about preprocessing."""

    name: str
    image_size: int
    normalisation: str
    train: str
    eval: str
    source: str


PRESETS: dict[str, PresetInfo] = {
    "mgca": PresetInfo(
        "mgca",
        224,
        "mean0.5-std0.5",
        "uint8; long side->256 INTER_AREA + symmetric zero pad; RandomCrop 224",
        "uint8; long side->256 INTER_AREA + symmetric zero pad; CenterCrop 224",
        "specs/mgca.md §2.1",
    ),
    "carzero": PresetInfo(
        "carzero",
        224,
        "cxr-mae",
        "uint8; long->256 + pad; RandomCrop 224; HFlip p=0.3; RandomAffine(30, (0.1, 0.1), (0.9, 1.1)); "
        "ColorJitter(b=(0.8, 1.2), c=(0.8, 1.2))",
        "uint8; long->256 + pad; CenterCrop 224",
        "specs/carzero.md §2.1",
    ),
    "afloc": PresetInfo(
        "afloc",
        224,
        "mean0.5-std0.5",
        "uint8; long side->224 INTER_AREA + zero pad; CenterCrop 224 (no augmentation)",
        "uint8; long side->224 INTER_AREA + zero pad; CenterCrop 224",
        "specs/afloc.md §2.1",
    ),
    "cxrclip-r50": PresetInfo(
        "cxrclip-r50",
        224,
        "imagenet",
        "uint8; RandomResizedCrop(224, scale=(0.8, 1.1)); CLAHE(clip U(1, 4), 8x8, p=0.5); "
        "ColorJitter(0.1, 0.2, 0.2, 0.1); CenterCrop 224",
        "uint8; short side->224 bilinear; CenterCrop 224",
        "specs/cxrclip.md §2.1, P5",
    ),
    "cxrclip-swint": PresetInfo(
        "cxrclip-swint",
        224,
        "mean0.5-std0.5",
        "as cxrclip-r50",
        "as cxrclip-r50",
        "specs/cxrclip.md §2.1, P5",
    ),
    "mavl": PresetInfo(
        "mavl",
        224,
        "imagenet",
        "uint8; RandomResizedCrop(224, scale=(0.2, 1.0), bicubic); HFlip p=0.5; RandomAugment(2, 7)",
        "uint8; Resize(224, 224) bilinear (aspect not kept)",
        "specs/mavl.md §2.1",
    ),
    "imagenet": PresetInfo(
        "imagenet",
        224,
        "imagenet",
        "RandomResizedCrop(224)",
        "short side->256; CenterCrop 224",
        "torchvision ImageNet recipe",
    ),
}


def _preset_ops(preset: str, train: bool, s: int) -> list[Op]:
    load = int(round(s * 256 / 224))  # 256 for 224: the resize-pad size that the crop is taken from
    if preset == "mgca":
        return [ToUint8(), ResizeLongestPad(load), RandomCrop(s) if train else CenterCrop(s)]
    if preset == "carzero":
        if not train:
            return [ToUint8(), ResizeLongestPad(load), CenterCrop(s)]
        return [
            ToUint8(),
            ResizeLongestPad(load),
            RandomCrop(s),
            RandomHorizontalFlip(0.3),
            RandomAffine(30, (0.1, 0.1), (0.9, 1.1)),
            ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2)),
        ]
    if preset == "afloc":
        return [ToUint8(), ResizeLongestPad(s), CenterCrop(s)]
    if preset in ("cxrclip-r50", "cxrclip-swint"):
        if not train:  # the official test path loads with PIL: its resize, not an approximation of it
            return [ToUint8(), ResizeShortSide(s, interp="pil-bilinear"), CenterCrop(s)]
        return [
            ToUint8(),
            RandomResizedCrop(s, scale=(0.8, 1.1)),
            CLAHE(4.0, 8, p=0.5),
            ColorJitter(0.1, 0.2, 0.2, 0.1),
            CenterCrop(s),
        ]
    if preset == "mavl":
        if not train:
            return [ToUint8(), Resize(s)]
        return [
            ToUint8(),
            RandomResizedCrop(s, scale=(0.2, 1.0), interp="bicubic"),
            RandomHorizontalFlip(0.5),
            RandomAugment(2, 7),
        ]
    if preset == "imagenet":
        if train:
            return [ToUint8(), RandomResizedCrop(s)]
        return [ToUint8(), ResizeShortSide(load), CenterCrop(s)]
    raise ConfigError(f"unknown transform preset '{preset}'; known: {sorted(PRESETS)}")


def build_transform(
    preset: str,
    train: bool,
    image_size: int | None = None,
    seed: int | None = None,
    normalisation: str | None = None,
) -> Callable[[np.ndarray], torch.Tensor]:
    """The preset's train or eval pipeline: (H, W) float32 [0, 1] -> (3, S, S) float32 tensor.

    `normalisation` (a key of NORMALISATIONS) replaces the preset's own, for a method run on a backbone whose
    pretrained weights expect other statistics (e.g. a "small" config on ImageNet weights)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown transform preset '{preset}'; known: {sorted(PRESETS)}")
    s = int(image_size or PRESETS[preset].image_size)
    if s <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    norm = PRESETS[preset].normalisation if normalisation is None else normalisation
    if norm not in NORMALISATIONS:
        raise ConfigError(f"unknown normalisation '{norm}'; known: {sorted(NORMALISATIONS)}")
    return Compose(_preset_ops(preset, train, s), norm, seed=seed)
