"""`cxrvlp-bench perf`: throughput, FLOPs, memory and matmul-peak utilisation of every registered model, and
(`--vs-official DIR`) the official harnesses run interleaved with ours, with per-pair ratios.

    cxrvlp-bench perf --models mgca-tiny --batch-sizes 4 --out outputs/perf
    cxrvlp-bench perf --vs-official /work/perfenv --comparisons mgca-vit-b8 --rounds 3 \\
        --out benchmarks/perf/results
    cxrvlp-bench perf --vs-official /work/perfenv --loss-check-only --out benchmarks/perf/results

Writes OUT/perf.json (or OUT/vs_official_<id>.json per comparison) and OUT/perf_table.md (rebuilt from every
JSON in OUT). Every figure is measured in the run that writes it; no stored time is divided by a new one.
After the timed rounds of a comparison (or alone, `--loss-check-only`, which rewrites only the loss fields of
the existing JSONs) both sides' loss terms are compared on the same weights and batch (`losscheck.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cxrvlp.bench.perf import machine, pairs
from cxrvlp.bench.perf.losscheck import summary_text
from cxrvlp.bench.perf.ours import Workload, measure, run_in_subprocess

SCHEMA = "cxrvlp-perf/1"


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _switch(s: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[s]


def default_models() -> list[str]:
    """Every registered model: the paper configs and each method's tiny/small."""
    from cxrvlp.core.registry import list_models

    return list_models()


def _is_cnn(model: str) -> bool:
    return any(k in model for k in ("r50", "resnet", "small")) or model.startswith("mavl")


