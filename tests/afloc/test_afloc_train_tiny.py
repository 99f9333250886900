"""The tiny config trains on the synthetic MIMIC-CXR mirror; the adapter loads the result."""

from __future__ import annotations

import method_helpers as mh
import pytest
import torch
from cxrvlp.core.zeroshot import ClassPrompts, ZeroShotAdapter


def _classes():
    return [
        ClassPrompts(c, [f"findings suggesting {p}"], [f"no evidence of {p}"]) for c, p in mh.CLASSES.items()
    ]


def test_afloc_paper_recipe_refuses_without_data_root(tmp_path):
    from cxrvlp.core.errors import ConfigError
    from cxrvlp.core.registry import get_method

    with pytest.raises(ConfigError, match="data.root"):
        get_method("afloc").train("afloc_r50", [f"output_dir={tmp_path}"])


def test_afloc_tiny_train_few_steps_and_adapter_round_trip(tmp_path):
    extra = ["max_steps=3", "batch_size=8", "log_every_steps=1", "data.synthetic_patients=20"]
    afloc, run = mh.train_tiny("afloc", tmp_path, extra)
    final = run / "final"
    mh.check_few_steps(run, ("loss", "global_report_loss", "local_sent_loss", "local_word_loss"))
    adapter = afloc.load_adapter(final)
    assert isinstance(adapter, ZeroShotAdapter)
    assert adapter.info.zero_shot_protocol.startswith("official")
    pos, neg = ["findings suggesting pleural effusion"], ["no evidence of pleural effusion"]
    cls = [ClassPrompts("Effusion", pos, neg)]
    images, emb = mh.check_adapter_on_two_images(adapter, cls)
    maps = adapter.localize(images, ["right pleural effusion", "small left pneumothorax"])
    assert maps.shape == (2, 2, 64, 64)
    m = adapter.info.excluded_border_px  # declared, so the grounding task accepts exactly this NaN frame
    assert (
        m == adapter.info.extra["border_margin_px"] == 4
        and torch.isnan(maps[..., :m, :]).all()
        and torch.isfinite(maps[..., m:-m, m:-m]).all()
    )
    from cxrvlp.afloc.zeroshot import AFLocZeroShotAdapter

    inferred = AFLocZeroShotAdapter(adapter.model, adapter.tokenizer, protocol="inferred")
    assert inferred.info.zero_shot_protocol.startswith("inferred")
    assert inferred.classify(emb, cls).shape == (2, 1)
    from cxrvlp.afloc.model import load_pretrained

    mh.assert_reloads_same_weights(adapter.model, final, load_pretrained)


@pytest.mark.slow
def test_afloc_tiny_config_learns_zero_shot_signal(tmp_path):
    """The demo's budget (AFLoc's MethodSpec.demo: 300 steps, one thread) on 600 synthetic patients."""
    from cxrvlp.afloc.registry import METHOD_SPEC

    budget = METHOD_SPEC.demo.train_overrides()
    extra = ["epochs=100", "data.synthetic_patients=600", "log_every_steps=20", *budget]
    auc = mh.learned_zero_shot("afloc", tmp_path, _classes(), falling="loss", extra=extra)
    # measured (2026-12-07): the packaged short run gave 0.739 on generator 1.0.0, 0.629 on 1.1.0 and 0.518
    # with the deterministic built vocab (the token numbering alone moved it by 0.1); the demo's budget gave
    # 0.582 (seed 0) and 0.611 (seed 1) on these 60 held-out patients with 300 StepLR steps, and 0.657 with
    # 600 cosine steps on generator 1.3.0 (seed 0)
    assert auc > 0.55
