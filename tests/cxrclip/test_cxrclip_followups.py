"""CXR-CLIP follow-ups: frozen image encoder for segmentation, tokenizer reuse on resume, versioned synthetic
cache, memoised prompt embeddings."""

from __future__ import annotations

import method_helpers as mh
import pytest
import torch
from cxrvlp.core.zeroshot import ClassPrompts
from cxrvlp.cxrclip.zeroshot import binary_prompts

TEXTS = mh.TEXTS


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from cxrvlp.cxrclip.registry import cxrclip_tiny
    from cxrvlp.cxrclip.zeroshot import CxrClipAdapter

    torch.manual_seed(0)
    tok = mh.tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    model = cxrclip_tiny(text_vocab_size=len(tok))
    return CxrClipAdapter(model, tokenizer=tok, device="cpu", batch_size=2)


def test_image_encoder_feeds_the_segmentation_decoder(adapter):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = adapter.image_encoder(x)
    # the encoder is the one the embeddings come from: its pooled feature is the linear-probe feature
    pyr = mh.check_segmentation_pyramid(adapter, out, x)
    assert pyr and all(p.shape[0] == 2 and p.ndim == 4 for p in pyr)


@pytest.mark.parametrize(
    "classes",
    [
        [binary_prompts("Pleural Effusion"), binary_prompts("Cardiomegaly")],  # binary softmax path
        [ClassPrompts("Edema", ["pulmonary edema", "mild edema"]), ClassPrompts("Cardio", ["cardiomegaly"])],
    ],
    ids=["binary", "ensemble"],
)
def test_classify_memoises_prompts_exactly(adapter, monkeypatch, classes):
    calls = mh.memoised_prompt_calls(adapter, monkeypatch, classes)
    # each prompt list is encoded once for the three image batches
    assert len(calls) == len(set(calls)) and calls


def _config(tmp_path, extra=()):
    from cxrvlp.cxrclip.config import CxrClipTrainConfig

    return mh.tiny_recipe_config("cxrclip", CxrClipTrainConfig, tmp_path, extra)


def test_built_tokenizer_is_reused_on_resume(tmp_path, monkeypatch):
    import cxrvlp.core.text.tokenize as tokenize
    from cxrvlp.cxrclip.train import CxrClipTask

    first = CxrClipTask(_config(tmp_path, ["tokenizer_vocab_size=300"]))
    tok1 = first._build_tokenizer()
    saved_file = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    saved = saved_file.read_bytes()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the tokenizer was rebuilt instead of loaded from the run folder")

    monkeypatch.setattr(tokenize, "build_tokenizer_from_texts", no_rebuild)
    # a different vocab size would give a different vocabulary if it were rebuilt
    second = CxrClipTask(_config(tmp_path, ["tokenizer_vocab_size=200", "resume=auto"]))
    tok2 = second._build_tokenizer()
    assert saved_file.read_bytes() == saved
    assert tok2.get_vocab() == tok1.get_vocab()
    assert tok2(TEXTS)["input_ids"] == tok1(TEXTS)["input_ids"]
    assert second.cfg.model.text_config["vocab_size"] == len(tok1)
