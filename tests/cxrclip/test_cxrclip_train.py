"""CXR-CLIP training on the synthetic MIMIC-CXR mirror: tiny run -> zero-shot AUROC; 2-process run (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import method_helpers as mh
import numpy as np
import pytest
import torch
from cxrvlp.core.data.mimic_cxr import MimicCxrDataset
from cxrvlp.core.data.synthetic import write_mimic_cxr
from cxrvlp.core.registry import get_method
from cxrvlp.core.zeroshot import ClassPrompts, ZeroShotAdapter
from cxrvlp.cxrclip.zeroshot import binary_prompts, retrieval_image_text, unique_texts
from sklearn.metrics import roc_auc_score

CXRCLIP_THRESHOLD = 0.68  # measured 0.754, 0.753 on generator 1.3.0 (seed 0, 2026-12-07); runs move ~0.05

# one torch thread: tiny GEMMs on a shared CPU are 20x slower under OpenMP oversubscription
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cxrclip_synthetic")


def _zero_shot_auroc(adapter, root) -> dict[str, float]:
    ds = MimicCxrDataset(root, split=None, views=("PA", "AP"), label_source="chexpert")
    samples = [ds[i] for i in range(len(ds))]
    images = torch.stack([adapter.preprocess(s.image) for s in samples])
    emb = adapter.encode_images(images)
    labels = np.stack([s.labels for s in samples])  # (N, 14) 1 / 0 / NaN
    out = {}
    for j, name in enumerate(ds.classes):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if (y == 1).sum() >= 5 and (y == 0).sum() >= 5:
            score = adapter.classify(emb[torch.from_numpy(known)], [binary_prompts(name)])[:, 0]
            out[name] = float(roc_auc_score(y, score.numpy()))
    return out


def test_tiny_train_few_steps_and_adapter(synthetic_dir, tmp_path):
    extra = ["max_steps=3", "batch_size=8", "log_every_steps=1", "data.synthetic_patients=20"]
    method, run = mh.train_tiny("cxrclip", tmp_path, extra, synthetic_dir=synthetic_dir)
    mh.check_few_steps(run, ("loss", "i2t_loss", "i2i_loss", "t2t_loss"))
    final = run / "final"
    adapter = method.load_adapter(final, device="cpu")
    assert isinstance(adapter, ZeroShotAdapter)
    img = adapter.preprocess(np.random.default_rng(0).random((80, 70), dtype=np.float32))
    assert img.shape == (3, 64, 64)
    images = torch.stack([img, img.flip(-1)])
    emb = adapter.encode_images(images)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    probs = adapter.classify(emb, [binary_prompts("Pleural Effusion"), binary_prompts("Cardiomegaly")])
    assert probs.shape == (2, 2) and torch.all((probs > 0) & (probs < 1))
    sim = adapter.similarity(emb, adapter.encode_texts(["pleural effusion", "normal heart size"]))
    assert sim.shape == (2, 2) and torch.all(sim.abs() <= 1 + 1e-5)
    ensemble = adapter.classify(emb, [ClassPrompts("a", ["x", "y"]), ClassPrompts("b", ["z"])])
    assert torch.allclose(
        ensemble[:, 1], sim.new_tensor(adapter.similarity(emb, adapter.encode_texts(["z"])))[:, 0]
    )
    maps = adapter.localize(images, ["right pleural effusion"])
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
    assert adapter.image_features(images).shape[0] == 2
    from cxrvlp.cxrclip.model import load_pretrained

    mh.assert_reloads_same_weights(adapter.model, final, load_pretrained)


@pytest.mark.slow
def test_tiny_config_learns_zero_shot(tmp_path):
    # the demo's budget and data (1000 steps on 600 synthetic patients + the CheXpert mirror as prompt
    # reports, the paper's "M,C"): the packaged 120-patient run gave 0.561 on generator 1.1.0 (2026-12-07)
    from cxrvlp.core.data.synthetic import write_chexpert

    method = get_method("cxrclip")
    chexpert = write_chexpert(tmp_path / "chexpert", seed=0, image_size=64)
    budget = ["epochs=100", "max_steps=1000", "data.synthetic_patients=600", "log_every_steps=50"]
    budget += method.label_data_overrides({"chexpert": chexpert})
    run = method.train("tiny", [f"output_dir={tmp_path / 'run'}", *budget])
    adapter = method.load_adapter(run / "final", device="cpu")
    eval_root = write_mimic_cxr(tmp_path / "eval_mirror", n_patients=60, seed=7, image_size=256)  # unseen
    aurocs = _zero_shot_auroc(adapter, eval_root)
    mean = float(np.mean(list(aurocs.values())))
    print(
        f"\ncxrclip tiny zero-shot AUROC (official prompts), held-out synthetic mirror: {mean:.3f} {aurocs}"
    )
    assert len(aurocs) >= 3
    assert mean > CXRCLIP_THRESHOLD


def test_retrieval_protocol_on_duplicates():
    # spec §10 item 13: reports [A, A, B] -> 2 candidates; identity-like embeddings give R@1 = 1, MeanRank 1
    texts = ["A", "A", "B"]
    uniq, target = unique_texts(texts)
    assert uniq == ["A", "B"] and target.tolist() == [0, 0, 1]
    img = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    res = retrieval_image_text(torch.nn.functional.normalize(img, dim=-1), torch.eye(2), texts)
    assert res["Recall@1"] == 1.0 and res["MeanRank"] == 1.0
    res = retrieval_image_text(torch.eye(2)[[1, 1, 0]], torch.eye(2), texts)
    assert res["Recall@1"] == 0.0 and res["MeanRank"] == 2.0


@pytest.mark.slow
def test_two_process_training_runs(synthetic_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cxrvlp.cxrclip.train", "tiny", f"output_dir={out}", f"data.synthetic_dir={synthetic_dir}",
        "max_steps=3", "batch_size=4", "epochs=1", "log_every_steps=1",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "final" / "model.safetensors").exists()
    steps = [line for line in (out / "history.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps, "no logged training step"
