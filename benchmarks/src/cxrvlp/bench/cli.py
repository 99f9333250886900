"""`cxrvlp-bench`: run / build / plot / demo / real."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cxrvlp.core.errors import CxrvlpError

ALL_METHODS = ("carzero", "cxrclip", "mavl", "afloc", "mgca")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def cmd_run(a: argparse.Namespace) -> int:
    """methods x datasets x tasks x seeds -> result JSONs."""
    from cxrvlp.bench import datasets as dsreg
    from cxrvlp.bench.runner import RunOptions, run_suite
    from cxrvlp.bench.sources import data_sources, load_catalog, parse_pairs, resolve_methods

    roots: dict = dict(load_catalog(a.catalog)) if a.catalog else {}
    roots.update(parse_pairs(a.data_root, "--data-root"))
    names = (
        _csv(a.datasets)
        if a.datasets
        else [n for n in dsreg.names() if n in roots or dsreg.get(n).reader in roots]
    )
    missing = [n for n in names if n not in roots and dsreg.get(n).reader not in roots]
    if missing:
        ds = dsreg.get(missing[0])
        raise SystemExit(
            f"error: no data root for '{ds.name}': pass --data-root {ds.name}=PATH or a --catalog entry "
            f"(expected there: {ds.expected_files})"
        )
    sources = data_sources(names, roots, limit=a.limit)
    methods = resolve_methods(
        _csv(a.methods),
        parse_pairs(a.checkpoint, "--checkpoint"),
        parse_pairs(a.official, "--official"),
        a.device,
    )
    opts = RunOptions(
        tasks=_csv(a.tasks),
        seeds=[int(s) for s in _csv(a.seeds)],
        batch_size=a.batch_size,
        skip_existing=a.skip_existing,
        task_options={
            "seg_epochs": a.seg_epochs,
            "ft_epochs": a.ft_epochs,
            "ft_max_steps": a.ft_max_steps,
            "bootstrap": a.bootstrap,
            "num_workers": a.workers,
            **({"fractions": a.fractions} if a.fractions else {}),
            **({"seg_fractions": a.fractions} if a.fractions else {}),
        },
    )
    summary = run_suite(methods, sources, a.out, opts)
    print(
        f"wrote {len(summary.written)} result JSONs under {Path(a.out) / 'runs'}; "
        f"skipped {len(summary.skipped_existing)} finished; {len(summary.errors)} errors"
    )
    for p, why in summary.errors:
        print(f"  error: {p}: {why}")
    if not summary.evaluated and not summary.skipped_existing:
        reasons = sorted({m.skip_reason for m in methods if m.skip_reason})
        print(
            "error: nothing was evaluated: every method was skipped "
            f"({'; '.join(reasons) or 'no task applies to the datasets given'}). Pass a trained model "
            "with --checkpoint METHOD=DIR or a released one with --official METHOD=SOURCE.",
            file=sys.stderr,
        )
        return 3
    return 1 if summary.errors else 0


def _results_folder(out: str) -> Path:
    """The folder `run` wrote, or SystemExit saying what was expected there."""
    p = Path(out)
    if not (p / "runs").is_dir():
        raise SystemExit(
            f"error: '{p}' holds no results: expected {p / 'runs'}/<method>/<dataset>/<task>/seed<N>.json "
            "as written by `cxrvlp-bench run --out " + str(p) + "` (or `demo --out`)"
        )
    return p


def cmd_build(a: argparse.Namespace) -> int:
    """Result JSONs -> CSV + Markdown."""
    from cxrvlp.bench.build import build

    csv_path, md_path = build(_results_folder(a.out))
    print(f"wrote {csv_path} and {md_path}")
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    """Result JSONs -> PNG figures."""
    from cxrvlp.bench.plots import plot_all

    paths = plot_all(_results_folder(a.out))
    print(f"wrote {len(paths)} figures under {Path(a.out) / 'plots'}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Synthetic end-to-end demo."""
    from cxrvlp.bench.demo import DemoOptions, run_demo

    run_demo(DemoOptions(out=Path(a.out), size=a.size, methods=_csv(a.methods), seed=a.seed))
    return 0


