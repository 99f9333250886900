"""AFLoc unit checks from spec §10 (loss values, unit lists, heatmap pipeline), the official-key import, and
the text pipeline's per-draw sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cxrvlp.afloc.config import AFLocConfig
from cxrvlp.afloc.loss import global_logits, local_loss


def _ce(logits):
    labels = torch.arange(logits.shape[0])
    return torch.nn.functional.cross_entropy(logits, labels), torch.nn.functional.cross_entropy(
        logits.t(), labels
    )


def test_global_loss_spec_values():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    i2t, t2i = _ce(global_logits(img, txt, 10.0))
    assert float(i2t) == pytest.approx(0.0264617, abs=1e-7)
    assert float(t2i) == pytest.approx(0.3465963, abs=1e-7)
    assert float(i2t + t2i) == pytest.approx(0.3730580, abs=1e-7)


def test_local_loss_spec_values_and_invariances():
    # images as (B, D, H, W) = (2, 2, 1, 2); texts (B, U, D) with 2 units each
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    regions = regions.transpose(1, 2).reshape(2, 2, 1, 2)
    units = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    n = torch.tensor([2, 2])
    i2t, t2i, logits, attn = local_loss(regions, units, n, 4.0, 5.0, 10.0)
    torch.testing.assert_close(
        logits / 10,
        torch.tensor([[5.6323, 5.3124], [5.0895, 5.5663]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    torch.testing.assert_close(
        attn[0].reshape(2, 2),
        torch.tensor([[0.8639, 0.1361], [0.1361, 0.8639]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    assert float(i2t) == pytest.approx(0.0242391, abs=1e-6)
    assert float(t2i) == pytest.approx(0.0401973, abs=1e-6)
    # not invariant to rescaling the units (raw dot products in the attention)
    i2t2, t2i2, _, _ = local_loss(regions, 2 * units, n, 4.0, 5.0, 10.0)
    assert float(i2t2 + t2i2) != pytest.approx(float(i2t + t2i), abs=1e-6)
    # consistent batch permutation: same loss; chunked einsum: same numbers
    p = torch.tensor([1, 0])
    i2t3, t2i3, _, _ = local_loss(regions[p], units[p], n[p], 4.0, 5.0, 10.0, text_chunk=1)
    assert float(i2t3 + t2i3) == pytest.approx(float(i2t + t2i), abs=1e-12)
    # equal cosines r: s = log T + temp2 r
    same = torch.ones(1, 2, 1, 1, dtype=torch.float64)
    _, _, lg, _ = local_loss(
        same, torch.ones(1, 3, 2, dtype=torch.float64), torch.tensor([3]), 4.0, 5.0, 10.0
    )
    assert float(lg) == pytest.approx(10 * (math.log(3) + 5.0))


def _tiny_text_model():
    from cxrvlp.afloc.model import AFLoc

    bert = {"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 4, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 32}  # fmt: skip
    cfg = AFLocConfig(bert=bert, resnet_layers=(1, 1, 1, 1), resnet_width_per_group=4, upsample_to=None,
                      text_max_length=12, cls_token_id=2, sep_token_id=3, period_token_id=5)  # fmt: skip
    return AFLoc(cfg).eval()


def test_word_and_sentence_units_spec_example():
    # vocab: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK] 5 "." 6 a 7 b 8 ##s 9 c 10 d 11 e
    model = _tiny_text_model()
    ids = torch.tensor([[2, 6, 7, 8, 5, 9, 10, 11, 3, 0, 0, 0]])
    mask = (ids > 0).long()
    piece = ids == 8
    bracket = ids <= 4
    with torch.no_grad():
        txt = model.encode_text(ids, mask, piece, bracket)
        hidden = model.text_encoder(ids[:, :9], mask[:, :9]).last_hidden_state[0]  # sum of the last 4 layers
    words = txt.word_emb[0]
    # words [CLS], a, bs, ., c, d, e, [SEP], zeros
    want = torch.stack(
        [hidden[0], hidden[1], hidden[2] + hidden[3], hidden[4], hidden[5], hidden[6], hidden[7], hidden[8]]
    )
    torch.testing.assert_close(words[:8], want)
    assert torch.all(words[8:] == 0)
    assert int(txt.word_units) == 7  # [CLS] + 6 words
    assert int(txt.sent_units) == 3  # [CLS] + 2 sentences
    sents = txt.sent_emb[0]
    torch.testing.assert_close(sents[1], (want[1] + want[2]) / 2)
    torch.testing.assert_close(sents[2], (want[4] + want[5] + want[6]) / 3)
    torch.testing.assert_close(sents[3], want[7])
    torch.testing.assert_close(txt.report_emb[0], want.sum(0) / 12)  # / text_max_length, zeros included
    # an [UNK] word lowers the count (official label rule), the row keeps its slots
    ids2 = torch.tensor([[2, 6, 1, 9, 3, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        t2 = model.encode_text(ids2, (ids2 > 0).long(), ids2 == 8, ids2 <= 4)
    assert int(t2.word_units) == 3


def test_heatmap_pipeline_one_hot_peak_and_border():
    from cxrvlp.afloc.zeroshot import border_margin, grounding_heatmaps

    assert border_margin(224) == 14
    sim = torch.zeros(19, 19)
    sim[9, 9] = 1.0
    hm = grounding_heatmaps(sim, 224)["heatmap"]
    assert (
        torch.isnan(hm[:14]).all()
        and torch.isnan(hm[:, -14:]).all()
        and not torch.isnan(hm[14:-14, 14:-14]).any()
    )
    r, c = divmod(int(torch.nan_to_num(hm, nan=-1).argmax()), 224)
    assert abs(r - 112) <= 6 and abs(c - 112) <= 6
    from cxrvlp.core.metrics.grounding import iou_at_thresholds, minmax_normalize

    norm = minmax_normalize(hm)
    gt = (np.nan_to_num(norm, nan=-1) > 0.3).astype(np.uint8)
    assert iou_at_thresholds(norm[None], gt[None], [0.3])[0, 0] == pytest.approx(1.0)


def test_sentence_sampling_matches_official_distribution():
    from cxrvlp.afloc.data import report_sentences, sample_caption

    sents = ["a b", "c d", "e f", "g h"]
    rng = np.random.default_rng(0)
    draws = [sample_caption(sents, rng) for _ in range(400)]
    sizes = {len(d.split(". ")) for d in draws}
    assert sizes == {1, 2, 3}  # k ~ U{1..n-1}: never the full report
    assert sample_caption(["only one"], rng) == "only one"
    a = [sample_caption(sents, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1  # a reseeded generator gives the same draw (exact resume)
    assert report_sentences("There are five words here. Second sentence is dropped.") == [
        "there are five words here"
    ]


@pytest.mark.shared
def test_official_tsv_loads_strictly_into_paper_model(shared_dir):
    """A state dict with exactly the released keys and shapes (random values) loads with nothing unmatched."""
    from cxrvlp.afloc.official import load_official_checkpoint

    rows = (shared_dir / "specs" / "afloc_state_dict.tsv").read_text().splitlines()[1:]
    sd = {}
    for row in rows:
        key, shape = row.split("\t")[:2]
        dims = [int(x) for x in shape.strip("[]() ").replace(" ", "").split(",") if x]
        if key.endswith("position_ids"):
            sd[key] = torch.arange(dims[-1]).reshape(dims)
        elif key.endswith("num_batches_tracked"):
            sd[key] = torch.zeros(dims, dtype=torch.long)
        else:
            sd[key] = torch.randn(dims) * 0.01
    assert any(k.endswith("local_f_embedder.weight") for k in sd)
    model = load_official_checkpoint(sd, name="afloc-r50")
    assert model.import_info["has_local_f_embedder"] is True
    assert "PRESENT" in model.import_info["message"]
    own = model.state_dict()
    k = "img_encoder.global_embedder.weight"
    assert torch.equal(own[k], sd["afloc." + k])
    # a file without local_f_embedder imports too, and says so
    sd.pop("afloc.img_encoder.local_f_embedder.weight")
    model = load_official_checkpoint(sd, name="afloc-r50")
    assert model.img_encoder.local_f_embedder is None and "ABSENT" in model.import_info["message"]
    # a mismatch lists every offending key
    from cxrvlp.core.errors import CheckpointMismatchError

    sd["afloc.img_encoder.extra.weight"] = torch.zeros(1)
    sd.pop("afloc.img_encoder.local_embedder.weight")
    with pytest.raises(CheckpointMismatchError, match="local_embedder"):
        load_official_checkpoint(sd, name="afloc-r50")
