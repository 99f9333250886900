"""Run a MAVL parity fixture (made by the official code) through our model, importer, loss and protocols.

`run_parity_fixture(fixture_dir, dtype=torch.float32)` builds the model from the fixture's config.json, loads
weights.safetensors (+ the shared ResNet-50 trunk) through `load_official_checkpoint`, builds the books from
the fixture's CLS embeddings as the official code does, and returns every tensor named in
outputs.safetensors. `dtype=torch.float64` runs the same code path in double precision (an fp64 twin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from cxrvlp.core.errors import ConfigError
from cxrvlp.mavl.books import assemble_concept_book
from cxrvlp.mavl.loss import MavlLoss
from cxrvlp.mavl.model import Mavl, MavlModelConfig, heatmaps
from cxrvlp.mavl.official import load_official_checkpoint
from cxrvlp.mavl.zeroshot import score_feature, score_text
from safetensors.torch import load_file

# torchvision ResNet-50 children -> the official nn.Sequential(children[:-3]) indices
_TRUNK = {"conv1.": "backbone.0.", "bn1.": "backbone.1.", "layer1.": "backbone.4.", "layer2.": "backbone.5.",
          "layer3.": "backbone.6."}  # fmt: skip


def model_config_from_fixture(cfg: dict[str, Any]) -> MavlModelConfig:
    m = cfg["model_config"]
    if m.get("base_model", "resnet50") != "resnet50" or m.get("decoder", "cross") != "cross":
        raise ConfigError(f"unsupported MAVL fixture model {m.get('base_model')}/{m.get('decoder')}")
    return MavlModelConfig(
        backbone="resnet50",
        image_pretrained=None,
        image_size=int(cfg.get("image_size", 224)),
        d_model=int(m["d_model"]),
        num_layers=int(m["N"]),
        nhead=int(m["H"]),
        dim_feedforward=int(cfg.get("decoder_dim_feedforward", 1024)),
        decoder_dropout=float(cfg.get("decoder_dropout", 0.1)),
        feature_dropout=float(m.get("dropout", 0.1)),
        self_attention=bool(m.get("self_attention", True)),
        attribute_set_size=int(m.get("attribute_set_size", 2)),
        text_dim=int(cfg.get("text_dim", 768)),
        n_entities=int(cfg.get("n_entities_pretrain", 75)),
        n_aspects=int(cfg.get("n_aspects", 9)),
        n_landmarks=int(cfg.get("n_landmarks", 51)),
        text_encoder=None,
    )


def fixture_weights(fixture: Path, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """weights.safetensors plus the shared ResNet-50 trunk under `backbone.{0,1,4,5,6}` (float32)."""
    sd = dict(load_file(str(fixture / "weights.safetensors")))
    if not any(k.startswith("backbone.") for k in sd):
        rel = str(cfg["resnet_weights"]).split()[0]
        trunk = load_file(str((fixture / rel).resolve()))
        for k, v in trunk.items():
            for tv, ours in _TRUNK.items():
                if k.startswith(tv):
                    sd[ours + k[len(tv) :]] = v
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def run_parity_fixture(
    fixture_dir: str | Path, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Every tensor named in the fixture's outputs.safetensors, computed by our implementation."""
    fixture = Path(fixture_dir)
    cfg = json.loads((fixture / "config.json").read_text())
    wanted = set(load_file(str(fixture / "outputs.safetensors")))
    inputs = load_file(str(fixture / "inputs.safetensors"))
    raw = json.loads((fixture / "inputs.json").read_text())
    mcfg = model_config_from_fixture(cfg)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype) if x.is_floating_point() else x

    ana = f(inputs["text_cls_ana"].float())
    aspects = f(inputs["text_cls_aspects"].float())
    book_train = assemble_concept_book(f(inputs["text_cls_disease_pretrain"].float()), aspects)
    book_zs = assemble_concept_book(f(inputs["text_cls_disease_zeroshot"].float()), aspects)

    torch.manual_seed(int(cfg.get("seed", 0)))
    model = Mavl(mcfg)
    sd = fixture_weights(fixture, cfg)
    load_official_checkpoint(
        sd, model=model, strict=True, books={"ana_book": ana, "concept_book": book_train}
    )
    model = model.to(dtype).eval()
    a = mcfg.n_aspects
    qsel = torch.tensor(raw["query_selection_qsel"])
    images = f(inputs["images"])
    labels = inputs["labels"]  # (B, E) float64, as the official loader delivers it
    index = inputs["location_index"]
    out: dict[str, torch.Tensor] = {}

    # ---- training forward (eval mode) with intermediates from hooks ----
    captured: dict[str, Any] = {}
    hooks = [
        model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("backbone", o)),
        model.res_l1.register_forward_hook(lambda m, i, o: captured.__setitem__("res_l1", o)),
    ]
    for li, layer in enumerate(model.decoder.layers):
        hooks.append(
            layer.register_forward_hook(lambda m, i, o, li=li: captured.__setitem__(f"dec{li}", o[0]))
        )
    model.zero_grad(set_to_none=True)
    try:
        fwd = model(images, need_maps=True)
    finally:
        for h in hooks:
            h.remove()
    feat = captured["backbone"]
    out["train.backbone_feat_chmean"] = feat.mean((2, 3))
    out["train.backbone_feat_ch0to31"] = feat[:, :32]
    out["train.x_global"] = fwd.x_global
    out["train.res_l1_out_chmean"] = captured["res_l1"].mean((2, 3))
    out["train.memory"] = model.res_l2(captured["res_l1"])
    out["train.query_embed"] = fwd.query_embed
    for li in range(len(model.decoder.layers)):
        out[f"train.decoder_layer{li}_out_qsel"] = captured[f"dec{li}"][qsel]
        out[f"train.cross_attn_layer{li}_qsel"] = fwd.attention_maps[li][:, qsel]
    out["train.decoder_out"] = fwd.features
    out["train.location_emb_out"] = fwd.l_emb.permute(0, 2, 1)
    loc = model.location_logits(fwd.l_emb, index)  # (B, E, 8)
    out["train.location_dots"] = loc.reshape(-1, loc.shape[-1])
    out["train.cls_logits"] = fwd.cls_logits
    mcfg_loss = cfg["model_config"]
    loss_fn = MavlLoss(ce_weight=float(cfg.get("ce", 1.0)), cl_global=float(mcfg_loss.get("cl_global", 0.1)))
    terms = loss_fn(fwd.cls_logits, labels.to(dtype), loc, fwd.global_sim, model.temp)
    terms["loss"].backward()
    out["train.loss_ce"] = terms["presence_loss"].reshape(1)
    out["train.loss_cl"] = terms["location_loss"].reshape(1)
    out["train.loss_global_i2t_per_aspect"] = terms["global_i2t"]
    out["train.loss_global_t2i_per_aspect"] = terms["global_t2i"]
    out["train.loss_global"] = terms["global_loss"].reshape(1)
    out["train.loss"] = terms["loss"].reshape(1)
    params = dict(model.named_parameters())
    missing = [n for n in raw.get("grad_params", []) if n not in params]
    if missing:
        raise ConfigError(f"{fixture}/inputs.json: unknown gradient parameters {missing}")
    out["train.grad_norms"] = torch.stack([params[n].grad.norm() for n in raw["grad_params"]])
    out["train.temp_grad"] = model.temp.grad

    # ---- zero-shot and grounding (76 entities, covid19 appended; temp unused) ----
    with torch.no_grad():
        # eval mode: the trunk output does not depend on the query set, reuse it (one ResNet pass less)
        zs = model.decode(fwd.x_global.detach(), out["train.memory"].detach(), book_zs, need_maps=True)
        e = zs.cls_logits.shape[1]
        out["zs.cls_logits"] = zs.cls_logits
        out["grd.cls_logits"] = zs.cls_logits
        out["zs.location_sim"] = zs.l_emb @ model.ana_book.t()
        w1 = model.classifier.weight[1].view(a, -1)  # (A, D)
        out["zs.concept_features"] = (zs.aspect_features * w1).sum(-1)  # (B, E, A)
        out["zs.cosine_sim"] = zs.global_sim.permute(0, 2, 1)  # (B, A, E)
        out["zs.score_feature"] = score_feature(zs.cls_logits)
        out["zs.score_text"] = score_text(zs.global_sim)
        side = int(round(zs.attention_maps[0].shape[-1] ** 0.5))
        heat = {m: heatmaps(zs.attention_maps, a, mode=m) for m in ("avg", "max", "global")}  # (B, E, M)
        b = images.shape[0]
        out["grd.heat14_avg"] = heat["avg"].view(b, e, side, side)
        pneu = raw["zeroshot_classes"].index("pneumonia")
        out["grd.heat14_max_pneumonia"] = heat["max"][:, pneu].view(b, side, side)
        out["grd.heat14_global_pneumonia"] = heat["global"][:, pneu].view(b, side, side)
        m224 = heat["avg"][:2, pneu].view(2, 1, side, side)
        out["grd.heat224_avg_pneumonia"] = F.interpolate(
            m224, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=True
        )[:, 0]
    result = {k: v.detach() for k, v in out.items() if k in wanted}
    absent = sorted(wanted - set(result))
    if absent:
        raise ConfigError(f"{fixture}: outputs not produced by run_parity_fixture: {absent}")
    return result


def example_batch(name: str = "mavl-tiny", batch_size: int = 4, **overrides):
    """(task module, batch) for contract tests: a registered model with hashed books and a random batch."""
    from cxrvlp.core.registry import create_model
    from cxrvlp.mavl.books import books_for
    from cxrvlp.mavl.loss import MavlLoss
    from cxrvlp.mavl.train import MavlTaskModule

    model = create_model(name, **overrides)
    books = books_for({**model.config.to_dict(), "text_encoder": None})
    model.set_books(books["ana_book"], books["concept_book"])
    s, e = model.config.image_size, model.config.n_entities
    labels = torch.randint(-1, 2, (batch_size, e)).float()
    labels[:, 8] = 1  # at least one present entity per image
    batch = {
        "images": torch.randn(batch_size, 3, s, s),
        "labels": labels,
        "location_index": torch.randint(0, model.config.n_landmarks, (batch_size, e, 8)),
    }
    return MavlTaskModule(model, MavlLoss()), batch
