"""Run a CXR-CLIP parity fixture (made by the official code) through our model, importer and protocols."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.testing.parity import default_dtype
from cxrvlp.core.zeroshot import ClassPrompts
from cxrvlp.cxrclip.config import CxrClipModelConfig
from cxrvlp.cxrclip.loss import CxrClipLoss
from cxrvlp.cxrclip.model import CxrClip
from cxrvlp.cxrclip.official import load_official_checkpoint, ours_to_official
from cxrvlp.cxrclip.zeroshot import (
    CxrClipAdapter,
    binary_prompts,
    score_binary,
    score_prompt_ensemble,
)
from safetensors.torch import load_file
from torch import nn


def model_config_from_fixture(cfg: dict[str, Any]) -> CxrClipModelConfig:
    """The CxrClipModelConfig described by a fixture's config.json (`variant` r50 | swint)."""
    variant = cfg["variant"]
    mcfg = cfg[f"model_{variant}"]
    text = (
        mcfg["text_encoder"] if isinstance(mcfg["text_encoder"], dict) else cfg["model_r50"]["text_encoder"]
    )
    text_config = {k: v for k, v in text.items() if k != "type"}
    proj = mcfg["projection_head"]["proj_dim"]
    common = dict(
        text_config=text_config,
        tokenizer=None,
        text_max_length=cfg["text"]["text_max_length"],
        proj_dim=proj,
        temperature_init=mcfg.get("temperature_init", 0.07),
        image_size=cfg["image"]["size"],
    )
    if variant == "r50":
        return CxrClipModelConfig(
            image_encoder="resnet50",
            image_encoder_kwargs={"sync_batchnorm": True},
            normalisation="imagenet",
            **common,
        )
    if variant == "swint":
        swin = {k: v for k, v in mcfg["image_encoder"].items() if k not in ("type", "hidden_size_out")}
        return CxrClipModelConfig(
            image_encoder="swin-tiny", image_encoder_kwargs=swin, normalisation="mean0.5-std0.5", **common
        )
    raise ConfigError(f"unknown CXR-CLIP fixture variant '{variant}'")


