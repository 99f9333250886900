"""Post-processing of localisation maps shared by the methods' grounding: upsampling, Gaussian blur, border.

Maps are (..., h, w) tensors of scores (higher = more likely). Each step is a pure function so a method's
grounding protocol is a readable composition (AFLoc: map . prompt, blur sigma 1.5, upsample, border
exclusion; CARZero/MAVL: attention averaged over heads/layers, reshaped, upsampled).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tokens_to_grid(tokens: torch.Tensor, has_cls: bool = False) -> torch.Tensor:
    """(..., N) scores over square patch tokens (after an optional CLS slot) -> (..., h, h)."""
    if has_cls:
        tokens = tokens[..., 1:]
    n = tokens.shape[-1]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    return tokens.reshape(*tokens.shape[:-1], side, side)


def upsample_map(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(..., h, w) -> (..., H, W) by interpolation (align_corners=False)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    lead = maps.shape[:-2]
    x = _upcast(maps.reshape(-1, 1, *maps.shape[-2:]))
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(x, size=size, mode=mode, **kw)
    return out.reshape(*lead, *size)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half / integer -> float32; float32 and float64 unchanged (a float64 parity twin stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def gaussian_kernel1d(
    sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ceil(truncate * sigma) (scipy.ndimage's default truncation)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of (..., h, w), reflected borders (scipy.ndimage.gaussian_filter 'reflect')."""
    lead = maps.shape[:-2]
    x = _upcast(maps.reshape(-1, 1, *maps.shape[-2:]))
    k = gaussian_kernel1d(sigma, truncate, x.dtype).to(maps.device)
    r = k.numel() // 2
    # scipy's 'reflect' (d c b a | a b c d) is torch's 'symmetric'; pad by hand for maps smaller than r
    for dim in (-1, -2):
        idx = _symmetric_index(x.shape[dim], r, x.device)
        x = x.index_select(dim, idx)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(*lead, *maps.shape[-2:])


def _symmetric_index(n: int, r: int, device) -> torch.Tensor:
    i = torch.arange(-r, n + r, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def exclude_border(maps: torch.Tensor, margin: int, fill: float | None = None) -> torch.Tensor:
    """Set a `margin`-pixel frame of (..., H, W) to `fill` (default: the map's minimum) so it never wins."""
    if margin <= 0:
        return maps
    out = maps.clone()
    value = out.amin(dim=(-2, -1), keepdim=True) if fill is None else torch.full_like(out[..., :1, :1], fill)
    frame = torch.zeros(maps.shape[-2:], dtype=torch.bool, device=maps.device)
    frame[:margin] = frame[-margin:] = True
    frame[:, :margin] = frame[:, -margin:] = True
    return torch.where(frame, value.expand_as(out), out)
