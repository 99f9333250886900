"""Loss check, official side: run with the OFFICIAL venv's python (not ours); it never imports cxrvlp.

    python losscheck_official.py --method M --harness .../perf_official/M/step_time.py --src DIR/src/M \\
        --out FILE.pt -- <the comparison's harness arguments>

It imports the timing harness from its path (importlib; nothing of it is copied), lets the harness install its
import-time glue and import the official code exactly as the harness does, builds the model with the
harness's seed and variant, takes the harness's synthetic batch, and computes the official loss terms ONCE in
eval mode (dropout off, BatchNorm on its running statistics) under no_grad: no backward, no optimizer step.
Written to --out (torch.save): {"method", "state_dict" (taken before the forward: MGCA renormalises its
prototypes in place inside it), "batch" (tensors), "terms" {name: float}, "extra" (vocab, books, features,
loss weights the other side needs), "mode"}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import types

import torch

MODE = "model.eval() (dropout off, BatchNorm on running statistics), no_grad, one forward, no optimizer"


def _load_harness(path: str, argv: list[str]):
    """The harness as a module (its `main` is not run); sys.argv is what the harness would see."""
    sys.argv = [path, *argv]
    spec = importlib.util.spec_from_file_location("official_step_time", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _tensors(d: dict) -> dict:
    """The tensor entries of a batch dict (one level of nested dicts kept, e.g. tokenizer outputs)."""
    out = {}
    for k, v in d.items():
        if torch.is_tensor(v):
            out[k] = v.detach().clone()
        elif isinstance(v, dict) or isinstance(getattr(v, "data", None), dict):  # dict or BatchEncoding
            inner = v if isinstance(v, dict) else v.data
            sub = {kk: vv.detach().clone() for kk, vv in inner.items() if torch.is_tensor(vv)}
            if sub:
                out[k] = sub
    return out


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _seed_all(seed: int) -> None:
    """Python's, numpy's and torch's global generators, seeded as the harnesses seed them."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _floats(d: dict) -> dict:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------- methods
def mgca(h, harness_args: list[str]) -> dict:
    p = argparse.ArgumentParser()
    for k, d in (("--variant", "vit"), ("--batch", "8"), ("--image-size", "224"), ("--seed", "0"),
                 ("--threads", "2"), ("--terms", "both")):  # fmt: skip
        p.add_argument(k, default=d)
    a, _ = p.parse_known_args(harness_args)
    torch.set_num_threads(int(a.threads))
    mgca_module, collate = h.import_official(SRC)
    torch.autograd.set_detect_anomaly(False)  # no backward here; the harness's anomaly mode changes no value
    torch.use_deterministic_algorithms(True)  # as the harness (Trainer(deterministic=True))
    batch = collate(h.synthetic_items(int(a.batch), int(a.image_size), int(a.seed)))
    lam3 = 0.0 if a.terms == "ita_local" else 1.0
    model, _ = h.build_model(mgca_module, a.variant, int(a.seed), lambda_3=lam3)
    model._current_epoch = 0 if a.terms == "ita_local" else 1
    sd = _state(model)
    model.eval()
    with torch.no_grad():
        model.training_step(batch, 0)
    vocab = h.synthetic_vocab()
    words = [""] * len(vocab)
    for tok, i in vocab.items():
        words[i] = tok
    hp = {k: float(model.hparams[k]) for k in ("lambda_1", "lambda_2", "lambda_3")}
    return {"state_dict": sd, "batch": _tensors(batch), "terms": dict(model.logged[-1]),
            "extra": {"vocab": words, "variant": a.variant, **hp}}  # fmt: skip


