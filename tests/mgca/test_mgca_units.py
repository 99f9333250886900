"""Hand-checkable MGCA pieces: ITA values, word aggregation quirks, quantile clipping, position bug, heads."""

from __future__ import annotations

import math

import pytest
import torch
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.data import report_caption, report_sentences
from cxrvlp.mgca.loss import clip_to_quantiles, ita_loss, word_weights
from cxrvlp.mgca.model import MGCA
from cxrvlp.mgca.train import MGCATrainModule

TINY_BERT = MedBertConfig(
    vocab_size=30,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    encoder_width=32,
)


def _tiny(**kw) -> MGCA:
    cfg = MGCAConfig(
        vit={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        bert=TINY_BERT,
        proj_hidden_dim=16,
        emb_dim=8,
        num_prototypes=6,
        sep_token_id=3,
        max_words=12,
        **kw,
    )
    torch.manual_seed(0)
    return MGCA(cfg).eval()


def test_mgca_ita_hand_values():
    v = torch.eye(2)
    t = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    out = ita_loss(v, t, 0.07)
    each = math.log(1 + math.exp(0.2 / 0.07))
    assert out["loss_ita_i2t"].item() == pytest.approx(each, rel=1e-5)
    assert out["loss_ita"].item() == pytest.approx(2 * each, rel=1e-5)  # a sum, not a mean
    same = ita_loss(torch.eye(2), torch.eye(2), 0.07)["loss_ita"].item()
    assert same == pytest.approx(2 * math.log(1 + math.exp(-1 / 0.07)), abs=1e-7)  # float32 near 1e-6


def test_mgca_quantile_clipping_matches_torch_quantile_loop():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(7, 20, generator=g)
    w[:, 12:] = 0  # padding
    w[3, 5:] = 0
    valid = w != 0
    got = clip_to_quantiles(w, valid)
    for b in range(w.shape[0]):
        row = w[b].clone()
        nz = row.nonzero().squeeze()
        lo, hi = torch.quantile(row[nz], 0.1), torch.quantile(row[nz], 0.9)
        row[nz] = row[nz].clip(lo, hi)
        assert torch.allclose(got[b], row, atol=1e-7)
    ww = word_weights(w)
    assert torch.allclose(ww.sum(1), torch.ones(7))
    assert (ww[~valid] == 0).all()


def test_mgca_word_aggregation_off_by_one_and_truncation():
    model = _tiny()
    # [CLS]=2 a=10 b=11 ##c=12 d=13 [SEP]=3 then padding; a truncated row has no [SEP] in the scan window
    ids = torch.tensor([[2, 10, 11, 12, 13, 3, 0, 0], [2, 10, 11, 12, 13, 14, 15, 3]])
    mask = (ids != 0).long()
    piece = ids == 12
    txt = model.encode_text(ids, mask, piece)
    a = txt.cls_attn.mean(dim=1)  # (B, L') [CLS] -> token
    # row 0 words: [CLS], a, bc, d, [SEP]; weights are the attention to the token one to the right
    w0 = torch.cat([txt.report_feat[:1], txt.word_feat[0, :4]])
    h = txt.last_hidden_state[0]
    assert torch.allclose(w0[2], h[2] + h[3], atol=1e-6)  # "b" + "##c" summed
    assert torch.allclose(txt.word_attn[0, :4], torch.stack([a[0, 2], a[0, 3] + a[0, 4], a[0, 5], a[0, 6]]))
    assert txt.word_attn[0, 3].item() == 0.0  # [SEP] gets the attention to the first PAD: exactly 0
    assert txt.word_pad_mask[0].tolist() == [False] * 4 + [True] * 7
    assert txt.word_feat.shape[1] == 11  # max_words - 1 slots whatever the batch's longest
    # row 1 fills all 8 tokens: [SEP] at position 7 is never scanned, the last open word ("15") is dropped
    assert txt.word_pad_mask[1].tolist() == [False] * 4 + [True] * 7  # a, bc, d, 14
    assert torch.all(txt.word_feat[1, 4:] == 0)


def test_mgca_position_bug_makes_text_order_blind_and_fix_restores_order():
    ids = torch.tensor([[2, 10, 11, 13, 3], [2, 13, 11, 10, 3]])
    mask = torch.ones_like(ids)
    faithful = _tiny().encode_text(ids, mask)
    assert torch.allclose(faithful.report_emb[0], faithful.report_emb[1], atol=1e-6)
    fixed = _tiny(fix_position_ids=True).encode_text(ids, mask)
    assert not torch.allclose(fixed.report_emb[0], fixed.report_emb[1], atol=1e-4)


def test_mgca_batch_longest_padding_is_exact():
    model = _tiny()
    ids = torch.tensor([[2, 10, 11, 3, 0, 0, 0, 0, 0, 0, 0, 0], [2, 13, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    full = model.encode_text(ids, mask)
    assert full.last_hidden_state.shape[1] == 5  # longest (4) + 1
    # the same batch padded to only 5 tokens gives the same words
    short = model.encode_text(ids[:, :5], mask[:, :5])
    assert torch.allclose(full.word_emb, short.word_emb, atol=1e-6)
    assert torch.equal(full.word_pad_mask, short.word_pad_mask)


def test_mgca_forward_losses_and_prototype_normalisation():
    model = _tiny().train()
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    batch = {
        "images": torch.randn(4, 3, 32, 32, generator=g),
        "input_ids": torch.tensor(
            [[2, 10, 11, 3, 0], [2, 12, 3, 0, 0], [2, 13, 14, 15, 3], [2, 16, 3, 0, 0]]
        ),
    }
    batch["attention_mask"] = (batch["input_ids"] != 0).long()
    out = MGCATrainModule(model).run(batch)
    lo = out.loss
    assert set(lo.terms) == {"loss_ita", "loss_cta", "loss_cpa"}
    assert torch.isfinite(lo.loss)
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(lo.details["img_code"].sum(1), torch.ones(4), atol=1e-5)
    lo.loss.backward()
    assert all(p.grad is None for p in model.dead_parameters())


def test_mgca_caption_rules():
    sents = report_sentences("1. No effusion. 2. Heart normal.", "")
    assert sents == ["no effusion", "heart normal"]
    assert report_caption("Tip terminates 4.5 cm above the carina.", "See ___.") == (
        "tip terminates 5 cm above the carina see ___"
    )
    assert report_caption("Ok.", "") is None  # fewer than 3 kept tokens: dropped
    assert report_sentences("Opacités basales.", "Right effusion.") == ["opacits basales", "right effusion"]


def test_mgca_text_init_copies_embeddings_and_first_layers(tmp_path):
    from cxrvlp.mgca.model import MedBertModel, load_bert_prefix_weights
    from transformers import BertConfig, BertModel

    hf_cfg = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    torch.manual_seed(0)
    BertModel(hf_cfg).save_pretrained(tmp_path / "bert")
    hf = BertModel.from_pretrained(tmp_path / "bert").state_dict()
    med = MedBertModel(TINY_BERT)  # 2 layers: takes layers 0-1 of the 4, no token-type table, no pooler
    cross_before = med.encoder.layer[0].crossattention.self.query.weight.clone()
    load_bert_prefix_weights(med, tmp_path / "bert")
    own = med.state_dict()
    assert torch.equal(own["embeddings.word_embeddings.weight"], hf["embeddings.word_embeddings.weight"])
    assert torch.equal(own["encoder.layer.1.output.dense.weight"], hf["encoder.layer.1.output.dense.weight"])
    assert torch.equal(med.encoder.layer[0].crossattention.self.query.weight, cross_before)  # stays random
    assert not any("token_type" in k or "pooler" in k for k in own)
