"""Parity harness: run a fixture made by the official AFLoc code through our model (shared/parity/afloc).

`run_parity_fixture(fixture_dir, dtype)` builds the model from the fixture's config.json, loads its official
weights (+ the shared ResNet-50 trunk) through `load_official_checkpoint`, runs inputs.safetensors and returns
every tensor named in outputs.safetensors under the same name. `dtype=torch.float64` computes a float64 twin
through the same code path (for tolerance policies that scale with |fp32 - fp64|).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.afloc.config import AFLocConfig
from cxrvlp.afloc.data import AFLocTokenizer
from cxrvlp.afloc.loss import AFLocLoss
from cxrvlp.afloc.official import load_official_checkpoint
from cxrvlp.afloc.zeroshot import grounding_heatmaps, pos_neg_probability, similarity_maps
from cxrvlp.core.errors import DatasetNotFoundError
from cxrvlp.core.testing.parity import default_dtype
from torch import nn


def _find(fixture: Path, rel: str | None, default: str) -> Path:
    cands = ([fixture / rel] if rel else []) + [fixture / default, fixture.parent / default]
    for c in cands:
        if c.exists():
            return c
    raise DatasetNotFoundError("afloc parity fixture", fixture / (rel or default), "a fixture file")


def config_from_fixture(doc: dict[str, Any], tok: AFLocTokenizer) -> AFLocConfig:
    """AFLocConfig of a fixture's config.json (its `model` section) and vocabulary."""
    m = doc["model"]
    te, tx, af = m["text_encoder"], m["text"], m.get("afloc", {})
    keys = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps", "pad_token_id",
    )  # fmt: skip
    bert = {k: te[k] for k in keys if k in te}
    up = m.get("vision", {}).get("input_upsample", [299, 299])
    return AFLocConfig(
        image_encoder="resnet50",
        upsample_to=int(up[0]) if up else None,
        image_size=int(doc.get("image_size", 224)),
        bert=bert,
        attn_implementation=te.get("attn_implementation", "eager"),
        text_max_length=int(tx.get("max_length", 97)),
        last_n_layers=int(tx.get("last_n_layers", 4)),
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        period_token_id=tok.period_token_id,
        temp1=float(af.get("temp1", 4.0)),
        temp2=float(af.get("temp2", 5.0)),
        temp3=float(af.get("temp3", 10.0)),
        use_global_report_loss=bool(af.get("use_global_report_loss", True)),
        use_local_sent_loss=bool(af.get("use_local_sent_loss", True)),
        use_local_word_loss=bool(af.get("use_local_word_loss", True)),
        global_report_loss_weight=float(af.get("global_report_loss_weight", 1.0)),
        local_sent_loss_weight=float(af.get("local_sent_loss_weight", 1.0)),
        local_word_loss_weight=float(af.get("local_word_loss_weight", 1.0)),
        local_f_embedder=bool(af.get("use_ce_loss", True)),
    )


