"""MGCA transfer heads over a frozen pretrained image encoder (spec §6.2, §6.4).

* `LinearProbe`: frozen backbone in eval mode at every step, features = img_feat before projection (ViT [CLS]
  after the final norm / ResNet pooled layer4 with the 299 upsample), Flatten -> Dropout(0) -> Linear(D, C).
* `UNetSegmenter` (ResNet-50): segmentation-models-pytorch `Unet("resnet50")` whose encoder takes the MGCA
  trunk weights (torchvision names), frozen; decoder trained.
* `SETRSegmenter` (ViT): the frozen MGCA ViT's patch tokens -> Linear(D, D) -> (B, D, h, w) -> 4 x [Conv3x3 ->
  BN -> ReLU -> bilinear x2] with [512, 256, 128, 64] channels -> Conv3x3 -> 1 channel.
* `mixed_seg_loss`: 10 * focal(gamma 2, mean) - log(soft Dice over the whole batch), the official MixedLoss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from cxrvlp.mgca.model import MGCA
from torch import nn


class LinearProbe(nn.Module):
    """Frozen MGCA image encoder + one Linear layer (the official SSLEvaluator with dropout 0)."""

    def __init__(self, model: MGCA, num_classes: int) -> None:
        super().__init__()
        self.backbone = model.image_encoder
        self.is_vit = model.cfg.is_vit
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(model.feature_dim, num_classes))

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # official: frozen backbone put in eval mode at every train batch
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, D) frozen features."""
        with torch.no_grad():
            return self.backbone(images).global_feat

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, C) logits


class UNetSegmenter(nn.Module):
    """smp U-Net on the frozen MGCA ResNet-50 trunk (224 input, no 299 upsample, as the official)."""

    def __init__(self, model: MGCA, classes: int = 1) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if model.cfg.is_vit:
            raise ValueError("UNetSegmenter needs the ResNet-50 variant; use SETRSegmenter for ViT")
        self.net = smp.Unet("resnet50", encoder_weights=None, activation=None, classes=classes)
        trunk = {k: v for k, v in model.image_encoder.state_dict().items() if not k.startswith("fc.")}
        own = {k for k in self.net.encoder.state_dict() if not k.startswith("fc.")}
        if own != set(trunk):  # smp's ResNet encoder uses torchvision names: a mismatch is a bug, say which
            raise RuntimeError(f"U-Net encoder keys differ from the trunk: {sorted(own ^ set(trunk))[:10]}")
        self.net.encoder.load_state_dict(trunk, strict=False)
        for p in self.net.encoder.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (B, classes, H, W) logits


class SETRSegmenter(nn.Module):
    """SETR-style decoder over the frozen MGCA ViT patch tokens."""

    def __init__(self, model: MGCA, classes: int = 1, channels: Sequence[int] = (512, 256, 128, 64)) -> None:
        super().__init__()
        if not model.cfg.is_vit:
            raise ValueError("SETRSegmenter needs the ViT variant; use UNetSegmenter for ResNet-50")
        self.backbone = model.image_encoder
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        d = self.backbone.out_dim
        self.proj = nn.Linear(d, d)
        blocks, c_in = [], d
        for c in channels:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]  # fmt: skip
            c_in = c
        self.decoder = nn.Sequential(*blocks, nn.Conv2d(c_in, classes, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.backbone(images)
        h, w = out.grid_size
        x = self.proj(out.local_feat)  # (B, N, D)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, D, h, w)
        return self.decoder(x)  # (B, classes, 16h, 16w)


def mixed_seg_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """10 * focal loss (mean) - log(soft Dice with +1 smoothing over the whole batch)."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    focal = (torch.exp(gamma * F.logsigmoid(-logits * (2 * target - 1))) * bce).mean()  # official weighting
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return 10 * focal - torch.log(dice)
