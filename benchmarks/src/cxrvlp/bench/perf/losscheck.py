"""Loss check of a vs-official comparison: both sides' loss terms on the SAME weights and the SAME batch.

Official side (`losscheck_official.py`, run with the official venv's python): the harness's model (its seed,
its variant), the harness's synthetic batch, the official loss terms once in eval mode under no_grad; it
saves {official state_dict, batch, terms} to a .pt file in a temp folder. Our side (here): that state_dict
through our strict official-checkpoint importer into the matching registered paper config, the same batch in
our input layout (the same token ids and masks), our loss terms in eval mode, compared term by term.

Eval mode on both sides: dropout off and BatchNorm on its running statistics (the state dict's), so the
values are deterministic. The official losses draw no randomness inside the loss: the random parts are in
the data (MAVL's 7 negative location prompts are drawn by the official `triplet_extraction` when the harness
builds its batch, AFLoc's sentence subset by the harness's `make_batch`); they are part of the saved batch,
so both sides see the same draws. MGCA's prototype Sinkhorn is deterministic.
"""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RTOL, ATOL = 1e-4, 1e-5
OFFICIAL_SCRIPT = Path(__file__).with_name("losscheck_official.py")
MODE = "eval mode on both sides (dropout off, BatchNorm on running statistics), no_grad, no optimizer step"
SHORT_MODE = "both sides in eval mode: dropout off, BatchNorm on running stats, no_grad"

# official term -> our term, per method. Official names are what the harness logs (MGCA/AFLoc `train_*`
# = lambda-weighted Lightning logs; CXR-CLIP its tensorboard scalars `steps_*` + CombinedLoss `total`; MAVL
# the four values its forward returns; CARZero the two weighted CE terms of `calc_loss` and its sum).
TERM_MAPS: dict[str, list[tuple[str, str]]] = {
    "mgca": [
        ("train_loss_ita", "ita_loss"),
        ("train_loss_local", "cta_loss"),
        ("train_loss_proto", "cpa_loss"),
        ("train_loss", "loss"),
    ],
    "cxrclip": [
        ("steps_i2t", "loss_i2t"),
        ("steps_t2i", "loss_t2i"),
        ("steps_i2i", "loss_i2i"),
        ("steps_t2t", "loss_t2t"),
        ("total", "loss"),
        ("logit_scale", "logit_scale"),
    ],
    "afloc": [
        ("train_global_report_loss", "global_report_loss"),
        ("train_local_sent_loss", "local_sent_loss"),
        ("train_local_word_loss", "local_word_loss"),
        ("train_loss", "loss"),
    ],
    "mavl": [
        ("loss_ce", "presence_loss"),
        ("loss_cl", "location_loss"),
        ("loss_cl_global", "global_loss"),
        ("loss", "loss"),
    ],
    "carzero": [("ce_loss_i2t", "i2t_loss"), ("ce_loss_t2i", "t2i_loss"), ("loss", "loss")],
}


# Tensors compared besides the loss terms (official extra["logits"] key -> our tensor): CARZero's losses sit
# within ~1e-3 of log(B) at a random init (near-uniform pair scores), so the B x B logits are checked too.
TENSOR_MAPS: dict[str, list[tuple[str, str]]] = {"carzero": [("i2t", "i2t_logits"), ("t2i", "t2i_logits")]}


def compare_tensors(official: Mapping[str, Any], ours: Mapping[str, Any], tensor_map, rtol=RTOL, atol=ATOL):
    """[{official, ours, shape, max_abs_diff, spread, equal}]: equal when every element is within
    atol + rtol * max|official| (shapes must agree)."""
    rows = []
    for off_name, our_name in tensor_map:
        a, b = official.get(off_name), ours.get(our_name)
        if a is None or b is None:
            rows.append({"official": off_name, "ours": our_name, "equal": False, "why": "missing"})
            continue
        a, b = a.double(), b.double()
        if a.shape != b.shape:
            rows.append({"official": off_name, "ours": our_name, "equal": False,
                         "why": f"shape {list(a.shape)} vs {list(b.shape)}"})  # fmt: skip
            continue
        diff = float((a - b).abs().max())
        scale = float(a.abs().max())
        rows.append(
            {
                "official": off_name,
                "ours": our_name,
                "shape": list(a.shape),
                "max_abs_diff": diff,
                "max_abs_official": scale,
                "spread_official": float(a.max() - a.min()),
                "equal": diff <= atol + rtol * scale,
            }
        )
    return rows


