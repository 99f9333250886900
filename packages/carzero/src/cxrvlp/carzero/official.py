"""Import the released CARZero checkpoint (`CARZero_best_model.ckpt`, PyTorch Lightning 1.1.4) strictly.

The release's `state_dict` keys carry the Lightning prefix `CARZero.`; the official loader keeps what follows
the last `CARZero.` (spec §8). Our module tree uses the official names, so after the prefix is stripped the
key map is the identity (one rule, as data). The file is read with core's `safe_load` (weights_only, inert
stubs for Lightning / OmegaConf objects in `hyper_parameters`). Strict loading: every key of the model must
be in the checkpoint and vice versa, including the never-used `self_attn`/`norm1` of each decoder layer,
`logit_scale` and the BERT pooler; `fusion_module.decoder_norm.*` and `fusion_module.decoder.norm.*` are one
tensor in the model and must hold the same values in the file. A mismatch raises `CheckpointMismatchError`
listing every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from cxrvlp.carzero.model import Carzero
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training.checkpoint import (
    KeyRule,
    apply_key_map,
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint,
)

# Everything up to and including the last "CARZero." goes (the official loader's rule); nothing else moves.
KEY_RULES = (KeyRule(r"^(?:.*\.)?CARZero\.", ""),)
TIED = ("fusion_module.decoder_norm.", "fusion_module.decoder.norm.")
# Parameters the released forward never uses (kept so the import is strict; they get no gradient).
UNUSED_PATTERNS = (
    r"^fusion_module\.decoder\.layers\.\d+\.self_attn\.",
    r"^fusion_module\.decoder\.layers\.\d+\.norm1\.",
    r"^fusion_module\.logit_scale$",
    r"^text_encoder\.model\.pooler\.",
)


def read_official_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare state dict (prefix stripped, float32) from the released .ckpt, a .safetensors or a dict."""
    obj, where = read_checkpoint(source)
    sd = obj if where.endswith(".safetensors") else extract_state_dict(obj, source=where)
    sd = apply_key_map(sd, KEY_RULES)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _check_tied(sd: Mapping[str, torch.Tensor], source: str) -> None:
    a, b = TIED
    for k in [k for k in sd if k.startswith(a)]:
        other = b + k[len(a) :]
        if other in sd and not torch.equal(sd[k], sd[other]):
            raise CheckpointError(f"{source}: '{k}' and '{other}' differ, but they are one tied LayerNorm")


def load_into(
    model: Carzero, sd: Mapping[str, torch.Tensor], source: str = "state dict", strict: bool = True
):
    """Load a (stripped) official state dict into `model`; strict: every key must match."""
    _check_tied(sd, source)
    load_state_dict_strict(model, sd, source=source, strict=strict)
    return model


def sizes_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Overrides of the registered config read off the checkpoint (vocabulary size of the text tower)."""
    emb = sd.get("text_encoder.model.embeddings.word_embeddings.weight")
    return {"text_vocab_size": int(emb.shape[0])} if emb is not None else {}


def load_official_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor],
    name: str | None = None,
    strict: bool = True,
    model: Carzero | None = None,
) -> Carzero:
    """Build `name` (default carzero-vit-b16, vocabulary from the file) and load the release into it (eval).

    `model` loads into an already built model instead (e.g. the parity fixture's reduced sizes).
    """
    sd = read_official_state_dict(source)
    where = "state dict" if isinstance(source, Mapping) else str(source)
    if model is None:
        from cxrvlp.core.registry import create_model

        model = create_model(name or "carzero-vit-b16", **sizes_from_state_dict(sd))
    load_into(model, sd, source=where, strict=strict)
    return model.eval()
