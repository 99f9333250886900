"""Our side of a perf measurement: one registered model's train step and inference pass, timed here.

    python -m cxrvlp.bench.perf.ours '{"model": "mgca-vit-b16", "batch": 8, "steps": 3}' --out rec.json

The workload comes from the method's `MethodSpec.example_batch` (random init, synthetic batch), reshaped to
the token-row lengths a comparison asks for (`text_lengths`: the official harness's per-row non-pad counts),
so both sides see the same shapes. The optimizer and gradient clipping are the method's paper recipe's. The
record holds per-step seconds (warm-up steps excluded), the loss terms of every step, inference seconds,
model FLOPs (FlopCounterMode) and the process's peak RSS. Each measurement runs in its own process so that
peak RSS belongs to one model (`run_in_subprocess`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

_DEFAULT_STEPS = 3


@dataclass
class Workload:
    """What to measure; every field is JSON-able (it crosses the process boundary)."""

    model: str
    batch: int = 8
    steps: int = _DEFAULT_STEPS  # timed train steps (after `warmup`)
    warmup: int = 1
    infer_steps: int = _DEFAULT_STEPS  # timed inference passes (after one warm-up pass)
    infer_batch: int | None = None  # default: batch
    seed: int = 0
    threads: int | None = None
    dtype: str = "fp32"  # fp32 | bf16 (CPU autocast)
    compile: bool = False
    channels_last: bool = False
    flops: bool = True
    train: bool = True
    infer: bool = True
    # token rows: per-row non-pad lengths (incl. [CLS]/[SEP]); pad_to: row width (None: the longest row)
    text_lengths: list[int] | None = None
    text_lengths2: list[int] | None = None  # CXR-CLIP's second text (text_tokens2)
    infer_text_lengths: list[int] | None = None
    pad_to: int | None = None
    piece_fraction: float = 0.0  # share of word tokens marked as '##' pieces (MGCA, AFLoc word merging)
    sentences: list[int] | None = None  # AFLoc: sentence units per row
    present_per_row: int | None = None  # MAVL: present (and as many absent) entities per study, rest unknown
    fusion_batch: int | None = None  # CARZero: time the B x B fusion + loss alone at this B


def _set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(n)


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------ batches
def _token_rows(
    tok: Mapping[str, torch.Tensor],
    lengths: list[int],
    pad_to: int | None,
    vocab_lo: int,
    vocab_hi: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """`tok` rebuilt with one row per length: [CLS] random words [SEP] pads (ids of CLS/SEP kept from tok)."""
    ids0, mask0 = tok["input_ids"], tok["attention_mask"]
    cls_id = int(ids0[0, 0])
    sep_id = int(ids0[0, int(mask0[0].sum()) - 1])
    width = pad_to or max(lengths)
    if max(lengths) > width or min(lengths) < 2:
        raise ValueError(f"text lengths {lengths} must be in [2, pad_to={width}]")
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, n - 1] = cls_id, sep_id
        ids[i, 1 : n - 1] = torch.randint(vocab_lo, vocab_hi, (n - 2,), generator=g)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).to(mask0.dtype)
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in tok:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def _word_positions(mask: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(B, L) bool: real tokens other than [CLS] and the row's last real token ([SEP])."""
    pos = torch.arange(mask.shape[1])[None]
    n = torch.tensor(lengths)[:, None]
    return (pos >= 1) & (pos < n - 1)


def _pieces(words: torch.Tensor, fraction: float) -> torch.Tensor:
    """Every k-th word token (never the first of a row) marked as a '##' continuation."""
    if fraction <= 0:
        return torch.zeros_like(words)
    k = max(2, round(1 / fraction))
    rank = words.long().cumsum(dim=1)
    return words & (rank % k == 0) & (rank > 1)


