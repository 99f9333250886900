"""HF Swin-Tiny image encoder (transformers 5.x module names), as CXR-CLIP uses it.

The official CXR-CLIP global feature is token 0 of `last_hidden_state` (its comment says "[CLS]", but Swin
has none: it is the top-left patch token of the last 7x7 stage). That is the faithful default;
`fix_token0_pooling=True` uses the mean over all tokens instead (what Swin's own pooler does).
"""

from __future__ import annotations

from pathlib import Path

import torch
from cxrvlp.core.encoders.base import ImageEncoderOutput, register_image_encoder
from torch import nn
from transformers import SwinConfig, SwinModel

# microsoft/swin-tiny-patch4-window7-224
SWIN_TINY = dict(
    image_size=224,
    patch_size=4,
    num_channels=3,
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4.0,
    qkv_bias=True,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    drop_path_rate=0.1,
    hidden_act="gelu",
    use_absolute_embeddings=False,
    layer_norm_eps=1e-5,
)


class SwinEncoder(nn.Module):
    """Wraps `transformers.SwinModel` (no pooler); global = token 0 (faithful) or token mean (fix)."""

    def __init__(self, model: SwinModel, fix_token0_pooling: bool = False) -> None:
        super().__init__()
        self.model = model
        self.fix_token0_pooling = fix_token0_pooling
        self.out_dim = model.num_features
        self.local_dim = model.num_features

    def forward(self, images: torch.Tensor, output_hidden_states: bool = False) -> ImageEncoderOutput:
        """(B, 3, S, S) -> global (B, C), local = last_hidden_state (B, N, C) after the final LayerNorm."""
        out = self.model(pixel_values=images, output_hidden_states=output_hidden_states, return_dict=True)
        tokens = out.last_hidden_state  # (B, N, C)
        global_feat = tokens.mean(dim=1) if self.fix_token0_pooling else tokens[:, 0]
        side = int(round(tokens.shape[1] ** 0.5))
        maps: dict[str, torch.Tensor] = {}
        if output_hidden_states:
            # HF hidden_states[k]: k = 0 patch embedding, k >= 1 output of stage k (after its patch merging)
            maps = {f"hidden_state{k}": h for k, h in enumerate(out.reshaped_hidden_states)}  # (B, C, h, w)
        grid = (side, side)
        return ImageEncoderOutput(global_feat=global_feat, local_feat=tokens, grid_size=grid, maps=maps)


@register_image_encoder("swin-tiny")
def build_swin_tiny(
    pretrained: bool | str | Path | None = None,
    fix_token0_pooling: bool = False,
    **config_overrides,
) -> SwinEncoder:
    """Swin-Tiny (or a smaller Swin via config overrides); `pretrained` = HF hub name or local folder."""
    if pretrained not in (None, False):
        name = "microsoft/swin-tiny-patch4-window7-224" if pretrained is True else str(pretrained)
        model = SwinModel.from_pretrained(name, add_pooling_layer=False, **config_overrides)
    else:
        cfg = SwinConfig(**{**SWIN_TINY, **config_overrides})
        model = SwinModel(cfg, add_pooling_layer=False)
    return SwinEncoder(model, fix_token0_pooling=fix_token0_pooling)
