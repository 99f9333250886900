"""MGCA parity from RAW inputs: the fixture's raw reports and images through OUR cleaning, tokenizer and
preprocessing must give the official sentences, captions, token ids and image tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def fixture(shared_dir):
    d = shared_dir / "parity" / "mgca"
    if not (d / "inputs.json").is_file():
        pytest.skip("no MGCA parity fixture")
    return d, json.loads((d / "inputs.json").read_text()), load_file(str(d / "inputs.safetensors"))


def test_raw_reports_give_the_official_sentences_captions_and_token_ids(fixture):
    from cxrvlp.mgca.data import MGCATokenizer, report_caption, report_sentences

    d, doc, tensors = fixture
    tok = MGCATokenizer.from_vocab_file(d / "vocab.txt", max_words=112)
    ids = tok([s["caption"] for s in doc["samples"]])["input_ids"]
    for s in doc["samples"]:
        assert report_sentences(s["impression_raw"], s["findings_raw"]) == s["sentences"]
        assert report_caption(s["impression_raw"], s["findings_raw"]) == s["caption"]
        row = ids[s["batch_index"]]
        assert tok.tokenizer.convert_ids_to_tokens(row[: s["num_nonpad_tokens"]].tolist()) == [
            t for t in s["tokens"] if t != "[PAD]"
        ]
        assert torch.equal(row, tensors["input_ids"][s["batch_index"]].long())


def test_raw_images_give_the_official_input_tensor(fixture):
    from cxrvlp.core.data.transforms import build_transform

    _, doc, tensors = fixture
    tf = build_transform("mgca", train=False, image_size=224)
    for name, info in doc["raw_images"].items():
        raw = tensors[name].numpy()
        ours = tf(raw.astype(np.float32) / 255.0)
        ref = tensors["images"][info["batch_index"]].float()
        assert ours.shape == ref.shape
        assert torch.equal(ours, ref), name  # the same pixels, bit for bit
