"""Core ResNet-50 / Swin encoders as CXR-CLIP, MGCA and AFLoc use them."""

from __future__ import annotations

import pytest
import torch
import torchvision
from cxrvlp.core.encoders import create_image_encoder
from cxrvlp.core.errors import CheckpointMismatchError

SMALL_SWIN = dict(embed_dim=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def test_resnet50_keys_are_torchvision_without_fc():
    enc = create_image_encoder("resnet50", sync_batchnorm=True)
    tv = {k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    assert set(enc.state_dict()) == tv
    assert isinstance(enc.bn1, torch.nn.SyncBatchNorm)


def test_resnet50_gloria_upsampling_and_layer3_local():
    enc = create_image_encoder("resnet50", upsample_to=299, local_from="layer3").eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 224, 224))
    assert out.global_feat.shape == (1, 2048)
    assert out.maps["layer3"].shape == (1, 1024, 19, 19)
    assert out.grid_size == (19, 19) and out.local_feat.shape == (1, 361, 1024)
    # row-major flattening: token h*w_ + w is map[:, :, h, w]
    assert torch.equal(out.local_feat[0, 1 * 19 + 5], out.maps["layer3"][0, :, 1, 5])
    assert torch.allclose(out.global_feat, out.maps["layer4"].mean((2, 3)), atol=1e-6)


def test_resnet50_strict_load_lists_bad_keys(tmp_path):
    sd = create_image_encoder("resnet50").state_dict()
    sd.pop("conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_image_encoder("resnet50", pretrained=path)
    assert "conv1.weight" in str(err.value) and "extra.weight" in str(err.value)


def test_swin_token0_is_faithful_default_and_mean_is_a_flag():
    torch.manual_seed(0)
    enc = create_image_encoder("swin-tiny", **SMALL_SWIN).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = enc(x)
        enc.fix_token0_pooling = True
        fixed = enc(x)
    assert out.local_feat.shape == (2, 49, 192) and out.grid_size == (7, 7)
    assert torch.equal(out.global_feat, out.local_feat[:, 0])
    assert torch.allclose(fixed.global_feat, out.local_feat.mean(1), atol=1e-6)


def test_cxrclip_small_real_backbones_embed():
    from cxrvlp.core.errors import ConfigError
    from cxrvlp.cxrclip.registry import cxrclip_small

    try:
        model = cxrclip_small().eval()
    except (ConfigError, ImportError, OSError) as err:  # the optional small-weights extra is not installed
        pytest.skip(f"cxrclip-small unavailable: {err}")
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 224, 224))
        ids = torch.tensor([[101, 2053, 102, 0], [101, 2053, 2054, 102]])
        txt = model.encode_text(ids, (ids != 0).long())
    assert img.shape == txt.shape == (2, 512)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
