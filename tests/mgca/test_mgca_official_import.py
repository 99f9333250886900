"""Official import: the full-size paper models accept state dicts with exactly the released keys/shapes."""

from __future__ import annotations

import pytest
import torch
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from cxrvlp.mgca.config import MGCAConfig
from cxrvlp.mgca.model import MGCA
from cxrvlp.mgca.official import infer_config, load_official_checkpoint, official_to_ours, ours_to_official


def _tsv_state_dict(path) -> dict[str, torch.Tensor]:
    sd = {}
    for line in path.read_text().splitlines()[1:]:
        key, shape = line.split("\t")
        if shape == "scalar":
            sd[key] = torch.zeros((), dtype=torch.int64)
        elif key.endswith("position_ids"):
            sd[key] = torch.arange(int(shape.split("x")[1]))[None]
        else:
            sd[key] = torch.zeros([int(s) for s in shape.split("x")])
    return sd


@pytest.mark.parametrize(
    ("tsv", "name", "n_keys", "n_params"),
    [
        ("mgca_state_dict.tsv", "mgca-vit-b16", 368, 172_734_208),
        ("mgca_state_dict_resnet50.tsv", "mgca-r50", 536, 113_589_312),
    ],
)
def test_mgca_full_size_release_keys_load_strict(shared_dir, tsv, name, n_keys, n_params):
    sd = _tsv_state_dict(shared_dir / "specs" / tsv)
    assert len(sd) == n_keys
    # the variant and every size are inferred from the keys alone
    model = load_official_checkpoint(sd, name=None, strict=True)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.cfg == infer_config(sd)
    # the inferred sizes are the paper's
    assert model.cfg.bert.num_hidden_layers == 6 and model.cfg.proj_hidden_dim == 2048
    assert model.cfg.is_vit == ("vit" in name)
    # the export rename is the exact inverse
    variant = "vit" if "vit" in name else "resnet50"
    assert set(ours_to_official(model.state_dict(), variant)) == set(sd)
    assert set(official_to_ours(sd, variant)) == set(model.state_dict())


def test_mgca_import_reports_every_bad_key(shared_dir):
    sd = _tsv_state_dict(shared_dir / "specs" / "mgca_state_dict_resnet50.tsv")
    sd.pop("prototype_layer.weight")
    sd["img_encoder_q.extra.weight"] = torch.zeros(3)
    sd["img_encoder_q.global_embed.head.0.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(sd, config=MGCAConfig(image_encoder="resnet50"))
    err = info.value
    assert err.missing == ["prototypes.weight"]
    assert err.unexpected == ["img_encoder_q.extra.weight"]
    assert [m[0] for m in err.mismatched] == ["image_global_head.0.bias"]


def test_mgca_import_lightning_ckpt_file_and_refusals(tmp_path):
    cfg = MGCAConfig(
        vit={"embed_dim": 64, "depth": 1, "num_heads": 1},
        bert=dict(
            vocab_size=50,
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=128,
            encoder_width=64,
        ),
        proj_hidden_dim=32,
        num_prototypes=10,
    )
    cfg = MGCAConfig.from_dict(cfg.to_dict())
    model = MGCA(cfg)
    official = ours_to_official(model.state_dict(), "vit")
    ckpt = tmp_path / "vit_base.ckpt"
    torch.save(
        {"epoch": 20, "global_step": 3, "state_dict": official, "hyper_parameters": {"emb_dim": 128}}, ckpt
    )
    loaded = load_official_checkpoint(ckpt, config=cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # a ResNet checkpoint into a ViT model is refused with the reason
    r50 = {k.replace("blocks.0", "layer1.0"): v for k, v in official.items()}
    with pytest.raises(CheckpointError, match="resnet50"):
        load_official_checkpoint(r50, config=cfg)
    # a truncated file is a CheckpointError, not a crash
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_official_checkpoint(bad, config=cfg)


def test_mgca_import_lightning_hparams_container_is_read_inert(tmp_path, monkeypatch):
    import sys
    import types

    # a PL 1.5 checkpoint pickles hyper_parameters as pytorch_lightning's AttributeDict: fake that class at
    # save time only; loading must not import (nor need) pytorch_lightning
    mod = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = mod.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    mod.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"):
        monkeypatch.setitem(sys.modules, name, mod if name.endswith("parsing") else types.ModuleType(name))
    cfg = MGCAConfig(
        image_encoder="resnet50",
        bert=dict(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                  intermediate_size=32, encoder_width=16),
        proj_hidden_dim=8,
        num_prototypes=4,
    )  # fmt: skip
    cfg = MGCAConfig.from_dict(cfg.to_dict())
    model = MGCA(cfg)
    ckpt = tmp_path / "resnet_50.ckpt"
    hp = AttributeDict(img_encoder="resnet_50", emb_dim=128, lambda_2=1.0)
    torch.save({"state_dict": ours_to_official(model.state_dict(), "resnet50"), "hyper_parameters": hp}, ckpt)
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"):
        monkeypatch.delitem(sys.modules, name)
    loaded = load_official_checkpoint(ckpt, config=cfg)
    assert torch.equal(loaded.prototypes.weight, model.prototypes.weight)
