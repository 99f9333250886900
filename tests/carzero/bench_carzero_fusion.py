"""CARZero B x B fusion: the official per-call pair scoring (restated) vs our batched scorer, side by side.

    python tests/carzero/bench_carzero_fusion.py --batch 64 --repeats 3 --threads 2 [--device cuda]

What is timed (as `perf_official/carzero/fusion_scaling.json`): the fusion of a training step in both
directions + the loss, forward and backward (into the fusion parameters and the features), train mode
(dropout on), fp32, D = 768, the released fusion sizes. The encoders are replaced by fixed random features:
image tokens (B, 1 + 196, 768); text words (B, 97, 768) that are zero after each caption's words (as the
encoder makes them: 4 to 14 word slots incl. [CLS]/[SEP], like the harness' 6-12 token captions), text global
= their mean.

* official: `TQN_Model.forward` restated (below, from the spec §3.4 / the harness description): the memory is
  transposed to (S, B, D), each query row is repeated B times (`unsqueeze(1).repeat(1, B, 1)`), the shared
  LayerNorm is applied to all B x B query rows, the decoder runs with PyTorch MHA's default
  need_weights=True (per-layer head-averaged maps kept), then the MLP head; called once per direction.
* ours: `Carzero.score_i2t` / `score_t2i` (keys/values once per memory item, layer-0 queries projected
  once and broadcast, SDPA, the t2i zero pads folded into one weighted slot).

Scores are compared in eval mode (dropout off) on the same inputs and weights before the timing; the runs are
interleaved (official, ours, official, ours, ...) and the medians and their ratio are printed.

With `--harness perf_official/carzero/step_time.py --harness-python VENV/bin/python --harness-src SRC` the
official side is the official code itself (`CARZeroDQNWOSAGLMLP.forward` + `calc_loss` with the encoders
replaced by fixed random features, the harness' "fusion scaling" section, one subprocess per batch size) and
ours is timed in this process right after it, batch size by batch size, round after round:

    python tests/carzero/bench_carzero_fusion.py --batch 8 16 32 64 --rounds 2 --repeats 2 \
        --harness ../shared/perf_official/carzero/step_time.py --harness-python VENV/bin/python \
        --harness-src SRC --out fusion_vs_official.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
from cxrvlp.carzero.config import CarzeroModelConfig
from cxrvlp.carzero.loss import carzero_loss
from cxrvlp.carzero.model import CarzeroFusion


def official_tqn_forward(fusion: CarzeroFusion, image_features: torch.Tensor, text_features: torch.Tensor):
    """`TQN_Model.forward(image_features=MEM (N, S, D), text_features=Q (T, D))` -> (N, T, 1), maps."""
    n = image_features.shape[0]
    mem = image_features.transpose(0, 1)  # (S, N, D)
    q = text_features.unsqueeze(1).repeat(1, n, 1)  # (T, N, D): each query copied once per memory item
    mem = fusion.decoder_norm(mem)
    q = fusion.decoder_norm(q)
    feats, maps = fusion.decoder(q, mem, need_weights=True)  # MHA default need_weights=True, maps collected
    feats = fusion.dropout_feas(feats).transpose(0, 1)  # (N, T, D)
    return fusion.mlp_head(feats), maps


def official_fusion_step(fusion, img_g, img_l, txt_g, txt_l):
    """The official model forward's fusion part + calc_loss: i2t (B, B), t2i (B, B), loss."""
    img_tokens = torch.cat([img_g[:, None], img_l], dim=1)  # (B, 197, D)
    txt_tokens = torch.cat([txt_g[:, None], txt_l], dim=1)  # (B, 98, D)
    i2t = official_tqn_forward(fusion, img_tokens, txt_g)[0].squeeze(-1)
    t2i = official_tqn_forward(fusion, txt_tokens, img_g)[0].squeeze(-1)
    return i2t, t2i, carzero_loss(i2t, t2i)["loss"]


