"""Import the released AFLoc checkpoint (PyTorch-Lightning 1.1.4 `.ckpt`, spec §8) strictly.

`ckpt["state_dict"]` keys are `afloc.` + the official module path; our module paths are the official ones, so
the import is: safe load (weights_only; the OmegaConf `hyper_parameters` are read as inert stubs, never
imported), strip `afloc.` (and DDP/Lightning wrappers), drop `text_encoder.model.embeddings.position_ids`
(a persistent buffer in transformers 4.2.1, non-persistent now; checked to be 0..n-1 first), strict load.

`local_f_embedder.weight` exists only when the release was trained with `model.afloc.use_ce_loss` truthy; it
is untrained (no loss uses it). The importer builds the model with or without it to match the file and says
which in `model.import_info` and in the log (the spec could not verify the real file: this is how to check).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from cxrvlp.afloc.config import BIO_CLINICAL_BERT, AFLocConfig
from cxrvlp.afloc.model import AFLoc
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training.checkpoint import (
    KeyRule,
    apply_key_map,
    extract_state_dict,
    load_state_dict_strict,
    safe_load,
    stub_to_plain,
)

logger = logging.getLogger("cxrvlp.afloc")

POSITION_IDS = "text_encoder.model.embeddings.position_ids"
LOCAL_F = "img_encoder.local_f_embedder.weight"
# official key -> ours (data): the module paths agree once `afloc.` is gone
KEY_RULES = (
    KeyRule(r"^(module\.)?(model\.)?afloc\.", ""),
    KeyRule(r"^text_encoder\.model\.bert\.", "text_encoder.model."),  # an AutoModel saved with its `bert.`
)
# Classes a PL 1.1 `.ckpt` holds in `hyper_parameters` (OmegaConf DictConfig and its nodes): inert stubs.
_HPARAM_CLASSES = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.ValueNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "typing.Any",
    "argparse.Namespace",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)


def official_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename released keys to ours; `position_ids` is verified (0..n-1) and dropped."""
    sd = apply_key_map(sd, KEY_RULES)
    pos = sd.pop(POSITION_IDS, None)
    if pos is not None and not torch.equal(pos.reshape(-1).long(), torch.arange(pos.numel())):
        raise CheckpointError(f"'{POSITION_IDS}' is not 0..{pos.numel() - 1}: this BERT used other positions")
    return sd


def ours_to_official(key: str) -> str:
    """Our parameter name -> the released key (for naming gradients and exports)."""
    return "afloc." + key


def config_from_state_dict(sd: Mapping[str, torch.Tensor], base: AFLocConfig | None = None) -> AFLocConfig:
    """An AFLocConfig whose sizes match `sd` (our key names). Head count: width / 64 (BERT-base: 12) unless
    `base.bert` has one for that width."""
    import re

    base = base or AFLocConfig()

    def shape(k: str) -> tuple[int, ...]:
        if k not in sd:
            raise CheckpointError(f"AFLoc state dict lacks '{k}'")
        return tuple(sd[k].shape)

    t = "text_encoder.model."
    vocab, hidden = shape(t + "embeddings.word_embeddings.weight")
    layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(t) + r"encoder\.layer\.(\d+)\.", k))}
    bert = {**BIO_CLINICAL_BERT, **base.bert}
    heads = bert["num_attention_heads"] if bert["hidden_size"] == hidden else max(1, hidden // 64)
    bert.update(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=max(layers) + 1 if layers else 0,
        num_attention_heads=heads,
        intermediate_size=shape(t + "encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=shape(t + "embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape(t + "embeddings.token_type_embeddings.weight")[0],
    )
    return dataclasses.replace(
        base,
        image_encoder="resnet50",
        image_pretrained=None,
        text_pretrained=None,
        bert=bert,
        last_n_layers=min(base.last_n_layers, bert["num_hidden_layers"]),
        local_f_embedder=LOCAL_F in sd,
    )


def _read(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".safetensors":
            from cxrvlp.core.training.checkpoint import load_safetensors

            return load_safetensors(path), None, str(path)
        obj = safe_load(path, stub_globals=_HPARAM_CLASSES)
        hp = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
        return (
            extract_state_dict(obj, source=str(path)),
            stub_to_plain(hp) if hp is not None else None,
            str(path),
        )
    if isinstance(source, Mapping):
        return extract_state_dict(dict(source), source="state dict"), None, "state dict"
    raise TypeError(f"source must be a path or a state dict, got {type(source).__name__}")


def _unwrap(node: Any) -> Any:
    # an OmegaConf container / value node read as an inert stub keeps its state under _content / _val
    while isinstance(node, Mapping) and ("_content" in node or "_val" in node):
        node = node.get("_content", node.get("_val"))
    return node


def _use_ce_loss(hp: Any) -> Any:
    """hyper_parameters -> model.afloc.use_ce_loss (None when absent or unreadable)."""
    node = _unwrap(hp)
    for k in ("model", "afloc", "use_ce_loss"):
        node = _unwrap(node.get(k)) if isinstance(node, Mapping) else None
    return node


def load_official_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    strict: bool = True,
    config: AFLocConfig | None = None,
) -> AFLoc:
    """An AFLoc model holding the released weights (a `.ckpt` path, a safetensors file or a state dict).

    Sizes come from `config`, else the registered `name` ("afloc-r50"), else the keys. Whether
    `local_f_embedder` is built follows the file (see `model.import_info`). Floats are cast to float32.
    strict=True raises `CheckpointMismatchError` listing every missing, unexpected and mis-shaped key.
    """
    raw, hp, label = _read(source)
    sd = official_to_ours(raw)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    has_lf = LOCAL_F in sd
    if config is None and name is not None:
        from cxrvlp.afloc.registry import CONFIGS

        if name not in CONFIGS:
            raise CheckpointError(f"unknown AFLoc model name '{name}'; known: {sorted(CONFIGS)}")
        config = CONFIGS[name]
    cfg = config_from_state_dict(sd, config) if config is None else dataclasses.replace(config)
    cfg = dataclasses.replace(cfg, image_pretrained=None, text_pretrained=None, local_f_embedder=has_lf)
    model = AFLoc(cfg)
    report = load_state_dict_strict(model, sd, source=label, strict=strict)
    use_ce = _use_ce_loss(hp) if hp is not None else None
    msg = (
        f"{label}: local_f_embedder.weight is {'PRESENT' if has_lf else 'ABSENT'} in the released file"
        + (f" (hyper_parameters model.afloc.use_ce_loss = {use_ce!r})" if hp is not None else "")
        + ("; it is untrained (no loss uses it) and is carried only for a lossless import" if has_lf else "")
    )
    logger.info(msg)
    model.import_info = {
        "source": label,
        "has_local_f_embedder": has_lf,
        "use_ce_loss": use_ce,
        "position_ids_dropped": any(k.endswith("embeddings.position_ids") for k in raw),
        "message": msg,
        "missing": report.missing,
        "unexpected": report.unexpected,
    }
    return model
