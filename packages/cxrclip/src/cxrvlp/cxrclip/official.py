"""Import the released CXR-CLIP checkpoints (`r50_m.tar`, `swint_mcc.tar`, ...) strictly.

The release is `torch.save({"model": state_dict, "config": ..., "optimizer": ..., ...})` with the bare
`CXRClip` keys (spec §8), saved under transformers 4.26.1. Their names are remapped to our module tree:

| official | ours |
|---|---|
| `image_encoder.resnet.*` (torchvision) | `image_encoder.*` |
| `image_encoder.image_encoder.*` (HF Swin, 4.26 names) | `image_encoder.model.*` (transformers 5 names, P8) |
| `text_encoder.text_encoder.*` (HF BERT) | `text_encoder.model.*` |
| `{image,text}_projection.projection.*` | `{image,text}_projection.*` |

Buffers that transformers 5 no longer stores (BERT `embeddings.position_ids`, Swin `relative_position_index`)
are checked against the values our model computes and then dropped. Unlike the official evaluator
(`strict=False`, which silently leaves Swin random under transformers 5), every other key must match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training.checkpoint import load_state_dict_strict, read_checkpoint
from cxrvlp.cxrclip.model import CxrClip
from torch import nn

# Swin block sub-module names: transformers 4.26 -> 5.x (spec pitfall P8). Order matters (output.dense last).
_SWIN_BLOCK_RENAMES = (
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    (
        "attention.self.relative_position_bias_table",
        "attention.relative_position_bias.relative_position_bias_table",
    ),
    ("attention.self.relative_position_index", "attention.relative_position_bias.relative_position_index"),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_SWIN_BLOCK = re.compile(r"^(encoder\.layers\.\d+\.blocks\.\d+\.)(.*)$")

_PREFIXES = (
    ("image_encoder.resnet.", "image_encoder."),
    ("image_encoder.image_encoder.", "image_encoder.model."),
    ("text_encoder.text_encoder.", "text_encoder.model."),
    ("image_projection.projection.", "image_projection."),
    ("text_projection.projection.", "text_projection."),
)
_STRIPPED_WRAPPERS = ("module.", "model.")  # DDP / Lightning-style wrappers around the bare keys


def _swin_v5_name(rest: str) -> str:
    m = _SWIN_BLOCK.match(rest)
    if not m:
        return rest
    head, tail = m.groups()
    for old, new in _SWIN_BLOCK_RENAMES:
        if tail.startswith(old):
            return head + new + tail[len(old) :]
    return rest


def official_to_ours(key: str) -> str:
    """Map one official state-dict key to our module's key (unknown prefixes are returned unchanged)."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            rest = key[len(old) :]
            if old == "image_encoder.image_encoder.":
                rest = _swin_v5_name(rest)
            return new + rest
    return key


def ours_to_official(key: str, swin: bool) -> str:
    """Inverse of `official_to_ours` for the parameters of our model (used to name gradients)."""
    if key.startswith("image_encoder."):
        rest = key[len("image_encoder.") :]
        if swin:
            rest = rest[len("model.") :]
            m = _SWIN_BLOCK.match(rest)
            if m:
                head, tail = m.groups()
                for old, new in _SWIN_BLOCK_RENAMES:
                    if tail.startswith(new):
                        rest = head + old + tail[len(new) :]
                        break
            return "image_encoder.image_encoder." + rest
        return "image_encoder.resnet." + rest
    for old, new in _PREFIXES[2:]:
        if key.startswith(new):
            return old + key[len(new) :]
    return key


def read_official_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare official state dict from a released `.tar`/`.pt`/`.safetensors` file or a loaded dict."""
    obj, where = read_checkpoint(source)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]  # the release: {"model": ..., "config": ..., "optimizer": ..., ...}
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{where}: not a CXR-CLIP checkpoint (no tensor state dict under 'model')")
    sd = dict(obj)
    for wrapper in _STRIPPED_WRAPPERS:
        if sd and all(k.startswith(wrapper) for k in sd):
            sd = {k[len(wrapper) :]: v for k, v in sd.items()}
    return sd


def is_swin_checkpoint(sd: Mapping[str, torch.Tensor]) -> bool:
    """True for the Swin-Tiny release, False for ResNet-50."""
    return any(k.startswith("image_encoder.image_encoder.") for k in sd)


def remap_official_state_dict(
    sd: Mapping[str, torch.Tensor], model: nn.Module, source: str = "state dict", strict: bool = True
) -> dict[str, torch.Tensor]:
    """Official keys -> ours; checks, then drops, the buffers transformers 5 recomputes; fp16 -> fp32."""
    own_buffers = dict(model.named_buffers())
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        ours = official_to_ours(key)
        if ours.endswith("embeddings.position_ids"):
            ref = torch.arange(value.shape[-1]).reshape(value.shape)  # BERT's 0..511
        elif ours.endswith("relative_position_index"):
            ref = own_buffers.get(ours)
        else:
            out[ours] = value.float() if value.is_floating_point() else value
            continue
        # A buffer our model computes itself: it must equal the stored one (else the model would differ).
        # (transformers 5 stores the Swin index flattened: compare values, not shapes)
        same = ref is not None and ref.numel() == value.numel()
        if strict and not (same and torch.equal(ref.reshape(-1).to(value.dtype), value.reshape(-1))):
            raise CheckpointError(f"{source}: buffer '{key}' differs from the values the model computes")
    return out


def load_into(
    model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "state dict", strict: bool = True
):
    """Load an official state dict into `model`; strict: CheckpointMismatchError lists every bad key."""
    load_state_dict_strict(
        model, remap_official_state_dict(sd, model, source, strict), source=source, strict=strict
    )
    return model


def load_official_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor],
    name: str | None = None,
    strict: bool = True,
    model: CxrClip | None = None,
) -> CxrClip:
    """Build `name` (default: cxrclip-r50 or cxrclip-swint from the keys) and load the release into it.

    `model` loads into an already built model instead (e.g. a smaller configuration, as the parity fixture).
    """
    sd = read_official_state_dict(source)
    where = "state dict" if isinstance(source, Mapping) else str(source)
    if model is None:
        from cxrvlp.core.registry import create_model

        name = name or ("cxrclip-swint" if is_swin_checkpoint(sd) else "cxrclip-r50")
        model = create_model(name, **_sizes_from_state_dict(sd))
    load_into(model, sd, source=where, strict=strict)
    return model.eval()


def _sizes_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    # The vocabulary size of the text tower follows the checkpoint (Bio_ClinicalBERT: 28,996).
    emb = sd.get("text_encoder.text_encoder.embeddings.word_embeddings.weight")
    return {"text_vocab_size": int(emb.shape[0])} if emb is not None else {}
