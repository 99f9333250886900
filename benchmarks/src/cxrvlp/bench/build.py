"""`build`: all result JSONs -> one CSV and a Markdown table, with the papers' numbers beside ours."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from cxrvlp.bench.record import load_results

SYNTHETIC_BANNER = (
    "**SYNTHETIC DATA.** These numbers come from synthetic phantom images written by "
    "`cxrvlp.core.data.synthetic`, not from the real datasets: they show that the pipeline runs end to end "
    "and mean nothing about the methods. The paper column is there for layout only."
)

COLUMNS = (
    "method",
    "dataset",
    "task",
    "metric",
    "ours_mean",
    "ours_std",
    "n_seeds",
    "ci95_low",
    "ci95_high",
    "ci95_seed",
    "paper",
    "paper_source",
    "paper_note",
    "synthetic",
    "status",
    "protocol",
)


def paper_numbers() -> dict[str, Any]:
    """The reported figures shipped with the package (paper_numbers.yaml)."""
    text = resources.files("cxrvlp.bench").joinpath("paper_numbers.yaml").read_text()
    return yaml.safe_load(text) or {}


def paper_value(
    table: dict[str, Any], method: str, dataset: str, task: str, metric: str
) -> dict[str, Any] | None:
    """The paper's entry for one cell, or None."""
    try:
        return table[method][dataset][task][metric]
    except (KeyError, TypeError):
        return None


# What "protocol" means in a paper key, per task, when the entry does not say otherwise.
TASK_PROTOCOL = {
    "zeroshot": "zero-shot",
    "grounding": "zero-shot",
    "retrieval": "zero-shot",
    "linear_probe": "linear probe on frozen features",
    "segmentation": "frozen encoder + decoder",
    "finetune": "end-to-end fine-tuning",
}


def _fraction(metric: str) -> str | None:
    return metric.split("@", 1)[1] if "@" in metric and metric.endswith("%") else None


def _paper_variants(method: str) -> tuple[str, ...]:
    try:
        from cxrvlp.core.registry import get_method

        return tuple(r.name for r in get_method(method).pretrained)
    except Exception:  # not installed / no contract yet: no variant can match
        return ()


def result_key(rec: dict[str, Any], metric: str) -> tuple[str, str, str, str, str, str | None]:
    """(method, variant, dataset, task, protocol, label fraction) of one result's metric."""
    variant = str((rec.get("adapter") or {}).get("model_name") or "").replace(" (official)", "").strip()
    return (rec["method"], variant, rec["dataset"], rec["task"], TASK_PROTOCOL.get(rec["task"], rec["task"]),
            _fraction(metric))  # fmt: skip


def paper_key(entry: dict[str, Any], method: str, dataset: str, task: str, metric: str) -> dict[str, Any]:
    """The key a paper figure stands for: variants (any of), protocol, label fraction."""
    v = entry.get("variant")
    variants = tuple([v] if isinstance(v, str) else v) if v else _paper_variants(method)
    return {
        "variants": variants,
        "protocol": entry.get("protocol", TASK_PROTOCOL.get(task, task)),
        "label_fraction": entry.get("label_fraction", _fraction(metric)),
    }


def paper_match(entry: dict[str, Any] | None, rec: dict[str, Any], metric: str) -> tuple[bool, str]:
    """(the figure applies to this result, why not when it does not)."""
    if entry is None:
        return False, ""
    method, variant, dataset, task, protocol, frac = result_key(rec, metric)
    k = paper_key(entry, method, dataset, task, metric)
    why = []
    if variant not in k["variants"]:
        why.append(f"paper variant {'/'.join(k['variants']) or '?'}, ours {variant or '?'}")
    if protocol != k["protocol"]:
        why.append(f"paper protocol '{k['protocol']}', ours '{protocol}'")
    if frac != k["label_fraction"]:
        why.append(f"paper label fraction {k['label_fraction']}, ours {frac}")
    return (not why), "; ".join(why)


