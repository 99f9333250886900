"""`plot`: ROC curves per class, method x dataset heat tables, label-efficiency curves, grounding overlays."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cxrvlp.bench.record import load_results  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

SYN_NOTE = "SYNTHETIC DATA (pipeline check, not results)"


def roc_figure(npz: Path, title: str, out: Path, synthetic: bool) -> Path | None:
    """One ROC panel with a curve per class (classes with both outcomes); legend gives AUROC."""
    d = np.load(npz, allow_pickle=False)
    y, s, classes = d["y_true"], d["y_score"], [str(c) for c in d["classes"]]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    drawn = 0
    for c, name in enumerate(classes):
        ok = np.isfinite(y[:, c])
        if len(np.unique(y[ok, c])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[ok, c], s[ok, c])
        auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} ({auc:.2f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title + (f"\n{SYN_NOTE}" if synthetic else ""), fontsize=10)
    ax.legend(fontsize=7, loc="lower right", title="class (AUROC)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def heat_table(results: list[dict], task: str, metric: str, out: Path) -> Path | None:
    """Methods (rows) x datasets (columns) coloured by `metric`; blank where not run, 'skip' where skipped."""
    recs = [r for r in results if r["task"] == task]
    if not recs:
        return None
    methods = sorted({r["method"] for r in recs})
    datasets = sorted({r["dataset"] for r in recs})
    vals = np.full((len(methods), len(datasets)), np.nan)
    text = [["" for _ in datasets] for _ in methods]
    seeds: dict[tuple[int, int], list[float]] = {}
    for r in recs:
        i, j = methods.index(r["method"]), datasets.index(r["dataset"])
        v = (r.get("metrics") or {}).get(metric) if r.get("status") == "ok" else None
        if v is not None:  # the mean over every seed (not a running pairwise average)
            seeds.setdefault((i, j), []).append(float(v))
            vals[i, j] = float(np.mean(seeds[(i, j)]))
            text[i][j] = f"{vals[i, j]:.2f}"
        elif not text[i][j]:  # ok without this metric = undefined here (e.g. no positives in the split)
            text[i][j] = {"skipped": "skip", "ok": "n/a"}.get(r.get("status"), r.get("status", ""))
    fig, ax = plt.subplots(figsize=(1.3 * len(datasets) + 2.5, 0.55 * len(methods) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(datasets)):
            v = vals[i, j]
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="black" if np.isfinite(v) and v > 0.6 else "white" if np.isfinite(v) else "gray",
            )
    fig.colorbar(im, ax=ax, label=metric)
    synthetic = any(r.get("synthetic") for r in recs)
    ax.set_title(f"{task}: {metric}" + (f"\n{SYN_NOTE}" if synthetic else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def fraction_curves(results: list[dict], task: str, metric: str) -> dict[tuple[str, str], dict[float, list]]:
    """(method, dataset) -> label fraction (%) -> values over seeds of `metric@N%` (ok results only)."""
    curves: dict[tuple[str, str], dict[float, list]] = {}
    for r in results:
        if r["task"] != task or r.get("status") != "ok":
            continue
        for k, v in (r.get("metrics") or {}).items():
            if k.startswith(metric + "@") and k.endswith("%") and v is not None:
                frac = float(k[len(metric) + 1 : -1])
                curves.setdefault((r["method"], r["dataset"]), {}).setdefault(frac, []).append(float(v))
    return curves


def label_efficiency_figure(results: list[dict], task: str, metric: str, out: Path) -> Path | None:
    """The label-efficiency curve: `metric` against the share of training labels (log axis), one line
    per (method, dataset), mean over seeds with the seed range as a band."""
    curves = fraction_curves(results, task, metric)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for (method, dataset), pts in sorted(curves.items()):
        xs = sorted(pts)
        mean = np.array([np.mean(pts[x]) for x in xs])
        lo, hi = np.array([min(pts[x]) for x in xs]), np.array([max(pts[x]) for x in xs])
        (line,) = ax.plot(xs, mean, marker="o", lw=1.5, label=f"{method} / {dataset}")
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks([1, 10, 100], ["1 %", "10 %", "100 %"])
    ax.set(xlabel="share of the training labels", ylabel=metric, ylim=(0, 1.0))
    synthetic = any(r.get("synthetic") for r in results if r["task"] == task)
    ax.set_title(f"label efficiency, {task}: {metric}" + (f"\n{SYN_NOTE}" if synthetic else ""), fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def grounding_figure(npz: Path, title: str, out: Path, synthetic: bool) -> Path:
    """Per example: the image, the map over it, and the ground-truth outline."""
    d = np.load(npz, allow_pickle=False)
    images, maps, masks, classes = d["images"], d["maps"], d["masks"], [str(c) for c in d["classes"]]
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(max(3.2 * n, 6.5), 4.0), squeeze=False)
    for k, ax in enumerate(axes[0]):
        img = images[k]
        ax.imshow((img - img.min()) / (np.ptp(img) + 1e-8), cmap="gray")
        hm = maps[k]
        hm = (hm - hm.min()) / (np.ptp(hm) + 1e-8)
        ax.imshow(hm, cmap="jet", alpha=0.35)
        ax.contour(masks[k].astype(float), levels=[0.5], colors="lime", linewidths=1.5)
        yx = np.unravel_index(np.argmax(maps[k]), maps[k].shape)
        ax.plot(yx[1], yx[0], "w+", ms=12, mew=2)
        ax.set_title(classes[k], fontsize=9)
        ax.axis("off")
    fig.suptitle(
        title + "\nmap (jet), ground truth (green), argmax (+)" + (f"\n{SYN_NOTE}" if synthetic else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_all(out_dir: str | Path) -> list[Path]:
    """All figures for the results under out_dir/runs into out_dir/plots."""
    out_dir = Path(out_dir)
    pdir = out_dir / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    results = load_results(out_dir)
    written: list[Path] = []
    for task, metric in (
        ("zeroshot", "auroc_macro"),
        ("zeroshot", "accuracy"),
        ("grounding", "pointing_game_macro"),
        ("retrieval", "i2t_R@5"),
        ("linear_probe", "auroc_macro@100%"),
        ("segmentation", "dice_positives@100%"),
    ):
        if any(metric in (r.get("metrics") or {}) for r in results if r["task"] == task):
            p = heat_table(
                results,
                task,
                metric,
                pdir / f"heat_{task}_{metric.replace('%', 'pct').replace('@', '_')}.png",
            )
            if p:
                written.append(p)
    for task, metric in (
        ("linear_probe", "auroc_macro"),
        ("finetune", "auroc_macro"),
        ("segmentation", "dice_positives"),
    ):
        p = label_efficiency_figure(results, task, metric, pdir / f"label_efficiency_{task}_{metric}.png")
        if p:
            written.append(p)
    for jp in sorted((out_dir / "runs").rglob("*.json")):
        rec = json.loads(jp.read_text())
        tag = f"{rec['method']} on {rec['dataset']} ({rec['task']}, seed {rec['seed']})"
        syn = bool(rec.get("synthetic"))
        roc = jp.with_suffix(".npz")
        if roc.exists():
            p = roc_figure(roc, f"ROC: {tag}", pdir / f"roc_{rec['method']}_{rec['dataset']}.png", syn)
            if p:
                written.append(p)
        gnd = jp.with_name(jp.stem + "_grounding.npz")
        if gnd.exists():
            written.append(
                grounding_figure(gnd, tag, pdir / f"grounding_{rec['method']}_{rec['dataset']}.png", syn)
            )
    return written
