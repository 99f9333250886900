"""Official import: the full-size released model accepts a state dict with exactly the released keys."""

from __future__ import annotations

import pytest
import torch
from cxrvlp.carzero import load_official_checkpoint
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError


def _tsv_state_dict(path, prefix: str = "") -> dict[str, torch.Tensor]:
    sd = {}
    for line in path.read_text().splitlines()[1:]:
        key, shape = line.split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        sd[prefix + key] = torch.zeros(dims)
    return sd


@pytest.fixture(scope="module")
def released_sd(shared_dir):
    sd = _tsv_state_dict(shared_dir / "specs" / "carzero_state_dict.tsv", prefix="CARZero.")
    assert len(sd) == 434
    return sd


@pytest.fixture(scope="module")
def full_model(released_sd):
    # random values are irrelevant: the keys and shapes are the released ones (Lightning prefix included)
    return load_official_checkpoint(released_sd, strict=True)


def test_release_keys_load_strict_into_full_size_model(full_model):
    model = full_model
    assert sum(p.numel() for p in model.parameters()) == 220_770_306
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 220_619_010
    f = model.fusion_module
    assert f.decoder.norm is f.decoder_norm  # tied: two keys, one tensor
    assert model.img_encoder.model.pos_embed.requires_grad is False


def test_import_reports_every_bad_key(released_sd, full_model):
    sd = dict(released_sd)
    sd.pop("CARZero.fusion_module.decoder.layers.0.self_attn.in_proj_weight")  # unused, still required
    sd["CARZero.fusion_module.extra.weight"] = torch.zeros(3)
    sd["CARZero.fusion_module.mlp_head.9.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(sd, model=full_model)
    err = info.value
    assert err.missing == ["fusion_module.decoder.layers.0.self_attn.in_proj_weight"]
    assert err.unexpected == ["fusion_module.extra.weight"]
    assert [m[0] for m in err.mismatched] == ["fusion_module.mlp_head.9.bias"]


def test_tied_norm_must_agree(released_sd, full_model):
    sd = dict(released_sd)
    sd["CARZero.fusion_module.decoder.norm.weight"] = torch.ones(768)
    with pytest.raises(CheckpointError, match="tied LayerNorm"):
        load_official_checkpoint(sd, model=full_model)
