"""ViT image encoders on timm's `VisionTransformer` (timm key names: cls_token, pos_embed, patch_embed.proj,
blocks.N.*, norm).

Two registered variants:
* "vit-b16": learned position embedding (DeiT / BLIP style, as MGCA); default init
  `deit_base_patch16_224.fb_in1k`.
* "vit-b16-mae": fixed 2-D sin-cos position embedding (MAE / CARZero's MRM): `pos_embed` keeps its key but is
  frozen (requires_grad=False), row 0 ([CLS]) is zeros.

Every block uses timm's fused attention (SDPA) except the last one when its post-softmax attention
probabilities are requested (MGCA reads the [CLS] row of the last block): that block then also computes an
explicit softmax, which gives the same output up to float rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.core.encoders.base import ImageEncoderOutput, register_image_encoder
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from torch import nn

AttentionMode = Literal["full", "cls"]
DEFAULT_VIT_B16_WEIGHTS = "deit_base_patch16_224.fb_in1k"


@dataclass
class ViTConfig:
    """Sizes of a plain ViT (defaults = ViT-B/16 at 224)."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ln_eps: float = 1e-6
    drop_path_rate: float = 0.0
    pos_embed: Literal["learned", "sincos"] = "learned"


def sincos_2d_pos_embed(embed_dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table (1, [1 +] grid**2, D): first half of channels encodes the column
    (x), second half the row (y), each as [sin, cos] with frequencies 1/10000**(k/(D/4))."""
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim % 4 == 0, got {embed_dim}")
    coords = np.arange(grid_size, dtype=np.float64)
    xs, ys = np.meshgrid(coords, coords)  # xs[i, j] = j (column), ys[i, j] = i (row)

    def one_axis(pos: np.ndarray) -> np.ndarray:
        omega = np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0)
        omega = 1.0 / 10000**omega  # (D/4,)
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, D/4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D/2)

    table = np.concatenate([one_axis(xs), one_axis(ys)], axis=1)  # (grid**2, D)
    if cls_token:
        table = np.concatenate([np.zeros((1, embed_dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def _attention_with_probs(
    attn: nn.Module, x: torch.Tensor, mode: AttentionMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm `Attention` forward with an explicit softmax; returns (output, probs).

    probs is (B, heads, N, N) for mode "full" and (B, heads, 1, N) (the [CLS] query row) for "cls"; in "cls"
    mode the output itself still comes from SDPA, so only one query row is computed twice.
    """
    B, N, C = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, H, N, d) each
    q, k = attn.q_norm(q), attn.k_norm(k)
    drop_p = attn.attn_drop.p if attn.training else 0.0
    if mode == "cls":
        probs = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop_p)
    else:
        probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
        out = attn.attn_drop(probs) @ v
    out = out.transpose(1, 2).reshape(B, N, attn.attn_dim)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))
    return out, probs


