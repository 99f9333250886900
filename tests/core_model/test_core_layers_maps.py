"""Shared decoder layer and map post-processing (core.layers, core.metrics.maps) on their own."""

from __future__ import annotations

import pytest
import torch
from cxrvlp.core.layers import DecoderLayer, TransformerDecoder
from cxrvlp.core.metrics.maps import exclude_border, gaussian_blur, tokens_to_grid, upsample_map


def _reference_pre_norm(layer: DecoderLayer, tgt, mem):
    """The pre-norm DETR layer written out with explicit attention (no nn.MultiheadAttention forward)."""

    def mha(m: torch.nn.MultiheadAttention, q, k, v):
        d = q.shape[-1]
        h = m.num_heads
        wq, wk, wv = m.in_proj_weight.split(d)
        bq, bk, bv = m.in_proj_bias.split(d)

        def heads(x, w, b):  # (L, N, D) -> (N, h, L, d/h)
            y = x @ w.T + b
            return y.reshape(y.shape[0], y.shape[1], h, d // h).permute(1, 2, 0, 3)

        qh, kh, vh = heads(q, wq, bq), heads(k, wk, bk), heads(v, wv, bv)
        p = torch.softmax(qh @ kh.transpose(-1, -2) / (d // h) ** 0.5, -1)
        o = (p @ vh).permute(2, 0, 1, 3).reshape(q.shape[0], q.shape[1], d)
        return o @ m.out_proj.weight.T + m.out_proj.bias, p.mean(1)

    x = tgt
    if layer.self_attention:
        y = layer.norm1(x)
        x = x + mha(layer.self_attn, y, y, y)[0]
    y = layer.norm2(x)
    out, attn = mha(layer.multihead_attn, y, mem, mem)
    x = x + out
    x = x + layer.linear2(torch.relu(layer.linear1(layer.norm3(x))))
    return x, attn


@pytest.mark.parametrize("self_attention", [True, False])
def test_decoder_layer_matches_written_out_attention(self_attention):
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.0, self_attention=self_attention).eval()
    tgt, mem = torch.randn(3, 2, 16), torch.randn(7, 2, 16)
    out, attn = layer(tgt, mem, need_weights=True)
    ref, ref_attn = _reference_pre_norm(layer, tgt, mem)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, ref_attn, atol=1e-6, rtol=1e-5)
    out2, none = layer(tgt, mem, need_weights=False)
    assert none is None
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=1e-6)


def test_unused_self_attention_is_kept_but_gets_no_gradient():
    layer = DecoderLayer(8, 2, 16, dropout=0.0, self_attention=False, keep_unused_self_attention=True)
    assert "self_attn.in_proj_weight" in layer.state_dict() and "norm1.weight" in layer.state_dict()
    layer(torch.randn(2, 3, 8), torch.randn(5, 3, 8))[0].sum().backward()
    assert layer.self_attn.in_proj_weight.grad is None and layer.norm1.weight.grad is None
    assert layer.multihead_attn.in_proj_weight.grad is not None


def test_decoder_shared_final_norm_and_maps():
    norm = torch.nn.LayerNorm(8)
    dec = TransformerDecoder(DecoderLayer(8, 2, 16, dropout=0.0), 3, norm=norm)
    assert dec.norm is norm
    out, maps = dec(torch.randn(2, 4, 8), torch.randn(6, 4, 8), need_weights=True)
    assert out.shape == (2, 4, 8) and len(maps) == 3 and maps[0].shape == (4, 2, 6)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(4, 2))


def test_map_helpers():
    grid = tokens_to_grid(torch.arange(10.0).view(1, 10), has_cls=True)
    assert grid.shape == (1, 3, 3) and grid[0, 0, 0] == 1
    with pytest.raises(ValueError, match="square"):
        tokens_to_grid(torch.zeros(1, 8))
    up = upsample_map(torch.ones(2, 3, 4, 4), 16)
    assert up.shape == (2, 3, 16, 16) and torch.allclose(up, torch.ones_like(up))
    # a blurred delta sums to 1 away from the border and peaks where it was
    delta = torch.zeros(1, 21, 21)
    delta[0, 10, 10] = 1
    b = gaussian_blur(delta, 1.5)
    assert abs(b.sum().item() - 1) < 1e-5 and b[0].argmax().item() == 10 * 21 + 10
    assert b[0, 10, 11] < b[0, 10, 10]
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 9, 11)
    ref = torch.from_numpy(scipy_ndimage.gaussian_filter(x.numpy().astype("float64"), sigma=(0, 1.5, 1.5)))
    torch.testing.assert_close(gaussian_blur(x, 1.5), ref.float(), atol=1e-5, rtol=1e-5)
    m = exclude_border(torch.arange(36.0).view(6, 6), 1)
    assert m[0].eq(0).all() and m[:, -1].eq(0).all() and m[2, 2] == 14
