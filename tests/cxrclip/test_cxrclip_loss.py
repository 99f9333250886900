"""CXR-CLIP loss: the spec's hand-computed values (§10 items 5-10) and the distributed semantics."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from cxrvlp.cxrclip.loss import CxrClipLoss
from cxrvlp.cxrclip.testing import distributed_loss_worker


def _terms(i1, i2, t1, t2, t, **kw):
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    return CxrClipLoss(**kw)(f(i1), f(i2), f(t1), f(t2), torch.tensor(t, dtype=torch.float64))


def test_identity_embeddings():
    eye = np.eye(2)
    out = _terms(eye, eye, eye, eye, 1.0)
    assert out["loss"].item() == pytest.approx(2.5 * math.log(1 + math.exp(-1)), abs=1e-7)
    assert out["loss"].item() == pytest.approx(0.7831542, abs=1e-7)


@pytest.mark.parametrize(
    "t, want",
    [
        (
            1.0,
            dict(
                loss_i2t=0.6057216, loss_t2i=0.6057216, loss_i2i=0.7981389, loss_t2t=0.5981389, loss=1.7029300
            ),
        ),
        (
            1 / 0.07,
            dict(
                loss_i2t=0.9969914, loss_t2i=0.9969914, loss_i2i=2.9129868, loss_t2t=0.0558439, loss=3.9379001
            ),
        ),
    ],
)
def test_two_view_case(t, want):
    eye = np.eye(2)
    i2 = [[0.6, 0.8], [0.8, 0.6]]
    t2 = [[0.8, 0.6], [0.6, 0.8]]
    out = _terms(eye, i2, eye, t2, t)
    for k, v in want.items():
        assert out[k].item() == pytest.approx(v, abs=2e-7), k


def test_random_case_and_permutation_invariance():
    rng = np.random.default_rng(0)
    i1, i2, t1, t2 = (rng.standard_normal((4, 8)) for _ in range(4))
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    i1, i2, t1, t2 = map(norm, (i1, i2, t1, t2))
    out = _terms(i1, i2, t1, t2, 1 / 0.07)
    want = dict(
        loss_i2t=6.1836339, loss_t2i=6.5377558, loss_i2i=6.0635715, loss_t2t=6.3707178, loss=15.6096253
    )
    for k, v in want.items():
        assert out[k].item() == pytest.approx(v, abs=2e-6), k
    perm = [2, 0, 3, 1]
    permuted = _terms(i1[perm], i2[perm], t1[perm], t2[perm], 1 / 0.07)
    assert permuted["loss"].item() == pytest.approx(out["loss"].item(), abs=1e-10)


def test_zero_weights_is_symmetric_clip():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(5, 6), dim=-1), F.normalize(torch.randn(5, 6), dim=-1)
    out = CxrClipLoss(i2i_weight=0, t2t_weight=0)(img, img, txt, txt, torch.tensor(3.0))
    logits = 3.0 * img @ txt.t()
    y = torch.arange(5)
    clip = (F.cross_entropy(logits, y) + F.cross_entropy(logits.t(), y)) / 2
    assert torch.allclose(out["loss"], clip, atol=1e-6)


def test_label_smoothing_only_on_image_text_terms_in_training():
    torch.manual_seed(1)
    e = [F.normalize(torch.randn(4, 6), dim=-1) for _ in range(4)]
    plain = CxrClipLoss()(*e, torch.tensor(5.0))
    smooth = CxrClipLoss(label_smoothing=0.1)(*e, torch.tensor(5.0))
    evaluation = CxrClipLoss(label_smoothing=0.1)(*e, torch.tensor(5.0), is_train=False)
    assert torch.equal(smooth["loss_i2i"], plain["loss_i2i"]) and torch.equal(
        smooth["loss_t2t"], plain["loss_t2t"]
    )
    assert not torch.allclose(smooth["loss_i2t"], plain["loss_i2t"])
    assert torch.equal(evaluation["loss"], plain["loss"])


# ---- distributed: W=2 x B=2 must equal W=1 x B=4 (loss mean over ranks and DDP-averaged gradients) ------


def _setup():
    torch.manual_seed(0)
    x = torch.randn(4, 4, 6, dtype=torch.float64)  # 4 inputs (I1, I2, T1, T2) x batch 4 x features 6
    w_img, w_txt = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    return x, w_img, w_txt, torch.tensor(2.0, dtype=torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_single_process_full_batch():
    inputs = _setup()
    x, w_img, w_txt, scale = (t.clone() for t in inputs)
    params = [w_img.requires_grad_(), w_txt.requires_grad_(), scale.requires_grad_()]
    img = [F.normalize(x[k] @ w_img.t(), dim=-1) for k in (0, 1)]
    txt = [F.normalize(x[k] @ w_txt.t(), dim=-1) for k in (2, 3)]
    full = CxrClipLoss()(img[0], img[1], txt[0], txt[1], scale.exp())["loss"]
    full.backward()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=distributed_loss_worker, args=(r, 2, port, inputs, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r for r, _, _ in results) == [0, 1]
    for _, loss, grads in results:
        assert loss == pytest.approx(full.item(), abs=1e-12)
        for g, p in zip(grads, params):
            np.testing.assert_allclose(g, p.grad.numpy(), atol=1e-12)