def close(a: float, b: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """|a - b| <= atol + rtol |a| (a = official), both finite."""
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(a)


def compare_terms(
    official: Mapping[str, float],
    ours: Mapping[str, float],
    term_map: Sequence[tuple[str, str]],
    rtol: float = RTOL,
    atol: float = ATOL,
) -> dict[str, Any]:
    """Term-by-term comparison; a mapped term missing on either side makes the whole check not equal."""
    rows, missing = [], []
    for off_name, our_name in term_map:
        if off_name not in official or our_name not in ours:
            missing.append(f"{off_name}->{our_name}")
            continue
        a, b = float(official[off_name]), float(ours[our_name])
        diff = abs(a - b)
        rows.append(
            {
                "official": off_name,
                "ours": our_name,
                "official_value": a,
                "ours_value": b,
                "abs_diff": diff,
                "rel_diff": diff / abs(a) if a else (0.0 if diff == 0 else math.inf),
                "equal": close(a, b, rtol, atol),
            }
        )
    return {
        "terms": rows,
        "compared": [r["official"] + "->" + r["ours"] for r in rows],
        "missing": missing,
        "max_abs_diff": max((r["abs_diff"] for r in rows), default=None),
        "max_rel_diff": max((r["rel_diff"] for r in rows), default=None),
        "rtol": rtol,
        "atol": atol,
        "equal": bool(rows) and not missing and all(r["equal"] for r in rows),
    }


def summary_text(rec: Mapping[str, Any] | None) -> str:
    """One line for the table notes: 'equal (terms ...)' or the terms that differ, with values."""
    if not rec:
        return "same weights and batch: not checked"
    if rec.get("error"):
        return f"same weights and batch: check FAILED ({rec['error'].strip().splitlines()[-1][:200]})"
    names = ", ".join(f"{r['official']}={r['ours']} {r['official_value']:.6g}" for r in rec["terms"])
    tens = rec.get("tensors") or []
    if tens:
        names += "; tensors " + ", ".join(
            f"{r['official']}={r['ours']} max abs diff {r.get('max_abs_diff', float('nan')):.2g}"
            f"{' (spread ' + format(r['spread_official'], '.3g') + ')' if 'spread_official' in r else ''}"
            f"{'' if r['equal'] else ' NOT equal'}"
            for r in tens
        )
    tol = f"rtol {rec['rtol']:g}, atol {rec['atol']:g}; max abs diff {rec['max_abs_diff']:.2g}; {SHORT_MODE}"
    if rec["equal"]:
        return f"same weights and batch: equal (terms {names}; {tol})"
    bad = [r for r in rec["terms"] if not r["equal"]]
    parts = [
        f"{r['official']} official {r['official_value']:.7g} vs ours {r['ours_value']:.7g} "
        f"(abs {r['abs_diff']:.2g}, rel {r['rel_diff']:.2g})"
        for r in bad
    ]
    miss = f"; missing {rec['missing']}" if rec.get("missing") else ""
    return f"same weights and batch: NOT equal: {'; '.join(parts)}{miss} ({tol})"


# ------------------------------------------------------------------------------------------ our side
def _floats(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if getattr(v, "numel", lambda: 1)() == 1}


def _split(d: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(scalars as floats, tensors of more than one element)."""
    scalars = _floats(d)
    return scalars, {k: v for k, v in d.items() if k not in scalars}


def _with_total(t: Mapping[str, Any], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The `*_loss` terms of `t` (or those named in `keys`) and their sum as `loss` (`sum_losses`)."""
    from cxrvlp.core.training.task import sum_losses

    terms = {k: v for k, v in t.items() if k.endswith("_loss")} if keys is None else {k: t[k] for k in keys}
    return {**terms, "loss": sum_losses(terms)}


def _tokens(t: Mapping[str, Any]) -> dict[str, Any]:
    return {k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in t}


def _vocab_file(words: Sequence[str], folder: Path) -> Path:
    p = folder / "vocab.txt"
    p.write_text("\n".join(words) + "\n", encoding="utf-8")
    return p


def ours_mgca(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    import torch
    from cxrvlp.mgca.official import load_official_checkpoint
    from cxrvlp.mgca.train import MGCATrainModule

    name = name or ("mgca-vit-b16" if rec["extra"]["variant"] == "vit" else "mgca-r50")
    model = load_official_checkpoint(rec["state_dict"], name=name, strict=True)
    b = rec["batch"]
    piece = torch.tensor([w.startswith("##") for w in rec["extra"]["vocab"]], dtype=torch.bool)
    batch = {
        "images": b["imgs"],
        "input_ids": b["caption_ids"],
        "attention_mask": b["attention_mask"],
        "piece_mask": piece[b["caption_ids"]],  # the harness vocab's '##' continuation pieces
    }
    module = MGCATrainModule(model).eval()
    with torch.no_grad():
        return _floats(_with_total(module(batch)))


def ours_cxrclip(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    import torch
    from cxrvlp.cxrclip.loss import CxrClipLoss
    from cxrvlp.cxrclip.official import load_official_checkpoint

    model = load_official_checkpoint(rec["state_dict"], name=name or "cxrclip-r50", strict=True).eval()
    lc = rec["extra"]["loss"]
    loss = CxrClipLoss(
        i2i_weight=lc["i2i_weight"],
        t2t_weight=lc["t2t_weight"],
        loss_ratio=lc["loss_ratio"],
        label_smoothing=lc["label_smoothing"],
    )
    b = rec["batch"]
    with torch.no_grad():
        out = model(b["images"], b["image_views"], _tokens(b["text_tokens"]), _tokens(b["text_tokens2"]))
        t = loss(
            out["image_embeddings"],
            out["image_view_embeddings"],
            out["text_embeddings"],
            out["text_embeddings2"],
            out["logit_scale"],
            is_train=True,
        )
    keys = ("loss_i2t", "loss_t2i", "loss_i2i", "loss_t2t", "loss")
    return {**_floats({k: t[k] for k in keys}), "logit_scale": float(out["logit_scale"])}


def ours_afloc(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    import torch
    from cxrvlp.afloc.data import AFLocTokenizer
    from cxrvlp.afloc.loss import TERMS
    from cxrvlp.afloc.official import load_official_checkpoint
    from cxrvlp.afloc.train import AFLocTrainModule

    model = load_official_checkpoint(rec["state_dict"], name=name or "afloc-r50", strict=True)
    tok = AFLocTokenizer.from_vocab_file(
        _vocab_file(rec["extra"]["vocab"], folder), int(rec["extra"]["max_length"])
    )
    b = rec["batch"]
    ids = b["caption_ids"]
    batch = {
        "images": b["imgs"],
        "input_ids": ids,
        "attention_mask": b["attention_mask"],
        "token_type_ids": b.get("token_type_ids", torch.zeros_like(ids)),
        **tok.ids_to_masks(ids),  # word pieces and sentence brackets from the harness's vocab
    }
    module = AFLocTrainModule(model).eval()
    with torch.no_grad():
        lo = module.run(batch)[2]
    return _floats({k: lo[k] for k in (*TERMS, "loss")})


def ours_mavl(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    import torch
    from cxrvlp.mavl.loss import MavlLoss
    from cxrvlp.mavl.official import load_official_checkpoint
    from cxrvlp.mavl.train import MavlTaskModule

    ex = rec["extra"]
    model = load_official_checkpoint(
        rec["state_dict"], name=name or "mavl-r50", strict=True, books=ex["books"]
    )
    loss = MavlLoss(ce_weight=float(ex.get("ce") or 1.0), cl_global=float(ex.get("cl_global") or 0.1))
    b = rec["batch"]
    batch = {"images": b["image"], "labels": b["label"], "location_index": b["index"]}
    module = MavlTaskModule(model, loss).eval()
    with torch.no_grad():
        return _floats(_with_total(module(batch)))


def _carzero_model(rec: Mapping[str, Any], folder: Path, name: str | None = None):
    from cxrvlp.carzero.official import load_official_checkpoint
    from cxrvlp.carzero.train import CarzeroTrainModule
    from cxrvlp.core.text.tokenize import load_tokenizer

    model = load_official_checkpoint(rec["state_dict"], name=name or "carzero-vit-b16", strict=True)
    model.set_tokenizer(load_tokenizer(_vocab_file(rec["extra"]["vocab"], folder), do_lower_case=True))
    return CarzeroTrainModule(model).eval()


def ours_carzero(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    import torch

    module = _carzero_model(rec, folder, name)
    b = rec["batch"]
    tokens = {"input_ids": b["caption_ids"], "attention_mask": b["attention_mask"]}
    tokens["token_type_ids"] = b.get("token_type_ids", torch.zeros_like(b["caption_ids"]))
    with torch.no_grad():
        t = module({"images": b["imgs"], "tokens": tokens})
    logits = {k: t[k] for k in ("i2t_logits", "t2i_logits")}
    return {**_floats(_with_total(t, ("i2t_loss", "t2i_loss"))), **logits}


def ours_carzero_fusion(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    """The fusion arm: the harness's fixed random features through our pair scoring + loss alone."""
    import torch

    module = _carzero_model(rec, folder, name)
    f = rec["extra"]["features"]
    img_l = f["img_l"].flatten(2).transpose(1, 2)  # (B, 768, 14, 14) -> (B, 196, 768), row-major patches
    txt_l = f["txt_l"].transpose(1, 2)  # (B, 768, L) -> (B, L, 768): every slot a word (no pad mask)
    mask = torch.ones(txt_l.shape[:2], dtype=torch.bool)
    m = module.model
    with torch.no_grad():
        i2t = m.score_i2t(f["img_g"], img_l, f["txt_g"]).logits
        t2i = m.score_t2i(f["img_g"], f["txt_g"], txt_l, mask).logits
        t = module.loss(i2t, t2i)
    return {**_floats(_with_total(t, ("i2t_loss", "t2i_loss"))), "i2t_logits": i2t, "t2i_logits": t2i}


OURS: dict[str, Callable[..., dict[str, Any]]] = {
    "mgca": ours_mgca,
    "cxrclip": ours_cxrclip,
    "afloc": ours_afloc,
    "mavl": ours_mavl,
    "carzero": ours_carzero,
    "carzero-fusion": ours_carzero_fusion,
}


def our_side(rec: Mapping[str, Any], folder: Path, name: str | None = None) -> dict[str, Any]:
    """Our loss terms (and compared tensors) on the record's official weights and batch; `name`: the
    registered model to import into (default: the method's paper config)."""
    method = rec["method"]
    key = "carzero-fusion" if method == "carzero" and "features" in rec.get("extra", {}) else method
    return OURS[key](rec, folder, name)


# ------------------------------------------------------------------------------------------ running
def run_official_side(paths: Any, method: str, harness_args: list[str], out: Path, timeout=None) -> str:
    """The official script in the official venv; returns its log tail. Raises on failure."""
    cmd = [
        str(paths.python), str(OFFICIAL_SCRIPT), "--method", method, "--harness", str(paths.harness),
        "--src", str(paths.src), "--out", str(out), "--", *harness_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for k in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(k, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(out.parent))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"official loss-check side failed (rc {proc.returncode}): {' '.join(cmd)}\n"
            f"{(proc.stdout + proc.stderr)[-4000:]}"
        )
    return (proc.stdout + proc.stderr)[-2000:]


def check(comp: Any, paths: Any, timeout: float | None = None, log=None) -> dict[str, Any]:
    """The loss-check record of one comparison (never raises: a failure is recorded under `error`)."""
    import torch

    rec: dict[str, Any] = {"mode": MODE, "official_script": OFFICIAL_SCRIPT.name}
    try:
        with tempfile.TemporaryDirectory(prefix=f"losscheck-{comp.id}-") as tmp:
            folder = Path(tmp)
            pt = folder / "official.pt"
            if log:
                log(f"{comp.id}: loss check, official side")
            run_official_side(paths, comp.method, list(comp.harness_args), pt, timeout)
            off = torch.load(pt, map_location="cpu", weights_only=True)
            pt.unlink()  # up to ~1 GB of weights: gone before our model is built
            torch.set_num_threads(2)
            if log:
                log(f"{comp.id}: loss check, our side")
            ours, ours_tensors = _split(our_side(off, folder))
            official_terms = {k: float(v) for k, v in off["terms"].items()}
            tensors = compare_tensors(
                off["extra"].get("logits") or {}, ours_tensors, TENSOR_MAPS.get(comp.method, [])
            )
            rec.update(official_mode=off.get("mode"), state_dict_tensors=len(off["state_dict"]))
            del off
            gc.collect()
        rec.update(compare_terms(official_terms, ours, TERM_MAPS[comp.method]))
        if tensors:
            rec["tensors"] = tensors
            rec["equal"] = rec["equal"] and all(r["equal"] for r in tensors)
        rec["official_all_terms"], rec["ours_all_terms"] = official_terms, ours
    except Exception as e:  # recorded, so a failing method never hides the others
        rec["error"] = f"{type(e).__name__}: {str(e)[-3000:]}"
        rec["equal"] = False
    return rec


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a thin wrapper for manual runs
    import argparse
    import json

    from cxrvlp.bench.perf import official as off

    ap = argparse.ArgumentParser(description="loss check of one comparison (prints the record)")
    ap.add_argument("comparison", choices=sorted(off.COMPARISONS))
    ap.add_argument("--vs-official", required=True)
    ap.add_argument("--harness-dir", required=True)
    a = ap.parse_args(argv)
    comp = off.COMPARISONS[a.comparison]
    paths = off.resolve_paths(comp.method, a.vs_official, a.harness_dir)
    print(json.dumps(check(comp, paths, log=lambda s: print(s, file=sys.stderr)), indent=1))


if __name__ == "__main__":
    main()
