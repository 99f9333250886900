"""BERT text encoder (aggregation, pooling, SDPA vs eager) and the vectorised word-piece merge."""

from __future__ import annotations

import json

import pytest
import torch
from cxrvlp.core.encoders import create_text_encoder, list_text_encoders
from cxrvlp.core.encoders.text import (
    HFTextEncoder,
    build_bert_encoder,
    continuation_table,
    merge_word_pieces,
    sentence_units,
    token_prefix_table,
    word_strings,
)
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.text.tokenize import load_tokenizer
from transformers import BertConfig

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##s", ".", "c", "d", "e", "##x", "##y", "f"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(d, do_lower_case=True)


def tiny_config(**kw) -> BertConfig:
    base = dict(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=5,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return BertConfig(**base)


def _ids(tok, tokens, length):
    ids = tok.convert_tokens_to_ids(tokens)
    return torch.tensor([ids + [0] * (length - len(ids))])


# ------------------------------------------------------------------ merging
def test_merge_spec_example(tok):
    # afloc.md §10: [CLS] a b ##s . c d e [SEP] -> [CLS], a, bs, ., c, d, e, [SEP]
    ids = _ids(tok, ["[CLS]", "a", "b", "##s", ".", "c", "d", "e", "[SEP]"], 12)
    hidden = torch.randn(1, 12, 3, dtype=torch.float64)
    m = merge_word_pieces(hidden, ids, continuation_table(tok), tok.sep_token_id)
    assert m.num_words.tolist() == [8]
    assert m.word_mask[0].tolist() == [True] * 8 + [False] * 4
    assert m.word_index[0].tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, -1, -1, -1]
    torch.testing.assert_close(m.embeddings[0, 2], hidden[0, 2] + hidden[0, 3])
    torch.testing.assert_close(m.embeddings[0, 7], hidden[0, 8])  # [SEP] is its own word
    assert (m.embeddings[0, 8:] == 0).all()
    assert tok.convert_ids_to_tokens(m.first_token_ids[0, :8].tolist()) == [
        "[CLS]",
        "a",
        "b",
        ".",
        "c",
        "d",
        "e",
        "[SEP]",
    ]
    assert word_strings(tok, ids, m.word_index)[0][:9] == [
        "[CLS]",
        "a",
        "bs",
        ".",
        "c",
        "d",
        "e",
        "[SEP]",
        "[PAD]",
    ]
    # AFLoc-style unit count: labels not starting with "[" plus one
    br = token_prefix_table(tok, "[")[m.first_token_ids] & m.word_mask
    assert int((m.word_mask & ~br).sum()) + 1 == 7


def test_merge_layers_weights_padding_and_open_word(tok):
    ids = torch.cat(
        [
            _ids(tok, ["[CLS]", "c", "##x", "##y", "d", "[SEP]"], 8),
            _ids(tok, ["[CLS]", "f", "[SEP]"], 8),
        ]
    )
    hidden = torch.randn(2, 3, 8, 4)  # (B, K, L, D)
    w = torch.arange(16, dtype=torch.float32).reshape(2, 8)
    m = merge_word_pieces(hidden, ids, continuation_table(tok), tok.sep_token_id, token_weights=w)
    assert m.embeddings.shape == (2, 3, 8, 4) and m.num_words.tolist() == [4, 3]
    torch.testing.assert_close(m.embeddings[0, :, 1], hidden[0, :, 1:4].sum(1))
    assert m.weights[0, :4].tolist() == [0.0, 6.0, 4.0, 5.0] and m.weights[1, :3].tolist() == [8.0, 9.0, 10.0]
    assert (m.weights[:, 4:] == 0).all() and (m.embeddings[1, :, 3:] == 0).all()
    # sum over layers commutes with merging (why the encoder may aggregate first)
    m2 = merge_word_pieces(hidden.sum(1), ids, continuation_table(tok), tok.sep_token_id)
    torch.testing.assert_close(m2.embeddings, m.embeddings.sum(1))
    # no [SEP]: the last word is closed by default, dropped with close_at_end=False (MGCA's truncated rows)
    cut = ids[:, :4]  # [CLS] c ##x ##y
    m3 = merge_word_pieces(hidden[:, 0, :4], cut, continuation_table(tok), tok.sep_token_id)
    m4 = merge_word_pieces(
        hidden[:, 0, :4], cut, continuation_table(tok), tok.sep_token_id, close_at_end=False
    )
    assert m3.num_words[0] == 2 and m4.num_words[0] == 1 and (m4.embeddings[0, 1:] == 0).all()
    # gradients reach every merged token
    h = hidden[:, 0].clone().requires_grad_(True)
    merge_word_pieces(h, ids, continuation_table(tok), tok.sep_token_id).embeddings.sum().backward()
    assert (h.grad[0, :6] == 1).all() and (h.grad[0, 6:] == 0).all()