def cxrclip(h, harness_args: list[str]) -> dict:
    import numpy as np

    a = h.ARGS
    _seed_all(a.seed)
    rng = np.random.default_rng(a.seed)
    cfg = h.load_cfg(h.SRC, a.variant)
    size = a.image_size or cfg["base"]["image_size"]
    max_len = cfg["base"]["text_max_length"]
    tmp = tempfile.TemporaryDirectory(prefix="cxrclip_losscheck_")
    tok = h.make_tokenizer(tmp.name)
    model = h.build_model(cfg["model"], cfg["loss"], tok)
    loss_func = h.build_loss(cfg["loss"])
    env = h.off_util.GlobalEnv.get()
    writer = h.make_writer_cls()
    env.summary_writer.train = writer(os.path.join(tmp.name, "tb", "train"))
    env.summary_writer.valid = writer(os.path.join(tmp.name, "tb", "valid"))
    env.summary_writer.global_step = 0
    b, _, _ = h.make_batch(rng, a.batch, size, max_len)  # the harness's first batch
    sd = _state(model)
    model.eval()
    with torch.no_grad():
        outputs = model(b, torch.device("cpu"))  # as cxrclip/trainer.py:train
        d = loss_func(**outputs, is_train=True)  # is_train: the train loss (label smoothing 0) + its scalars
    terms = {tag.split("/")[-1]: val for tag, val, _ in env.summary_writer.train.rec}
    terms["total"] = float(d["total"])
    env.summary_writer.train.close()
    env.summary_writer.valid.close()
    lc = cfg["loss"]["cxr_clip"]
    weights = {k: lc[k] for k in ("i2i_weight", "t2t_weight", "loss_ratio", "label_smoothing")}
    tmp.cleanup()
    return {"state_dict": sd, "batch": _tensors(b), "terms": terms, "extra": {"loss": weights}}


def afloc(h, harness_args: list[str]) -> dict:
    import numpy as np

    args = h.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    args._vocab = h.install_shims(args)
    import afloc  # noqa: F401  (official package, from --src)
    from afloc.lightning.pretrain_model import PretrainModel

    cfg = h.load_cfg(args)
    module = PretrainModel(cfg)
    gen = torch.Generator().manual_seed(args.seed)
    batch, _ = h.make_batch(args, cfg, gen)
    sd = _state(module)  # `afloc.` + the module path, as the released Lightning checkpoint
    module.eval()
    with torch.no_grad():
        module.shared_step(batch, "train")  # official AFLoc.forward + calc_loss, logged as train_*
    return {"state_dict": sd, "batch": _tensors(batch), "terms": _floats(module.logged),
            "extra": {"vocab": list(args._vocab), "max_length": int(cfg.data.text.word_num)}}  # fmt: skip


def mavl(h, harness_args: list[str]) -> dict:
    import yaml

    args = h.parse_args()
    torch.set_num_threads(args.threads)
    _seed_all(args.seed)
    h.OfflineAutoModel.layers = args.bert_layers
    cfg_rel, _ = h.VARIANTS[args.variant]
    pre_dir = os.path.join(SRC, "Pretrain")
    sys.path.insert(0, pre_dir)
    import models.model_MAVL as official
    from dataset.dataset import VL_Dataset

    official.AutoModel = h.OfflineAutoModel
    with open(os.path.join(SRC, cfg_rel)) as f:
        config = yaml.load(f, Loader=yaml.Loader)
    config["batch_size"] = args.batch
    config["pretrained"] = False
    gen = torch.Generator().manual_seed(args.seed)
    with open(os.path.join(pre_dir, config["disease_book"])) as f:
        json_book = json.load(f)
    with open(os.path.join(pre_dir, config["concept_book"])) as f:
        concepts = json.load(f)
    ana_tok, _ = h.synth_tokenize(["It is located at " + n for n in h.LANDMARKS], 128, gen)
    dis_tok, _ = h.synth_tokenize([json_book[k] for k in json_book], 128, gen)
    con_tok, _ = h.synth_tokenize(sum(concepts.values(), []), 128, gen)
    model = official.MAVL(config, ana_tok, dis_tok, con_tok, mode="train")
    batches, _ = h.make_batches(1, args.batch, args.image_size, args.seed, VL_Dataset.triplet_extraction)
    s = batches[0]
    sd = _state(model)
    books = {"ana_book": model.ana_book.detach().clone(), "concept_book": model.concept_book.detach().clone()}
    model.eval()
    with torch.no_grad():
        loss, ce, cl, glob = model(s["image"], s["label"], s["index"], is_train=True, no_cl=config["no_cl"],
                                   exclude_class=config["exclude_class"])  # fmt: skip
    terms = {"loss": float(loss), "loss_ce": float(ce), "loss_cl": float(cl), "loss_cl_global": float(glob)}
    weights = {k: config.get(k) for k in ("ce", "cl_global", "no_cl", "exclude_class")}
    return {"state_dict": sd, "batch": _tensors(s), "terms": terms, "extra": {"books": books, **weights}}


