"""MGCA follow-ups: the ViT encoder feeds the segmentation decoder, memoised prompt embeddings, the built
tokenizer saved and reused on resume, the versioned synthetic cache, captions never shifted by a skipped
image, prompts cleaned like captions."""

from __future__ import annotations

import method_helpers as mh
import pytest
import torch
from cxrvlp.core.zeroshot import ClassPrompts

TEXTS = mh.TEXTS


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from cxrvlp.mgca.data import MGCATokenizer
    from cxrvlp.mgca.registry import mgca_tiny
    from cxrvlp.mgca.zeroshot import MGCAZeroShotAdapter

    torch.manual_seed(0)
    tok = mh.tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    mtok = MGCATokenizer(tok, max_words=32)
    model = mgca_tiny(bert={"vocab_size": len(tok)}, sep_token_id=tok.sep_token_id, max_words=32)
    return MGCAZeroShotAdapter(model, mtok, batch_size=2)


def test_image_encoder_feeds_the_segmentation_decoder(adapter):
    x = torch.randn(2, 3, 64, 64)
    out = adapter.image_encoder(x)
    assert out.grid_size == (8, 8) and out.local_feat.shape == (2, 64, 64)
    # the encoder is the one the embeddings come from: its [CLS] feature is the linear-probe feature
    pyr = mh.check_segmentation_pyramid(adapter, out, x)
    assert [tuple(p.shape) for p in pyr] == [(2, 64, 8, 8)]


def test_classify_memoises_prompts_exactly(adapter, monkeypatch):
    classes = [
        ClassPrompts("Effusion", ["pleural effusion", "small left effusion"], ["no pleural effusion"]),
        ClassPrompts("Cardiomegaly", ["cardiomegaly"], []),
    ]
    calls = mh.memoised_prompt_calls(adapter, monkeypatch, classes)
    # three prompt lists, each encoded once for the three image batches
    assert sorted(calls) == sorted({tuple(c.positive) for c in classes} | {("no pleural effusion",)})


def _task_config(tmp_path, extra=()):
    from cxrvlp.mgca.config import MGCATrainConfig

    return mh.tiny_recipe_config("mgca", MGCATrainConfig, tmp_path, extra)


def test_built_tokenizer_is_saved_in_the_run_folder_and_reused(tmp_path, monkeypatch):
    import cxrvlp.core.text.tokenize as tokenize
    from cxrvlp.mgca.train import MGCATask

    first = MGCATask(_task_config(tmp_path, ["data.build_vocab_size=300"]))
    vocab = tmp_path / "run" / "tokenizer" / "tokenizer.json"  # vocab + merges, as saved
    assert not vocab.parent.exists()  # nothing in the run folder before run_training has checked it
    first.build_model()  # called by run_training after its output_dir checks: saves the tokenizer
    saved = vocab.read_bytes()
    ids = first.tokenizer(TEXTS)["input_ids"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the tokenizer was rebuilt instead of loaded from the run folder")

    monkeypatch.setattr(tokenize, "build_tokenizer_from_texts", no_rebuild)
    # a different vocab size would give a different vocabulary if it were rebuilt
    second = MGCATask(_task_config(tmp_path, ["data.build_vocab_size=200", "resume=auto"]))
    assert vocab.read_bytes() == saved
    assert second.tokenizer.tokenizer.get_vocab() == first.tokenizer.tokenizer.get_vocab()
    assert torch.equal(second.tokenizer(TEXTS)["input_ids"], ids)
    assert second.cfg.model.bert.vocab_size == first.cfg.model.bert.vocab_size
    second.build_model()
    assert vocab.read_bytes() == saved  # a resumed run does not rewrite it


def test_synthetic_cache_folder_is_tagged_with_the_generator_version(tmp_path, monkeypatch):
    import cxrvlp.core.data.synthetic as synthetic
    import cxrvlp.core.data.synthetic.mimic_cxr as mimic
    from cxrvlp.core.data.pretraining import synthetic_mimic_root
    from cxrvlp.mgca.config import MGCADataConfig

    written = []

    def fake_write(root, *args, **kwargs):
        written.append(root)
        (root / "synthetic.json").write_text("{}")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mimic, "write_mimic_cxr", fake_write)
    data = MGCADataConfig()
    a = synthetic_mimic_root(data)
    assert synthetic.GENERATOR_VERSION in a.name
    assert synthetic_mimic_root(data) == a and len(written) == 1  # same generator: the mirror is reused
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", "999.0.0")
    b = synthetic_mimic_root(data)
    assert b != a and "999.0.0" in b.name and len(written) == 2  # new generator: a fresh mirror


def test_unreadable_image_never_shifts_captions(tmp_path):
    """on_error=skip: item k of a corrupt record k is record k+1 whole (its image AND its caption)."""
    from cxrvlp.core.data import MimicCxrDataset
    from cxrvlp.core.data.pretraining import MimicSourceConfig, synthetic_mimic_root
    from cxrvlp.core.text.tokenize import build_tokenizer_from_texts
    from cxrvlp.mgca.data import MGCAPretrainDataset, MGCATokenizer

    root = synthetic_mimic_root(MimicSourceConfig(synthetic_dir=str(tmp_path / "s"), synthetic_patients=6))
    base = MimicCxrDataset(root, split="train", label_source=None, on_error="skip")
    tok = MGCATokenizer(build_tokenizer_from_texts(["no acute findings"] * 4, tmp_path / "tok", 200), 32)
    ds = MGCAPretrainDataset(base, tok, lambda img: img, on_error="skip")
    assert len(ds) >= 3
    broken = ds.indices[0]
    open(base.records[broken].image_path, "wb").write(b"garbage")
    item = ds[0]
    assert item["sample_id"] == base.records[ds.indices[1]].image_path
    assert item["input_ids"].equal(ds.tokens["input_ids"][1])  # the caption of the record whose image it is
    assert len(item["skipped"]) == 1 and base.records[broken].image_path in item["skipped"][0]
    strict = MGCAPretrainDataset(base, tok, lambda img: img, on_error="raise")
    with pytest.raises(Exception, match=base.records[broken].image_path):
        strict[0]


def test_prompts_are_cleaned_like_training_captions():
    from cxrvlp.mgca.data import clean_text, report_caption

    text = "Findings suggesting Pleural-Effusion. 2. No pneumothorax; heart size 4.5 cm."
    assert clean_text(text) == report_caption(text, None)  # the same cleaning as a training caption
    assert clean_text("Pneumonia.") == "pneumonia"  # a one-word prompt is kept (no report drop rule)
    assert clean_text("Edema\ufffd\ufffdsmall") == "edema small"
