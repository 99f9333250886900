"""Official checkpoint import: the paper-size key sets of all three TSVs load strictly; bad keys listed."""

from __future__ import annotations

import json

import pytest
import torch
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from cxrvlp.cxrclip.official import load_official_checkpoint, ours_to_official
from cxrvlp.cxrclip.registry import cxrclip_r50, cxrclip_swint, cxrclip_tiny


def _read_tsv(path) -> dict[str, list[int]]:
    rows = path.read_text().strip().splitlines()[1:]
    return {k: json.loads(s) for k, s in (r.split("\t") for r in rows)}


def _state_dict_like(shapes: dict[str, list[int]], model) -> dict[str, torch.Tensor]:
    """Tensors with the TSV's keys and shapes (buffers with the values the official code stores)."""
    buffers = dict(model.named_buffers())
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("position_ids"):
            sd[k] = torch.arange(shape[-1]).reshape(shape)
        elif k.endswith("relative_position_index"):
            ours = k.replace("image_encoder.image_encoder.", "image_encoder.model.").replace(
                "attention.self.relative_position_index",
                "attention.relative_position_bias.relative_position_index",
            )
            sd[k] = buffers[ours].reshape(shape).clone()
        elif k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        else:
            sd[k] = torch.full(shape, 0.25)
    return sd


@pytest.fixture(scope="module")
def paper_models():
    return {"cxrclip-r50": cxrclip_r50(), "cxrclip-swint": cxrclip_swint()}


@pytest.mark.parametrize(
    "tsv, name",
    [
        ("cxrclip_state_dict.tsv", "cxrclip-r50"),
        ("cxrclip_swint_state_dict.tsv", "cxrclip-swint"),
        ("cxrclip_swint_state_dict_transformers5.tsv", "cxrclip-swint"),
    ],
)
def test_paper_size_key_sets_load_strictly(shared_dir, paper_models, tsv, name):
    shapes = _read_tsv(shared_dir / "specs" / tsv)
    model = paper_models[name]
    sd = _state_dict_like(shapes, model)
    loaded = load_official_checkpoint(sd, model=model, strict=True)
    # every parameter received the checkpoint's value (nothing left at its random init)
    assert all(torch.all(p == 0.25) for p in loaded.parameters())
    assert int(loaded.image_encoder.state_dict().get("bn1.num_batches_tracked", torch.tensor(7))) == 7


def test_every_bad_key_is_listed(shared_dir, paper_models):
    shapes = _read_tsv(shared_dir / "specs" / "cxrclip_swint_state_dict.tsv")
    model = paper_models["cxrclip-swint"]
    sd = _state_dict_like(shapes, model)
    sd.pop("image_encoder.image_encoder.encoder.layers.2.blocks.5.attention.self.query.weight")
    sd.pop("text_projection.projection.bias")
    sd["image_encoder.image_encoder.pooler.extra"] = torch.zeros(3)
    sd["image_projection.projection.weight"] = torch.zeros(512, 2048)
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(sd, model=model)
    err = info.value
    assert "image_encoder.model.encoder.layers.2.blocks.5.attention.q_proj.weight" in err.missing
    assert "text_projection.bias" in err.missing
    assert "image_encoder.model.pooler.extra" in err.unexpected
    assert [m[0] for m in err.mismatched] == ["image_projection.weight"]


def test_release_file_round_trip_and_wrong_buffer(tmp_path):
    torch.manual_seed(0)
    src = cxrclip_tiny(text_vocab_size=50)
    official = {ours_to_official(k, swin=True): v for k, v in src.state_dict().items()}
    assert any(".attention.self.query." in k for k in official)
    path = tmp_path / "swint_m.tar"
    torch.save({"model": official, "config": {"model": {"name": "clip"}}, "epoch": 3}, path)
    dst = load_official_checkpoint(path, model=cxrclip_tiny(text_vocab_size=50))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    official["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(128)[None].flip(-1)
    with pytest.raises(CheckpointError, match="position_ids"):
        load_official_checkpoint(official, model=cxrclip_tiny(text_vocab_size=50))


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.tar"
    torch.save({"model": {"x": torch.zeros(1)}, "config": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_official_checkpoint(path, model=cxrclip_tiny(text_vocab_size=50))