def test_merge_matches_carzero_fixture(shared_dir):
    from safetensors import safe_open
    from safetensors.torch import load_file

    d = shared_dir / "parity" / "carzero"
    tok = load_tokenizer(d)
    out = load_file(str(d / "outputs.safetensors"))
    ids = load_file(str(d / "inputs.safetensors"))["input_ids"]
    m = merge_word_pieces(out["text_hidden_last4"], ids, continuation_table(tok), tok.sep_token_id)
    torch.testing.assert_close(m.embeddings, out["text_word_emb_per_layer"], atol=1e-5, rtol=1e-5)
    assert m.num_words.tolist() == out["text_num_words"].tolist()
    words = json.loads(safe_open(str(d / "outputs.safetensors"), "pt").metadata()["text_words"])
    assert word_strings(tok, ids, m.word_index) == words
    text_emb_g = m.embeddings.mean(2).sum(1)  # mean over all 97 slots (zeros included), sum over layers
    torch.testing.assert_close(text_emb_g, out["text_emb_g"], atol=1e-5, rtol=1e-4)


def test_merge_matches_afloc_fixture(shared_dir):
    from safetensors.torch import load_file

    d = shared_dir / "parity" / "afloc"
    tok = load_tokenizer(d / "vocab.txt", do_lower_case=False)
    out = load_file(str(d / "outputs.safetensors"))
    ids = load_file(str(d / "inputs.safetensors"))["caption_ids"]
    m = merge_word_pieces(
        out["text/token_hidden_last4"].sum(1), ids, continuation_table(tok), tok.sep_token_id
    )
    torch.testing.assert_close(m.embeddings.transpose(1, 2), out["fwd/text_emb_w"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.embeddings.mean(1), out["fwd/text_emb_r"], atol=1e-5, rtol=1e-4)
    words = json.loads((d / "outputs.json").read_text())["words"]
    assert word_strings(tok, ids, m.word_index) == words
    # AFLoc cap_len: 1 + labels not starting with "[" (an [UNK] word lowers it; fixture row 0)
    starts_bracket = token_prefix_table(tok, "[")[m.first_token_ids] & m.word_mask
    cap_len = (m.word_mask & ~starts_bracket).sum(1) + 1
    assert cap_len.tolist() == out["loss/cap_lens_word"].tolist()


# ------------------------------------------------------------------ encoder
def test_registered_and_pooling_modes():
    assert "bert" in list_text_encoders()
    torch.manual_seed(0)
    enc = create_text_encoder("bert", config=tiny_config(), last_n_layers=4, pooling="eos")
    assert isinstance(enc, HFTextEncoder) and enc.model.config._attn_implementation == "sdpa"
    enc.eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0, 0], [2, 9, 10, 11, 14, 8, 3]])
    mask = (ids != 0).long()
    out = enc(ids, mask)
    hs = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    torch.testing.assert_close(out.last_hidden_state, sum(hs[-4:]))
    torch.testing.assert_close(out.pooled, out.last_hidden_state[[0, 1], [4, 6]])  # the [SEP] rows
    assert out.hidden_states is None and out.attentions is None
    enc.pooling = "mean"
    pooled = enc(ids, mask).pooled
    torch.testing.assert_close(pooled[0], out.last_hidden_state[0, :5].mean(0))
    enc.pooling, enc.last_n_layers = "cls", 1
    torch.testing.assert_close(enc(ids, mask).pooled, hs[-1][:, 0])
    with pytest.raises(ConfigError):
        create_text_encoder("bert", config=tiny_config(), pooling="max")
    with pytest.raises(ConfigError):
        create_text_encoder("bert", config=tiny_config(), last_n_layers=6)
    with pytest.raises(ConfigError):
        create_text_encoder("bert", config=tiny_config(), output_attentions=True, attn_implementation="sdpa")


