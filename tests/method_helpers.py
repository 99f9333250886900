"""Test machinery shared by the methods' tiny-training tests (tests/<m>/test_*train*.py).

tests/conftest.py puts this folder on sys.path, so a test imports it as `method_helpers`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# class -> phrase as the synthetic reports write it (the tiny zero-shot checks' classes)
CLASSES = {
    "Pleural Effusion": "pleural effusion",
    "Cardiomegaly": "cardiomegaly",
    "Pneumothorax": "pneumothorax",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Atelectasis": "atelectasis",
}


def train_tiny(method: str, tmp_path: Path, extra: Sequence[str] = (), synthetic_dir: Path | None = None):
    """(method spec, run folder) of the packaged tiny recipe on the synthetic mirror in `tmp_path`."""
    from cxrvlp.core.registry import get_method

    spec = get_method(method)
    synth = synthetic_dir if synthetic_dir is not None else tmp_path / "synth"
    run = spec.train("tiny", [f"output_dir={tmp_path / 'run'}", f"data.synthetic_dir={synth}", *extra])
    return spec, Path(run)


def loss_rows(run: Path) -> list[dict]:
    """The history rows that carry training losses."""
    rows = [json.loads(x) for x in (Path(run) / "history.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def check_few_steps(run: Path, keys: Sequence[str], steps: int = 3, tokenizer: bool = True) -> list[dict]:
    """A `max_steps=steps log_every_steps=1` run: final/ written, one finite row of `keys` per step."""
    final = Path(run) / "final"
    assert (final / "model.safetensors").is_file()
    if tokenizer:
        assert (final / "tokenizer").is_dir() and any((final / "tokenizer").iterdir())
    rows = loss_rows(run)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(math.isfinite(r[k]) for r in rows for k in keys)
    return rows


def assert_reloads_same_weights(model: torch.nn.Module, final: Path, load_pretrained) -> None:
    """`load_pretrained(final)` gives exactly the weights the adapter holds."""
    again, _ = load_pretrained(final)
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), again.state_dict()[k]), k


def zero_shot_auroc(adapter, root: Path, classes) -> tuple[float, dict[str, float]]:
    """Mean and per-class AUROC of `adapter.classify` with `classes` (ClassPrompts named after CheXpert
    classes) on every frontal image of the mirror at `root`; classes without both labels are left out."""
    from cxrvlp.core.data import MimicCxrDataset
    from sklearn.metrics import roc_auc_score

    ds = MimicCxrDataset(root, split=None, views=("PA", "AP"), blank_policy="zeros")
    images = torch.stack([adapter.preprocess(ds[i].image) for i in range(len(ds))])
    labels = np.stack([r.labels for r in ds.records])
    scores = adapter.classify(adapter.encode_images(images), classes).numpy()
    aucs = {}
    for j, cp in enumerate(classes):
        y = labels[:, ds.classes.index(cp.name)]
        ok = ~np.isnan(y)
        y = (y[ok] == 1).astype(int)
        if 0 < y.sum() < len(y):
            aucs[cp.name] = float(roc_auc_score(y, scores[ok, j]))
    return float(np.mean(list(aucs.values()))), aucs


# report-like texts for small tokenizers built in tests
TEXTS = [
    "no acute cardiopulmonary process",
    "small left pleural effusion with atelectasis",
    "mild cardiomegaly and pulmonary edema",
    "right upper lobe consolidation concerning for pneumonia",
    "no pneumothorax",
]


def tiny_recipe_config(method: str, config_cls: type, tmp_path: Path, extra: Sequence[str] = ()):
    """The tiny recipe's config with a run folder and a 12-patient mirror in `tmp_path`."""
    from cxrvlp.core.method import load_recipe_config

    overrides = [f"output_dir={tmp_path / 'run'}", f"data.synthetic_dir={tmp_path / 'synth'}",
                 "data.synthetic_patients=12", *extra]  # fmt: skip
    return load_recipe_config(method, config_cls, "tiny", overrides)