def rows_from_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, dataset, task, metric): mean and std over seeds, and the paper figure."""
    papers = paper_numbers()
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["method"], r["dataset"], r["task"])].append(r)
    rows = []
    # A method skipped everywhere for one reason (not installed / implemented) gets one row, not one per cell.
    whole: dict[str, str] = {}
    for method in {m for m, _, _ in groups}:
        recs = [r for (m, _, _), rs in groups.items() if m == method for r in rs]
        reasons = {r.get("reason") for r in recs}
        if all(r.get("status") != "ok" for r in recs) and len(reasons) == 1:
            whole[method] = str(next(iter(reasons)))
            rows.append(
                {
                    "method": method,
                    "dataset": "(all)",
                    "task": "(all)",
                    "metric": "",
                    "ours_mean": None,
                    "ours_std": None,
                    "n_seeds": 0,
                    "ci95_low": None,
                    "ci95_high": None,
                    "ci95_seed": None,
                    "paper": None,
                    "paper_source": "",
                    "paper_note": "",
                    "synthetic": any(r.get("synthetic") for r in recs),
                    "status": whole[method],
                    "protocol": "",
                }
            )
    for (method, dataset, task), recs in sorted(groups.items()):
        if method in whole:
            continue
        ok = [r for r in recs if r.get("status") == "ok"]
        synthetic = any(r.get("synthetic") for r in recs)
        if not ok:
            r0 = recs[0]
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "task": task,
                    "metric": "",
                    "ours_mean": None,
                    "ours_std": None,
                    "n_seeds": 0,
                    "ci95_low": None,
                    "ci95_high": None,
                    "ci95_seed": None,
                    "paper": None,
                    "paper_source": "",
                    "paper_note": "",
                    "synthetic": synthetic,
                    "status": _status(r0),
                    "protocol": "",
                }
            )
            continue
        metrics = sorted({m for r in ok for m in (r.get("metrics") or {})})
        protocol = (ok[0].get("prompts") or {}).get("protocol") or ok[0].get("protocol", "")
        for m in metrics:
            vals = [r["metrics"].get(m) for r in ok]
            vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            p = paper_value(papers, method, dataset, task, m)
            matches, why = paper_match(p, ok[0], m)
            if p is not None and not matches:  # a figure for another model / protocol / fraction: not shown
                note = f"no paper figure for this key ({why}; paper's figure {float(p['value']):.3f})"
                p = {"value": None, "source": p.get("source", ""), "note": note, "unmatched": True}
            with_ci = [r for r in ok if (r.get("ci95") or {}).get(m)]
            first = min(with_ci, key=lambda r: r["seed"]) if with_ci else None
            ci = first["ci95"][m] if first is not None else None
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "task": task,
                    "metric": m,
                    "ours_mean": float(np.mean(vals)) if vals else None,
                    "ours_std": float(np.std(vals)) if len(vals) > 1 else None,
                    "n_seeds": len(vals),
                    "ci95_low": None if ci is None else float(ci[0]),
                    "ci95_high": None if ci is None else float(ci[1]),
                    "ci95_seed": None if first is None else first["seed"],
                    "paper": None if p is None or p["value"] is None else float(p["value"]),
                    "paper_source": "" if p is None else p.get("source", ""),
                    "paper_note": "" if p is None else p.get("note", ""),
                    "synthetic": synthetic,
                    "status": "ok",
                    "protocol": protocol,
                }
            )
    return rows


def _status(r: dict[str, Any]) -> str:
    reason = str(r.get("reason", ""))
    return reason if reason.startswith(("skipped", "error")) else f"{r.get('status')}: {reason}"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict[str, Any]], synthetic: bool) -> str:
    """The Markdown report: banner when synthetic, then one table of ours vs paper."""
    lines = ["# cxrvlp benchmark results", ""]
    if synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        "Ours = mean ± std over seeds (std only with more than one seed), then [the 95 % percentile "
        "bootstrap interval over test images of the first seed's figure]. Paper = the figure the spec copied "
        "from the source named in `paper_numbers.yaml` (⚠ = recalled, read off a plot, oracle threshold or "
        "third party: see the CSV's paper_note). A paper figure is shown only beside a result with the same "
        "(method, variant, dataset, task, protocol, label fraction); † = the paper reports this cell for "
        "another "
        "model, protocol or label fraction (the CSV's paper_note names it).",
        "",
        "| method | dataset | task | metric | ours | paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['dataset']} | {r['task']} | - | {r['status']} | - |")
            continue
        ours = _fmt(r["ours_mean"]) + (f" ± {_fmt(r['ours_std'])}" if r["ours_std"] is not None else "")
        if r.get("ci95_low") is not None:
            ours += f" [{_fmt(r['ci95_low'])}, {_fmt(r['ci95_high'])}]"
        if r["paper"] is None and r["paper_note"].startswith("no paper figure"):
            paper = "no match †"
        else:
            paper = _fmt(r["paper"]) + (" ⚠" if r["paper_note"] else "")
        lines.append(f"| {r['method']} | {r['dataset']} | {r['task']} | {r['metric']} | {ours} | {paper} |")
    return "\n".join(lines) + "\n"


def build(out_dir: str | Path) -> tuple[Path, Path]:
    """Write results.csv and results.md into out_dir from out_dir/runs/**.json."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    rows = rows_from_results(results)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    md_path.write_text(markdown(rows, synthetic=any(r.get("synthetic") for r in results)))
    return csv_path, md_path