def _vocab_range(ids: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    inner = ids[:, 1:][mask[:, 1:].bool()]
    return int(inner.min()) + 1, int(inner.max())  # +1: the minimum may be the [SEP] id


def build_workload(w: Workload, batch_size: int, lengths: list[int] | None, lengths2: list[int] | None):
    """(task module, batch) of `w.model` at `batch_size` with the requested token rows."""
    from cxrvlp.core.registry import get_method, get_model_entry

    spec = get_method(get_model_entry(w.model).method)
    if spec.example_batch is None:
        raise SystemExit(f"{spec.name} provides no example_batch")
    torch.manual_seed(w.seed)
    module, batch = spec.example_batch(w.model, batch_size)
    method = spec.name
    if lengths is not None and len(lengths) != batch_size:
        raise ValueError(f"{len(lengths)} text lengths for a batch of {batch_size}")

    def reshape(tok: Mapping[str, torch.Tensor], rows: list[int], seed: int) -> dict[str, torch.Tensor]:
        lo, hi = _vocab_range(tok["input_ids"], tok["attention_mask"])
        return _token_rows(tok, rows, w.pad_to, lo, hi, seed)

    if method in ("mgca", "afloc") and lengths is not None:
        new = reshape(batch, lengths, w.seed)
        words = _word_positions(new["attention_mask"], lengths)
        if method == "afloc":
            period = int(module.model.cfg.period_token_id)
            sents = w.sentences or [max(1, (n - 2) // 6) for n in lengths]
            for i, (n, s) in enumerate(zip(lengths, sents)):
                # s sentence units: a '.' closing each of s equal spans of the row's words
                span = max(1, (n - 2) // s)
                for j in range(1, s + 1):
                    new["input_ids"][i, min(n - 2, j * span)] = period
            new["bracket_mask"] = ~words
            new["token_type_ids"] = torch.zeros_like(new["input_ids"])
            words = words & (new["input_ids"] != period)
        new["piece_mask"] = _pieces(words, w.piece_fraction)
        batch.update(new)
    elif method == "cxrclip":
        if lengths is not None:
            batch["text_tokens"] = reshape(batch["text_tokens"], lengths, w.seed)
        if lengths2 is not None:
            batch["text_tokens2"] = reshape(batch["text_tokens2"], lengths2, w.seed + 1)
    elif method == "carzero" and lengths is not None:
        batch["tokens"] = reshape(batch["tokens"], lengths, w.seed)
    elif method == "mavl" and w.present_per_row is not None:
        g = torch.Generator().manual_seed(w.seed)
        e = batch["labels"].shape[1]
        labels = torch.full((batch_size, e), -1.0)
        for i in range(batch_size):
            order = torch.randperm(e, generator=g)
            labels[i, order[: w.present_per_row]] = 1.0
            labels[i, order[w.present_per_row : 2 * w.present_per_row]] = 0.0
        batch["labels"] = labels
    return module, batch


# ------------------------------------------------------------------------------------------ inference bodies
def _infer_fn(method: str) -> Callable[[torch.nn.Module, dict], Any]:
    """The zero-shot scoring body of `method` on a batch: image and text embeddings + the B x B scores."""

    def mgca(m, b):
        img = m.encode_image(b["images"], need_attention=False)
        txt = m.encode_text(b["input_ids"], b["attention_mask"], b["piece_mask"])
        return img.img_emb @ txt.report_emb.t()

    def cxrclip(m, b):
        return m.encode_image(b["images"]) @ m.encode_text(**b["text_tokens"]).t()

    def carzero(m, b):
        t = b["tokens"]
        g, loc = m.encode_image(b["images"])
        tg, tw, out = m.encode_text(t["input_ids"], t["attention_mask"], t.get("token_type_ids"), True)
        i2t = m.score_i2t(g, loc, tg).logits
        t2i = m.score_t2i(g, tg, tw, out["word_mask"]).logits
        return (i2t + t2i.t()) / 2

    def afloc(m, b):
        img = m.encode_image(b["images"])
        txt = m.encode_text(
            b["input_ids"], b["attention_mask"], b["piece_mask"], b["bracket_mask"], b["token_type_ids"]
        )
        norm = torch.nn.functional.normalize
        return norm(img.emb_g, dim=-1) @ norm(txt.report_emb, dim=-1).t()

    def mavl(m, b):
        _, x, mem = m.encode_image(b["images"])
        out = m.decode(x, mem)
        return out.cls_logits.softmax(-1), out.global_sim

    return {"mgca": mgca, "cxrclip": cxrclip, "carzero": carzero, "afloc": afloc, "mavl": mavl}[method]


# ------------------------------------------------------------------------------------------ the optimizer
def _recipe_for(model_name: str) -> dict[str, Any]:
    """The packaged recipe whose model_name is `model_name` (optimizer, grad_clip_norm); {} when none."""
    from cxrvlp.core.registry import get_method, get_model_entry
    from cxrvlp.core.training.config import read_yaml_mapping

    spec = get_method(get_model_entry(model_name).method)
    for name in spec.recipes():
        doc = read_yaml_mapping(spec.recipe(name))
        if doc.get("model_name") == model_name:
            return {"recipe": name, **doc}
    return {}


def build_optimizer_for(
    module: torch.nn.Module, model_name: str
) -> tuple[torch.optim.Optimizer, float | None, str]:
    """(optimizer, grad_clip_norm, recipe name) from the model's paper recipe (AdamW lr 1e-4 when none)."""
    from cxrvlp.core.training.config import OptimizerConfig, config_from_dict
    from cxrvlp.core.training.optim import build_optimizer, split_decay_groups

    doc = _recipe_for(model_name)
    ocfg = config_from_dict(OptimizerConfig, doc.get("optimizer") or {}, where=f"{model_name} optimizer")
    params: Any = [p for p in module.parameters() if p.requires_grad]
    if model_name.startswith("mavl"):  # MavlTask.param_groups: no decay on 1-D params and temp
        params = split_decay_groups(module, ocfg.weight_decay, no_decay_names=("model.temp",))
    return build_optimizer(ocfg, params), doc.get("grad_clip_norm"), doc.get("recipe", "")


# ------------------------------------------------------------------------------------------ measurement
def _autocast(dtype: str):
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if dtype != "fp32":
        raise ValueError(f"dtype must be fp32 or bf16, got {dtype!r}")
    return contextlib.nullcontext()


def _to_channels_last(batch: dict) -> dict:
    return {
        k: (v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.ndim == 4 else v)
        for k, v in batch.items()
    }


def _loss_floats(terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items() if k.endswith("_loss")}


def _conv_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding,
    _groups, output_mask, out_shape=None, **_kw,
) -> int:  # fmt: skip
    """Each requested gradient of a convolution (input, weight) costs its forward FLOPs. torch's own formula
    ignores `groups` here, so a depthwise convolution's backward counted C times too much (EfficientNet-Lite0
    in the `small` configs: 32 of 35 train GFLOP/sample, "utilisation" above 100 %)."""
    from torch.utils.flop_counter import conv_flop_count

    fwd = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)  # w_shape has C_in/groups
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """(total FLOPs, per-op FLOPs) of one call of `fn` under FlopCounterMode (grouped-conv backward fixed)."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        fn()
    per_op = {str(k): float(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return float(fc.get_total_flops()), per_op


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def measure(w: Workload) -> dict[str, Any]:
    """Run `w` in this process; the record described in the module docstring."""
    from cxrvlp.core.registry import get_model_entry
    from cxrvlp.core.training import sum_losses

    _set_threads(w.threads)
    method = get_model_entry(w.model).method
    rec: dict[str, Any] = {"side": "ours", "workload": asdict(w), "method": method}
    t_build = time.perf_counter()
    module, batch = build_workload(w, w.batch, w.text_lengths, w.text_lengths2)
    rec["build_s"] = time.perf_counter() - t_build
    rec["params_trainable"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if w.channels_last:
        module = module.to(memory_format=torch.channels_last)
        batch = _to_channels_last(batch)
    run = torch.compile(module) if w.compile else module

    if w.fusion_batch:
        rec["fusion"] = _measure_carzero_fusion(module, w)
    if w.train:
        opt, clip, recipe = build_optimizer_for(module, w.model)
        rec["optimizer"] = {"recipe": recipe, "class": type(opt).__name__, "grad_clip_norm": clip}
        module.train()

        def fwd_bwd() -> dict[str, torch.Tensor]:
            with _autocast(w.dtype):
                terms = run(batch)
                loss = sum_losses(terms)
            loss.backward()
            return terms

        times, losses = [], []
        for i in range(w.warmup + w.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            terms = fwd_bwd()
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            dt = time.perf_counter() - t0
            losses.append(_loss_floats(terms))  # after the clock: the step itself never syncs on a value
            if i >= w.warmup:
                times.append(dt)
        rec["train"] = {
            "step_s": times,
            "median_s": _median(times),
            "samples_per_s": w.batch / _median(times) if times else None,
            "losses": losses,
            "losses_finite": all(math.isfinite(v) for d in losses for v in d.values()),
        }
        if w.flops:
            opt.zero_grad(set_to_none=True)
            total, per_op = count_flops(fwd_bwd)
            opt.zero_grad(set_to_none=True)
            rec["train"]["flops_per_sample"] = total / w.batch
            rec["train"]["flops_by_op"] = per_op
        del opt
    if w.infer:
        ib = w.infer_batch or w.batch
        if ib != w.batch or w.infer_text_lengths is not None:
            _, ibatch = build_workload(w, ib, w.infer_text_lengths, w.infer_text_lengths)
            if w.channels_last:
                ibatch = _to_channels_last(ibatch)
        else:
            ibatch = batch
        body = _infer_fn(method)
        model = module.model
        model.eval()

        def infer_once() -> Any:
            with torch.no_grad(), _autocast(w.dtype):
                return body(model, ibatch)

        times = []
        for i in range(1 + w.infer_steps):
            t0 = time.perf_counter()
            infer_once()
            if i:
                times.append(time.perf_counter() - t0)
        rec["inference"] = {
            "batch": ib,
            "step_s": times,
            "median_s": _median(times),
            "samples_per_s": ib / _median(times) if times else None,
            "what": "no_grad eval: image + text embeddings of the batch and the B x B zero-shot scores "
            "(MAVL: decoder over the 75 x 9 entity queries, presence softmax and aspect similarities)",
        }
        if w.flops:
            total, per_op = count_flops(infer_once)
            rec["inference"]["flops_per_sample"] = total / ib
        model.train()
    rec["peak_rss_mib"] = peak_rss_mib()
    rec["threads"] = torch.get_num_threads()
    return rec


def _measure_carzero_fusion(module: torch.nn.Module, w: Workload) -> dict[str, Any]:
    """CARZero's B x B pair scoring + loss alone at B = w.fusion_batch, on fixed random features (the official
    harness's `--fusion-batches`): fwd and bwd seconds per repetition, the first not counted."""
    m = module.model
    b = int(w.fusion_batch or 0)
    g = torch.Generator().manual_seed(w.seed)
    d = int(getattr(m, "embed_dim", None) or 768)  # the fusion width
    n_words = int(m.config.text_max_length)
    img_g = torch.randn(b, d, generator=g).requires_grad_()
    img_l = torch.randn(b, 196, d, generator=g).requires_grad_()
    txt_g = torch.randn(b, d, generator=g).requires_grad_()
    txt_l = torch.randn(b, n_words, d, generator=g).requires_grad_()
    word_mask = torch.ones(b, n_words, dtype=torch.bool)
    module.train()
    fwd, bwd, loss_v = [], [], None
    for _ in range(1 + w.steps):
        t0 = time.perf_counter()
        i2t = m.score_i2t(img_g, img_l, txt_g).logits
        t2i = m.score_t2i(img_g, txt_g, txt_l, word_mask).logits
        terms = module.loss(i2t, t2i)
        loss = terms["i2t_loss"] + terms["t2i_loss"]
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        module.zero_grad(set_to_none=True)
        for t in (img_g, img_l, txt_g, txt_l):
            t.grad = None
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        loss_v = float(loss.detach())
    tot = [a + c for a, c in zip(fwd[1:], bwd[1:])]
    return {
        "B": b,
        "fwd_s": fwd[1:],
        "bwd_s": bwd[1:],
        "fwd_bwd_s": tot,
        "median_s": _median(tot),
        "loss": loss_v,
    }


def run_in_subprocess(w: Workload, out: Path, timeout: float | None = None) -> dict[str, Any]:
    """`measure(w)` in a fresh interpreter (its own peak RSS); the record it wrote to `out`."""
    cmd = [sys.executable, "-m", "cxrvlp.bench.perf.ours", json.dumps(asdict(w)), "--out", str(out)]
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cache bytecode: each measured process starts faster
    if w.threads:
        env["OMP_NUM_THREADS"] = str(w.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"ours ({w.model}) failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    """CLI: a Workload as a JSON object -> the record (stdout, or --out)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", help="JSON object with the Workload fields (model required)")
    ap.add_argument("--out", default=None, help="write the record here (default: stdout)")
    a = ap.parse_args(argv)
    try:
        fields = json.loads(a.workload)
        w = Workload(**fields)
    except (json.JSONDecodeError, TypeError) as e:
        raise SystemExit(f"bad workload {a.workload!r}: {e}") from e
    rec = measure(w)
    text = json.dumps(rec, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
