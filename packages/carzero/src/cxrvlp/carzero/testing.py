"""Run a CARZero parity fixture (made by the official code) through our model, importer and protocols.

`run_parity_fixture(dir, dtype)` builds the model from the fixture's config.json, loads weights.safetensors
through `load_official_checkpoint`, preprocesses the raw images and tokenises the raw captions/prompts with
our own pipeline where the fixture has them (else it uses the stored tensors), and returns every tensor of
outputs.safetensors under the same name. `dtype=torch.float64` runs the same code path in double precision
(the fp64 twin of a tolerance policy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from cxrvlp.carzero.config import CarzeroModelConfig
from cxrvlp.carzero.loss import carzero_loss
from cxrvlp.carzero.model import Carzero, score_pairs
from cxrvlp.carzero.official import load_official_checkpoint
from cxrvlp.carzero.zeroshot import grounding_maps
from cxrvlp.core.testing.parity import default_dtype
from safetensors.torch import load_file


def model_config_from_fixture(cfg: dict[str, Any]) -> CarzeroModelConfig:
    """The CarzeroModelConfig described by a fixture's config.json."""
    m = cfg["model"]
    v, t, f = m["vision"], m["text"], m["fusion"]
    n_patches = int(v["num_patches"])
    img = int(cfg.get("image_size", round(n_patches**0.5) * v["patch_size"]))
    vit = dict(
        img_size=img, patch_size=v["patch_size"], embed_dim=v["embed_dim"], depth=v["depth"],
        num_heads=v["num_heads"], mlp_ratio=v["mlp_ratio"], qkv_bias=v["qkv_bias"], ln_eps=v["layernorm_eps"],
        pos_embed="sincos",
    )  # fmt: skip
    keys = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
    )  # fmt: skip
    text_config = {k: t[k] for k in keys if k in t}
    head = f["mlp_head"]
    return CarzeroModelConfig(
        image_encoder="vit",
        vit=vit,
        text_config=text_config,
        tokenizer=None,
        text_max_length=int(cfg["text_max_length"]),
        text_last_n_layers=int(t.get("last_n_layers", 4)),
        text_attn_implementation=t.get("attn_implementation", "eager"),
        fusion_layers=int(f["decoder_layers"]),
        fusion_heads=int(f["nhead"]),
        fusion_ffn=int(f["dim_feedforward"]),
        fusion_dropout=float(f["dropout"]),
        fusion_head="mlp" if len(head) > 2 else "linear",
        mlp_hidden=tuple(int(x) for x in head[1:-1]),
        image_size=img,
    )


def _tokenizer(fixture: Path):
    vocab = fixture / "vocab.txt"
    if not vocab.exists():
        return None
    from cxrvlp.core.text.tokenize import load_tokenizer

    return load_tokenizer(vocab, do_lower_case=True)


