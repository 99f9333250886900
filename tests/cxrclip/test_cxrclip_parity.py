"""Parity with the official CXR-CLIP code: every tensor of both public sub-fixtures (README tolerances)."""

from __future__ import annotations

import json

import pytest
import torch
from cxrvlp.core.testing import float64_twin, judge_parity
from cxrvlp.cxrclip.testing import run_parity_fixture
from safetensors.torch import load_file

LARGE = ("text_last_hidden_state", "logits_")


def _tolerance(name: str) -> tuple[float, float]:
    """(rtol, atol) of fixture README §6 for one tensor."""
    if name.startswith("bntrain_"):
        return 1e-3, 1e-4
    if name.endswith("grad_norms"):
        return 1e-3, 1e-5
    if name.startswith(LARGE) or (name.startswith("img_layer") and name.endswith("_pooled")):
        return 1e-4, 1e-4
    return 1e-4, 1e-5


@pytest.fixture(scope="module", params=["r50", "swint"])
def parity(request, shared_dir):
    fixture = shared_dir / "parity" / "cxrclip" / request.param
    return run_parity_fixture(fixture), load_file(str(fixture / "outputs.safetensors")), fixture


def test_every_tensor_matches(parity):
    # Fixture tolerance, plus the float32-conditioning allowance of cxrvlp.core.testing.parity where our own
    # float64 twin shows that rounding alone moves a tensor that far (train-mode BN, deep ResNet projections).
    ours, ref, fixture = parity
    report = judge_parity(ours, ref, _tolerance, lambda: float64_twin(run_parity_fixture, fixture))
    report.assert_ok()


def test_modelling_errors_still_fail(shared_dir, monkeypatch):
    """A 0.1% error in the logit scale is far inside what a loose tolerance would pass on a deep network but
    is no float32 rounding: the judge, given the float64 twin of the same (wrong) model, still fails it."""
    from cxrvlp.cxrclip.model import CxrClip

    fixture = shared_dir / "parity" / "cxrclip" / "swint"
    ref = load_file(str(fixture / "outputs.safetensors"))
    forward = CxrClip.forward

    def wrong_scale(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        return {**out, "logit_scale": out["logit_scale"] * 1.001}

    monkeypatch.setattr(CxrClip, "forward", wrong_scale)
    report = judge_parity(
        run_parity_fixture(fixture), ref, _tolerance, float64_twin(run_parity_fixture, fixture)
    )
    assert not report.ok
    failing = {f.split(":")[0] for f in report.failures}
    assert "logit_scale_exp" in failing and "loss_total" in failing, report.summary()
    assert "image_embeddings" not in failing  # the error is where it was put, nowhere upstream
    with pytest.raises(AssertionError):
        report.assert_ok(warn=False)


def test_embeddings_are_discriminative(parity):
    # C7: random image features are nearly collinear; the comparison above is only meaningful if not.
    ours = parity[0]
    emb = ours["image_embeddings"]
    cos = emb @ emb.t()
    assert cos[~torch.eye(len(emb), dtype=torch.bool)].max() < 0.99


def test_tokenizer_reproduces_fixture_ids(shared_dir):
    from cxrvlp.core.text.tokenize import load_tokenizer, tokenize

    root = shared_dir / "parity" / "cxrclip"
    raw = json.loads((root / "inputs.json").read_text())
    inputs = load_file(str(root / "inputs.safetensors"))
    tok = load_tokenizer(root / "vocab.txt", do_lower_case=True)
    for field, prefix in (("texts", "text"), ("texts2", "text2")):
        got = tokenize(tok, raw[field], max_length=256, padding="max_length")
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(got[k], inputs[f"{prefix}_{k}"]), (field, k)


def test_preprocess_reproduces_fixture_images(shared_dir):
    from cxrvlp.cxrclip.registry import cxrclip_tiny
    from cxrvlp.cxrclip.zeroshot import CxrClipAdapter

    root = shared_dir / "parity" / "cxrclip"
    inputs = load_file(str(root / "inputs.safetensors"))
    model = cxrclip_tiny(image_size=224, normalisation="imagenet")
    adapter = CxrClipAdapter(model, tokenizer=root / "vocab.txt", device="cpu")
    for raw, key in (("raw_image_0", "images"), ("raw_image_1", "image_views")):
        img = inputs[raw].numpy().astype("float32") / 255.0
        assert torch.allclose(adapter.preprocess(img), inputs[key][0], atol=1e-5), raw
