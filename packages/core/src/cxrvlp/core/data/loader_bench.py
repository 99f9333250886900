"""How fast images reach a training step: originals vs the PNG cache vs the uint8 shard cache.

`measure_loader` (and `cxrvlp bench-loader`) builds both caches of a dataset when missing, then measures

- images/s on one core (one process, warm page cache) of: decoding an original and resizing it to the
  cache size; decoding a PNG-cache file; reading a shard row into a tensor; the reader's own
  `read_pixels` through each cache (what a method's dataset calls);
- a DataLoader's samples/s at a batch size with N workers, each item an (1, S, S) uint8 tensor from that
  source and each batch converted to normalised float32 (`normalize_uint8`) as a training step needs it;
  optionally also with a method preset's per-sample training transform (e.g. MGCA's) on shard images.

Rates are wall-clock with one torch and one OpenCV thread per process (`one_thread`), so a figure from one
process is per core; the first batch of every DataLoader run (worker start-up) is not counted.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cxrvlp.core.data.cache import load_cache_index, prepare_cache, resize_long_side
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.data.shards import (
    ShardImageDataset,
    normalize_uint8,
    open_shard_cache,
    prepare_shards,
    shard_folder,
    shard_row,
)
from cxrvlp.core.training.checkpoint import atomic_write_text

GOAL_IMG_S_CORE = 2000.0


def cpu_info() -> dict[str, Any]:
    """CPU model, count and SIMD flags (from lscpu on Linux), for the benchmark record."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        k, _, v = line.partition(":")
        if k.strip() == "Model name":
            info["model"] = v.strip()
        elif k.strip() == "Flags":
            info["flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in v.split()]
    try:
        info["cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cores"] = os.cpu_count() or 1
    return info


def load1() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


def _rate(fn: Callable[[Any], Any], items: Sequence[Any], min_seconds: float) -> float:
    """Items/s of `fn` over `items` in this process, repeating the pass until `min_seconds` have elapsed."""
    n, t0 = 0, time.perf_counter()
    while True:
        for it in items:
            fn(it)
        n += len(items)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


class _SourceDataset(torch.utils.data.Dataset):
    """Item i -> ((1, S, S) uint8 tensor, i) from originals (decode + resize) or the PNG cache (decode).

    Both by the shard cache's pixel rule (`shard_row`): PNG-cache images already have long side <= S, so
    its resize leaves them as they are."""

    def __init__(self, paths: Sequence[str], size: int, read_kwargs: dict[str, Any]) -> None:
        self.paths, self.size, self.read_kwargs = list(paths), size, read_kwargs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = shard_row(read_image(self.paths[i], on_error="raise", **self.read_kwargs), self.size)[0]
        return torch.from_numpy(row).unsqueeze(0), i


class _PresetDataset(torch.utils.data.Dataset):
    """Item i -> ((3, S, S) float32, i): a shard image through a method preset's training transform."""

    def __init__(self, cache: Any, keys: Sequence[str], transform: Callable[[np.ndarray], torch.Tensor]):
        self.cache, self.keys, self.transform = cache, list(keys), transform

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        u8, _ = self.cache.get(self.keys[i])
        return self.transform(u8.astype(np.float32) / np.float32(255.0)), i


def one_thread(_worker: int | None = None) -> None:
    """One torch and one OpenCV thread in this process (also a DataLoader `worker_init_fn`).

    Per-core figures need it: both libraries otherwise spread one op over every core, and on a shared
    machine an op then waits for the busiest core (a 1-channel normalisation measured 0.5 ms on one thread
    and 28 ms on two while another job ran)."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def loader_rate(
    dataset: torch.utils.data.Dataset,
    batch: int,
    workers: int,
    max_batches: int,
    norm: str | None = "mean0.5-std0.5",
) -> float:
    """Samples/s of a shuffled DataLoader (first batch not counted), normalising each uint8 batch."""
    dl = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
        generator=torch.Generator().manual_seed(0), worker_init_fn=one_thread if workers else None,
    )  # fmt: skip
    n, t0 = 0, None
    for b, (x, _) in enumerate(dl):
        if norm is not None:
            x = normalize_uint8(x, norm)
        if t0 is None:
            t0 = time.perf_counter()  # from the end of the first batch: worker start-up excluded
            continue
        n += x.shape[0]
        if b >= max_batches:
            break
    if t0 is None or n == 0:
        return float("nan")
    return n / (time.perf_counter() - t0)


def measure_loader(
    dataset: Any,
    out_dir: str | Path,
    size: int = 224,
    batch: int = 64,
    workers: Sequence[int] = (0, 1, 2),
    sample: int = 500,
    max_batches: int = 30,
    min_seconds: float = 2.0,
    preset: str | None = "mgca",
    preset_batch: int = 72,
    progress: bool = False,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Build the PNG and shard caches of `dataset` under `out_dir` when missing, then measure (JSON-able)."""
    import cv2

    threads = (torch.get_num_threads(), cv2.getNumThreads())
    one_thread()
    try:
        return _measure(
            dataset, Path(out_dir), size, batch, workers, sample, max_batches, min_seconds, preset,
            preset_batch, progress, rebuild,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def _measure(
    dataset: Any,
    out: Path,
    size: int,
    batch: int,
    workers: Sequence[int],
    sample: int,
    max_batches: int,
    min_seconds: float,
    preset: str | None,
    preset_batch: int,
    progress: bool,
    rebuild: bool,
) -> dict[str, Any]:
    png_dir, shard_dir = out / f"png{size}", out / f"shards{size}"
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "threads_per_process": "1 torch + 1 OpenCV thread (main process and each worker)",
        "load1_start": load1(),
        "dataset": dataset.name,
        "root": str(dataset.root),
        "size": size,
        "images": len(dataset.records),
    }
    build: dict[str, Any] = {}
    if rebuild or not (png_dir / dataset.name / "index.csv").is_file():
        rep = prepare_cache(dataset, png_dir, size, progress=progress, overwrite=True)
        build["png"] = {"images": rep.written + rep.reused, "seconds": rep.seconds}
    if rebuild or shard_folder(shard_dir, dataset.name) is None:
        srep = prepare_shards(dataset, shard_dir, size, progress=progress)
        build["shards"] = {"images": srep.written, "seconds": srep.seconds, "shards": srep.shards}
    for v in build.values():  # preparation is one process: images/s/core
        v["img_s_core"] = v["images"] / max(v["seconds"], 1e-9)
    result["build"] = build
    png_index = load_cache_index(png_dir, dataset.name)
    shards = open_shard_cache(shard_dir, dataset.name, size, source_root=dataset.root)
    keys = [k for k in shards.keys if k in png_index]
    random.Random(0).shuffle(keys)
    keys_s = keys[:sample]
    rk = dict(dataset.read_kwargs())
    all_orig = [k if os.path.isabs(k) else str(dataset.root / k) for k in keys]
    all_pngs = [png_index[k][0] for k in keys]
    orig, pngs = all_orig[:sample], all_pngs[:sample]
    by_key = {dataset.key(r): r for r in dataset.records}
    recs = [by_key[k] for k in keys_s]
    # the same reader over each cache (shallow copies: the records are shared, not re-read)
    ds_png, ds_sh = copy.copy(dataset), copy.copy(dataset)
    ds_png._cache, ds_png._shards = png_index, None
    ds_sh._cache, ds_sh._shards, ds_sh._shard_kwargs_checked = None, shards, False

    for p in orig + pngs:  # warm the page cache: every source is measured from memory, not the disk
        with open(p, "rb") as f:
            f.read()
    single = {
        "originals (decode + resize)": _rate(
            lambda p: resize_long_side(read_image(p, **rk), size), orig, min_seconds
        ),
        "png cache (decode)": _rate(read_image, pngs, min_seconds),
        "shards (row -> uint8 tensor)": _rate(
            lambda k: torch.from_numpy(np.array(shards.padded(k))), keys_s, min_seconds
        ),
        "reader.read_pixels via png cache": _rate(ds_png.read_pixels, recs, min_seconds),
        "reader.read_pixels via shards": _rate(ds_sh.read_pixels, recs, min_seconds),
    }
    result["sample"] = len(keys_s)
    result["single_core_img_s"] = single
    result["load1_after_single"] = load1()

    sources: dict[str, torch.utils.data.Dataset] = {
        "originals": _SourceDataset(all_orig, size, rk),
        "png cache": _SourceDataset(all_pngs, size, {}),
        "shards": ShardImageDataset(shards, keys),
    }
    rows = []
    for name, ds in sources.items():
        for w in workers:
            rows.append(
                {
                    "source": name,
                    "batch": batch,
                    "workers": w,
                    "samples_s": loader_rate(ds, batch, w, max_batches),
                    "per_sample": "uint8 (1, S, S); batch -> float32 normalised (3 channels)",
                }
            )
    if preset:
        from cxrvlp.core.data.transforms import build_transform

        tf = build_transform(preset, train=True, seed=0)
        pds = _PresetDataset(shards, keys, tf)
        for w in workers:
            rows.append(
                {
                    "source": f"shards + {preset} train transform",
                    "batch": preset_batch,
                    "workers": w,
                    "samples_s": loader_rate(pds, preset_batch, w, max_batches, norm=None),
                    "per_sample": f"{preset} preset (augmentation, float (3, 224, 224) per sample)",
                }
            )
    result["loader"] = rows
    result["load1_end"] = load1()
    sh = single["shards (row -> uint8 tensor)"]
    w0 = next((r["samples_s"] for r in rows if r["source"] == "shards" and r["workers"] == 0), float("nan"))
    result["goal"] = {
        "img_s_core": GOAL_IMG_S_CORE,
        "shards_single_core": sh,
        "shards_loader_workers0": w0,
        "met": bool(sh >= GOAL_IMG_S_CORE and w0 >= GOAL_IMG_S_CORE),
    }
    return result


def format_table(res: dict[str, Any]) -> str:
    """Markdown tables of a `measure_loader` result."""
    cpu = res["cpu"]
    lines = [
        f"{res['date']}, {cpu['model']} ({cpu.get('cores')} cores, {', '.join(cpu['flags']) or 'no avx2'}), "
        f"torch {res['torch']}, {res['images']} {res['dataset']} images at {res['size']} px, "
        f"1-min load {res['load1_start']:.2f} / {res['load1_after_single']:.2f} / {res['load1_end']:.2f} "
        f"(start / after single-core / end)",
        "",
        "| read path (one process, warm page cache) | img/s/core |",
        "|---|---|",
    ]
    for k, v in res.get("build", {}).items():
        lines.append(f"| prepare {k} cache (decode + resize + write) | {v['img_s_core']:.0f} |")
    for k, v in res["single_core_img_s"].items():
        lines.append(f"| {k} | {v:.0f} |")
    lines += ["", "| DataLoader source | batch | workers | samples/s |", "|---|---|---|---|"]
    for r in res["loader"]:
        lines.append(f"| {r['source']} | {r['batch']} | {r['workers']} | {r['samples_s']:.0f} |")
    g = res["goal"]
    lines += [
        "",
        f"goal {g['img_s_core']:.0f} img/s/core: shards {g['shards_single_core']:.0f} img/s/core "
        f"(one process), "
        f"DataLoader with 0 workers {g['shards_loader_workers0']:.0f} samples/s: "
        f"{'met' if g['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def write_json(res: dict[str, Any], path: str | Path) -> Path:
    """Write the result JSON atomically (parent folders created)."""
    return atomic_write_text(path, json.dumps(res, indent=1) + "\n")
