"""CARZero training on the synthetic MIMIC-CXR mirror: tiny run -> adapter; zero-shot AUROC (slow)."""

from __future__ import annotations

import json
import math

import method_helpers as mh
import numpy as np
import pytest
import torch
from cxrvlp.core.zeroshot import ClassPrompts, ZeroShotAdapter

THRESHOLD = 0.65  # measured 0.764 (demo budget, generator 1.3.0, seed 0; 0.653 at the old lr 1e-3)
CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumothorax")


pytestmark = pytest.mark.usefixtures("one_thread")


def _train_tiny(tmp_path, extra: list[str]):
    return mh.train_tiny("carzero", tmp_path, extra)


def test_carzero_tiny_train_few_steps_and_adapter_round_trip(tmp_path):
    extra = ["max_steps=3", "batch_size=8", "log_every_steps=1", "data.synthetic_patients=20"]
    method, run = _train_tiny(tmp_path, extra)
    final = run / "final"
    losses = mh.check_few_steps(run, ("loss", "i2t_loss", "t2i_loss"))
    assert abs(losses[0]["loss"] - 2 * math.log(8)) < 0.1  # near-constant logits at init: 2 ln B (spec §10.4)
    adapter = method.load_adapter(final)
    assert isinstance(adapter, ZeroShotAdapter)
    assert adapter.info.zero_shot_protocol.startswith("official") and adapter.info.grounding.startswith(
        "ours"
    )
    img = adapter.preprocess(np.random.default_rng(0).random((80, 70), dtype=np.float32))
    assert img.shape == (3, 64, 64)
    images = torch.stack([img, img.flip(-1), img.flip(-2)])
    emb = adapter.encode_images(images)
    prompts = [ClassPrompts("Effusion", ["There is Pleural Effusion"]), ClassPrompts("Nodule", ["Nodule"])]
    scores = adapter.classify(emb, prompts)
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    texts = ["There is pleural effusion", "there is edema", "Nodule"]
    sim = adapter.similarity(emb, adapter.encode_texts(texts))
    assert sim.shape == (3, 3)
    # batched zero-shot = the official per-image loop (one image at a time against all prompts)
    for i in range(3):
        one = adapter.similarity({k: v[i : i + 1] for k, v in emb.items()}, adapter.encode_texts(texts))
        torch.testing.assert_close(one[0], sim[i], rtol=1e-4, atol=1e-4)
    maps = adapter.localize(images, ["There is pleural effusion"])
    assert maps.shape == (3, 1, 64, 64) and torch.isfinite(maps).all()
    assert adapter.image_features(images).shape == (3, 64)
    from cxrvlp.carzero.model import load_pretrained

    mh.assert_reloads_same_weights(adapter.model, final, load_pretrained)


def test_tiny_run_validates_and_keeps_the_best_epoch_as_the_paper_recipe(tmp_path):
    """The paper's selection on the mirror's validate split: val_loss every epoch, best/ + tokenizer."""
    extra = [
        "epochs=2", "batch_size=4", "data.synthetic_patients=20", "data.val_split=validate",
        "val_batch_size=4",
        "eval_every_epochs=1", "monitor=val_loss", "keep_best_k=1", "early_stop_patience=10",
        "batch_size_schedule=[[0,4],[1,6]]",
    ]  # fmt: skip
    method, run = _train_tiny(tmp_path, extra)
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "val_loss" in r]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(math.isfinite(r[k]) for r in epochs for k in ("val_loss", "val_i2t_loss", "val_t2i_loss"))
    best = run / "best"
    selection = json.loads((best / "selection.json").read_text())
    assert selection["monitor"] == "val_loss"
    assert selection["value"] == min(r["val_loss"] for r in epochs)
    assert (best / "tokenizer").is_dir() and (run / "final" / "tokenizer").is_dir()
    assert method.load_adapter(best) is not None