def _fixture_weights(fixture: Path, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    sd = load_file(str(fixture / "weights.safetensors"))
    if cfg["variant"] == "r50" and not any(k.startswith("image_encoder.resnet.") for k in sd):
        # The ResNet-50 trunk lives in a shared file named (relative to this folder) in config.json.
        rel = cfg["model_r50"]["resnet_weights"].split()[0]
        trunk = load_file(str((fixture / rel).resolve()))
        sd.update({"image_encoder.resnet." + k: v for k, v in trunk.items()})
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _inputs_dir(fixture: Path) -> Path:
    return fixture if (fixture / "inputs.safetensors").exists() else fixture.parent


def _tokenizer(inputs_dir: Path):
    vocab = inputs_dir / "vocab.txt"
    if not vocab.exists():
        return None
    from cxrvlp.core.text.tokenize import load_tokenizer

    return load_tokenizer(vocab, do_lower_case=True)  # what AutoTokenizer gives for a bare vocab (C1)


def _text_tokens(inputs: dict[str, torch.Tensor], raw: dict[str, Any], prefix: str, field: str, tok, max_len):
    if tok is not None and field in raw:
        from cxrvlp.core.text.tokenize import tokenize

        return tokenize(tok, raw[field], max_length=max_len, padding="max_length")
    return {k: inputs[f"{prefix}_{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _set_bn_train(model: nn.Module) -> None:
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()


@torch.no_grad()
def _text_intermediates(
    model: CxrClip, tokens: dict[str, torch.Tensor], name: str
) -> dict[str, torch.Tensor]:
    bert = model.text_encoder.model
    previous = bert.config._attn_implementation
    bert.set_attn_implementation("eager")  # attention probabilities are only returned by the eager path
    try:
        out = model.text_encoder(**tokens, output_hidden_states=True, output_attentions=True)
    finally:
        bert.set_attn_implementation(previous)
    idx = tokens["attention_mask"].sum(-1) - 1
    rows = torch.arange(idx.shape[0])
    res = {
        f"{name}_eos_index": idx,
        f"{name}_hidden_states_at_eos": torch.stack([h[rows, idx] for h in out.hidden_states]),  # (n+1, B, D)
        f"{name}_last_layer_attention_from_eos": out.attentions[rows, :, idx],  # (B, heads, L)
    }
    if name == "text":
        res["text_last_hidden_state"] = out.last_hidden_state
    return res


def run_parity_fixture(
    fixture_dir: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Every tensor named in the fixture's outputs.safetensors, computed by our implementation.

    dtype=torch.float64 gives the float64 twin through the same code path (model, weights and float inputs
    in float64, token ids unchanged) for `cxrvlp.core.testing.judge_parity`.
    """
    with default_dtype(dtype):
        return _run_parity_fixture(Path(fixture_dir), dtype)


def _run_parity_fixture(fixture: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    cfg = json.loads((fixture / "config.json").read_text())
    variant = cfg["variant"]
    wanted = set(load_file(str(fixture / "outputs.safetensors")))
    idir = _inputs_dir(fixture)
    inputs = load_file(str(idir / "inputs.safetensors"))
    raw = json.loads((idir / "inputs.json").read_text()) if (idir / "inputs.json").exists() else {}
    tok = _tokenizer(idir)

    torch.manual_seed(int(cfg.get("seed", 0)))
    model = CxrClip(model_config_from_fixture(cfg))
    load_official_checkpoint(_fixture_weights(fixture, cfg), model=model, strict=True)
    model.to(dtype).eval()
    loss_cfg = cfg.get("loss", {})
    loss_fn = CxrClipLoss(
        i2i_weight=loss_cfg.get("i2i_weight", 1.0),
        t2t_weight=loss_cfg.get("t2t_weight", 0.5),
        loss_ratio=loss_cfg.get("loss_ratio", 1.0),
        label_smoothing=loss_cfg.get("label_smoothing", 0.0),
    )

    suffix = f"_{variant}" if f"images_{variant}" in inputs else ""
    images, views = inputs[f"images{suffix}"].to(dtype), inputs[f"image_views{suffix}"].to(dtype)
    max_len = cfg["text"]["text_max_length"]
    t1 = _text_tokens(inputs, raw, "text", "texts", tok, max_len)
    t2 = _text_tokens(inputs, raw, "text2", "texts2", tok, max_len)
    out: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        enc = model.image_encoder
        if variant == "r50":
            o = enc(images)
            out["img_stem_pooled"] = o.maps["stem"].mean((2, 3))
            for k in range(1, 5):
                out[f"img_layer{k}_pooled"] = o.maps[f"layer{k}"].mean((2, 3))
        else:
            o = enc(images, output_hidden_states=True)
            out["img_last_hidden_state"] = o.local_feat
            for k, h in enumerate(o.maps.values()):
                out[f"img_hidden_state{k}_tokenmean"] = h.mean((2, 3))
        for name, f in (("image", o.global_feat), ("image_view", model.image_features(views))):
            p = model.image_projection(f)
            out[f"{name}_features"], out[f"{name}_projected"] = f, p
            out[f"{name}_embeddings"] = p / p.norm(dim=-1, keepdim=True)
        for name, t in (("text", t1), ("text2", t2)):
            out.update(_text_intermediates(model, t, name))
            f = model.text_features(**t)
            p = model.text_projection(f)
            out[f"{name}_features"], out[f"{name}_projected"] = f, p
            out[f"{name}_embeddings"] = p / p.norm(dim=-1, keepdim=True)

    # The evaluation path before any BatchNorm runs in train mode (that updates the running statistics).
    with torch.no_grad():
        adapter = CxrClipAdapter(model, tokenizer=tok, device="cpu")
        img_emb = adapter.encode_images(images)
        out["eval_image_embeddings"] = img_emb
        if "zeroshot_binary_classes" in raw:
            cos, prob = [], []
            for cls in raw["zeroshot_binary_classes"]:
                c, p = score_binary(adapter, img_emb, binary_prompts(cls))
                cos.append(c)
                prob.append(p)
            out["zs_binary_cosine"], out["zs_binary_prob"] = torch.stack(cos), torch.stack(prob)
        if "zeroshot_biovil_prompts" in raw:
            neg, pos = raw["zeroshot_biovil_prompts"]
            c, p = score_binary(adapter, img_emb, ClassPrompts("Pneumonia", [pos], [neg]))
            out["zs_biovil_cosine"], out["zs_biovil_prob"] = c, p
        if "zeroshot_5x200_prompts" in raw:
            classes = [
                ClassPrompts(c, raw["zeroshot_5x200_prompts"][c]) for c in raw["zeroshot_5x200_classes"]
            ]
            out["zs_5x200_mean_cosine"] = score_prompt_ensemble(adapter, img_emb, classes)
    model.eval()

    grad_names = cfg.get(f"grad_norm_params_{variant}", [])
    swin = variant == "swint"
    for prefix in ("", "bntrain_"):
        if prefix:
            _set_bn_train(model)  # BatchNorm on batch statistics, dropout off
        else:
            model.eval()
        model.zero_grad(set_to_none=True)
        fwd = model(images, views, t1, t2)  # the training forward
        t = fwd["logit_scale"]
        emb = {"i1": fwd["image_embeddings"], "i2": fwd["image_view_embeddings"]}
        emb.update({"t1": fwd["text_embeddings"], "t2": fwd["text_embeddings2"]})
        terms = loss_fn(emb["i1"], emb["i2"], emb["t1"], emb["t2"], t, is_train=False)
        terms["loss"].backward()
        grads = {ours_to_official(n, swin): p.grad for n, p in model.named_parameters()}
        missing = [n for n in grad_names if n not in grads]
        if missing:
            raise ConfigError(f"{fixture}/config.json: unknown gradient parameters {missing}")
        out[f"{prefix}grad_norms"] = torch.stack(
            [grads[n].norm() if grads[n] is not None else torch.tensor(0.0) for n in grad_names]
        )
        loss_names = ("loss_i2t", "loss_t2i", "loss_i2i", "loss_t2t")
        if prefix:
            out["bntrain_image_embeddings"] = emb["i1"].detach()
            out["bntrain_image_view_embeddings"] = emb["i2"].detach()
            out.update({f"bntrain_{k}": terms[k].detach() for k in loss_names})
            out["bntrain_loss_total"] = terms["loss"].detach()
            if variant == "r50":
                out["bntrain_running_mean_after_bn1"] = model.image_encoder.bn1.running_mean.clone()
            continue
        out["forward_image_embeddings"] = emb["i1"]
        out["forward_image_view_embeddings"] = emb["i2"]
        out["forward_text_embeddings"] = emb["t1"]
        out["forward_text_embeddings2"] = emb["t2"]
        out["logit_scale_exp"] = t
        for a, b in (("i1", "t1"), ("i2", "t1"), ("i1", "t2"), ("i2", "t2"), ("i1", "i2"), ("t1", "t2")):
            out[f"logits_{a}_{b}"] = t * emb[a] @ emb[b].t()
        out["ce_terms"] = terms["ce_terms"]
        out.update({k: terms[k] for k in (*loss_names, "loss_contrastive")})
        out["loss_total"] = terms["loss"]
        pooler = [p.grad for n, p in model.named_parameters() if ".pooler." in n]
        out["pooler_has_grad"] = torch.tensor(int(any(g is not None and g.abs().sum() > 0 for g in pooler)))
    model.eval()

    result = {k: v.detach() for k, v in out.items() if k in wanted}
    absent = sorted(wanted - set(result))
    if absent:
        raise ConfigError(f"{fixture}: outputs not produced by run_parity_fixture: {absent}")
    return result


def distributed_loss_worker(rank: int, world: int, port: int, inputs, queue) -> None:
    """One gloo rank of the distributed-equivalence check (a module-level function so `spawn` can import it).

    `inputs` = (x (4, N, F) float64, w_img, w_txt, logit_scale); rank r takes rows [r*N/W, (r+1)*N/W).
    Puts (rank, mean loss over ranks, DDP-style averaged gradients of (w_img, w_txt, logit_scale)).
    """
    import os

    import torch.distributed as dist
    import torch.nn.functional as F

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, w_img, w_txt, scale = (t.clone() for t in inputs)
        params = [w_img.requires_grad_(), w_txt.requires_grad_(), scale.requires_grad_()]
        b = x.shape[1] // world
        xs = x[:, rank * b : (rank + 1) * b]
        img = [F.normalize(xs[k] @ w_img.t(), dim=-1) for k in (0, 1)]
        txt = [F.normalize(xs[k] @ w_txt.t(), dim=-1) for k in (2, 3)]
        loss = CxrClipLoss()(img[0], img[1], txt[0], txt[1], scale.exp())["loss"]
        loss.backward()
        grads = [p.grad.clone() for p in params]
        for g in grads:  # what DDP does: average the gradients over ranks
            dist.all_reduce(g)
            g /= world
        total = loss.detach().clone()
        dist.all_reduce(total)
        queue.put((rank, (total / world).item(), [g.numpy() for g in grads]))
    finally:
        dist.destroy_process_group()


def example_batch(model_name: str, batch_size: int = 4, seed: int = 0, text_length: int | None = None):
    """The registered model `model_name` as a task module (pooler frozen) and a synthetic batch."""
    from cxrvlp.core.registry import create_model
    from cxrvlp.core.testing.batches import random_images, random_token_batch
    from cxrvlp.cxrclip.loss import CxrClipLoss
    from cxrvlp.cxrclip.train import CxrClipTrainModule

    model = create_model(model_name)
    for name, p in model.named_parameters():
        if ".pooler." in name:
            p.requires_grad_(False)
    c = model.config
    vocab = int(c.text_config.get("vocab_size", 100))
    length = text_length or min(c.text_max_length, 24)

    def tokens(s: int) -> dict[str, torch.Tensor]:
        return random_token_batch(batch_size, length, vocab, cls_id=2, sep_id=3, first_word_id=5, seed=s)

    batch = {
        "images": random_images(batch_size, c.image_size, seed),
        "image_views": random_images(batch_size, c.image_size, seed + 1),
        "text_tokens": tokens(seed),
        "text_tokens2": tokens(seed + 1),
    }
    return CxrClipTrainModule(model, CxrClipLoss()), batch
