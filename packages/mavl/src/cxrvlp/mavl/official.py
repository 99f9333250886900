"""Import the released MAVL checkpoints (`checkpoint_full_46.pth`, `checkpoint_full_40.pth`, ...) strictly.

The release is `torch.save({"model", "optimizer", "lr_scheduler", "config", "epoch"})` where `model` is the
accelerate/DDP state dict: every key carries `module.` (spec §8). Our module tree uses the official names,
so after stripping the wrapper the only rules are:

- `temp` may be absent (the zero-shot loaders drop it): our model then keeps its init value;
- the text books are NOT in the release (the official code recomputes them with Bio_ClinicalBERT at load
  time): pass `books=` (a dict or a .safetensors file with `ana_book` and `concept_book`, e.g. the
  `books.safetensors` of one of our runs, or the output of `cxrvlp.mavl.books.compute_books`), otherwise the
  model keeps the books it was built with.

Every other key must match: a mismatch raises CheckpointMismatchError listing every missing, unexpected
and mis-shaped key (the official fine-tune loader silently loads nothing when `module.` is missing).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from cxrvlp.core.errors import CheckpointError
from cxrvlp.core.training.checkpoint import KeyRule, apply_key_map, load_state_dict_strict, read_checkpoint
from torch import nn

BOOK_KEYS = ("ana_book", "concept_book")
# Keys our model has that a release may lack (books: never saved officially; temp: dropped at zero-shot).
OPTIONAL_KEYS = (r"^ana_book$", r"^concept_book$", r"^temp$")
# Official -> ours: identical names once the wrapper is gone; torchvision's names inside backbone.{0..6}.
KEY_RULES = (KeyRule(r"^module\.", ""),)


def read_official_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare state dict (no `module.`) from a released `.pth`, a `.safetensors` file or a loaded dict."""
    obj, where = read_checkpoint(source)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{where}: not a MAVL checkpoint (no tensor state dict under 'model')")
    sd = apply_key_map(obj, KEY_RULES)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def read_books(books: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`ana_book` and `concept_book` from a dict or a .safetensors file (float32)."""
    if not isinstance(books, Mapping):
        from safetensors.torch import load_file

        books = load_file(str(books))
    missing = [k for k in BOOK_KEYS if k not in books]
    if missing:
        raise CheckpointError(f"books: missing {missing} (have {sorted(books)})")
    return {k: books[k].float() for k in BOOK_KEYS}


def load_into(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    books: str | Path | Mapping[str, torch.Tensor] | None = None,
    source: str = "state dict",
    strict: bool = True,
) -> nn.Module:
    sd = dict(sd)
    if books is not None:
        sd.update(read_books(books))
    load_state_dict_strict(model, sd, source=source, strict=strict, ignore_missing=OPTIONAL_KEYS)
    return model


def load_official_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor],
    name: str | None = None,
    strict: bool = True,
    model: nn.Module | None = None,
    books: str | Path | Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Build `name` (default `mavl-r50`) or use `model`, load the release into it, return it in eval mode."""
    sd = read_official_state_dict(source)
    where = "state dict" if isinstance(source, Mapping) else str(source)
    if model is None:
        from cxrvlp.core.registry import create_model

        overrides = {}
        if "disease_embedding_layer.weight" in sd:
            overrides["d_model"] = int(sd["disease_embedding_layer.weight"].shape[0])
        model = create_model(name or "mavl-r50", **overrides)
    load_into(model, sd, books=books, source=where, strict=strict)
    return model.eval()