def _official_weights(fixture: Path, doc: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    w = doc.get("weights", {})
    sd = load_file(str(_find(fixture, w.get("file"), "weights.safetensors")))
    prefix = w.get("key_prefix", "afloc.")
    if not any(k.startswith(f"{prefix}img_encoder.model.") for k in sd):
        rel = str(w.get("resnet_weights", "")).split(" ")[0] or None
        trunk = load_file(str(_find(fixture, rel, "../_encoders/resnet50_fp16.safetensors")))
        sd.update({f"{prefix}img_encoder.model.{k}": v for k, v in trunk.items() if not k.startswith("fc.")})
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _text_batch(tok: AFLocTokenizer, inputs: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    ids = inputs[f"{prefix}input_ids" if prefix else "caption_ids"]
    out = {
        "input_ids": ids,
        "attention_mask": inputs[f"{prefix}attention_mask"],
        "token_type_ids": inputs.get(f"{prefix}token_type_ids", torch.zeros_like(ids)),
    }
    out.update(tok.ids_to_masks(ids))
    return out


def _encode_text(model, t: dict[str, torch.Tensor]):
    return model.encode_text(
        t["input_ids"], t["attention_mask"], t["piece_mask"], t["bracket_mask"], t["token_type_ids"]
    )


def _bn_train_only(model: nn.Module) -> None:
    # spec correction 3: eval mode everywhere (no dropout, incl. functional attention dropout), BN in train
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()


def run_parity_fixture(
    fixture_dir: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Every tensor of the fixture's outputs.safetensors, computed by our code (eval pass, backward for the
    gradient norms, BN-train pass), under the same names. `dtype=torch.float64` runs the same code path in
    float64 (model and float inputs cast, token ids unchanged) for `cxrvlp.core.testing.judge_parity`."""
    with default_dtype(dtype):
        return _run_parity_fixture(Path(fixture_dir), dtype)


def _run_parity_fixture(fixture: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from cxrvlp.core.metrics.grounding import AFLOC_THRESHOLDS, cnr, iou_at_thresholds, minmax_normalize
    from safetensors import safe_open
    from safetensors.torch import load_file

    doc = json.loads((fixture / "config.json").read_text())
    tok = AFLocTokenizer.from_vocab_file(
        _find(fixture, doc.get("vocab"), "vocab.txt"), int(doc["model"]["text"].get("max_length", 97))
    )
    cfg = config_from_fixture(doc, tok)
    sd = _official_weights(fixture, doc)
    inputs = load_file(str(_find(fixture, None, "inputs.safetensors")))
    with safe_open(str(fixture / "outputs.safetensors"), "pt") as f:
        wanted = list(f.keys())
    out_meta = {}
    if (fixture / "outputs.json").exists():
        out_meta = json.loads((fixture / "outputs.json").read_text())

    batch = _text_batch(tok, inputs, "")
    batch["images"] = inputs["imgs"].to(dtype)
    r: dict[str, torch.Tensor] = {}

    def fresh():
        m = load_official_checkpoint(sd, config=cfg).to(dtype)
        m.eval()
        return m

    # 1) eval mode, forward + losses + backward (the gradient norms are of loss/loss in eval mode)
    model = fresh()
    grad_names = out_meta.get("grad_params", [])
    if grad_names:  # grads only where the fixture reads them: backward stops early (same values, much faster)
        for n, p in model.named_parameters():
            p.requires_grad_(n in grad_names)
    img = model.encode_image(batch["images"], with_lf=True)
    txt = _encode_text(model, batch)
    lo = AFLocLoss(model.cfg)(img, txt)
    lo["loss"].backward()
    params = dict(model.named_parameters())
    norms = []
    for n in grad_names:
        g = params[n].grad
        norms.append(torch.zeros((), dtype=torch.float64) if g is None else g.double().norm())
    if grad_names:
        r["grad/norms"] = torch.stack(norms)
    r["grad/loss_for_backward"] = lo["loss"].detach()
    d = lambda x: x.detach()  # noqa: E731
    r["img/feat_global_pooled"] = d(img.feat_global)
    r["img/feat_layer2_row0_ch0-63"] = d(img.feat_layer2[0, :64])
    r["img/feat_layer3_row0_ch0-63"] = d(img.feat_layer3[0, :64])
    r["img/feat_layer4_row0_ch0-63"] = d(img.feat_layer4[0, :64])
    r["fwd/img_emb_g"] = d(img.emb_g)
    r["fwd/img_emb_l"] = d(img.emb_l)
    r["fwd/img_emb_l2"] = d(img.emb_l2)
    if img.emb_lf is not None:
        r["fwd/img_emb_lf"] = d(img.emb_lf)
    r["fwd/text_emb_w"] = d(txt.word_emb).transpose(1, 2)
    r["fwd/text_emb_s"] = d(txt.sent_emb).transpose(1, 2)
    r["fwd/text_emb_r"] = d(txt.report_emb)
    r["loss/cap_lens_word"] = txt.word_units
    r["loss/cap_lens_sent"] = txt.sent_units
    for name in ("global", "sent", "word"):
        r[f"loss/{name}_logits"] = d(lo[f"{name}_logits"])
        r[f"loss/{name}_i2t"] = d(lo[f"{name}_i2t"])
        r[f"loss/{name}_t2i"] = d(lo[f"{name}_t2i"])
    for k in ("global_report_loss", "local_sent_loss", "local_word_loss", "loss"):
        r[f"loss/{k}"] = d(lo[k])
    for name, units in (("sent", txt.sent_units), ("word", txt.word_units)):
        for i, n in enumerate(units.tolist()):
            r[f"attn/{name}_row{i}"] = d(lo[f"{name}_attn"][i, :n])

    with torch.no_grad():
        # per-layer hidden states of the full padded length (the model itself runs only up to the longest row)
        hs = model.text_encoder.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            output_hidden_states=True,
        ).hidden_states
        r["text/token_hidden_last4"] = torch.stack(hs[-cfg.last_n_layers :], dim=1)

        # zero-shot (the INFERRED scorer) and grounding (official protocol)
        zs = _encode_text(model, _text_batch(tok, inputs, "zeroshot/")).report_emb  # (6, D)
        r["zeroshot/text_emb_r"] = zs
        cos = torch.nn.functional.normalize(img.emb_g, dim=-1) @ torch.nn.functional.normalize(zs, dim=-1).t()
        r["zeroshot/cosine"] = cos
        r["zeroshot/prob_pos_inferred"] = pos_neg_probability(cos[:, 0::2], cos[:, 1::2], cfg.temp3)
        gr = _encode_text(model, _text_batch(tok, inputs, "grounding/")).report_emb  # (B, D), one per row
        r["grounding/text_emb_r"] = gr
        sim = similarity_maps(img.emb_l, gr)  # (B, B, h, w): row i uses phrase i
        idx = torch.arange(sim.shape[0])
        raw = sim[idx, idx]
        hm = grounding_heatmaps(raw, cfg.image_size)
        r["grounding/sim_raw_19"] = raw
        r["grounding/sim_smoothed_19"] = hm["smoothed"]
        r["grounding/heatmap_224"] = hm["upsampled"]
        norm = np.stack([minmax_normalize(h) for h in hm["heatmap"].double().cpu().numpy()])
        r["grounding/heatmap_norm_224"] = torch.from_numpy(norm)
        gt = inputs["grounding/gt_mask"].numpy()
        r["grounding/thresholds"] = torch.from_numpy(np.asarray(AFLOC_THRESHOLDS, dtype=np.float64))
        r["grounding/iou"] = torch.from_numpy(iou_at_thresholds(norm, gt))
        r["grounding/cnr"] = torch.from_numpy(cnr(norm, gt))

    # 2) BatchNorm in train mode (batch statistics), dropout off
    model = fresh()
    _bn_train_only(model)
    with torch.no_grad():
        img2 = model.encode_image(batch["images"])
        lo2 = AFLocLoss(model.cfg)(img2, _encode_text(model, batch))
    for k in ("loss", "global_report_loss", "local_sent_loss", "local_word_loss"):
        r[f"trainbn/{k}"] = lo2[k]
    r["trainbn/img_emb_g"] = img2.emb_g

    missing = [n for n in wanted if n not in r]
    if missing:
        raise KeyError(f"run_parity_fixture: no computation for fixture tensors {missing}")
    return {n: r[n] for n in wanted}


def example_batch(model_name: str, batch_size: int = 4, seed: int = 0, text_length: int | None = None):
    """The registered model `model_name` as a task module and a synthetic batch: token rows of varied length
    with a '.' every 6 tokens (so every row has sentence units), no word pieces."""
    from cxrvlp.afloc.train import AFLocTrainModule
    from cxrvlp.core.registry import create_model
    from cxrvlp.core.testing.batches import random_images, random_token_batch

    model = create_model(model_name)
    c = model.cfg
    first_word = max(c.cls_token_id, c.sep_token_id, c.period_token_id) + 1
    tok = random_token_batch(
        batch_size, text_length or min(c.text_max_length, 24), int(c.bert["vocab_size"]),
        cls_id=c.cls_token_id, sep_id=c.sep_token_id, first_word_id=first_word, seed=seed,
    )  # fmt: skip
    ids, mask = tok["input_ids"], tok["attention_mask"]
    words = (mask.bool() & (ids != c.cls_token_id) & (ids != c.sep_token_id)).clone()
    period = words & (torch.arange(ids.shape[1])[None] % 6 == 5)
    ids = torch.where(period, torch.full_like(ids, c.period_token_id), ids)
    batch = {
        "images": random_images(batch_size, c.image_size, seed),
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": tok["token_type_ids"],
        "piece_mask": torch.zeros_like(ids, dtype=torch.bool),
        "bracket_mask": ~words,  # [CLS], [SEP] and [PAD] start with "["
    }
    return AFLocTrainModule(model), batch