class OursFusion(torch.nn.Module):
    """The model's scoring methods on a bare fusion module (no encoders)."""

    def __init__(self, fusion: CarzeroFusion, compact: bool = True) -> None:
        super().__init__()
        from cxrvlp.carzero.model import Carzero

        self.fusion_module = fusion
        self.config = CarzeroModelConfig(compact_text_pads=compact)
        self.image_memory = Carzero.image_memory.__get__(self)
        self.text_memory = Carzero.text_memory.__get__(self)
        self.score_i2t = Carzero.score_i2t.__get__(self)
        self.score_t2i = Carzero.score_t2i.__get__(self)

    def step(self, img_g, img_l, txt_g, txt_l, word_mask):
        i2t = self.score_i2t(img_g, img_l, txt_g).logits
        t2i = self.score_t2i(img_g, txt_g, txt_l, word_mask).logits
        return i2t, t2i, carzero_loss(i2t, t2i)["loss"]


def make_inputs(b: int, d: int = 768, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    img_g = torch.randn(b, d, generator=g)
    img_l = torch.randn(b, 196, d, generator=g)
    n_words = torch.randint(4, 15, (b,), generator=g)  # [CLS] + words + [SEP]
    word_mask = torch.arange(97)[None] < n_words[:, None]
    txt_l = torch.randn(b, 97, d, generator=g) * word_mask[..., None]
    txt_g = txt_l.mean(dim=1)  # / 97 with the pads, as the encoder
    return [x.to(device) for x in (img_g, img_l, txt_g, txt_l, word_mask)]


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_step(fn, fusion, inputs, device, split: bool = False):
    """Seconds of forward + loss + backward (split: the pair (forward + loss, backward))."""
    feats = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    fusion.zero_grad(set_to_none=True)
    _sync(device)
    t0 = time.perf_counter()
    loss = fn(*feats)[2]
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    return (t1 - t0, t2 - t1) if split else t2 - t0


def run(batch: int, repeats: int, device: str = "cpu", compact: bool = True, seed: int = 0) -> dict:
    fusion = make_fusion(device, seed)  # released sizes: 4 layers, 4 heads, FFN 1024, MLP 1024-512-256-1
    ours = OursFusion(fusion, compact)
    inputs = make_inputs(batch, seed=seed, device=device)
    img_g, img_l, txt_g, txt_l, word_mask = inputs

    def official(a, b_, c, d_, _mask):
        return official_fusion_step(fusion, a, b_, c, d_)

    fusion.eval()
    with torch.no_grad():
        oi, ot, ol = official(*inputs)
        wi, wt, wl = ours.step(*inputs)
    diff = max((oi - wi).abs().max().item(), (ot - wt).abs().max().item())
    scale = max(oi.abs().max().item(), ot.abs().max().item())
    fusion.train()
    t_off, t_ours = [], []
    time_step(ours.step, fusion, inputs, device)  # warm-up (allocator, SDPA kernels)
    time_step(official, fusion, inputs, device)
    for _ in range(repeats):
        t_off.append(time_step(official, fusion, inputs, device))
        t_ours.append(time_step(ours.step, fusion, inputs, device))
    med_off, med_ours = statistics.median(t_off), statistics.median(t_ours)
    return {
        "batch": batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compact_text_pads": compact,
        "max_abs_logit_diff_eval": diff,
        "max_abs_logit": scale,
        "loss_official": float(ol),
        "loss_ours": float(wl),
        "official_s": t_off,
        "ours_s": t_ours,
        "official_median_s": med_off,
        "ours_median_s": med_ours,
        "speedup": med_off / med_ours,
    }


def make_fusion(device="cpu", seed: int = 0) -> CarzeroFusion:
    """The released fusion sizes with weights x3 (non-trivial attention), in train mode."""
    torch.manual_seed(seed)
    fusion = CarzeroFusion(768).to(device)
    with torch.no_grad():
        for p in fusion.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    return fusion.train()


def run_harness(harness: str, python: str, src: str, batch: int, steps: int, threads: int) -> dict:
    """One official fusion-scaling row (`step_time.py --skip-train --skip-infer --fusion-batches B`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "official.json")
        cmd = [python, harness, "--src", src, "--batch", str(batch), "--skip-train", "--skip-infer",
               "--fusion-batches", str(batch), "--fusion-steps", str(steps), "--threads", str(threads),
               "--rss-limit-mib", "9000", "--out", out]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"official harness failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)["fusion_loss_scaling"]["rows"][0]


def run_against_harness(a) -> list[dict]:
    """Official code (harness subprocess) and ours (this process), interleaved per batch size and round."""
    fusion = make_fusion()
    ours = OursFusion(fusion, compact=not a.no_compact)
    keys = (
        "official_fwd_bwd_s",
        "official_fwd_s",
        "official_loss",
        "ours_fwd_bwd_s",
        "ours_fwd_s",
        "ours_loss",
    )
    rows = {b: {"batch": b, "threads": a.threads, **{k: [] for k in keys}} for b in a.batch}
    for _ in range(a.rounds):
        for b in a.batch:
            r = rows[b]
            off = run_harness(a.harness, a.harness_python, a.harness_src, b, a.repeats + 1, a.threads)
            r["official_fwd_s"] += off["fwd_s"][1:]
            r["official_fwd_bwd_s"] += [f + w for f, w in zip(off["fwd_s"][1:], off["bwd_s"][1:])]
            r["official_loss"].append(off["loss"])
            inputs = make_inputs(b)
            time_step(ours.step, fusion, inputs, "cpu")  # warm-up, as the harness' first step
            for _ in range(a.repeats):
                fwd, bwd = time_step(ours.step, fusion, inputs, "cpu", split=True)
                r["ours_fwd_s"].append(fwd)
                r["ours_fwd_bwd_s"].append(fwd + bwd)
            with torch.no_grad():
                r["ours_loss"].append(float(ours.step(*inputs)[2]))
            print(f"B={b}: official {statistics.median(r['official_fwd_bwd_s']):.3f} s, ours "
                  f"{statistics.median(r['ours_fwd_bwd_s']):.3f} s so far", flush=True)  # fmt: skip
    for r in rows.values():
        r["official_median_s"] = statistics.median(r["official_fwd_bwd_s"])
        r["ours_median_s"] = statistics.median(r["ours_fwd_bwd_s"])
        r["speedup"] = r["official_median_s"] / r["ours_median_s"]
        r["fwd_speedup"] = statistics.median(r["official_fwd_s"]) / statistics.median(r["ours_fwd_s"])
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compact", action="store_true", help="keep the 98-slot t2i memory in ours")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="with --harness: rounds over all batch sizes")
    ap.add_argument("--harness", default=None, help="official step_time.py (time the official code)")
    ap.add_argument("--harness-python", default=None, help="the python of the harness venv (setup.sh)")
    ap.add_argument("--harness-src", default=None, help="the extracted official repository")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.harness:
        rows = run_against_harness(a)
        for r in rows:
            print(
                f"B={r['batch']} threads={a.threads}: official code {r['official_median_s']:.3f} s, ours "
                f"{r['ours_median_s']:.3f} s (fwd+bwd, medians of {len(r['ours_fwd_bwd_s'])}, interleaved) "
                "-> "
                f"{r['speedup']:.2f}x (forward alone {r['fwd_speedup']:.2f}x)",
                flush=True,
            )
        if a.out:
            with open(a.out, "w") as f:
                json.dump(rows, f, indent=1)
        return
    rows = []
    for b in a.batch:
        r = run(b, a.repeats, a.device, compact=not a.no_compact)
        rows.append(r)
        print(
            f"B={b} {r['device']} threads={r['threads']}: official {r['official_median_s']:.3f} s, ours "
            f"{r['ours_median_s']:.3f} s (median of {a.repeats}, interleaved) -> {r['speedup']:.2f}x; "
            f"max |logit diff| {r['max_abs_logit_diff_eval']:.2e} on logits up to {r['max_abs_logit']:.2f}; "
            f"loss {r['loss_official']:.6f} vs {r['loss_ours']:.6f}",
            flush=True,
        )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
