"""The `cxrvlp` console script.

cxrvlp prepare <dataset> --root R --out O --size N [--set key=value ...] [--limit K]
    Decode every image once, write it at long side N (PNG) plus an index CSV under O/<dataset>/,
    then print the read throughput (images/second/core) of the cache vs the originals.
cxrvlp prepare <dataset> --root R --out O --size N --format shards
    The same images as (N, N) uint8 rows of memory-mapped .npy shards + index + manifest under O/<dataset>/
    (read with no decoding; see cxrvlp.core.data.shards).
cxrvlp bench-loader <dataset> --root R --out O [--size 224] [--batch 64] [--workers 0 1 2] [--json F]
    Build both caches when missing; print images/s/core of originals vs PNG cache vs shards and the
    DataLoader's samples/s per worker count; write the figures as JSON.
cxrvlp prepare mimic-cxr --root R --out O --master-table [--method mgca|afloc|cxrclip|carzero|medklip]
    Write the master table a method trains from (O is the CSV path or a folder).
cxrvlp synthetic --datasets chestxray14 --images N --image-size S --out DIR
    Write SYNTHETIC mirrors (official layouts, phantom images); --images: ChestX-ray14 with exactly N test
    images.
cxrvlp datasets
    List the registered dataset readers.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import yaml


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = yaml.safe_load(v)
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _open_every_image(args: argparse.Namespace):
    """The dataset `args` names with every image of the root (MIMIC-CXR: all splits and views, no reports),
    unreadable rows skipped by policy, plus the user's `--set` reader keys."""
    from cxrvlp.core.data import get_dataset

    kw = _parse_sets(args.set)
    if args.dataset == "mimic-cxr":
        kw.setdefault("split", None)
        kw.setdefault("views", None)
        kw.setdefault("load_reports", False)
    return get_dataset(args.dataset, args.root, on_error="skip", **kw)


def cmd_prepare(args: argparse.Namespace) -> int:
    """`cxrvlp prepare`: image cache (default) or MIMIC master table."""
    from cxrvlp.core.data import DATASETS
    from cxrvlp.core.data.cache import prepare_cache, read_throughput

    if args.dataset not in DATASETS:
        print(f"unknown dataset {args.dataset!r}; known: {', '.join(sorted(DATASETS))}", file=sys.stderr)
        return 2
    if args.master_table:
        if args.dataset != "mimic-cxr":
            print("--master-table is only defined for mimic-cxr", file=sys.stderr)
            return 2
        from cxrvlp.core.data.mimic_cxr import prepare_master_table

        out = Path(args.out)
        if out.suffix.lower() != ".csv":
            out = out / f"mimic_master_{args.method}.csv"
        df = prepare_master_table(
            args.root,
            out,
            args.method,
            reports_root=args.reports_root,
            sectioned_csv=args.sectioned_csv,
            progress=not args.quiet,
        )
        print(f"wrote {len(df)} rows to {out}")
        return 0
    if args.size is None:
        print("--size is required to build an image cache", file=sys.stderr)
        return 2
    ds = _open_every_image(args)
    if args.format == "shards":
        if args.bits != 8:
            print("--format shards stores 8-bit rows; --bits 16 is for the PNG cache", file=sys.stderr)
            return 2
        return _prepare_shards(ds, args)
    rep = prepare_cache(ds, args.out, args.size, bits=args.bits, progress=not args.quiet, limit=args.limit)
    print(
        f"{ds.name}: {rep.written} written, {rep.reused} already cached, {len(rep.skipped)} skipped "
        f"(unreadable), {len(ds.skipped)} records skipped while reading the metadata; "
        f"index: {rep.folder / 'index.csv'}"
    )
    for path, reason in rep.skipped[:20]:
        print(f"  skipped {path}: {reason}")
    # throughput of one process = images/second/core
    from cxrvlp.core.data.cache import load_cache_index

    index = load_cache_index(args.out, ds.name)
    keys = [k for k in (ds.key(r) for r in ds.records) if k in index]
    random.Random(0).shuffle(keys)
    sample = keys[: args.bench]
    orig = [str(ds.root / k) if not os.path.isabs(k) else k for k in sample]
    cached = [index[k][0] for k in sample]
    t_orig = read_throughput(orig, ds.read_kwargs())
    t_cache = read_throughput(cached)
    print(
        f"read throughput on {len(sample)} images ({_cores()} cores available, measured on 1): "
        f"originals {t_orig:.1f} img/s/core, cache {t_cache:.1f} img/s/core "
        f"({t_cache / t_orig if t_orig > 0 else float('nan'):.1f}x)"
    )
    return 0


