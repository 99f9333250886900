"""Parity with the official CARZero code: every tensor of the public fixture (README tolerances)."""

from __future__ import annotations

import json

import pytest
import torch
from cxrvlp.carzero.testing import run_parity_fixture
from cxrvlp.core.testing import float64_twin, judge_parity
from safetensors.torch import load_file

pytestmark = pytest.mark.shared

LOGITS = ("_logits", "loss_", "zs_")


def _tolerance(name: str) -> tuple[float, float]:
    """(rtol, atol) of the fixture README's tolerance table for one tensor."""
    if name.startswith(("grad_norm.", "grad.")):
        return 1e-3, 1e-5
    if name.endswith(LOGITS) or name.startswith(LOGITS):
        return 1e-4, 1e-4
    if name.endswith("_attn") or name.startswith("grounding_map"):
        return 1e-4, 1e-6
    return 1e-4, 1e-5


@pytest.fixture(scope="module")
def parity(shared_dir):
    fixture = shared_dir / "parity" / "carzero"
    return run_parity_fixture(fixture), load_file(str(fixture / "outputs.safetensors"))


def test_every_tensor_matches(parity, shared_dir):
    # Fixture tolerance, plus core's float32-rounding allowance where our float64 twin shows rounding alone
    # moves a tensor that far (run only when some tensor fails the fixture tolerance alone).
    fixture = shared_dir / "parity" / "carzero"
    ours, ref = parity
    report = judge_parity(ours, ref, _tolerance, lambda: float64_twin(run_parity_fixture, fixture))
    report.assert_ok()


def test_float64_twin_runs_the_same_path_in_double(shared_dir):
    fixture = shared_dir / "parity" / "carzero"
    twin = run_parity_fixture(fixture, dtype=torch.float64)
    assert twin["i2t_logits"].dtype == torch.float64 and twin["loss_total"].dtype == torch.float64
    assert twin["grad_norm.fusion_module.decoder_norm.weight"].dtype == torch.float64
    assert twin["text_num_words"].dtype == torch.int64  # counts stay integers


def test_modelling_error_in_the_fusion_still_fails(shared_dir, monkeypatch):
    """A wrong LayerNorm eps in the fusion (1e-3 instead of 1e-5, in both our float32 and float64 runs) must
    fail the judge, allowance or not."""
    from cxrvlp.carzero.model import Carzero

    fixture = shared_dir / "parity" / "carzero"
    init = Carzero.__init__

    def wrong_eps(self, config):
        init(self, config)
        self.fusion_module.decoder_norm.eps = 1e-3

    monkeypatch.setattr(Carzero, "__init__", wrong_eps)
    ref = load_file(str(fixture / "outputs.safetensors"))
    report = judge_parity(
        run_parity_fixture(fixture), ref, _tolerance, float64_twin(run_parity_fixture, fixture)
    )
    failing = {f.split(":")[0] for f in report.failures}
    assert {"i2t_logits", "t2i_logits", "zs_scores"} <= failing, report.summary()


def test_outputs_are_not_degenerate(parity):
    ours, _ = parity
    assert ours["i2t_logits"].std() > 0.1 and ours["t2i_logits"].std() > 0.1
    rows = ours["i2t_attn"].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_tokenizer_and_preprocessing_reproduce_fixture_inputs(shared_dir):
    from cxrvlp.core.data.transforms import build_transform
    from cxrvlp.core.text.cleaning import clean_prompt, clean_report
    from cxrvlp.core.text.tokenize import load_tokenizer, tokenize

    root = shared_dir / "parity" / "carzero"
    raw = json.loads((root / "inputs.json").read_text())
    inputs = load_file(str(root / "inputs.safetensors"))
    tok = load_tokenizer(root / "vocab.txt", do_lower_case=True)
    got = tokenize(tok, raw["captions"], max_length=97, padding="max_length")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(got[k], inputs[k]), k
    prompts = [clean_prompt(raw["prompts"][k][0]) for k in sorted(raw["prompts"], key=int)]
    assert prompts == [raw["prompts_cleaned"][k] for k in sorted(raw["prompts_cleaned"], key=int)]
    got = tokenize(tok, prompts, max_length=97, padding="max_length")
    assert torch.equal(got["input_ids"], inputs["prompt_input_ids"])
    # training sentences: impression + LLM text concatenated without a separator, official cleaning
    from cxrvlp.carzero.data import study_sentences

    for rep, want in zip(raw["reports"], raw["train_sentences"]):
        assert study_sentences(rep["Report Impression"], rep["xinhuo"]) == want
    assert clean_report("Mild cardiomegaly. There is edema. There is consolidation.", 5) == [
        "mild cardiomegaly", "there is edema"
    ]  # fmt: skip
    tf = build_transform("carzero", train=False)
    for i in range(inputs["images"].shape[0]):
        img = inputs[f"raw_image_{i}"].numpy().astype("float32") / 255.0
        assert torch.equal(tf(img), inputs["images"][i]), i
