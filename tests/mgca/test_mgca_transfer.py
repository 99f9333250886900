"""Transfer heads: frozen linear probe, U-Net (ResNet-50) and SETR (ViT) segmenters, MixedLoss."""

from __future__ import annotations

import pytest
import torch
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.model import MGCA
from cxrvlp.mgca.zeroshot import LinearProbe, SETRSegmenter, UNetSegmenter, mixed_seg_loss

BERT = MedBertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                     intermediate_size=32, encoder_width=16)  # fmt: skip


def _vit() -> MGCA:
    vit = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    return MGCA(MGCAConfig(vit=vit, bert=BERT, proj_hidden_dim=8, emb_dim=8, num_prototypes=4))


def test_mgca_linear_probe_backbone_frozen_and_in_eval():
    torch.manual_seed(0)
    probe = LinearProbe(_vit(), num_classes=5).train()
    assert not probe.backbone.training
    x = torch.randn(3, 3, 32, 32)
    out = probe(x)
    assert out.shape == (3, 5)
    out.sum().backward()
    assert all(p.grad is None for p in probe.backbone.parameters())
    assert probe.head[2].weight.grad is not None
    assert torch.equal(probe.features(x), probe.features(x))  # deterministic frozen features


def test_mgca_setr_and_unet_segmenters():
    torch.manual_seed(0)
    setr = SETRSegmenter(_vit(), channels=(16, 8))
    assert setr(torch.randn(2, 3, 32, 32)).shape == (2, 1, 16, 16)  # grid 4 x 2 upsamplings
    r50 = MGCA(
        MGCAConfig(image_encoder="resnet50", bert=BERT, proj_hidden_dim=8, emb_dim=8, num_prototypes=4)
    )
    unet = UNetSegmenter(r50)
    enc = dict(unet.net.encoder.named_parameters())
    assert torch.equal(enc["layer3.0.conv1.weight"], r50.image_encoder.layer3[0].conv1.weight)
    assert not any(p.requires_grad for p in unet.net.encoder.parameters())
    with pytest.raises(ValueError):
        UNetSegmenter(_vit())


def test_mgca_mixed_seg_loss_hand_value():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # p = 0.5 everywhere: focal = (0.5^2 * ln 2) = 0.1733; dice = (2*0.5 + 1) / (2 + 1 + 1) = 0.5
    want = 10 * 0.25 * torch.log(torch.tensor(2.0)) - torch.log(torch.tensor(0.5))
    assert torch.allclose(mixed_seg_loss(logits, target), want)