def _derived(rec: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """Utilisation of the measured matmul peak: model FLOPs/sample x samples/s / peak."""
    out: dict[str, Any] = {}
    for part in ("train", "inference"):
        r = rec.get(part) or {}
        f, sps = r.get("flops_per_sample"), r.get("samples_per_s")
        if f and sps and peak:
            out[f"{part}_gflops_per_s"] = f * sps / 1e9
            out[f"{part}_util_of_peak"] = f * sps / 1e9 / peak
    return out


def cmd_sweep(a: argparse.Namespace) -> int:
    """Measure each (model, batch, dtype, compile, channels_last) in its own process; write perf.json."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "sweep",
        "machine": machine.info(),
        "load_before": machine.load(),
    }
    doc["matmul_peak"] = machine.matmul_peak(
        tuple(int(s) for s in _csv(a.peak_sizes)), a.peak_reps, a.threads
    )
    peak = doc["matmul_peak"]["peak_gflops"]
    rows = []
    models = _csv(a.models) if a.models else default_models()
    plan = [
        (model, bs, dtype, comp, cl)
        for model in models
        for bs in (int(b) for b in _csv(a.batch_sizes))
        for dtype in _csv(a.dtypes)
        for comp in _switch(a.compile)
        for cl in (_switch(a.channels_last) if _is_cnn(model) else [False])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model, bs, dtype, comp, cl in plan:
            w = Workload(
                model=model, batch=bs, steps=a.steps, warmup=a.warmup, infer_steps=a.infer_steps,
                threads=a.threads, dtype=dtype, compile=comp, channels_last=cl, flops=not a.no_flops,
            )  # fmt: skip
            print(f"perf: {model} b{bs} {dtype} compile={comp} channels_last={cl}", file=sys.stderr)
            try:
                if a.in_process:
                    rec = measure(w)
                else:
                    rec = run_in_subprocess(w, Path(tmp) / "rec.json", timeout=a.timeout)
            except Exception as e:  # one failing config must not lose the others
                rec = {"workload": asdict(w), "error": str(e)[-2000:]}
            rec["derived"] = _derived(rec, peak)
            rows.append(rec)
    doc["records"] = rows
    doc["load_after"] = machine.load()
    path = out / (a.name or "perf.json")
    path.write_text(json.dumps(doc, indent=1))
    write_table(out)
    print(f"perf: wrote {path} and {out / 'perf_table.md'}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


def _loss_check(official: dict, ours: dict, same: dict | None = None) -> dict[str, Any]:
    """The loss fields of a vs-official JSON: the same-weights-and-batch check (`losscheck`, None when not
    run) and, for information, each side's first timed step (own random init, own batch)."""
    off = (official.get("train") or {}).get("losses_first")
    our_losses = (ours.get("train") or {}).get("losses") or []
    mine = our_losses[0] if our_losses else None
    finite = all(
        isinstance(v, (int, float)) and math.isfinite(v) for d in (off or {}, mine or {}) for v in d.values()
    )
    return {
        "compared": "same weights and batch: the official state dict and the harness's batch fed to both "
        "sides, loss terms compared term by term (losscheck.py); the first-step values below are each "
        "side's own random init and batch, not comparable",
        "same_weights_and_batch": same,
        "equal_values_checked": bool(same) and not same.get("error"),
        "equal": bool(same and same.get("equal")),
        "official_first_step": off,
        "ours_first_step": mine,
        "both_finite": bool(off) and bool(mine) and finite,
    }


def _run_loss_check(comp: Any, paths: Any, a: argparse.Namespace) -> dict[str, Any]:
    from cxrvlp.bench.perf import losscheck

    rec = losscheck.check(comp, paths, timeout=a.timeout, log=lambda s: print(s, file=sys.stderr))
    print(f"{comp.id}: {losscheck.summary_text(rec)}", file=sys.stderr)
    return rec


def cmd_loss_check_only(a: argparse.Namespace) -> int:
    """Only the loss check: update the loss fields of OUT/vs_official_<id>.json (timings untouched), rebuild
    the table."""
    from cxrvlp.bench.perf import official as off

    out = Path(a.out)
    overrides = dict(kv.split("=", 1) for kv in a.official_path)
    ids = _csv(a.comparisons) if a.comparisons else list(off.COMPARISONS)
    status = 0
    for cid in ids:
        comp = off.COMPARISONS[cid]
        path = out / f"vs_official_{cid}.json"
        if not path.is_file():
            print(f"{cid}: no {path} to update (run the timing first)", file=sys.stderr)
            status = 1
            continue
        doc = json.loads(path.read_text())
        paths = off.resolve_paths(comp.method, a.vs_official, a.harness_dir, overrides)
        rec = _run_loss_check(comp, paths, a)
        rounds = doc.get("rounds") or []
        first = _loss_check(rounds[0]["official"], rounds[0]["ours"], rec) if rounds else {}
        doc["loss_check"] = {**doc.get("loss_check", {}), **first, "same_weights_and_batch": rec}
        doc["loss_check"].pop("why_not_equal", None)  # the old text said the values could not be compared
        path.write_text(json.dumps(doc, indent=1))
        write_table(out)
        status |= 0 if rec.get("equal") else 1
    return status


def cmd_vs_official(a: argparse.Namespace) -> int:
    """Each comparison: rounds of (official [, extra official arms], ours), one process per call."""
    from cxrvlp.bench.perf import official as off

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(kv.split("=", 1) for kv in a.official_path)
    ids = _csv(a.comparisons) if a.comparisons else list(off.COMPARISONS)
    unknown = [i for i in ids if i not in off.COMPARISONS]
    if unknown:
        raise SystemExit(f"unknown comparison(s) {unknown}; known: {sorted(off.COMPARISONS)}")
    peak = machine.matmul_peak(tuple(int(s) for s in _csv(a.peak_sizes)), a.peak_reps, a.threads)
    status = 0
    for cid in ids:
        comp = off.COMPARISONS[cid]
        paths = off.resolve_paths(comp.method, a.vs_official, a.harness_dir, overrides)
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": "vs_official",
            "comparison": cid,
            "method": comp.method,
            "machine": machine.info(),
            "matmul_peak": peak,
            "load_before": machine.load(),
            "official": {
                "src": str(paths.src),
                "python": str(paths.python),
                "harness_args": comp.harness_args,
            },
            "target_train": comp.target,
            "target_inference": comp.infer_target,
            "notes": comp.notes,
        }
        arms = ["official", *comp.extra_arms, "ours"]
        if a.no_extra_arms:
            arms = ["official", "ours"]
        raw_dir = out / "raw" / cid
        raw_dir.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {}

        def runner(arm: str, r: int, comp=comp, paths=paths, raw_dir=raw_dir, state=state, arms=arms) -> dict:
            path = raw_dir / f"{arm}_{r}.json"
            if a.resume and (_round_complete(raw_dir, arms, r) or (path.is_file() and arm != "ours")):
                # a finished round of an earlier call, reused whole; or an official arm whose ours was lost
                # (the pair is then run apart in time: its records' load_after_run stamps say how far)
                d = json.loads(path.read_text())
            elif arm == "ours":
                w = comp.ours(state["official_raw"])
                w = replace(w, flops=(r == 0) and not a.no_flops)  # count once, off the later rounds
                d = run_in_subprocess(w, path, timeout=a.timeout)
                d["load_after_run"] = machine.load()
                path.write_text(json.dumps(d, indent=1))
            else:
                args = comp.harness_args + comp.extra_arms.get(arm, [])
                d = off.run_official(paths, args, raw_dir, f"{arm}_{r}", timeout=a.timeout)
                d["load_after_run"] = machine.load()
                path.write_text(json.dumps(d, indent=1))
            if arm == "official":
                state["official_raw"] = d
            if arm == "ours":
                d["derived"] = _derived(d, peak["peak_gflops"])
                return d
            return {**comp.parse(d), "load_after_run": d.get("load_after_run")}

        rounds: list[dict] = []
        try:
            for r in range(a.rounds):
                rounds += [
                    pairs.interleave(
                        arms,
                        1,
                        lambda arm, _r, r=r: runner(arm, r),
                        log=lambda s, c=cid, r=r: print(f"{c}: round {r + 1}: {s}", file=sys.stderr),
                    )[0]
                ]
                _finish(doc, comp, rounds, arms, out, cid)
        except Exception as e:  # keep what the finished rounds and the other comparisons measure
            doc["error"] = str(e)[-4000:]
            if rounds:
                _finish(doc, comp, rounds, arms, out, cid)
            else:
                (out / f"vs_official_{cid}.json").write_text(json.dumps(doc, indent=1))
            print(f"{cid}: FAILED {str(e)[-500:]}", file=sys.stderr)
            status = 1
            continue
        if not a.no_loss_check:
            doc["loss_same"] = _run_loss_check(comp, paths, a)
            _finish(doc, comp, rounds, arms, out, cid)
            status |= 0 if doc["loss_check"]["equal"] else 1
        s = doc["ratios"].get(f"official/{next(iter(comp.metrics))}", {})
        print(f"{cid}: official/ours median {s.get('median')} over {s.get('n')} pairs", file=sys.stderr)
    return status


