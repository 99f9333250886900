"""Every registered tiny model of every installed method, through the contract (timm-style model tests).

Build, one training step's forward and backward through the method's task module (named `*_loss` terms),
and a strict save_pretrained / load round trip. Full-size paper models are checked by each method's
official-import test (the released key list loads strictly).
"""

from __future__ import annotations

import math

import pytest
import torch
from cxrvlp.core.registry import get_method, get_model_entry, installed_methods, list_models
from cxrvlp.core.training import exported_model, load_pretrained_weights, save_pretrained, sum_losses

TINY = [n for m in sorted(installed_methods()) for n in list_models(m) if n.endswith("-tiny")]


def test_every_method_registers_a_tiny_model_and_an_example_batch():
    for method in installed_methods():
        assert f"{method}-tiny" in TINY
        assert callable(get_method(method).example_batch), method


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    entry = get_model_entry(name)
    assert not entry.paper_config  # tiny configs are ours, labelled as such
    module, batch = get_method(entry.method).example_batch(name, 4)
    module.train()
    terms = module(batch)
    losses = {k: v for k, v in terms.items() if k.endswith("_loss")}
    assert losses and all(v.ndim == 0 and math.isfinite(v.item()) for v in losses.values()), terms.keys()
    sum_losses(terms).backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model = exported_model(module)
    save_pretrained(model, {"model_name": name}, tmp_path / "m", model_name=name)
    fresh = entry.builder()
    assert load_pretrained_weights(fresh, tmp_path / "m").ok
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
