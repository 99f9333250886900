"""Units of `cxrvlp-bench real` that need no ../shared: statistics, manifest parsing, roles, tasks."""

from __future__ import annotations

import numpy as np
import pytest
from cxrvlp.bench.real.frozen import dataset_size
from cxrvlp.bench.real.manifest import (
    BinaryTask,
    default_tasks,
    probe_split,
    read_manifest,
    select_tasks,
    split_roles,
    task_rows,
)
from cxrvlp.bench.real.stats import (
    C_GRID,
    DEFAULT_C,
    auroc,
    bootstrap_auroc,
    choose_c,
    paired_difference,
    probe_scores,
)
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError
from sklearn.metrics import roc_auc_score


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    s = np.round(rng.normal(size=300) + y, 1)  # rounding makes ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.ones(5), s[:5])


def test_bootstrap_interval_brackets_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (60, 600):
        y = rng.integers(0, 2, n).astype(float)
        s = rng.normal(size=n) + 1.2 * y
        a, lo, hi = bootstrap_auroc(y, s, 300, seed=0)
        assert lo <= a <= hi and 0.5 < a < 1.0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_paired_difference_detects_a_better_scorer_and_is_antisymmetric():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400).astype(float)
    good, weak = rng.normal(size=400) + 2.0 * y, rng.normal(size=400) + 0.5 * y
    d, lo, hi = paired_difference(y, good, weak, 300, seed=0)
    assert d == pytest.approx(auroc(y, good) - auroc(y, weak)) and lo > 0.0
    d2, lo2, hi2 = paired_difference(y, weak, good, 300, seed=0)
    assert d2 == pytest.approx(-d) and hi2 == pytest.approx(-lo) and lo2 == pytest.approx(-hi)


def test_probe_separates_linearly_separable_features_and_refuses_one_class():
    rng = np.random.default_rng(3)
    y = np.repeat([0.0, 1.0], 50)
    f = rng.normal(size=(100, 8))
    f[:, 0] += 4 * y
    p, c = probe_scores(f[::2], y[::2], f[1::2], seed=0)
    assert auroc(y[1::2], p) > 0.95 and c == DEFAULT_C
    p, c = probe_scores(f[::2], y[::2], f[1::2], seed=0, groups=np.arange(50))
    assert auroc(y[1::2], p) > 0.95 and c in C_GRID
    with pytest.raises(ValueError, match="one class"):
        probe_scores(f[:10], np.zeros(10), f[10:], seed=0)


def test_cross_validated_c_regularises_a_weak_signal_among_noise_dimensions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120).astype(float)
    f = rng.normal(size=(120, 50))
    f[:, :3] += 0.8 * y[:, None]  # three weak features among 50: a large C fits the noise
    c, means = choose_c(f, y, np.arange(120), seed=0)
    assert set(means) == set(C_GRID)
    assert c <= 0.1 and means[c] > means[10.0] + 0.05


def test_cross_validation_folds_never_split_a_patient():
    # three near-copies of each patient's image and a label drawn per patient, no signal: folds that split a
    # patient reward memorising it (a large C scores ~1); patient folds see ~chance at every C
    rng = np.random.default_rng(1)
    base, lab = rng.normal(size=(40, 60)), rng.integers(0, 2, 40).astype(float)
    f = np.repeat(base, 3, axis=0) + 0.01 * rng.normal(size=(120, 60))
    y, patient = np.repeat(lab, 3), np.repeat(np.arange(40), 3)
    leaky = choose_c(f, y, np.arange(120), seed=0)[1]
    grouped = choose_c(f, y, patient, seed=0)[1]
    assert leaky[10.0] > 0.9
    assert max(grouped.values()) < 0.75
    assert choose_c(f[:2], y[:2], np.zeros(2), seed=0) == (DEFAULT_C, {})  # one patient: no folds


def _write(path, header, rows):
    path.write_text("\n".join([",".join(header), *[",".join(r) for r in rows]]) + "\n")
    return path


def test_manifest_errors_name_the_file_and_row(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="manifest"):
        read_manifest(tmp_path / "absent.csv")
    bad = _write(tmp_path / "m1.csv", ["dataset", "image_path", "labels"], [["a", "x.png", "Pneumonia"]])
    with pytest.raises(MalformedRecordError, match="patient_id"):
        read_manifest(bad)
    empty = _write(
        tmp_path / "m2.csv",
        ["dataset", "image_path", "labels", "patient_id"],
        [["a", "x.png", "Pneumonia", "p1"], ["a", "", "Pneumonia", "p2"]],
    )
    with pytest.raises(MalformedRecordError, match=r"m2\.csv.*3"):
        read_manifest(empty)


def _rows(n_pos=20, n_neg=20, ds="kids"):
    rows = []
    for i in range(n_pos + n_neg):
        lab = "Pneumonia" if i < n_pos else "No Finding"
        rows.append(
            {"dataset": ds, "image_path": f"{i}.png", "labels": lab, "patient_id": f"p{i // 2}",
             "width": "256", "height": "200", "suggested_role": "demo_eval" if i % 3 else "demo_pretrain"}
        )  # fmt: skip
    return rows


def test_tasks_roles_and_splits():
    rows = _rows()
    tasks = default_tasks(rows)
    assert [t.name for t in tasks] == ["kids: pneumonia vs no finding"]
    assert select_tasks(tasks, ["kids"]) == tasks
    with pytest.raises(ValueError, match="allows"):
        select_tasks(tasks, ["nope"])
    fit, ev = split_roles(rows, None)
    assert {r["suggested_role"] for r in ev} == {"demo_eval"} and len(fit) + len(ev) == len(rows)
    no_roles = [{**r, "suggested_role": ""} for r in rows]
    fit, ev = split_roles(no_roles, None, seed=0)
    assert not {r["patient_id"] for r in fit} & {r["patient_id"] for r in ev} and fit and ev
    keep, y = task_rows(BinaryTask("t", "kids", "Pneumonia", "No Finding"), rows, max_rows=10)
    assert len(keep) == 10 and 0 < y.sum() < 10  # evenly spaced over a class-sorted list keeps both
    mask = probe_split(rows, seed=0)
    train_p = {r["patient_id"] for r, m in zip(rows, mask) if m}
    test_p = {r["patient_id"] for r, m in zip(rows, mask) if not m}
    assert train_p and test_p and not train_p & test_p
    assert (probe_split(rows, seed=1) != mask).any()  # the split follows the seed


def test_a_task_with_too_few_rows_in_a_class_is_reported_not_formed():
    rows = [{"dataset": "cov", "labels": "Pneumonia|COVID-19"}] * 12 + [
        {"dataset": "cov", "labels": "No Finding"}
    ] * 3
    skipped: list[str] = []
    assert default_tasks(rows, skipped=skipped) == []
    assert skipped == ["cov: COVID-19 vs other findings (12 vs 3 rows; needs 10 each)"]
    more = rows + [{"dataset": "cov", "labels": "No Finding"}] * 7
    assert [t.name for t in default_tasks(more)] == ["cov: COVID-19 vs other findings"]


def test_dataset_size_never_upsamples_small_images():
    assert dataset_size([{"width": "64", "height": "64"}], 224) == 64
    assert dataset_size([{"width": "256", "height": "200"}], 224) == 224
    assert dataset_size([{"width": "", "height": ""}], 160) == 160
