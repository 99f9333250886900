"""ResNet-50 image encoder with torchvision key names (conv1, bn1, layer1..4; no fc).

Used by CXR-CLIP (plain 224 input, all BN as SyncBatchNorm), MGCA and AFLoc (GLoRIA heritage: the 224 input
is bilinearly upsampled to 299 with align_corners=True inside the encoder; MGCA's local features are the
layer3 map flattened row-major).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from cxrvlp.core.encoders.base import ImageEncoderOutput, register_image_encoder
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from torch import nn

LocalFrom = Literal["layer3", "layer4"]
_STAGE_CHANNELS = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}


class ResNet50Encoder(nn.Module):
    """torchvision ResNet-50 trunk: stem -> layer1..4 -> global average pool (B, 2048)."""

    def __init__(
        self,
        upsample_to: int | None = None,
        local_from: LocalFrom | None = None,
        sync_batchnorm: bool = False,
        layers: tuple[int, ...] | None = None,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        if layers is None and width_per_group == 64:
            tv = torchvision.models.resnet50(weights=None)
        else:  # a shallower / thinner bottleneck ResNet with the same names and stage widths (tiny configs)
            from torchvision.models.resnet import Bottleneck, ResNet

            tv = ResNet(Bottleneck, list(layers or (3, 4, 6, 3)), width_per_group=width_per_group)
        # Own the torchvision children under their own names so the state-dict keys are torchvision's.
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        if local_from not in (None, "layer3", "layer4"):
            raise ValueError(f"local_from must be None, 'layer3' or 'layer4', got {local_from!r}")
        self.upsample_to = upsample_to
        self.local_from = local_from
        self.out_dim = 2048
        self.local_dim = _STAGE_CHANNELS[local_from] if local_from else None
        if sync_batchnorm:
            # In place for a non-BN root. SyncBatchNorm keeps BatchNorm2d's key names; without a process
            # group it behaves as BN (torch cannot sync on CPU tensors: use it on GPU runs only).
            nn.SyncBatchNorm.convert_sync_batchnorm(self)

    def forward(self, images: torch.Tensor) -> ImageEncoderOutput:
        """(B, 3, H, W) -> global (B, 2048), maps stem/layer1..4, optional flattened local features."""
        x = images
        if self.upsample_to is not None:
            size = (self.upsample_to, self.upsample_to)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(stem)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        maps = {"stem": stem, "layer1": l1, "layer2": l2, "layer3": l3, "layer4": l4}
        global_feat = torch.flatten(F.adaptive_avg_pool2d(l4, 1), 1)  # (B, 2048)
        local_feat, grid = None, None
        if self.local_from is not None:
            fmap = maps[self.local_from]  # (B, C, h, w)
            grid = (fmap.shape[-2], fmap.shape[-1])
            local_feat = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major over h then w
        return ImageEncoderOutput(global_feat=global_feat, local_feat=local_feat, grid_size=grid, maps=maps)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        from cxrvlp.core.training.checkpoint import extract_state_dict, safe_load

        return extract_state_dict(safe_load(path))
    except ImportError:  # core checkpoint helpers not installed in this tree yet
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
            raise CheckpointError(f"{path}: cannot be read with weights_only=True: {err}") from err
        return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    try:
        from cxrvlp.core.training.checkpoint import load_state_dict_strict
    except ImportError:
        load_state_dict_strict = None
    if load_state_dict_strict is not None:
        load_state_dict_strict(module, sd)
        return
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mism = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in sorted(set(own) & set(sd))]
    mism = [m for m in mism if m[1] != m[2]]
    if missing or unexpected or mism:
        raise CheckpointMismatchError(missing, unexpected, mism, source=source)
    module.load_state_dict(sd, strict=True)


def resnet50_pretrained_state_dict(pretrained: str | Path) -> dict[str, torch.Tensor]:
    """Trunk weights (no fc) from a torchvision weights name, a timm name ('timm/...') or a local file."""
    p = Path(str(pretrained))
    if p.exists():
        sd = _read_state_dict(p)
    elif str(pretrained).startswith("timm/") or str(pretrained).startswith("timm:"):
        import timm

        name = str(pretrained).split("/", 1)[1] if "/" in str(pretrained) else str(pretrained)[5:]
        sd = timm.create_model(name, pretrained=True).state_dict()
    else:
        name = "IMAGENET1K_V1" if pretrained in (True, "True", "true", "imagenet") else str(pretrained)
        try:
            weights = torchvision.models.ResNet50_Weights[name]
        except KeyError as err:
            raise CheckpointError(
                f"'{pretrained}' is neither a file, a timm name ('timm/<name>') nor a torchvision "
                f"ResNet50_Weights member {[w.name for w in torchvision.models.ResNet50_Weights]}"
            ) from err
        sd = weights.get_state_dict(progress=False)
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


@register_image_encoder("resnet50")
def build_resnet50(
    pretrained: bool | str | Path | None = None,
    upsample_to: int | None = None,
    local_from: LocalFrom | None = None,
    sync_batchnorm: bool = False,
    layers: tuple[int, ...] | None = None,
    width_per_group: int = 64,
) -> ResNet50Encoder:
    """ResNet-50 trunk; `pretrained`: None, True (= IMAGENET1K_V1), a weights name, 'timm/<name>', a file.

    `layers` / `width_per_group` (default ResNet-50's (3, 4, 6, 3) / 64) build a smaller bottleneck ResNet
    with the same key names and stage output widths (tiny test configs)."""
    enc = ResNet50Encoder(
        upsample_to=upsample_to,
        local_from=local_from,
        sync_batchnorm=sync_batchnorm,
        layers=layers,
        width_per_group=width_per_group,
    )
    if pretrained not in (None, False):
        _load_strict(enc, resnet50_pretrained_state_dict(pretrained), source=str(pretrained))
    return enc
