"""Zero-shot classification: AUROC/AUPRC per class and macro; F1/accuracy at validation-chosen thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
from cxrvlp.bench import scoring
from cxrvlp.bench.inference import class_scores
from cxrvlp.bench.prompts import prompts_for
from cxrvlp.bench.record import prompts_record
from cxrvlp.bench.tasks.base import TaskContext, TaskSkipped, label_matrix


def rare_classes(y: np.ndarray, classes: tuple[str, ...], k: int) -> list[str]:
    """The k classes with the fewest positive test images among those AUROC is defined for (ties: name)."""
    pos, neg = np.nansum(y == 1, axis=0), np.nansum(y == 0, axis=0)
    ok = [j for j in range(len(classes)) if pos[j] > 0 and neg[j] > 0]
    return [classes[j] for j in sorted(ok, key=lambda j: (pos[j], classes[j]))[:k]]


def run_zeroshot(ctx: TaskContext) -> dict[str, Any]:
    """Score the test split (and the validation split for thresholds) with the method's prompts."""
    ds = ctx.dataset
    prompts, label = prompts_for(ctx.method, ds.name, ds.classes)
    ctx.record["prompts"] = prompts_record(prompts, label)
    test = ctx.load(ds.test_split)
    if not test:
        raise TaskSkipped(f"{ds.name}: the {ds.test_split} split is empty")
    y = label_matrix(test, ds.classes, ds.name)  # (N, C)
    # scores cached per (model, checkpoint, preprocessing, split images, prompt set): a rerun after a crash or
    # with other metrics does not encode the split again
    kind = f"zeroshot-scores-{ctx.content_key(ctx.record['prompts'])}"

    def score(split: str, samples, what: str) -> np.ndarray:
        kw = ctx.pass_kw(f"{ds.name} {what}")
        return ctx.cached(kind, split, lambda: class_scores(ctx.adapter, samples, prompts, **kw))

    s = score(ds.test_split, test, "zero-shot")  # (N, C)
    if not np.isfinite(s).all():
        raise FloatingPointError(f"{ctx.method} on {ds.name}: non-finite zero-shot scores")
    out: dict[str, Any] = {"n_test": len(test), "test_split": ds.test_split}
    if ds.multiclass:
        keep = np.nansum(y, axis=1) == 1  # exactly one positive class per image
        out["metrics"] = {"accuracy": scoring.multiclass_accuracy(y[keep], s[keep])}
        hit = np.argmax(s[keep], 1) == np.argmax(np.nan_to_num(y[keep]), 1)
        out["ci95"] = {"accuracy": scoring.mean_ci(hit.astype(np.float64), ctx.n_bootstrap, ctx.seed)}
        out["threshold_choice"] = "none: argmax over classes"
    else:
        cls = scoring.classification(y, s, ds.classes)
        out["metrics"] = {"auroc_macro": cls["auroc_macro"], "auprc_macro": cls["auprc_macro"]}
        out["per_class"] = {"auroc": cls["auroc"], "auprc": cls["auprc"]}
        out["ci95"] = {"auroc_macro": scoring.auroc_macro_ci(y, s, ctx.n_bootstrap, ctx.seed)}
        if ds.rare_k:
            rare = rare_classes(y, ds.classes, ds.rare_k)
            cols = [ds.classes.index(c) for c in rare]
            name = f"auroc_macro_rare{ds.rare_k}"
            out["metrics"][name] = float(np.mean([cls["auroc"][c] for c in rare])) if rare else None
            out["ci95"][name] = scoring.auroc_macro_ci(y[:, cols], s[:, cols], ctx.n_bootstrap, ctx.seed)
            pos = np.nansum(y == 1, axis=0)
            out["rare_classes"] = {c: int(pos[ds.classes.index(c)]) for c in rare}
            out["n_classes_le10_positives"] = int(((pos > 0) & (pos <= 10)).sum())  # CARZero's code's rule
        if ds.val_split is not None:
            val = ctx.load(ds.val_split)
            yv = label_matrix(val, ds.classes, ds.name)
            sv = score(ds.val_split, val, "val")
            thr = scoring.choose_thresholds(yv, sv)
            th = scoring.thresholded(y, s, thr, ds.classes)
            out["metrics"].update({"f1_macro": th["f1_macro"], "accuracy_macro": th["accuracy_macro"]})
            out["per_class"].update({"f1": th["f1"], "accuracy": th["accuracy"]})
            out["thresholds"] = dict(zip(ds.classes, thr.tolist()))
            out["threshold_choice"] = f"max F1 per class on the '{ds.val_split}' split ({len(val)} images)"
        else:
            out["threshold_choice"] = "none: no validation split, F1/accuracy not reported"
    path = ctx.sidecar(".npz")
    if path is not None:  # scores for ROC plots
        np.savez_compressed(path, y_true=y, y_score=s, classes=np.array(ds.classes))
        out["arrays"] = path.name
    return out