def _round_complete(raw_dir: Path, arms: list[str], r: int) -> bool:
    return all((raw_dir / f"{arm}_{r}.json").is_file() for arm in arms)


def _finish(doc: dict, comp: Any, rounds: list[dict], arms: list[str], out: Path, cid: str) -> None:
    """Ratios, verdicts and the loss check of the rounds so far; rewrite the JSON and the table."""
    officials = [x for x in arms if x != "ours"]
    doc["rounds"] = rounds
    doc["ratios"] = pairs.compare(rounds, "ours", officials, comp.metrics)
    doc["verdict"] = {
        k: pairs.verdict(v, comp.target if not k.endswith("/inference") else comp.infer_target)
        for k, v in doc["ratios"].items()
        if k.startswith("official/")
    }
    doc["loss_check"] = _loss_check(rounds[0]["official"], rounds[0]["ours"], doc.pop("loss_same", None))
    doc["load_after"] = machine.load()
    (out / f"vs_official_{cid}.json").write_text(json.dumps(doc, indent=1))
    write_table(out)


# ------------------------------------------------------------------------------------------ table
def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _pct(x: Any) -> str:
    return _f(x * 100 if isinstance(x, (int, float)) else None, "{:.0f} %")


def _ratio_cell(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}] (n={s['n']})"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


_VS_HEADER = [
    "comparison", "official s", "ours s", "train-step ratio", "target", "met", "inference ratio (target 3x)",
    "met", "our train GFLOP/sample", "our util. of matmul peak", "our peak RSS GiB", "official peak RSS GiB",
    "load (1 min)",
]  # fmt: skip
_SWEEP_HEADER = [
    "model", "batch", "dtype", "compile", "channels_last", "train samples/s", "inference samples/s",
    "train GFLOP/sample", "train util.", "inference util.", "peak RSS GiB",
]  # fmt: skip