def _prepare_shards(ds, args: argparse.Namespace) -> int:
    """`cxrvlp prepare ... --format shards`: write the uint8 shard cache and time reads from it."""
    from cxrvlp.core.data.cache import read_throughput
    from cxrvlp.core.data.shards import open_shard_cache, prepare_shards

    rep = prepare_shards(ds, args.out, args.size, progress=not args.quiet, limit=args.limit)
    print(
        f"{ds.name}: {rep.written} images in {rep.shards} shard(s) at {args.size}x{args.size} uint8, "
        f"{len(rep.skipped)} skipped (unreadable), {len(ds.skipped)} records skipped while reading the "
        f"metadata; {rep.written / max(rep.seconds, 1e-9):.1f} img/s/core to prepare; manifest: "
        f"{rep.folder / 'shards.json'}"
    )
    for path, reason in rep.skipped[:20]:
        print(f"  skipped {path}: {reason}")
    cache = open_shard_cache(args.out, ds.name, args.size, source_root=ds.root)
    keys = list(cache.keys)
    random.Random(0).shuffle(keys)
    sample = keys[: args.bench]
    if sample:
        import time

        import numpy as np

        orig = [str(ds.root / k) if not os.path.isabs(k) else k for k in sample]
        t_orig = read_throughput(orig, ds.read_kwargs())
        t0, reps = time.perf_counter(), 0
        while reps == 0 or time.perf_counter() - t0 < 0.5:
            for k in sample:
                np.array(cache.padded(k))
            reps += 1
        t_sh = len(sample) * reps / (time.perf_counter() - t0)
        print(
            f"read throughput on {len(sample)} images ({_cores()} cores available, measured on 1): "
            f"originals {t_orig:.1f} img/s/core, shards {t_sh:.1f} img/s/core "
            f"({t_sh / t_orig if t_orig > 0 else float('nan'):.1f}x)"
        )
    return 0


def cmd_bench_loader(args: argparse.Namespace) -> int:
    """`cxrvlp bench-loader`: images/s/core of originals vs PNG cache vs shards, DataLoader samples/s."""
    from cxrvlp.core.data import DATASETS
    from cxrvlp.core.data.loader_bench import format_table, measure_loader, write_json

    if args.dataset not in DATASETS:
        print(f"unknown dataset {args.dataset!r}; known: {', '.join(sorted(DATASETS))}", file=sys.stderr)
        return 2
    ds = _open_every_image(args)
    if args.limit is not None:
        ds.records = ds.records[: args.limit]
    res = measure_loader(
        ds, args.out, size=args.size, batch=args.batch, workers=args.workers, sample=args.sample,
        max_batches=args.max_batches, min_seconds=args.min_seconds, preset=args.preset or None,
        preset_batch=args.preset_batch, progress=not args.quiet, rebuild=args.rebuild,
    )  # fmt: skip
    print(format_table(res))
    path = write_json(res, args.json or Path(args.out) / "bench_loader.json")
    print(f"wrote {path}")
    return 0


def expected_layout(cls: type) -> list[str]:
    """The files a reader expects: the literal block after "...layout(s)...::" in its module docstring."""
    doc = (sys.modules[cls.__module__].__doc__ or "").splitlines()
    start = next((i for i, line in enumerate(doc) if line.rstrip().endswith("::")), None)
    if start is None:
        return []
    out = []
    for line in doc[start + 1 :]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the literal block ends at the first unindented line
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return out


