"""The demo shows learning (issue 26): the cause of the old failure pinned, and a scaled-down demo run.

Cause: the earlier synthetic MIMIC reports negated each class in 50-70 % of the reports without it while only
10-16 % of studies had it, so a class's words sat mostly in "No ..." sentences and a short image-text run
learned them as "normal image" (zero-shot AUROC below 0.5). Real reports affirm these findings more often than
they negate them; the mirror now follows the real CheXpert labeler's rates (synthetic/cases.py, reports.py).
"""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
import torch
from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import class_scores
from cxrvlp.bench.prompts import prompts_for
from cxrvlp.bench.sources import DataSource, method_status
from cxrvlp.bench.tasks.base import label_matrix

# classes the real CheXpert labeler marks positive more often than negated on the real CheXpert train reports
# (../shared/data/labels/chexpert_train.csv.gz): Pleural Effusion 0.39 vs 0.16, Edema 0.23 vs 0.09,
# Cardiomegaly 0.12 vs 0.05, Atelectasis 0.15 vs 0.01
AFFIRMED = ("Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion")

# the scaled-down demo: FAST_METHOD's tiny config, FAST_STEPS steps on FAST_PATIENTS synthetic MIMIC patients.
# Measured (seed 0, one thread, generator 1.3.0 with the full demo's lesion prevalence, AFLoc's demo budget
# keys incl. its cosine schedule): 80 steps macro 0.760; Atelectasis 0.74, Cardiomegaly 0.75, Consolidation
# 0.68, Edema 0.93, Pleural Effusion 0.72; ~15 s wall. (Generator 1.2.0 with StepLR: 0.732.) Token numbering
# alone moved the same steps by ~0.1 before the built vocab was deterministic. The old demo's failure was
# macro 0.34-0.48, so the bars below catch its return with room for CPU numerics.
FAST_METHOD, FAST_STEPS, FAST_PATIENTS = "afloc", 80, 120


def test_mimic_mirror_affirms_findings_more_than_it_negates_them(tmp_path):
    from cxrvlp.core.data.synthetic import write_mimic_cxr

    root = write_mimic_cxr(tmp_path / "mimic-cxr", n_patients=150, seed=0, image_size=16)
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 200
    for cls in AFFIRMED:
        pos = sum(r[cls] == "1.0" for r in rows)
        neg = sum(r[cls] == "0.0" for r in rows)
        assert pos > neg, (cls, pos, neg)
    # and the class words occur in the text mostly outside negations
    for cls in AFFIRMED:
        assert sum(r[cls] in ("1.0", "-1.0") for r in rows) > 1.5 * sum(r[cls] == "0.0" for r in rows), cls


def test_demo_sizes_keep_the_learning_budget():
    from cxrvlp.bench.demo import SIZES, demo_overrides

    full = SIZES["full"]
    assert full["limit"] is None and full["mimic_patients"] >= 300
    assert full["cxr14_test_images"] >= 1000  # per-class AUROC of the rare classes steady to ~+-0.03
    assert full["method_budgets"]
    for m in ("mgca", "cxrclip", "carzero", "afloc", "mavl"):
        steps = [int(o.split("=")[1]) for o in demo_overrides(m, "full") if o.startswith("max_steps=")]
        assert steps and steps[-1] >= FAST_STEPS, m


def test_scaled_down_demo_learns_zero_shot(tmp_path):
    """A scaled-down demo: FAST_METHOD's demo recipe, fewer steps and patients, CheXpert-mirror zero-shot."""
    spec, why = method_status(FAST_METHOD)
    if spec is None:
        pytest.skip(why)
    from cxrvlp.bench.demo import demo_overrides
    from cxrvlp.core.data.synthetic import write_chexpert, write_mimic_cxr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from cxrvlp.bench.demo import SIZES

        prevalence = SIZES["full"]["mimic_prevalence"]  # the full demo's corpus, scaled down
        mimic = write_mimic_cxr(tmp_path / "mimic-cxr", FAST_PATIENTS, 0, 64, prevalence)
        chex = write_chexpert(tmp_path / "chexpert", n_train_patients=4, n_valid=4, n_test=200, n_per_class=2,
                              image_size=64)  # fmt: skip
        over = [o for o in demo_overrides(FAST_METHOD, "full") if not o.startswith("max_steps=")]
        run = spec.train("tiny", [f"output_dir={tmp_path / 'run'}", f"data.root={mimic}", *over,
                                  f"max_steps={FAST_STEPS}", "log_every_steps=1000"])  # fmt: skip
        adapter = spec.load_adapter(run / "final")
        ds = dsreg.get("chexpert")
        test = DataSource(ds, chex, synthetic=True).load("test")
        y = label_matrix(test, ds.classes, ds.name)
        prompts, _ = prompts_for(FAST_METHOD, ds.name, ds.classes)
        res = scoring.classification(y, class_scores(adapter, test, prompts, batch_size=50), ds.classes)
    finally:
        torch.set_num_threads(threads)
    print({c: round(v, 3) for c, v in res["auroc"].items()}, "macro", round(res["auroc_macro"], 3))
    assert res["auroc_macro"] >= 0.65
    assert np.nanmin([v for v in res["auroc"].values() if v is not None]) >= 0.5