def _median_of(rounds: list[dict], arm: str, path: str) -> float | None:
    import statistics

    vals = [pairs._get(r[arm], path) for r in rounds if arm in r]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _vs_rows(d: dict) -> list[str]:
    rounds = d["rounds"]
    main = next(k for k in d["ratios"] if k.startswith("official/"))
    path = "fusion.median_s" if main == "official/fusion_fwd_bwd" else "train.median_s"
    ours0 = rounds[0]["ours"]
    flops = (ours0.get("train") or {}).get("flops_per_sample")
    rss_o = max((r["ours"].get("peak_rss_mib") or 0) for r in rounds) / 1024
    rss_f = max((r["official"].get("peak_rss_mib") or 0) for r in rounds) / 1024
    loads = [
        rec["load_after_run"]["loadavg"][0]
        for row in rounds
        for rec in row.values()
        if isinstance(rec.get("load_after_run"), dict)
    ]
    inf = d["ratios"].get("official/inference")
    inf_ok = d["verdict"].get("official/inference", "-") if inf and inf.get("n") else "-"
    met = d["verdict"].get(main, "-")
    if d.get("caveat"):  # a pair whose arms did not run under like conditions: no verdict
        met = inf_ok = "not judged (caveat)"
    load = f"{_f(min(loads), '{:.1f}')}-{_f(max(loads), '{:.1f}')}" if loads else "-"
    rows = [
        _row(
            [
                d["comparison"],
                _f(_median_of(rounds, "official", path)),
                _f(_median_of(rounds, "ours", path)),
                _ratio_cell(d["ratios"][main]),
                _f(d.get("target_train"), "{:.2f}x"),
                met,
                _ratio_cell(inf),
                inf_ok,
                _f(flops / 1e9 if flops else None, "{:.1f}"),
                _pct(ours0.get("derived", {}).get("train_util_of_peak")),
                _f(rss_o or None),
                _f(rss_f or None),
                load,
            ]
        )  # fmt: skip
    ]
    for k, s in d["ratios"].items():
        if k.startswith("official_anomaly_off/train") and s.get("n"):
            ok = "met" if s["median"] > 1 else "unmet"
            rows.append(_row([f"{d['comparison']} vs official, anomaly detection off", "", "", _ratio_cell(s),
                              "> 1x", ok, "", "", "", "", "", "", ""]))  # fmt: skip
    return rows


def table_markdown(docs: list[dict]) -> str:
    """The Markdown perf table of the given perf.json / vs_official_*.json documents."""
    lines: list[str] = []
    vs = [d for d in docs if d.get("kind") == "vs_official" and d.get("rounds")]
    vs.sort(key=lambda d: d["comparison"])
    if vs:
        m = vs[0]["machine"]
        lines += [
            "## Ours vs the official code, interleaved in one run",
            "",
            f"Machine: {m.get('cpu_model')} ({', '.join(m.get('cpu_flags', []))}), {m.get('logical_cpus')} "
            f"logical CPUs, torch {m['versions'].get('torch')}, 2 threads, fp32. Ratio = official seconds / "
            "our seconds of the same round (> 1: ours faster), median [min-max] over the rounds (n pairs).",
            "",
            _row(_VS_HEADER),
            _row(["---"] * len(_VS_HEADER)),
        ]
        for d in vs:
            lines += _vs_rows(d)
        lines += ["", "Notes per comparison:", ""]
        for d in vs:
            lc = d.get("loss_check", {})
            caveat = f"CAVEAT: {d['caveat']} " if d.get("caveat") else ""
            notes = (d.get("notes") or "").rstrip(".")
            lines.append(
                f"* **{d['comparison']}**: {caveat}{notes + '. ' if notes else ''}"
                f"Losses, {summary_text(lc.get('same_weights_and_batch'))}. "
                f"First timed step, each side at its own init and batch (not comparable): official "
                f"{lc.get('official_first_step')}, ours {lc.get('ours_first_step')}."
            )
        lines.append("")
    for d in (d for d in docs if d.get("kind") == "sweep"):
        m, pk = d["machine"], d["matmul_peak"]
        lines += [
            f"## Our models ({m.get('cpu_model')}, "
            f"measured fp32 matmul peak {pk['peak_gflops']:.0f} GFLOP/s, "
            f"{pk['threads']} threads)",
            "",
            _row(_SWEEP_HEADER),
            _row(["---"] * len(_SWEEP_HEADER)),
        ]
        for r in d["records"]:
            w, der = r["workload"], r.get("derived", {})
            tr, inf = r.get("train") or {}, r.get("inference") or {}
            head = [w["model"], w["batch"], w["dtype"], w["compile"], w["channels_last"]]
            if "error" in r:
                last = (r["error"].strip().splitlines() or [""])[-1][:120]
                lines.append(_row([*head, f"error: {last}", "", "", "", "", ""]))
                continue
            lines.append(
                _row(
                    [
                        *head,
                        _f(tr.get("samples_per_s")),
                        _f(inf.get("samples_per_s")),
                        _f((tr.get("flops_per_sample") or 0) / 1e9 or None),
                        _pct(der.get("train_util_of_peak")),
                        _pct(der.get("inference_util_of_peak")),
                        _f(r.get("peak_rss_mib", 0) / 1024),
                    ]
                )  # fmt: skip
            )
        lines.append("")
    return "\n".join(lines)