def cmd_datasets(args: argparse.Namespace) -> int:
    """`cxrvlp datasets`: every reader, its docstring's first line and the files it expects under the root."""
    from cxrvlp.core.data import DATASETS

    wanted = args.names or sorted(DATASETS)
    unknown = [n for n in wanted if n not in DATASETS]
    if unknown:
        print(f"unknown dataset(s) {unknown}; registered: {sorted(DATASETS)}", file=sys.stderr)
        return 2
    for name in wanted:
        cls = DATASETS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:16s} {cls.__name__:26s} {doc}")
        layout = expected_layout(cls)
        if layout:
            print("  expects:")
            print("\n".join(f"  {line}" if line.strip() else "" for line in layout))
        else:
            print("  expects: (see the reader's docstring)")
        print()
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    """`cxrvlp synthetic`: write synthetic mirrors (official layouts, phantom images) of any size."""
    import json

    from cxrvlp.core.data.synthetic import DATASET_NAMES, write_all
    from cxrvlp.core.data.synthetic.chestxray14 import write_chestxray14
    from cxrvlp.core.data.synthetic.extras import EXTRA_WRITERS

    names = args.datasets or list(DATASET_NAMES)
    unknown = [n for n in names if n not in DATASET_NAMES and n not in EXTRA_WRITERS]
    if unknown:
        print(
            f"unknown synthetic dataset(s) {unknown}; known: {[*DATASET_NAMES, *EXTRA_WRITERS]}",
            file=sys.stderr,
        )
        return 2
    if args.images is not None and names != ["chestxray14"]:
        print(
            "--images (exact test-image count) is defined for --datasets chestxray14 alone", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    kw = {"seed": args.seed, "image_size": args.image_size}
    roots: dict[str, Path] = {}
    if args.images is not None:
        roots["chestxray14"] = write_chestxray14(
            out / "chestxray14", n_test_images=args.images, n_train_images=args.train_images, **kw
        )
    else:
        main_names = tuple(n for n in names if n in DATASET_NAMES)
        if main_names:
            roots.update(write_all(out, scale=args.scale, names=main_names, **kw))
        for n in names:
            if n in EXTRA_WRITERS:
                roots[n] = EXTRA_WRITERS[n](out / n, max(4, round(40 * args.scale)), **kw)
    print(json.dumps({k: str(v) for k, v in roots.items()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with its subcommands."""
    p = argparse.ArgumentParser(prog="cxrvlp", description="cxrvlp: chest X-ray vision-language tools")
    p.add_argument("-v", "--verbose", action="store_true", help="log warnings (skipped records) to stderr")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prepare", help="cache images at reduced size, or write the MIMIC master table")
    pr.add_argument("dataset", help="registered dataset name (see `cxrvlp datasets`)")
    pr.add_argument("--root", required=True, help="dataset root in its official layout")
    pr.add_argument("--out", required=True, help="cache folder, or the master-table CSV / folder")
    pr.add_argument("--size", type=int, help="long side of the cached images in pixels")
    pr.add_argument("--bits", type=int, default=8, choices=(8, 16), help="PNG bit depth of the cache")
    pr.add_argument(
        "--format", default="png", choices=("png", "shards"),
        help="png: one resized PNG per image; shards: (N, S, S) uint8 .npy shards read with no decoding",
    )  # fmt: skip
    pr.add_argument("--limit", type=int, help="cache only the first K records")
    pr.add_argument("--bench", type=int, default=50, help="images timed for the throughput report")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="reader argument")
    pr.add_argument("--master-table", action="store_true", help="mimic-cxr: write the master table")
    pr.add_argument("--method", default="mgca", choices=("mgca", "afloc", "cxrclip", "carzero", "medklip"))
    pr.add_argument("--reports-root", help="mimic-cxr: folder holding files/pXX/.../sXXX.txt")
    pr.add_argument("--sectioned-csv", help="mimic-cxr: MIT-LCP mimic_cxr_sectioned.csv instead of parsing")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_prepare)
    bl = sub.add_parser(
        "bench-loader", help="images/s/core of originals vs PNG cache vs uint8 shards; DataLoader samples/s"
    )
    bl.add_argument("dataset", help="registered dataset name (see `cxrvlp datasets`)")
    bl.add_argument("--root", required=True, help="dataset root in its official layout")
    bl.add_argument("--out", required=True, help="folder for the two caches (built when missing)")
    bl.add_argument("--size", type=int, default=224, help="cache size in pixels")
    bl.add_argument("--batch", type=int, default=64, help="DataLoader batch size")
    bl.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to time")
    bl.add_argument("--sample", type=int, default=500, help="images timed per single-core read path")
    bl.add_argument("--max-batches", type=int, default=30, help="batches timed per DataLoader run")
    bl.add_argument("--min-seconds", type=float, default=2.0, help="least time per single-core figure")
    bl.add_argument("--preset", default="mgca", help="method transform preset also timed ('' for none)")
    bl.add_argument("--preset-batch", type=int, default=72, help="its batch (MGCA's recipe: 72 per GPU)")
    bl.add_argument("--limit", type=int, help="only the first K records")
    bl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="reader argument")
    bl.add_argument("--rebuild", action="store_true", help="rebuild both caches")
    bl.add_argument("--json", help="result JSON (default: OUT/bench_loader.json)")
    bl.add_argument("--quiet", action="store_true", help="no progress bars")
    bl.set_defaults(func=cmd_bench_loader)
    sy = sub.add_parser(
        "synthetic", help="write SYNTHETIC phantom mirrors of the datasets' official layouts (any size)"
    )
    sy.add_argument("--out", required=True, help="folder; one sub-folder per dataset")
    sy.add_argument("--datasets", nargs="+", metavar="NAME", help="which mirrors (default: the main ones)")
    sy.add_argument("--images", type=int, help="chestxray14: exactly N test images (test_list.txt)")
    sy.add_argument("--train-images", type=int, help="chestxray14 with --images: train_val images (N/2)")
    sy.add_argument("--image-size", type=int, default=256, help="side of the written images in pixels")
    sy.add_argument("--scale", type=float, default=1.0, help="multiplies every default count (no --images)")
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=cmd_synthetic)
    ds = sub.add_parser("datasets", help="list the dataset readers and the files each expects")
    ds.add_argument("names", nargs="*", metavar="NAME", help="only these readers (default: all)")
    ds.set_defaults(func=cmd_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cxrvlp` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR, format="%(message)s")
    from cxrvlp.core.errors import CxrvlpError

    try:
        return int(args.func(args) or 0)
    except CxrvlpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
