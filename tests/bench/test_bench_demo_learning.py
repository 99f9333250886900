"""The demo shows learning (issue 26), scaled down: a tiny MGCA pretrained on the synthetic MIMIC mirror
ranks the synthetic CheXpert test images above chance with the benchmark's own prompts.

Cause pinned here: with 48 patients and 48 steps (the old demo) the image-text loss never left chance and
zero-shot AUROC fell below 0.5, because the synthetic reports (like real ones) write a class's words mostly
in negated sentences ("No pleural effusion."), so the bare class name sits nearer to normal reports until
the text side has learned what "no" does; the positive-vs-negated prompt contrast then cancels it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import class_scores
from cxrvlp.bench.prompts import prompts_for
from cxrvlp.bench.sources import DataSource, method_status
from cxrvlp.bench.tasks.base import label_matrix

# Measured (seed 0): macro 0.774; Atelectasis 0.75, Cardiomegaly 0.68, Consolidation 0.74, Edema 0.85,
# Pleural Effusion 0.85. 18 min wall on the 2 cores shared by 6 agents (load ~13); the training is most of it.
STEPS, PATIENTS = 300, 300  # the full demo: 600 steps on 600 patients (demo.SIZES["full"])


def test_demo_sizes_keep_the_learning_budget():
    from cxrvlp.bench.demo import SIZES

    full = SIZES["full"]
    steps = int(next(o for o in full["train"] if o.startswith("max_steps=")).split("=")[1])
    assert steps >= 600 and full["mimic_patients"] >= 600 and full["limit"] is None


# 300 training steps: minutes on an idle 2-core machine, 18 min under load; over the default run's budget.
@pytest.mark.slow
def test_tiny_mgca_zero_shot_above_chance_on_synthetic_chexpert(tmp_path):
    spec, why = method_status("mgca")
    if spec is None:
        pytest.skip(why)
    from cxrvlp.core.data.synthetic import write_chexpert, write_mimic_cxr

    torch.set_num_threads(1)
    mimic = write_mimic_cxr(tmp_path / "mimic-cxr", PATIENTS, 0, 64)
    chex = write_chexpert(tmp_path / "chexpert", n_train_patients=4, n_valid=4, n_test=160, n_per_class=2,
                          image_size=64)  # fmt: skip
    run = spec.train("tiny", [f"output_dir={tmp_path / 'run'}", f"data.root={mimic}", "epochs=100",
                              f"max_steps={STEPS}", "log_every_steps=50"])  # fmt: skip
    adapter = spec.load_adapter(run / "final")
    ds = dsreg.get("chexpert")
    test = DataSource(ds, chex, synthetic=True).load("test")
    y = label_matrix(test, ds.classes, ds.name)
    prompts, _ = prompts_for("mgca", ds.name, ds.classes)
    s = class_scores(adapter, test, prompts, batch_size=32)
    res = scoring.classification(y, s, ds.classes)
    print({c: round(v, 3) for c, v in res["auroc"].items()}, "macro", round(res["auroc_macro"], 3))
    assert res["auroc_macro"] >= 0.6
    assert np.nanmin([v for v in res["auroc"].values() if v is not None]) >= 0.4