def memoised_prompt_calls(adapter, monkeypatch, classes) -> list[tuple[str, ...]]:
    """`classify` of three image batches with and without the prompt cache must be identical; returns the
    prompt lists `encode_texts` was called with while the cache was on."""
    batches = [adapter.encode_images(torch.randn(3, 3, 64, 64)) for _ in range(3)]
    uncached = []
    for b in batches:
        adapter.clear_prompt_cache()
        uncached.append(adapter.classify(b, classes))
    adapter.clear_prompt_cache()
    calls: list[tuple[str, ...]] = []
    real = adapter.encode_texts
    monkeypatch.setattr(adapter, "encode_texts", lambda texts: calls.append(tuple(texts)) or real(texts))
    cached = [adapter.classify(b, classes) for b in batches]
    for a, b in zip(uncached, cached):
        assert torch.equal(a, b)
    return calls


def check_segmentation_pyramid(adapter, out, x: torch.Tensor) -> list[torch.Tensor]:
    """The frozen encoder's output feeds the benchmark's U-Net decoder; its pooled feature is the probe's."""
    from cxrvlp.bench.tasks.segmentation import FrozenEncoderUnet, encoder_pyramid
    from cxrvlp.core.encoders import ImageEncoderOutput

    assert isinstance(adapter.image_encoder, torch.nn.Module)
    assert isinstance(out, ImageEncoderOutput)
    torch.testing.assert_close(out.global_feat, adapter.image_features(x))
    pyr = encoder_pyramid(out, 64)
    with torch.no_grad():
        logits = FrozenEncoderUnet(pyr, 64).eval()(pyr)
    assert logits.shape == (x.shape[0], 1, 64, 64) and torch.isfinite(logits).all()
    return pyr


def tiny_tokenizer(folder: Path):
    """A 120-piece WordPiece tokenizer built from `TEXTS` (a tiny model's vocabulary)."""
    from cxrvlp.core.text.tokenize import build_tokenizer_from_texts

    return build_tokenizer_from_texts(TEXTS * 4, folder, vocab_size=120)


def check_two_rank_run(proc, out: Path, tmp_path: Path) -> None:
    """A 2-process launch of a training entry point: two ranks of one process group (both printed their
    weights checksum, and the two are equal), `final/` written, one run folder beside the synthetic mirror."""
    import re

    log = proc.stdout + proc.stderr
    sums = dict(re.findall(r"rank (\d)/2 weights checksum (\S+ \S+)", log))
    assert set(sums) == {"0", "1"}, log[-3000:]  # both processes were ranks of one 2-process group
    assert sums["0"] == sums["1"]
    assert (out / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, "synth"]  # one run folder


def check_adapter_on_two_images(adapter, classes) -> tuple[torch.Tensor, object]:
    """A trained tiny model's adapter on a random radiograph and its mirror image: preprocessing to 64 px in
    [-1, 1], class probabilities in (0, 1), cosine similarities in [-1, 1]; returns (images, embeddings)."""
    img = adapter.preprocess(np.random.default_rng(0).random((80, 70), dtype=np.float32))
    assert img.shape == (3, 64, 64) and img.min() >= -1 and img.max() <= 1
    images = torch.stack([img, img.flip(-1)])
    emb = adapter.encode_images(images)
    scores = adapter.classify(emb, classes)
    assert scores.shape == (2, len(classes)) and torch.all((scores > 0) & (scores < 1))
    sim = adapter.similarity(emb, adapter.encode_texts(["pleural effusion", "normal heart size"]))
    assert sim.shape == (2, 2) and torch.all(sim.abs() <= 1 + 1e-5)
    return images, emb


def learned_zero_shot(method: str, tmp_path: Path, classes, falling: str, extra: Sequence[str] = ()):
    """Train the packaged tiny recipe, check the losses are finite and `falling` fell (the mean of the last
    three logged values below that of the first two), then zero-shot AUROC on 60 unseen synthetic patients."""
    from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr

    spec, run = train_tiny(method, tmp_path, extra)
    rows = loss_rows(run)
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert np.mean([r[falling] for r in rows[-3:]]) < np.mean([r[falling] for r in rows[:2]])
    eval_root = write_mimic_cxr(tmp_path / "eval", n_patients=60, seed=7, image_size=256)
    mean, per_class = zero_shot_auroc(spec.load_adapter(run / "final"), eval_root, classes)
    print(f"tiny {method} zero-shot mean AUROC on the synthetic eval set: {mean:.3f} {per_class}")
    return mean
