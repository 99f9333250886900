"""Import the released MGCA checkpoints (PyTorch-Lightning 1.5 `.ckpt`: `vit_base.ckpt`, `resnet_50.ckpt`).

The official `state_dict` keys are the LightningModule's own (`img_encoder_q.*`, `text_encoder_q.*`,
`patch_local_atten_layer.*`, `word_local_atten_layer.*`, `prototype_layer.weight`); they are renamed to ours
by prefix. Loading never unpickles code: `safe_load` (weights_only). A Lightning `.ckpt` whose
`hyper_parameters` hold an `AttributeDict` / `Namespace` is read with inert stubs for exactly those
container classes (core `safe_load(stub_globals=...)`: nothing is imported or called).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training.checkpoint import extract_state_dict, load_state_dict_strict, safe_load
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.model import MGCA

# official prefix -> ours (the image trunk prefix depends on the variant)
_COMMON_RULES = [
    (r"^img_encoder_q\.global_embed\.head\.", "image_global_head."),
    (r"^img_encoder_q\.local_embed\.head\.", "image_local_head."),
    (r"^text_encoder_q\.global_embed\.head\.", "text_global_head."),
    (r"^text_encoder_q\.local_embed\.head\.", "text_local_head."),
    (r"^text_encoder_q\.model\.", "text_encoder."),
    (r"^prototype_layer\.", "prototypes."),
    (r"^patch_local_atten_layer\.", "unused_patch_local_attn."),
    (r"^word_local_atten_layer\.", "unused_word_local_attn."),
]
_TRUNK_RULE = {
    "vit": (r"^img_encoder_q\.model\.", "image_encoder.model."),
    "resnet50": (r"^img_encoder_q\.model\.", "image_encoder."),
}
# Prefixes a release may carry around the module keys (Lightning / DDP / wrappers).
_STRIP = ("module.", "model.")


def official_to_ours(sd: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Rename official keys to ours (unknown keys are kept as they are, so a strict load reports them)."""
    rules = [(re.compile(p), r) for p, r in [_TRUNK_RULE[variant], *_COMMON_RULES]]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k
        for pat, repl in rules:
            if pat.search(nk):
                nk = pat.sub(repl, nk, count=1)
                break
        out[nk] = v
    return out