def carzero(h, harness_args: list[str]) -> dict:
    import numpy as np

    A = h.A
    sys.path.insert(0, SRC)
    h.install_stubs()
    scratch = tempfile.mkdtemp(prefix="carzero_losscheck_")
    vocab_file = os.path.join(scratch, "vocab.txt")
    h.write_vocab(vocab_file, A.vocab_size)
    h.install_patches(vocab_file, A.vocab_size)
    import CARZero
    from CARZero.datasets import pretraining_dataset
    from omegaconf import OmegaConf
    from PIL import Image

    h.patch_vit_loader()
    _seed_all(A.seed)
    cfg = OmegaConf.load(os.path.join(SRC, h.CONFIG_REL))
    cfg.lightning.trainer.val_check_interval = 1.0
    fake_dm = types.SimpleNamespace(train_dataloader=lambda: types.SimpleNamespace(dataset=range(200_000)))
    module = CARZero.builder.build_lightning_model(cfg, fake_dm)
    model = module.CARZero
    rng = np.random.RandomState(A.seed)
    tok = model.tokenizer
    train_tf = CARZero.builder.build_transformation(cfg, split="train")
    items = []
    for i in range(A.batch):  # the harness's batch: same draws, same official transform and collate
        x = rng.randint(0, 256, size=(cfg.data.image.imsize, cfg.data.image.imsize)).astype(np.uint8)
        img = train_tf(Image.fromarray(x).convert("RGB"))
        sent = h.SENTENCES[rng.randint(0, len(h.SENTENCES))]
        tokens = tok(sent, return_tensors="pt", truncation=True, padding="max_length",
                     max_length=cfg.data.text.word_num)  # fmt: skip
        items.append((img, tokens, len([t for t in tokens["input_ids"][0] if t != 0]), f"synthetic_{i}.jpg"))
    batch = pretraining_dataset.multimodal_collate_fn(items)
    sd = _state(model)  # the bare CARZero module (keys as after the official loader's prefix strip)
    with open(vocab_file) as f:
        vocab = f.read().splitlines()
    shutil.rmtree(scratch, ignore_errors=True)  # the tokenizer has read it
    extra = {"vocab": vocab, "ce_loss_weight": float(model.ce_loss_weight)}
    fbs = [int(b) for b in A.fusion_batches.split(",") if b.strip()]
    model.eval()
    with torch.no_grad():
        if A.skip_train and fbs:  # the fusion arm: fixed random features through fusion + loss alone
            b = fbs[-1]
            text_len = int(batch["caption_ids"].shape[1])
            g = torch.Generator().manual_seed(A.seed)  # the harness's draws, in its order
            feats = {"img_l": torch.randn(b, 768, 14, 14, generator=g)}
            feats["img_g"] = torch.randn(b, 768, generator=g)
            feats["txt_l"] = torch.randn(b, 768, text_len, generator=g)
            feats["txt_g"] = torch.randn(b, 768, generator=g)
            model.image_encoder_forward = lambda imgs: (feats["img_l"], feats["img_g"])
            model.text_encoder_forward = lambda ids, m, tt: (feats["txt_l"], feats["txt_g"], None)
            out = model({"imgs": None, "caption_ids": None, "attention_mask": None, "token_type_ids": None})
            extra["features"] = feats
            saved_batch = {}
        else:
            out = model(batch)
            saved_batch = _tensors(batch)
        w = float(model.ce_loss_weight)
        extra["logits"] = {"i2t": out[5].detach().clone(), "t2i": out[6].detach().clone()}
        terms = {
            "ce_loss_i2t": float(model._calc_ce_loss(out[5]) * w),
            "ce_loss_t2i": float(model._calc_ce_loss(out[6]) * w),
            "loss": float(model.calc_loss(*out)),
        }
    return {"state_dict": sd, "batch": saved_batch, "terms": terms, "extra": extra}


METHODS = {"mgca": mgca, "cxrclip": cxrclip, "afloc": afloc, "mavl": mavl, "carzero": carzero}
SRC = ""


def main() -> None:
    global SRC
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", required=True, choices=sorted(METHODS))
    ap.add_argument("--harness", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("harness_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    hargs = [x for x in a.harness_args if x != "--"]
    SRC = os.path.abspath(a.src)
    argv = ["--src", SRC, *hargs]
    if a.method == "mavl":
        argv += ["--out", os.devnull]  # required by its parser; never written
    h = _load_harness(os.path.abspath(a.harness), argv)
    rec = METHODS[a.method](h, hargs)
    rec.update(method=a.method, mode=MODE, harness_args=hargs, torch=str(torch.__version__))
    torch.save(rec, a.out)
    print(json.dumps({"terms": rec["terms"], "state_dict_keys": len(rec["state_dict"])}))


if __name__ == "__main__":
    main()
