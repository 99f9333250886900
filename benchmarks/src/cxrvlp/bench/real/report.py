"""Markdown table and bar plot of a `real` record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLOURS = {"imagenet": "tab:blue", "pretrained": "tab:blue", "random": "tab:gray", "checkpoint": "tab:green"}


def markdown(rec: dict[str, Any]) -> str:
    """Markdown: the setup, every AUROC [95 % CI], and the paired pretrained-minus-random differences."""
    enc = rec["frozen_encoder"]
    lines = [
        "# Real images: frozen-encoder probe and short contrastive fine-tunes",
        "",
        "Real, small, domain-shifted images: these figures check that the pretrained weights and the whole "
        "path from real radiographs to a metric work. They are not paper-level results, and the small "
        "configs are not the papers' backbones.",
        "",
        f"- Bare encoder: {enc['name']}, frozen; {enc['resize']}; {enc['normalisation']}; sizes per dataset "
        f"{rec['image_sizes']}.",
        f"- Probe: {rec['probe']}.",
        f"- Intervals: {rec['interval']}.",
        f"- Contrastive part: {rec['contrastive'].get('summary', rec['contrastive'])}.",
        f"- Tasks not formed (too few eval rows in a class): {rec.get('tasks_not_formed') or 'none'}.",
        f"- Wall time: {rec['wall_s']} s.",
        "",
    ]
    if rec.get("evaluations"):
        lines += ["Evaluations (the figures' names):", ""]
        lines += [f"- **{name}**: {meaning}." for name, meaning in rec["evaluations"].items()]
        lines.append("")
    if rec.get("fit_row_probe"):
        lines += ["Probe fitted on the fit rows, per task:", ""]
        lines += [f"- {task}: {st['note']}." for task, st in rec["fit_row_probe"].items()]
        lines.append("")
    lines += [
        "| task | model | init | evaluation | seed | AUROC [95 % CI] | n train / test (pos) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rec["results"]:
        lines.append(
            f"| {r['task']} | {r['model']} | {r['init']} | {r['evaluation']} | {r['seed']} | "
            f"{r['auroc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
            f"{r['n_train']} / {r['n_test']} ({r['n_pos_test']}) |"
        )
    if rec["differences"]:
        lines += [
            "",
            "Paired differences, a minus b on the same rows (the evaluation's scored rows; the fit-row probe "
            "vs the eval split: the eval split's probe-test rows):",
            "",
            "| task | model | evaluation | seed | a | b | AUROC difference a - b [95 % CI] |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in rec["differences"]:
            lines.append(
                f"| {d['task']} | {d['model']} | {d['evaluation']} | {d['seed']} | {d['a']} | {d['b']} | "
                f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |"
            )
    if rec.get("pointing_game"):
        lines += [
            "",
            "Box pointing game, a sanity figure only (query = box label; hit = map maximum inside the box):",
            "",
            "| model | init | rows | hit rate [95 % CI] | chance | boxes (images) |",
            "|---|---|---|---|---|---|",
        ]
        for p in rec["pointing_game"]:
            lines.append(
                f"| {p['model']} | {p['init']} | {p['rows']} | {p['hit_rate']:.3f} [{p['ci_low']:.3f}, "
                f"{p['ci_high']:.3f}] | {p['chance']:.3f} | {p['n_boxes']} ({p['n_images']}) |"
            )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """One panel per task: bars per (model, evaluation), pretrained vs random side by side, 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    fig, axes = plt.subplots(
        len(tasks), 1, figsize=(8.0, 2.9 * max(1, len(tasks))), squeeze=False, constrained_layout=True
    )
    for ax, task in zip(axes[:, 0], tasks):
        rs = [r for r in results if r["task"] == task]
        groups = list(dict.fromkeys((r["model"], r["evaluation"]) for r in rs))
        # the bare encoder's "imagenet" and the methods' "pretrained" share the first slot
        slots = [k for k in ("pretrained", "random", "checkpoint") if any(_slot(r["init"]) == k for r in rs)]
        width = 0.8 / max(1, len(slots))
        for k, slot in enumerate(slots):
            m, lo, hi = [], [], []
            for g in groups:
                sel = [r for r in rs if (r["model"], r["evaluation"]) == g and _slot(r["init"]) == slot]
                m.append(np.mean([r["auroc"] for r in sel]) if sel else np.nan)  # mean over seeds
                lo.append(np.mean([r["ci_low"] for r in sel]) if sel else np.nan)
                hi.append(np.mean([r["ci_high"] for r in sel]) if sel else np.nan)
            xs = np.arange(len(groups)) + (k - (len(slots) - 1) / 2) * width
            label = {"pretrained": "pretrained init (ImageNet / MiniLM)"}.get(slot, f"{slot} init")
            ax.bar(xs, m, width=width * 0.95, color=COLOURS[slot], label=label)
            yerr = [np.subtract(m, lo), np.subtract(hi, m)]
            ax.errorbar(xs, m, yerr=yerr, fmt="none", ecolor="black", capsize=3)
        ax.axhline(0.5, color="red", lw=0.8, ls="--")
        ax.set_xticks(range(len(groups)), [f"{mo}\n{_short(ev)}" for mo, ev in groups], fontsize=7)
        ax.set_ylim(0.2, 1.0)
        ax.set_ylabel("AUROC", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7, loc="lower right", ncol=len(slots))
    fig.suptitle(
        "Real images: AUROC (95 % bootstrap CI; fit-row probe: all eval rows, others: probe-test rows); "
        "dashed = chance",
        fontsize=8,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _slot(init: str) -> str:
    return "pretrained" if init == "imagenet" else init


def _short(evaluation: str) -> str:
    """Axis label: "linear probe, 16 per class" -> "probe, 16/class"; the fit-row probe: "probe, fit rows"."""
    if "fitted on the fit rows" in evaluation:
        return "probe, fit rows"
    return evaluation.replace("linear probe", "probe").replace(" per class", "/class")