def ours_to_official(sd: Mapping[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Inverse rename: our state dict -> official key names (for export)."""
    inverse = [(ours.replace(".", r"\."), off.strip("^").replace("\\", "")) for off, ours in _COMMON_RULES]
    trunk_ours = _TRUNK_RULE[variant][1]
    inverse.insert(0, (re.escape(trunk_ours), "img_encoder_q.model."))
    out = {}
    for k, v in sd.items():
        nk = k
        for pat, repl in inverse:
            if re.match(pat, nk):
                nk = repl + nk[len(re.match(pat, nk).group(0)) :]
                break
        out[nk] = v
    return out


def _strip_release_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    changed = True
    while changed and sd:
        changed = False
        for p in _STRIP:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def infer_variant(sd: Mapping[str, torch.Tensor]) -> str:
    """'vit' or 'resnet50' from the official keys."""
    if any(k.startswith("img_encoder_q.model.blocks.") for k in sd):
        return "vit"
    if any(k.startswith("img_encoder_q.model.layer1.") for k in sd):
        return "resnet50"
    raise CheckpointError(
        "cannot tell the MGCA variant: no 'img_encoder_q.model.blocks.*' (ViT) nor "
        "'img_encoder_q.model.layer1.*' (ResNet-50) keys in the state dict"
    )


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: Mapping[str, torch.Tensor]) -> MGCAConfig:
    """An `MGCAConfig` whose sizes match the official state dict's shapes.

    Head counts are not stored in a state dict: ViT and BERT heads are taken as width / 64 (ViT-B/16 and
    BERT-base: 12); pass `config=` to `load_official_checkpoint` when a model differs.
    """

    def shape(k: str) -> tuple[int, ...]:
        if k not in sd:
            raise CheckpointError(f"official MGCA state dict lacks '{k}'")
        return tuple(sd[k].shape)

    variant = infer_variant(sd)
    t = "text_encoder_q.model."
    vocab, hidden = shape(t + "embeddings.word_embeddings.weight")
    n_pos = shape(t + "embeddings.position_embeddings.weight")[0]
    inter = shape(t + "encoder.layer.0.intermediate.dense.weight")[0]
    layers = _count(sd, re.escape(t) + r"encoder\.layer\.(\d+)\.")
    has_cross = any(".crossattention." in k for k in sd)
    enc_w = shape(t + "encoder.layer.0.crossattention.self.key.weight")[1] if has_cross else hidden
    bert = MedBertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=inter,
        max_position_embeddings=n_pos,
        encoder_width=enc_w,
        add_cross_attention=has_cross,
    )
    proj_hidden, _ = shape("img_encoder_q.global_embed.head.0.weight")
    emb_dim = shape("img_encoder_q.global_embed.head.3.weight")[0]
    n_proto = shape("prototype_layer.weight")[0]
    kw: dict[str, Any] = {}
    if variant == "vit":
        v = "img_encoder_q.model."
        d, _, p, _ = shape(v + "patch_embed.proj.weight")
        n_tok = shape(v + "pos_embed")[1]
        grid = int(round((n_tok - 1) ** 0.5))
        mlp = shape(v + "blocks.0.mlp.fc1.weight")[0]
        kw = {
            "image_encoder": "vit-b16",
            "vit": {
                "embed_dim": d,
                "depth": _count(sd, re.escape(v) + r"blocks\.(\d+)\."),
                "num_heads": max(1, d // 64),
                "patch_size": p,
                "img_size": grid * p,
                "mlp_ratio": mlp / d,
            },
        }
    else:
        kw = {"image_encoder": "resnet50"}
    return MGCAConfig(bert=bert, proj_hidden_dim=proj_hidden, emb_dim=emb_dim, num_prototypes=n_proto, **kw)


# Classes a PL 1.5 `.ckpt` holds in `hyper_parameters`: read as inert stubs (never imported or run).
_HPARAM_CONTAINERS = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "argparse.Namespace",
)


def _load_file(path: Path) -> Any:
    return safe_load(path, stub_globals=_HPARAM_CONTAINERS)


def _to_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".safetensors":
            from cxrvlp.core.training.checkpoint import load_safetensors

            return load_safetensors(path), str(path)
        return extract_state_dict(_load_file(path), source=str(path)), str(path)
    if isinstance(source, Mapping):
        return extract_state_dict(dict(source), source="state dict"), "state dict"
    raise TypeError(f"source must be a path or a state dict, got {type(source).__name__}")


def load_official_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    strict: bool = True,
    config: MGCAConfig | None = None,
) -> MGCA:
    """Build an MGCA model and load a released checkpoint (path to the `.ckpt` or a loaded state dict).

    `name` picks a registered model ("mgca-vit-b16", "mgca-r50", ...); None infers the variant and sizes
    from the keys (or uses `config` when given). Floats are cast to float32. strict=True raises
    `CheckpointMismatchError` listing every missing, unexpected and mis-shaped key.
    """
    sd, label = _to_state_dict(source)
    sd = _strip_release_prefix(sd)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    variant = infer_variant(sd)
    if config is None:
        if name is not None:
            from cxrvlp.core.registry import get_model_entry

            model = get_model_entry(name).builder()
        else:
            model = MGCA(infer_config(sd))
    else:
        model = MGCA(config)
    want = "vit" if model.cfg.is_vit else "resnet50"
    if want != variant:
        raise CheckpointError(f"{label}: is an MGCA {variant} checkpoint but the model is {want}")
    load_state_dict_strict(model, official_to_ours(sd, variant), source=label, strict=strict)
    return model


def config_from_official_hparams(hp: Mapping[str, Any], base: MGCAConfig) -> MGCAConfig:
    """Copy the loss hyper-parameters of a release's `hyper_parameters` onto `base` (sizes unchanged)."""
    keys = (
        "emb_dim",
        "softmax_temperature",
        "local_temperature",
        "proto_temperature",
        "num_prototypes",
        "epsilon",
        "sinkhorn_iterations",
        "lambda_1",
        "lambda_2",
        "lambda_3",
        "bidirectional",
        "freeze_prototypes_epochs",
    )
    upd = {k: hp[k] for k in keys if k in hp}
    return dataclasses.replace(base, **upd)
