"""Parity harness: run a fixture made by the official MGCA code through our model (shared/parity/mgca/*)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError
from cxrvlp.core.testing.parity import default_dtype
from cxrvlp.mgca.config import MedBertConfig, MGCAConfig
from cxrvlp.mgca.loss import topk_accuracy
from cxrvlp.mgca.official import load_official_checkpoint, official_to_ours
from cxrvlp.mgca.train import MGCATrainModule
from torch import nn


def config_from_fixture(cfg: dict[str, Any], vocab: list[str]) -> MGCAConfig:
    """MGCAConfig from a fixture's config.json (`small_config`) and its vocab."""
    sc = cfg["small_config"]
    b = sc["bert"]
    bert = MedBertConfig(
        vocab_size=int(cfg.get("vocab_size", len(vocab))),
        hidden_size=b["hidden_size"],
        num_hidden_layers=b["num_hidden_layers"],
        num_attention_heads=b["num_attention_heads"],
        intermediate_size=b["intermediate_size"],
        max_position_embeddings=b["max_position_embeddings"],
        encoder_width=b.get("encoder_width", b["hidden_size"]),
        add_cross_attention=b.get("add_cross_attention", True),
        layer_norm_eps=b.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=b.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=b.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=b.get("pad_token_id", 0),
    )
    variant = cfg.get("variant", "vit")
    kw: dict[str, Any] = {}
    if variant == "vit":
        v = sc["vit"]
        kw = {
            "image_encoder": "vit-b16",
            "vit": {
                "img_size": v["img_size"],
                "patch_size": v["patch_size"],
                "embed_dim": v["embed_dim"],
                "depth": v["depth"],
                "num_heads": v["num_heads"],
                "mlp_ratio": v["mlp_ratio"],
                "qkv_bias": v.get("qkv_bias", True),
                "ln_eps": v.get("ln_eps", 1e-6),
            },
        }
    elif variant == "resnet50":
        kw = {"image_encoder": "resnet50"}
    else:
        raise ConfigError(f"unknown fixture variant '{variant}'")
    return MGCAConfig(
        bert=bert,
        sep_token_id=vocab.index("[SEP]"),
        max_words=sc.get("max_words", 112),
        emb_dim=sc["emb_dim"],
        proj_hidden_dim=sc["proj_hidden_dim"],
        num_prototypes=sc["num_prototypes"],
        softmax_temperature=sc["softmax_temperature"],
        local_temperature=sc["local_temperature"],
        proto_temperature=sc["proto_temperature"],
        epsilon=sc["epsilon"],
        sinkhorn_iterations=sc["sinkhorn_iterations"],
        lambda_1=sc["lambda_1"],
        lambda_2=sc["lambda_2"],
        lambda_3=sc["lambda_3"],
        bidirectional=sc["bidirectional"],
        **kw,
    )


def _find(fixture: Path, rel: str | None, default: str) -> Path:
    for cand in ([fixture / rel] if rel else []) + [fixture / default, fixture.parent / default]:
        if cand.exists():
            return cand
    raise DatasetNotFoundError("mgca parity fixture", fixture / (rel or default), "a fixture file")