def _tokens(inputs, raw: dict[str, Any], prefix: str, field: str, tok, max_len: int, clean: bool):
    if tok is not None and field in raw:
        from cxrvlp.core.text.cleaning import clean_prompt
        from cxrvlp.core.text.tokenize import tokenize

        texts = raw[field]
        if isinstance(texts, dict):  # {"0": ["There is X"], ...}: class keys in order, prompts concatenated
            texts = [x for k in sorted(texts, key=int) for x in texts[k]]
        texts = [clean_prompt(x) for x in texts] if clean else list(texts)
        return tokenize(tok, texts, max_length=max_len, padding="max_length")
    return {k: inputs[f"{prefix}{k}"] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _images(inputs, cfg: CarzeroModelConfig) -> torch.Tensor:
    n = sum(1 for k in inputs if k.startswith("raw_image_"))
    if n == 0 or n != inputs["images"].shape[0]:
        return inputs["images"]
    from cxrvlp.core.data.transforms import build_transform

    tf = build_transform("carzero", train=False, image_size=cfg.image_size, normalisation=cfg.normalisation)
    return torch.stack([tf(inputs[f"raw_image_{i}"].numpy().astype("float32") / 255.0) for i in range(n)])


def run_parity_fixture(
    fixture_dir: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Every tensor named in the fixture's outputs.safetensors, computed by our implementation.

    dtype=torch.float64 runs the same code path in double precision (model, weights and float inputs; token
    ids and masks unchanged): the float64 twin of `cxrvlp.core.testing.judge_parity`.
    """
    with default_dtype(dtype):
        return _run_parity_fixture(Path(fixture_dir), dtype)


def _run_parity_fixture(fixture: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    cfg = json.loads((fixture / "config.json").read_text())
    mcfg = model_config_from_fixture(cfg)
    torch.manual_seed(0)
    model: Carzero = Carzero(mcfg)
    load_official_checkpoint(fixture / "weights.safetensors", model=model)
    model = model.to(dtype).eval()
    inputs = load_file(str(fixture / "inputs.safetensors"))
    raw = json.loads((fixture / "inputs.json").read_text()) if (fixture / "inputs.json").exists() else {}
    tok = _tokenizer(fixture)
    if tok is None:
        raise FileNotFoundError(f"{fixture}: vocab.txt is needed to merge word pieces")
    model.set_tokenizer(tok)
    max_len = mcfg.text_max_length
    caps = _tokens(inputs, raw, "", "captions", tok, max_len, clean=False)
    prompts = _tokens(inputs, raw, "prompt_", "prompts", tok, max_len, clean=True)
    images = _images(inputs, mcfg).to(dtype)
    out: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        vit = model.img_encoder.model
        out["vit_patch_embed"] = vit.patch_embed(images)
        img_g, img_l = model.encode_image(images)  # (B, D), (B, N, D)
        b, n, d = img_l.shape
        side = model.img_encoder.grid
        out["img_emb_g"] = img_g
        out["img_emb_l"] = img_l.transpose(1, 2).reshape(b, d, *side)
        txt_g, txt_l, tout = model.encode_text(**caps, return_all=True)
        out["text_hidden_last4"] = tout["hidden_last"]
        out["text_word_emb_per_layer"] = tout["words_per_layer"]
        out["text_emb_l"] = txt_l.transpose(1, 2)
        out["text_emb_g"] = txt_g
        out["text_num_words"] = tout["num_words"]
        fusion = model.fusion_module
        i_mem = model.image_memory(img_g, img_l)
        t_mem, t_mask = model.text_memory(txt_g, txt_l, tout["word_mask"])
        out["i2t_memory"], out["t2i_memory"] = i_mem, t_mem
        out["i2t_memory_normed"], out["t2i_memory_normed"] = (
            fusion.decoder_norm(i_mem),
            fusion.decoder_norm(t_mem),
        )
        i2t = score_pairs(fusion, i_mem, txt_g, need_weights=True, return_states=True)
        t2i = score_pairs(fusion, t_mem, img_g, need_weights=True, return_states=True, memory_mask=t_mask)
        for name, r in (("i2t", i2t), ("t2i", t2i)):
            out[f"{name}_decoder_layer_out"] = torch.stack(r.layer_states)
            out[f"{name}_simr"] = r.simr
            out[f"{name}_attn"] = torch.stack(r.maps)
            out[f"{name}_logits"] = r.logits
        terms = carzero_loss(i2t.logits, t2i.logits)
        out["loss_i2t_row_ce"], out["loss_i2t_col_ce"] = terms["i2t_row_ce"], terms["i2t_col_ce"]
        out["loss_t2i_row_ce"], out["loss_t2i_col_ce"] = terms["t2i_row_ce"], terms["t2i_col_ce"]
        out["loss_i2t"], out["loss_t2i"], out["loss_total"] = (
            terms["i2t_loss"],
            terms["t2i_loss"],
            terms["loss"],
        )

        # zero-shot: one prompt per class, score = (i2t + t2i^T) / 2, raw
        p_g, p_l, pout = model.encode_text(**prompts, return_all=True)
        out["prompt_text_emb_g"], out["prompt_text_emb_l"] = p_g, p_l.transpose(1, 2)
        zs_i2t = score_pairs(fusion, i_mem, p_g, need_weights=True)
        # the adapter's path: the prompt memory with its zero pads folded (compact_text_pads)
        zs_t2i = model.score_t2i(img_g, p_g, p_l, pout["word_mask"]).logits.t()  # (B, C)
        out["zs_i2t"], out["zs_t2i"] = zs_i2t.logits, zs_t2i
        out["zs_scores"] = (zs_i2t.logits + zs_t2i) / 2
        m14, m224 = grounding_maps(
            zs_i2t.maps, side, mcfg.image_size, has_global=mcfg.fusion_memory != "local"
        )
        out["grounding_map_14"] = m14
        out["grounding_map_224_img0"] = m224[0]

    # training-step check: loss.backward() in eval mode (dropout off), batched scorer without maps
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        o = model(images, caps)
        carzero_loss(o.i2t, o.t2i)["loss"].backward()
    params = dict(model.named_parameters())
    ref_names = load_file(str(fixture / "outputs.safetensors")).keys()
    for key in ref_names:
        for prefix, fn in (("grad_norm.", lambda g: g.norm()), ("grad.", lambda g: g)):
            if key.startswith(prefix):
                p = params[key[len(prefix) :]]
                out[key] = fn(p.grad) if p.grad is not None else torch.zeros(())
    return {k: v.detach() for k, v in out.items()}


def no_grad_parameters(model: Carzero) -> list[str]:
    """Parameters that get no gradient in a training step (unused modules, frozen pos_embed)."""
    return [k for k, p in model.named_parameters() if p.grad is None]


class _SyntheticVocab:
    """The three things the word merging reads from a tokenizer, for random token ids: every 5th id from 5
    on is a "##" continuation (so word pieces are merged in the example batch), [SEP] = 3."""

    def __init__(self, size: int) -> None:
        self.size, self.sep_token_id = size, 3

    def __len__(self) -> int:
        return self.size

    def get_vocab(self) -> dict[str, int]:
        return {("##" if i >= 5 and i % 5 == 0 else "") + f"t{i}": i for i in range(self.size)}


def example_batch(model_name: str, batch_size: int = 4, seed: int = 0):
    """The registered model `model_name` as a task module (unused parameters frozen) and a synthetic batch."""
    from cxrvlp.carzero.loss import CarzeroLoss
    from cxrvlp.carzero.train import CarzeroTrainModule, freeze_unused
    from cxrvlp.core.registry import create_model
    from cxrvlp.core.testing.batches import random_images, random_token_batch

    model = create_model(model_name)
    vocab = int(model.text_encoder.model.config.vocab_size)
    model.set_tokenizer(_SyntheticVocab(vocab))
    freeze_unused(model)
    length = min(model.config.text_max_length, 24)
    tokens = random_token_batch(batch_size, length, vocab, cls_id=2, sep_id=3, first_word_id=6, seed=seed)
    batch = {"images": random_images(batch_size, model.config.image_size, seed), "tokens": tokens}
    return CarzeroTrainModule(model, CarzeroLoss()), batch
