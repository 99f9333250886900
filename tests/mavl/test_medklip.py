"""MedKLIP, MAVL's base, as a registered variant of the MAVL package (spec mavl.md §3.6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cxrvlp.core import registry as core_registry
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.registry import medklip_r50, medklip_tiny


def test_registered_with_a_recipe():
    from cxrvlp.core.registry import get_method
    from cxrvlp.core.training import load_config
    from cxrvlp.mavl.config import MavlTrainConfig

    entries = {n: e for n, e in core_registry._MODELS.items() if e.method == "mavl"}
    assert {"medklip-r50", "medklip-tiny"} <= set(entries)
    assert entries["medklip-r50"].paper_config and not entries["medklip-tiny"].paper_config
    recipe = get_method("mavl").recipe("medklip_r50")
    cfg = load_config(MavlTrainConfig, recipe, [])
    assert cfg.model_name == "medklip-r50" and cfg.model.variant == "medklip" and cfg.model.n_aspects == 1
    assert cfg.model.image_pretrained is None  # official: resnet50(pretrained=False)
    assert cfg.loss.cl_global == 0.0 and (cfg.data.split, cfg.data.val_split) == ("train", "validate")


def test_paper_size_module_names_and_shapes():
    sd = medklip_r50().state_dict()
    # spec §8: MedKLIP's checkpoint has res_features.*, cl_fc [768, 256], classifier [2, 256], no pool/temp/
    # location_emb; everything else is named as in MAVL
    assert sd["cl_fc.weight"].shape == (768, 256) and sd["classifier.weight"].shape == (2, 256)
    assert sd["res_features.0.weight"].shape == (64, 3, 7, 7)
    assert sd["res_features.6.0.downsample.0.weight"].shape == (1024, 512, 1, 1)  # layer3
    assert sd["disease_embedding_layer.weight"].shape == (256, 768)
    assert sd["concept_book"].shape == (75, 768)  # one query per entity
    assert not any(k.startswith(("pool.", "location_emb.", "backbone.")) or k == "temp" for k in sd)
    assert sd["decoder.layers.3.self_attn.in_proj_weight"].shape == (768, 256)  # decoder with self-attention


def test_official_style_release_loads_strictly():
    from cxrvlp.mavl.official import load_official_checkpoint

    torch.manual_seed(0)
    src = medklip_tiny()
    release = {"module." + k: v for k, v in src.state_dict().items() if k not in ("ana_book", "concept_book")}
    model = load_official_checkpoint(release, name="medklip-tiny", books=None)
    for k, v in src.state_dict().items():
        if k not in ("ana_book", "concept_book"):
            assert torch.equal(model.state_dict()[k], v), k
    release["module.temp"] = torch.zeros(1)  # a MAVL key is unexpected in MedKLIP
    from cxrvlp.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="temp"):
        load_official_checkpoint(release, name="medklip-tiny")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = medklip_tiny()
    m.set_books(torch.randn(51, 32), torch.randn(75 * 9, 32))  # a MAVL book: the description rows are kept
    return m


def test_mavl_book_gives_the_description_rows():
    torch.manual_seed(1)
    m = medklip_tiny()
    book = torch.randn(75 * 9, 32)
    m.set_books(None, book)
    assert torch.equal(m.concept_book, book[0::9])


def test_forward_shapes_and_loss_terms(tiny):
    tiny.train()
    out = tiny(torch.randn(3, 3, 64, 64), need_maps=True)
    assert out.cls_logits.shape == (3, 75, 2) and out.l_emb.shape == (3, 75, 32)
    assert out.x_global is None and out.global_sim is None and out.features.shape == (75, 3, 32)
    assert len(out.attention_maps) == 2 and out.attention_maps[0].shape == (3, 75, 16)
    labels = torch.randint(-1, 2, (3, 75)).float()
    labels[:, 8] = 1
    index = torch.randint(0, 51, (3, 75, 8))
    loc = tiny.location_logits(out.l_emb, index)
    terms = MavlLoss(cl_global=0.1)(out.cls_logits, labels, loc, None, None)
    assert set(terms) == {"presence_loss", "location_loss", "loss"}  # L = CE + location CE
    valid = labels != -1
    ce = F.cross_entropy(out.cls_logits[valid], (labels[valid] == 1).long())
    cl = F.cross_entropy(loc[labels == 1], torch.zeros(int((labels == 1).sum()), dtype=torch.long))
    torch.testing.assert_close(terms["presence_loss"], ce)
    torch.testing.assert_close(terms["location_loss"], cl)
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    names = ("cl_fc.weight", "classifier.weight", "disease_embedding_layer.weight", "res_features.0.weight")
    for name in names:
        g = tiny.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    tiny.zero_grad()


def test_per_query_heads_and_plain_dropout():
    torch.manual_seed(2)
    m = medklip_tiny(decoder_dropout=0.0, feature_dropout=0.5)
    m.set_books(torch.randn(51, 32), torch.randn(75, 32))
    images = torch.randn(2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        out = m(images)
        perm = torch.randperm(75)
        permuted = m(images, concept_book=m.concept_book[perm])
    # each entity's outputs come from its own query (decoder self-attention is permutation-equivariant)
    torch.testing.assert_close(permuted.cls_logits, out.cls_logits[:, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted.l_emb, out.l_emb[:, perm], rtol=1e-4, atol=1e-5)
    m.train()
    with torch.no_grad():
        dropped = m(images).aspect_features[:, :, 0]  # (B, E, D) after the feature dropout
    zero_frac = (dropped == 0).float().mean(-1)  # per (image, entity) vector
    # nn.Dropout (MedKLIP), not MAVL's whole-vector Dropout2d: vectors are partly, not wholly, zeroed
    assert ((zero_frac > 0) & (zero_frac < 1)).float().mean() > 0.9


def test_zero_shot_adapter_feature_mode_and_grounding(tiny):
    from cxrvlp.core.zeroshot import ClassPrompts
    from cxrvlp.mavl.zeroshot import MavlAdapter

    with pytest.raises(ValueError, match="text"):
        MavlAdapter(tiny, mode="text")
    adapter = MavlAdapter(tiny)
    images = torch.randn(2, 3, 64, 64)
    emb = adapter.encode_images(images)
    classes = [ClassPrompts("effusion", ["effusion"]), ClassPrompts("a new finding", ["a new finding"])]
    scores = adapter.classify(emb, classes)
    assert scores.shape == (2, 2) and ((scores >= 0) & (scores <= 1)).all()
    maps = adapter.localize(images, ["effusion", "a new finding"])
    assert maps.shape == (2, 2, 64, 64) and torch.isfinite(maps).all()
    assert "[description]" in adapter.info.grounding