def _official_weights(fixture: Path, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(str(fixture / "weights.safetensors"))
    if cfg.get("variant") == "resnet50" and not any(k.startswith("img_encoder_q.model.") for k in sd):
        rel = str(cfg.get("resnet_weights", "")).split(" ")[0] or None
        trunk = load_file(str(_find(fixture, rel, "../_encoders/resnet50_fp16.safetensors")))
        sd.update({f"img_encoder_q.model.{k}": v for k, v in trunk.items() if not k.startswith("fc.")})
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _inputs(fixture: Path, cfg: dict[str, Any], vocab: list[str], max_words: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    shared = cfg.get("shared_files", {})
    inputs = load_file(str(_find(fixture, shared.get("inputs"), "inputs.safetensors")))
    if "input_ids" not in inputs:  # raw strings only: tokenise the captions with the fixture vocab
        from cxrvlp.mgca.data import MGCATokenizer

        meta = json.loads(_find(fixture, shared.get("inputs_meta"), "inputs.json").read_text())
        tok = MGCATokenizer.from_vocab_file(_find(fixture, shared.get("vocab"), "vocab.txt"), max_words)
        enc = tok([s["caption"] for s in meta["samples"]])
        inputs.update(enc)
    piece = torch.tensor([t.startswith("##") for t in vocab], dtype=torch.bool)
    inputs["piece_mask"] = piece[inputs["input_ids"]]
    return inputs


def _no_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()


def _side_tensors(img, txt, cfg: MGCAConfig) -> dict[str, torch.Tensor]:
    out = {
        "img_feat": img.img_feat,
        "img_emb_prenorm": img.img_emb_prenorm,
        "img_emb": img.img_emb,
        "patch_emb_prenorm": img.patch_emb_prenorm,
        "text_last_hidden_state": txt.last_hidden_state,
        "text_lastlayer_attn_cls_row": txt.cls_attn,
        "text_cls_attn_mean": txt.cls_attn.mean(dim=1)[:, 1:],
        "report_feat": txt.report_feat,
        "word_feat": txt.word_feat,
        "word_attn": txt.word_attn,
        "report_emb_prenorm": txt.report_emb_prenorm,
        "report_emb": txt.report_emb,
        "word_emb_prenorm": txt.word_emb_prenorm,
        "word_emb_prenorm_first32ch": txt.word_emb_prenorm[..., :32],
        "word_pad_mask": txt.word_pad_mask.to(torch.uint8),
    }
    if cfg.is_vit:
        out["patch_feat"] = img.patch_feat
        out["vit_lastblock_attn_cls_row"] = img.cls_attn
        out["vit_cls_to_patch_attn_mean"] = img.cls_attn[:, :, 1:].mean(dim=1)
    else:
        out["patch_feat_first32ch"] = img.patch_feat[..., :32]
        out["patch_feat_channel_mean"] = img.patch_feat.mean(dim=-1)
    return out


def run_parity_fixture(
    fixture_dir: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Build the fixture's model, load its official weights, run its inputs; every tensor named in
    outputs.safetensors under the same name (eval pass, `trainbn.*` pass, `grad_norm.*`).

    dtype=torch.float64 gives the float64 twin through the same code path (model, weights and float inputs
    in float64, token ids unchanged) for `cxrvlp.core.testing.judge_parity`.
    """
    with default_dtype(dtype):
        return _run_parity_fixture(Path(fixture_dir), dtype)


def _run_parity_fixture(fixture: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    cfg_doc = json.loads((fixture / "config.json").read_text())
    shared = cfg_doc.get("shared_files", {})
    vocab = _find(fixture, shared.get("vocab"), "vocab.txt").read_text(encoding="utf-8").splitlines()
    cfg = config_from_fixture(cfg_doc, vocab)
    sd = _official_weights(fixture, cfg_doc)
    inputs = _inputs(fixture, cfg_doc, vocab, cfg.max_words)
    with safe_open(str(fixture / "outputs.safetensors"), "pt") as f:
        wanted = list(f.keys())
    batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "piece_mask")}
    batch["images"] = inputs["images"].to(dtype)
    results: dict[str, torch.Tensor] = {}

    # 1) eval mode
    model = load_official_checkpoint(sd, config=cfg).to(dtype)
    model.eval()
    with torch.no_grad():
        out = MGCATrainModule(model).run(batch)
        img, txt, lo = out.image, out.text, out.loss
    results.update(_side_tensors(img, txt, cfg))
    d = lo.details
    results.update({k: v for k, v in d.items() if isinstance(v, torch.Tensor) and v.dim() <= 3})
    # The model runs the text only up to the batch's longest + 1 (exact for every real token); the fixture
    # stores all L positions, whose pad rows are real (if unused) outputs: run the full length for them.
    with torch.no_grad():
        hidden_full, probs_full = model.text_encoder(batch["input_ids"], batch["attention_mask"])
    results["text_last_hidden_state"] = hidden_full
    results["text_lastlayer_attn_cls_row"] = probs_full
    results["text_cls_attn_mean"] = probs_full.mean(dim=1)[:, 1:]
    results["acc1"] = topk_accuracy(d["ita_logits"], 1)
    results["acc5"] = topk_accuracy(d["ita_logits"], 5)
    if "patch_attended" in d:
        results["patch_attended_norm"] = d["patch_attended"].norm(dim=-1)
        results["patch_attended_first16"] = d["patch_attended"][..., :16]

    # 2) BN in train mode, dropout off, one backward
    model = load_official_checkpoint(sd, config=cfg).to(dtype)
    model.train()
    _no_dropout(model)
    out = MGCATrainModule(model).run(batch)
    img, txt, lo = out.image, out.text, out.loss
    lo.loss.backward()
    tb = {**_side_tensors(img, txt, cfg), **lo.details}
    for k in (
        "img_feat",
        "img_emb_prenorm",
        "report_emb_prenorm",
        "word_emb_prenorm_first32ch",
        "img_code",
        "report_code",
        "loss_ita",
        "loss_word",
        "loss_patch",
        "loss_cta",
        "loss_cpa",
        "loss_total",
    ):
        if k in tb:
            results[f"trainbn.{k}"] = tb[k].detach()
    own = dict(model.named_parameters())
    own_buffers = dict(model.named_buffers())
    variant = "vit" if cfg.is_vit else "resnet50"
    for name in wanted:
        m = re.fullmatch(r"trainbn\.(.+)_after", name)
        if m and name not in results:
            ours = next(iter(official_to_ours({m.group(1): torch.empty(0)}, variant)))
            results[name] = own_buffers[ours].detach().clone()
        m = re.fullmatch(r"grad_norm\.(.+?)(\[(\d+):\])?", name)
        if m:
            ours = next(iter(official_to_ours({m.group(1): torch.empty(0)}, variant)))
            g = own[ours].grad
            if g is None:
                g = torch.zeros_like(own[ours])
            if m.group(3) is not None:
                g = g[int(m.group(3)) :]
            results[name] = g.norm()
    missing = [n for n in wanted if n not in results]
    if missing:
        raise KeyError(f"run_parity_fixture: no computation for fixture tensors {missing}")
    return {n: results[n] for n in wanted}


def example_batch(
    model_name: str, batch_size: int = 4, seed: int = 0, text_length: int | None = None
) -> tuple[MGCATrainModule, dict]:
    """The registered model `model_name` as a task module (dead parameters frozen) and a synthetic batch
    (token rows of varied length up to `text_length`, default min(max_words, 24))."""
    from cxrvlp.core.registry import create_model
    from cxrvlp.core.testing.batches import random_images, random_token_batch

    model = create_model(model_name)
    for p in model.dead_parameters():
        p.requires_grad_(False)
    c = model.cfg
    size = c.image_size or (int(c.vit.get("img_size", 224)) if c.is_vit else 224)
    length = text_length or min(c.max_words, 24)
    tok = random_token_batch(
        batch_size, length, c.bert.vocab_size, cls_id=c.sep_token_id - 1, sep_id=c.sep_token_id,
        first_word_id=c.sep_token_id + 1, seed=seed,
    )  # fmt: skip
    batch = {
        "images": random_images(batch_size, size, seed),
        "input_ids": tok["input_ids"],
        "attention_mask": tok["attention_mask"],
        "piece_mask": torch.zeros_like(tok["input_ids"], dtype=torch.bool),
    }
    return MGCATrainModule(model), batch