def test_eager_attentions_match_sdpa_and_position_ids():
    torch.manual_seed(0)
    sdpa = build_bert_encoder(config=tiny_config(), last_n_layers=4).eval()
    eager = build_bert_encoder(config=tiny_config(), last_n_layers=4, output_attentions=True).eval()
    eager.load_state_dict(sdpa.state_dict())
    ids = torch.tensor([[2, 5, 6, 7, 3, 0, 0]])
    mask = (ids != 0).long()
    a, b = sdpa(ids, mask), eager(ids, mask)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert b.attentions.shape == (1, 2, 7, 7)
    torch.testing.assert_close(b.attentions.sum(-1), torch.ones(1, 2, 7))
    assert b.attentions[0, :, :, 5:].abs().max() < 1e-6  # padding keys are masked
    # all-zero position ids (MGCA's bug) make the encoder order-blind
    swapped = torch.tensor([[2, 6, 5, 7, 3, 0, 0]])
    z = torch.zeros_like(ids)
    h1 = sdpa(ids, mask, position_ids=z).last_hidden_state
    h2 = sdpa(swapped, mask, position_ids=z).last_hidden_state
    torch.testing.assert_close(h1[0, 1], h2[0, 2], atol=1e-5, rtol=1e-5)
    assert (sdpa(swapped, mask).last_hidden_state[0, 2] - h1[0, 1]).abs().max() > 1e-3


def test_from_local_folder_and_offline_error(tmp_path):
    torch.manual_seed(0)
    enc = build_bert_encoder(config=tiny_config())
    enc.model.save_pretrained(tmp_path / "m")
    again = build_bert_encoder(pretrained=tmp_path / "m")
    for (k, v), (k2, v2) in zip(enc.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    no_pool = build_bert_encoder(config=tiny_config(), add_pooling_layer=False)
    assert no_pool.model.pooler is None
    with pytest.raises(ConfigError):
        build_bert_encoder(config=tiny_config(), add_pooling_layer=False, pooling="pooler")
    with pytest.raises(ConfigError, match="not-a/real-model"):
        build_bert_encoder(pretrained="not-a/real-model")
    with pytest.raises(ConfigError):
        build_bert_encoder()


def test_afloc_fixture_text_tower(shared_dir):
    # the encoder loaded with the official BERT weights reproduces the fixture's last-4 hidden states
    from safetensors.torch import load_file

    d = shared_dir / "parity" / "afloc"
    cfg = json.loads((d / "config.json").read_text())["model"]["text_encoder"]
    config = BertConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        layer_norm_eps=cfg["layer_norm_eps"],
    )
    enc = build_bert_encoder(config=config, last_n_layers=4, return_hidden_states=True).eval()
    prefix = "afloc.text_encoder.model."
    sd = {
        k[len(prefix) :]: v.float()
        for k, v in load_file(str(d / "weights.safetensors")).items()
        if k.startswith(prefix) and not k.endswith("position_ids")
    }
    missing, unexpected = enc.model.load_state_dict(sd, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    inp = load_file(str(d / "inputs.safetensors"))
    with torch.no_grad():
        o = enc(inp["caption_ids"], inp["attention_mask"], inp["token_type_ids"])
    ref = load_file(str(d / "outputs.safetensors"))["text/token_hidden_last4"]
    torch.testing.assert_close(torch.stack(o.hidden_states[-4:], 1), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o.last_hidden_state, ref.sum(1), atol=1e-4, rtol=1e-4)


def _loop_merge(hidden, ids, cont, sep):
    # the official per-token loop (GLoRIA/AFLoc/CARZero aggregate_tokens), written independently
    out = torch.zeros_like(hidden)
    for b in range(ids.shape[0]):
        words, cur = [], None
        for t in range(ids.shape[1]):
            tid = int(ids[b, t])
            if cont[tid] and cur is not None:
                cur = cur + hidden[b, t]
                continue
            if cur is not None:
                words.append(cur)
            cur = hidden[b, t]
            if tid == sep:
                words.append(cur)
                cur = None
                break
        if cur is not None:
            words.append(cur)
        for w, vec in enumerate(words):
            out[b, w] = vec
    return out


def test_merge_matches_loop_on_random_sequences():
    g = torch.Generator().manual_seed(0)
    vocab = 30
    cont = torch.zeros(vocab, dtype=torch.bool)
    cont[20:] = True  # ids 20.. are "##" pieces; 2 = [CLS], 3 = [SEP], 0 = [PAD]
    for _ in range(20):
        n = int(torch.randint(2, 12, (1,), generator=g))
        body = torch.randint(5, vocab, (3, n - 2), generator=g)
        ids = torch.cat([torch.full((3, 1), 2), body, torch.full((3, 1), 3)], 1)
        ids = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)  # trailing pads
        ids[1, -1] = 7  # junk after the [SEP] must be ignored
        hidden = torch.randn(3, ids.shape[1], 5, generator=g, dtype=torch.float64)
        got = merge_word_pieces(hidden, ids, cont, sep_token_id=3).embeddings
        torch.testing.assert_close(got, _loop_merge(hidden, ids, cont, 3), atol=1e-12, rtol=0)


