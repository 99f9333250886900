"""The tiny config trains on the synthetic MIMIC-CXR mirror; the zero-shot adapter loads the result."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cxrvlp.core.zeroshot import ClassPrompts, ZeroShotAdapter

# class -> phrase as the synthetic reports write it (prompts are ours: MGCA has no zero-shot protocol)
CLASSES = {
    "Pleural Effusion": "pleural effusion",
    "Cardiomegaly": "cardiomegaly",
    "Pneumothorax": "pneumothorax",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Atelectasis": "atelectasis",
}


def _zero_shot_auroc(adapter, root) -> tuple[float, dict[str, float]]:
    from cxrvlp.core.data import MimicCxrDataset
    from sklearn.metrics import roc_auc_score

    ds = MimicCxrDataset(root, split=None, views=("PA", "AP"), blank_policy="zeros")
    images = torch.stack([adapter.preprocess(ds[i].image) for i in range(len(ds))])
    labels = np.stack([r.labels for r in ds.records])
    classes = [ClassPrompts(c, [p], [f"no {p}"]) for c, p in CLASSES.items()]
    scores = adapter.classify(adapter.encode_images(images), classes).numpy()
    aucs = {}
    for j, c in enumerate(CLASSES):
        y = labels[:, ds.classes.index(c)]
        ok = ~np.isnan(y)
        y = (y[ok] == 1).astype(int)
        if 0 < y.sum() < len(y):
            aucs[c] = float(roc_auc_score(y, scores[ok, j]))
    return float(np.mean(list(aucs.values()))), aucs


def _train_tiny(tmp_path, extra: list[str]):
    from cxrvlp.core.registry import get_method

    mgca = get_method("mgca")
    run = mgca.train(
        "tiny", [f"output_dir={tmp_path / 'run'}", f"data.synthetic_dir={tmp_path / 'synth'}", *extra]
    )
    return mgca, run


def test_mgca_tiny_train_few_steps_and_adapter_round_trip(tmp_path):
    extra = ["max_steps=3", "batch_size=8", "log_every_steps=1", "data.synthetic_patients=20"]
    mgca, run = _train_tiny(tmp_path, extra)
    final = run / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer").is_dir()
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in losses for k in ("loss", "ita_loss", "cta_loss", "cpa_loss"))
    adapter = mgca.load_adapter(final)
    assert isinstance(adapter, ZeroShotAdapter)
    assert "not from the paper" in adapter.info.zero_shot_protocol
    img = adapter.preprocess(np.random.default_rng(0).random((80, 70), dtype=np.float32))
    assert img.shape == (3, 64, 64) and img.min() >= -1 and img.max() <= 1
    images = torch.stack([img, img.flip(-1)])
    emb = adapter.encode_images(images)
    scores = adapter.classify(emb, [ClassPrompts("Effusion", ["pleural effusion"], ["no pleural effusion"])])
    assert scores.shape == (2, 1) and torch.all((scores > 0) & (scores < 1))
    sim = adapter.similarity(emb, adapter.encode_texts(["pleural effusion", "normal heart size"]))
    assert sim.shape == (2, 2) and torch.all(sim.abs() <= 1 + 1e-5)
    maps = adapter.localize(images, ["right pleural effusion"])
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
    assert adapter.image_features(images).shape == (2, 64)
    # the saved model reloads to the same weights
    from cxrvlp.mgca.model import load_pretrained

    again, _ = load_pretrained(final)
    for k, v in adapter.model.state_dict().items():
        assert torch.equal(v.cpu(), again.state_dict()[k]), k


@pytest.mark.slow
def test_mgca_tiny_config_learns_zero_shot_signal(tmp_path):
    from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr
    from cxrvlp.mgca.zeroshot import load_adapter

    mgca, run = _train_tiny(tmp_path, [])
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if "loss" in x]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert np.mean([r["cta_loss"] for r in rows[-3:]]) < np.mean([r["cta_loss"] for r in rows[:2]])
    eval_root = write_mimic_cxr(tmp_path / "eval", n_patients=60, seed=7, image_size=256)  # unseen patients
    trained, per_class = _zero_shot_auroc(load_adapter(run / "final"), eval_root)
    print(f"tiny MGCA zero-shot mean AUROC on the synthetic eval set: {trained:.3f} {per_class}")
    # Measured with this config on this eval set: 0.62 and 0.65 (12 epochs, lr 5e-4; classes 0.46-0.76); the
    # 6-epoch lr 1e-3 variant gave 0.52-0.60 across two identical runs, so runs vary by several points.
    assert trained > 0.55