class ViTEncoder(nn.Module):
    """timm VisionTransformer trunk (`self.model`, no head) returning `ImageEncoderOutput`."""

    def __init__(self, cfg: ViTConfig | None = None) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.cfg = cfg = cfg or ViTConfig()
        self.model = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            num_classes=0,
            global_pool="token",
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop_path_rate=cfg.drop_path_rate,
            norm_layer=functools.partial(nn.LayerNorm, eps=cfg.ln_eps),
        )
        self.out_dim = self.local_dim = cfg.embed_dim
        self.grid = (cfg.img_size // cfg.patch_size, cfg.img_size // cfg.patch_size)
        if cfg.pos_embed == "sincos":
            if self.grid[0] != self.grid[1]:
                raise ValueError("sin-cos position embedding needs a square grid")
            with torch.no_grad():
                self.model.pos_embed.copy_(sincos_2d_pos_embed(cfg.embed_dim, self.grid[0]))
            self.model.pos_embed.requires_grad_(False)  # fixed, as MAE / CARZero's MRM

    def forward(self, images: torch.Tensor, attention: AttentionMode | None = None) -> ImageEncoderOutput:
        """(B, 3, S, S) -> [CLS] after the final norm (B, D), patch tokens (B, N, D), last-block attention.

        `attention="full"` returns (B, heads, N+1, N+1) probabilities of the last block, `"cls"` only its
        [CLS] query row (B, heads, 1, N+1) (cheaper: the rest of the block keeps SDPA).
        """
        m = self.model
        x = m.patch_embed(images)  # (B, N, D)
        x = m._pos_embed(x)  # prepends [CLS], adds pos_embed: (B, N+1, D)
        x = m.norm_pre(m.patch_drop(x))
        probs = None
        if attention is None:
            x = m.blocks(x)
        else:
            for blk in m.blocks[:-1]:
                x = blk(x)
            last = m.blocks[-1]
            a, probs = _attention_with_probs(last.attn, last.norm1(x), attention)
            x = x + last.drop_path1(last.ls1(a))
            x = x + last.drop_path2(last.ls2(last.mlp(last.norm2(x))))
        x = m.norm(x)  # (B, N+1, D)
        return ImageEncoderOutput(
            global_feat=x[:, 0],
            local_feat=x[:, 1:],
            grid_size=self.grid,
            attentions=probs,
        )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from cxrvlp.core.training.checkpoint import extract_state_dict, safe_load

    return extract_state_dict(safe_load(path), source=str(path))


def load_vit_weights(enc: ViTEncoder, pretrained: str | Path | bool, default_name: str) -> None:
    """Fill the trunk from a timm hub name (True = `default_name`) or a local file (.pth/.ckpt/.safetensors).

    Head / classifier / MAE decoder keys are ignored; a missing or mis-shaped trunk key is an error (nothing
    loaded). A fixed sin-cos `pos_embed` is kept (the table is recomputed, not read) unless the file has one.
    """
    p = Path(str(pretrained))
    if pretrained is True or (isinstance(pretrained, str) and not p.exists()):
        name = default_name if pretrained is True else str(pretrained)
        import timm

        try:
            sd = timm.create_model(name, pretrained=True, num_classes=0).state_dict()
        except Exception as err:  # noqa: BLE001 - hub offline, unknown name: say which
            raise CheckpointError(f"cannot load timm weights '{name}': {err}") from err
        source = name
    else:
        if not p.is_file():
            raise CheckpointError(f"{p}: ViT weights file does not exist")
        sd = _read_state_dict(p)
        source = str(p)
        if "model" in sd and isinstance(sd["model"], dict):  # DeiT release format
            sd = sd["model"]
    own = enc.model.state_dict()
    sd = {
        k: v
        for k, v in sd.items()
        if k in own or not k.startswith(("head", "fc_norm", "decoder", "mask_token"))
    }
    if enc.cfg.pos_embed == "sincos" and "pos_embed" not in sd:
        sd["pos_embed"] = own["pos_embed"]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mism = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in sorted(set(own) & set(sd))]
    mism = [m for m in mism if m[1] != m[2]]
    if missing or mism or unexpected:
        raise CheckpointMismatchError(missing, unexpected, mism, source=source)
    enc.model.load_state_dict(sd, strict=True)


def _build(pretrained: bool | str | Path | None, default_name: str, **sizes) -> ViTEncoder:
    enc = ViTEncoder(ViTConfig(**sizes))
    if pretrained not in (None, False):
        load_vit_weights(enc, pretrained, default_name)
    return enc


@register_image_encoder("vit-b16")
def build_vit_b16(pretrained: bool | str | Path | None = None, **sizes) -> ViTEncoder:
    """ViT-B/16 with learned pos-embed; `pretrained`: True (= DeiT-B/16 IN-1k), a timm name or a file;
    size overrides (embed_dim, depth, num_heads, ...) build smaller variants."""
    sizes.setdefault("pos_embed", "learned")
    return _build(pretrained, DEFAULT_VIT_B16_WEIGHTS, **sizes)


@register_image_encoder("vit-b16-mae")
def build_vit_b16_mae(pretrained: bool | str | Path | None = None, **sizes) -> ViTEncoder:
    """MAE-style ViT-B/16 with a fixed 2-D sin-cos pos-embed (CARZero's MRM); `pretrained`: a timm name or
    a file (True = timm's MAE ViT-B/16)."""
    sizes["pos_embed"] = "sincos"
    return _build(pretrained, "vit_base_patch16_224.mae", **sizes)