def test_sentence_units_spec_example_and_quirks(tok):
    period = tok.convert_tokens_to_ids(".")
    # afloc.md §10: [CLS] a b ##s . c d e [SEP] -> [CLS], mean(a, bs), mean(c, d, e), [SEP]; cap_len 3
    ids = _ids(tok, ["[CLS]", "a", "b", "##s", ".", "c", "d", "e", "[SEP]"], 12)
    hidden = torch.randn(1, 12, 3, dtype=torch.float64)
    m = merge_word_pieces(hidden, ids, continuation_table(tok), tok.sep_token_id)
    su = sentence_units(m, period)
    w = m.embeddings[0]
    assert su.num_sentences.tolist() == [2] and su.unit_mask[0].tolist() == [True] * 4 + [False] * 8
    torch.testing.assert_close(su.embeddings[0, 0], w[0])
    torch.testing.assert_close(su.embeddings[0, 1], (w[1] + w[2]) / 2)
    torch.testing.assert_close(su.embeddings[0, 2], (w[4] + w[5] + w[6]) / 3)
    torch.testing.assert_close(su.embeddings[0, 3], w[7])
    assert (su.embeddings[0, 4:] == 0).all()
    # a trailing "." before [SEP] is not a boundary: it is averaged into the last sentence
    ids2 = _ids(tok, ["[CLS]", "a", ".", "c", "d", ".", "[SEP]"], 9)
    m2 = merge_word_pieces(torch.randn(1, 9, 3, dtype=torch.float64), ids2, continuation_table(tok), 3)
    su2 = sentence_units(m2, period)
    w2 = m2.embeddings[0]
    assert su2.num_sentences.tolist() == [2]
    torch.testing.assert_close(su2.embeddings[0, 2], (w2[3] + w2[4] + w2[5]) / 3)
    # two "." in a row give an empty sentence: NaN, as the official mean over zero words
    ids3 = _ids(tok, ["[CLS]", "a", ".", ".", "c", "[SEP]"], 8)
    m3 = merge_word_pieces(torch.randn(1, 8, 3), ids3, continuation_table(tok), 3)
    assert torch.isnan(sentence_units(m3, period).embeddings[0, 2]).all()
    # gradients: members get 1 / sentence length, "." boundaries 0, [CLS] / [SEP] 1, all finite
    hg = hidden.clone().requires_grad_(True)
    mg = merge_word_pieces(hg, ids, continuation_table(tok), tok.sep_token_id)
    sentence_units(mg, period).embeddings.sum().backward()
    assert hg.grad[0, :, 0].tolist() == [1, 0.5, 0.5, 0.5, 0, 1 / 3, 1 / 3, 1 / 3, 1, 0, 0, 0]
    # per-layer input gives the same as the layer sum
    hk = torch.randn(1, 2, 12, 3, dtype=torch.float64)
    mk = merge_word_pieces(hk, ids, continuation_table(tok), tok.sep_token_id)
    torch.testing.assert_close(
        sentence_units(mk, period).embeddings.sum(1),
        sentence_units(mk, period, embeddings=mk.embeddings.sum(1)).embeddings,
    )


def test_sentence_units_match_afloc_fixture(shared_dir):
    from safetensors.torch import load_file

    d = shared_dir / "parity" / "afloc"
    tok = load_tokenizer(d / "vocab.txt", do_lower_case=False)
    out = load_file(str(d / "outputs.safetensors"))
    ids = load_file(str(d / "inputs.safetensors"))["caption_ids"]
    m = merge_word_pieces(out["text/token_hidden_last4"], ids, continuation_table(tok), tok.sep_token_id)
    su = sentence_units(m, tok.convert_tokens_to_ids("."))
    torch.testing.assert_close(
        su.embeddings.sum(1).transpose(1, 2), out["fwd/text_emb_s"], atol=1e-5, rtol=1e-4
    )
    assert (su.num_sentences + 1).tolist() == out["loss/cap_lens_sent"].tolist()
    labels = json.loads((d / "outputs.json").read_text())["sent_units"]
    assert [int(su.unit_mask[i].sum()) for i in range(4)] == [
        sum(not w.startswith("[PAD]") for w in r) for r in labels
    ]