def cmd_real(a: argparse.Namespace) -> int:
    """Linear probe / contrastive fine-tune on a real manifest folder."""
    from cxrvlp.bench.real import RealOptions, run_real
    from cxrvlp.bench.sources import parse_pairs

    run_real(
        RealOptions(
            manifest=Path(a.manifest),
            images=Path(a.images) if a.images else None,
            eval_manifest=Path(a.eval_manifest) if a.eval_manifest else None,
            eval_images=Path(a.eval_images) if a.eval_images else None,
            out=Path(a.out),
            seeds=[int(s) for s in _csv(a.seeds)],
            image_size=a.image_size,
            max_rows=a.max_rows,
            tasks=_csv(a.tasks) or None,
            methods=[] if a.no_contrastive else _csv(a.methods),
            checkpoints=parse_pairs(a.checkpoint, "--checkpoint"),
            config=a.config,
            finetune_image_size=a.finetune_image_size or None,
            finetune_epochs=a.finetune_epochs or None,
            finetune_text_length=a.finetune_text_length or None,
            finetune_parallel=a.finetune_parallel,
            train_overrides=a.train_override,
            bootstrap=a.bootstrap,
        )
    )
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="cxrvlp-bench", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True)

    from cxrvlp.bench import datasets as dsreg
    from cxrvlp.bench.datasets import DEFAULT_TASKS, TASKS

    r = sub.add_parser(
        "run",
        help="run methods x datasets x tasks x seeds",
        description="One result JSON per (method, dataset, task, seed) under OUT/runs/. Exits 0 when all "
        "ran, 1 when some failed (recorded in their JSON), 3 when nothing was evaluated.",
    )
    r.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma list of {', '.join(ALL_METHODS)}")
    r.add_argument(
        "--datasets",
        default="",
        help=f"comma list (default: every dataset given a root) of: {', '.join(dsreg.names())}",
    )
    r.add_argument(
        "--tasks",
        default=",".join(DEFAULT_TASKS),
        help=f"comma list of: {', '.join(TASKS)} (default: all but finetune)",
    )
    r.add_argument("--seeds", default="0,1,2", help="comma list; seed-free tasks run at the first only")
    r.add_argument(
        "--data-root", action="append", default=[], metavar="NAME=PATH", help="a dataset's root (repeat)"
    )
    r.add_argument(
        "--catalog",
        help="YAML: {datasets: {name: root | {root, synthetic, limit, reader_kwargs, val_fraction}}}",
    )
    r.add_argument(
        "--checkpoint", action="append", default=[], metavar="METHOD=DIR", help="our from_pretrained dir"
    )
    r.add_argument(
        "--official", action="append", default=[], metavar="METHOD=SOURCE", help="official checkpoint"
    )
    r.add_argument("--out", default="outputs/bench", help="results folder (runs/, cache/, tables)")
    r.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    r.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    r.add_argument(
        "--skip-existing", action="store_true", help="keep finished JSONs, redo missing/broken ones"
    )
    r.add_argument("--seg-epochs", type=int, default=20, help="segmentation decoder epochs")
    r.add_argument("--ft-epochs", type=int, default=10, help="end-to-end fine-tuning epochs per LR")
    r.add_argument(
        "--ft-max-steps", type=int, default=0, help="cap on fine-tuning steps per learning rate (0: none)"
    )
    r.add_argument(
        "--fractions",
        type=lambda v: tuple(float(x) / 100 for x in _csv(v)),
        default=None,
        metavar="PCT,...",
        help="label fractions in percent for linear probe and segmentation (default: 1,10,100)",
    )
    r.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples of every 95 %% interval (0: no intervals)"
    )
    r.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers reading images (0: in the main process)"
    )
    r.add_argument("--device", default=None, help="torch device (default: Accelerate's choice)")
    r.set_defaults(fn=cmd_run)

    for name, fn, h in (
        ("build", cmd_build, "JSONs -> results.csv + results.md"),
        ("plot", cmd_plot, "JSONs -> plots/*.png"),
    ):
        b = sub.add_parser(name, help=h)
        b.add_argument("--out", default="outputs/bench", help="the folder `run --out` wrote")
        b.set_defaults(fn=fn)

    d = sub.add_parser(
        "demo", help="synthetic end-to-end demo (writes data, trains tiny models, runs, reports)"
    )
    d.add_argument("--out", default="outputs/demo", help="where data, models and results go")
    d.add_argument(
        "--size", choices=("smoke", "full"), default="full", help="smoke = a few images, for tests"
    )
    d.add_argument("--methods", default=",".join(ALL_METHODS), help="comma list of methods to train")
    d.add_argument("--seed", type=int, default=0, help="seed of the mirrors and the first probe seed")
    d.set_defaults(fn=cmd_demo)

    q = sub.add_parser("real", help="linear probe + short contrastive fine-tune on a real image manifest")
    q.add_argument("--manifest", required=True, help="fit rows (or all rows; see suggested_role)")
    q.add_argument("--images", help="folder image_path is relative to (default: the manifest's folder)")
    q.add_argument(
        "--eval-manifest",
        help="held-out rows (e.g. another folder): every row is scored by a probe fitted on the --manifest "
        "rows that carry the task's labels, and a 60/40 patient split of these rows gives the eval-split "
        "probe",
    )
    q.add_argument("--eval-images", help="folder the eval manifest's image_path is relative to")
    q.add_argument("--out", default="outputs/real", help="results folder")
    q.add_argument("--seeds", default="0", help="comma list of seeds")
    q.add_argument("--image-size", type=int, default=224, help="probe input size in pixels")
    q.add_argument("--max-rows", type=int, default=None, help="cap per task and fit dataset (smoke runs)")
    q.add_argument("--tasks", default="", help="comma list of task names or datasets (default: all)")
    q.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma list of {', '.join(ALL_METHODS)}: methods whose small config is fine-tuned "
        "(all five: ~25 min on 2 idle cores; mgca,cxrclip: ~9 min)",
    )
    q.add_argument("--no-contrastive", action="store_true", help="only the linear probe of the bare encoder")
    q.add_argument("--config", default="small", help="each method's config for the contrastive fine-tune")
    q.add_argument("--finetune-image-size", type=int, default=128, help="0: the config's own size")
    q.add_argument("--finetune-epochs", type=int, default=2, help="0: the config's own")
    q.add_argument("--finetune-text-length", type=int, default=64, help="tokens; 0: the config's own")
    q.add_argument("--finetune-parallel", type=int, default=2, help="fine-tunes at once (1: in this process)")
    q.add_argument(
        "--train-override", action="append", default=[], metavar="KEY=VALUE", help="fine-tune config key"
    )
    q.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95 %% intervals")
    q.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="METHOD=DIR",
        help="also run this trained method's adapter (zero-shot + linear probe) on the eval rows",
    )
    q.set_defaults(fn=cmd_real)

    from cxrvlp.bench.perf.cli import add_parser as add_perf_parser

    add_perf_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    a = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return a.fn(a)
    except CxrvlpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