def test_tiny_model_contract_forward_backward_save_load(tmp_path):
    from cxrvlp.carzero.loss import carzero_loss
    from cxrvlp.carzero.model import load_pretrained, save_model
    from cxrvlp.carzero.train import freeze_unused
    from cxrvlp.core.registry import create_model
    from cxrvlp.core.text.tokenize import build_tokenizer_from_texts, load_tokenizer, tokenize

    texts = ["there is mild cardiomegaly", "no pleural effusion", "there is edema", "lungs are clear"]
    build_tokenizer_from_texts(texts * 5, tmp_path / "tok", vocab_size=200)
    tok = load_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    model = create_model("carzero-tiny", text_vocab_size=len(tok))
    model.set_tokenizer(tok)
    frozen = freeze_unused(model)
    assert any("self_attn" in k for k in frozen) and "fusion_module.logit_scale" in frozen
    tokens = tokenize(tok, texts, 32, padding="longest")
    out = model(torch.randn(4, 3, 64, 64), tokens)
    assert out.i2t.shape == (4, 4) and out.t2i.shape == (4, 4)
    carzero_loss(out.i2t, out.t2i)["loss"].backward()
    assert model.fusion_module.decoder_norm.weight.grad is not None
    assert model.img_encoder.model.pos_embed.grad is None
    # padding to max_length gives the same scores (BERT masks pads; words re-padded to 32 slots)
    model.eval()
    with torch.no_grad():
        a = model(torch.ones(4, 3, 64, 64), tokens)
        b = model(torch.ones(4, 3, 64, 64), tokenize(tok, texts, 32, padding="max_length"))
    torch.testing.assert_close(a.i2t, b.i2t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.t2i, b.t2i, rtol=1e-4, atol=1e-5)
    save_model(model, tmp_path / "saved", tokenizer=tok)
    again, tok_dir = load_pretrained(tmp_path / "saved")
    again.set_tokenizer(load_tokenizer(tok_dir))
    with torch.no_grad():
        c = again(torch.ones(4, 3, 64, 64), tokens)
    torch.testing.assert_close(c.i2t, a.i2t)


def test_paper_recipe_refuses_without_data_root_and_loads_every_key():
    from cxrvlp.carzero.config import CarzeroTrainConfig
    from cxrvlp.carzero.data import build_train_dataset
    from cxrvlp.core.errors import ConfigError
    from cxrvlp.core.method import load_recipe_config

    cfg = load_recipe_config("carzero", CarzeroTrainConfig, "carzero_vit_b16")
    assert cfg.optimizer.name == "adam" and cfg.optimizer.betas == (0.5, 0.999) and cfg.optimizer.lr == 5e-5
    assert [list(x) for x in cfg.batch_size_schedule] == [[0, 64], [2, 128], [6, 256]]
    assert cfg.schedule.name == "constant" and cfg.grad_clip_norm == 0.25
    assert cfg.mixed_precision == "fp16" and cfg.epochs == 15 and cfg.model.text_max_length == 97
    # official selection: val_loss (batch 256) every epoch, best kept, early stop after 10 bad epochs
    selection = (cfg.monitor, cfg.monitor_mode, cfg.keep_best_k, cfg.early_stop_patience)
    assert selection == ("val_loss", "min", 1, 10)
    assert cfg.data.val_split == "validate" and cfg.val_batch_size == 256 and cfg.eval_every_epochs == 1
    assert cfg.data.root is None and not cfg.data.synthetic
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        build_train_dataset(cfg.data)
    for name in ("tiny", "small"):
        small = load_recipe_config("carzero", CarzeroTrainConfig, name)
        assert small.data.synthetic and small.data.val_split is None and small.monitor is None


def test_llm_column_is_used_when_given(tmp_path):
    import pandas as pd
    from cxrvlp.carzero.config import CarzeroDataConfig
    from cxrvlp.carzero.data import build_train_dataset
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
    from cxrvlp.core.data.synthetic import write_mimic_cxr

    root = write_mimic_cxr(tmp_path / "m", n_patients=6, seed=3, image_size=64)
    recs = MimicCxrDataset(root, split="train", label_source=None).records
    rows = [{"Path": r.image_path, "Frontal/Lateral": "Frontal", "Report Impression": "Mild cardiomegaly",
             "xinhuo": f"There is finding number {i} here. Support devices."}
            for i, r in enumerate(recs)]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "llm.csv", index=False)
    ds = build_train_dataset(
        CarzeroDataConfig(root=str(root), llm_csv=str(tmp_path / "llm.csv"), image_size=64)
    )
    assert len(ds) == len(recs)
    # impression + LLM text concatenated without a separator: "cardiomegalythere" (official quirk)
    assert ds.sentences[0][0] == "mild cardiomegalythere is finding number 0 here"
    assert ds.sentences[0][1] == "support devices"


@pytest.mark.slow
def test_carzero_tiny_config_learns_zero_shot_signal(tmp_path):
    """The demo's budget (CARZero's MethodSpec.demo: 2500 steps at lr 3e-4, on 600 synthetic patients, ~2 CPU
    minutes on an idle core): the 12-epoch run on 120 patients reached only 0.597 / 0.607 (seeds 0 / 1), so
    this test was a non-strict xfail."""
    from cxrvlp.bench.prompts import carzero_there_is
    from cxrvlp.carzero.registry import METHOD_SPEC

    budget = METHOD_SPEC.demo.train_overrides()
    extra = ["epochs=100", "data.synthetic_patients=600", "log_every_steps=50", *budget]
    mean = mh.learned_zero_shot("carzero", tmp_path, carzero_there_is(CLASSES), "loss", extra)
    assert mean > THRESHOLD