def write_table(out: Path) -> Path:
    """OUT/perf_table.md from every perf JSON in OUT."""
    docs = []
    for p in sorted(out.glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and d.get("schema") == SCHEMA:
            docs.append(d)
    path = out / "perf_table.md"
    path.write_text("# Performance (generated by `cxrvlp-bench perf`)\n\n" + table_markdown(docs) + "\n")
    return path


def add_parser(sub: Any) -> None:
    """Register the `perf` subcommand on the cxrvlp-bench subparsers."""
    p = sub.add_parser(
        "perf", help="throughput / FLOPs / memory per model; --vs-official: side by side", description=__doc__
    )
    p.add_argument("--models", default="", help="comma list of registered models (default: all)")
    p.add_argument("--batch-sizes", default="8", help="comma list")
    p.add_argument("--dtypes", default="fp32", help="comma list of fp32, bf16 (CPU autocast)")
    p.add_argument(
        "--compile", choices=("off", "on", "both"), default="off", help="torch.compile the task module"
    )
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="off", help="CNN models only")
    p.add_argument("--steps", type=int, default=3, help="timed train steps")
    p.add_argument("--warmup", type=int, default=1, help="uncounted train steps before them")
    p.add_argument("--infer-steps", type=int, default=3, help="timed inference passes (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode pass")
    p.add_argument("--peak-sizes", default="2048,4096", help="matmul sizes for the fp32 peak")
    p.add_argument("--peak-reps", type=int, default=5, help="timed matmul calls per size")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measured process")
    p.add_argument("--out", default="outputs/perf", help="folder for the JSON and perf_table.md")
    p.add_argument(
        "--in-process", action="store_true", help="sweep in this process (peak RSS: the process's)"
    )
    p.add_argument("--name", default=None, help="JSON file name of a sweep (default perf.json)")
    p.add_argument(
        "--vs-official", default=None, metavar="DIR", help="DIR/src/<method>, DIR/venv_<method>|venv_shared"
    )
    p.add_argument(
        "--official-path", action="append", default=[], metavar="src:M=P|venv:M=P", help="per-method paths"
    )
    p.add_argument(
        "--harness-dir",
        default=str(Path(__file__).resolve().parents[6] / "shared" / "perf_official"),
        help="the official harnesses (<method>/step_time.py)",
    )
    p.add_argument("--comparisons", default="", help="comma list of comparison ids (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved (official, ours) pairs per comparison")
    p.add_argument("--no-extra-arms", action="store_true", help="skip side arms (e.g. MGCA anomaly off)")
    p.add_argument(
        "--resume", action="store_true", help="reuse rounds whose raw JSONs (OUT/raw/ID/) all exist"
    )
    p.add_argument(
        "--loss-check-only",
        action="store_true",
        help="with --vs-official: only the loss check; updates OUT/vs_official_*.json no timing",
    )
    p.add_argument("--no-loss-check", action="store_true", help="with --vs-official: skip the loss check")
    p.set_defaults(fn=_dispatch)


def _dispatch(a: argparse.Namespace) -> int:
    if a.vs_official or a.official_path:
        return cmd_loss_check_only(a) if a.loss_check_only else cmd_vs_official(a)
    if a.loss_check_only:
        raise SystemExit("--loss-check-only needs --vs-official DIR")
    return cmd_sweep(a)
