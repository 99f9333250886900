"""`demo`: synthetic mirrors -> brief training of every available method -> the suite -> JSON/CSV/MD/plots.

Everything is synthetic and says so (stdout and the Markdown header). Methods that are not installed or
not implemented yet are listed as skipped, never faked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench.build import SYNTHETIC_BANNER, build
from cxrvlp.bench.plots import plot_all
from cxrvlp.bench.record import sha256_dir
from cxrvlp.bench.runner import RunOptions, run_suite
from cxrvlp.bench.sources import DataSource, MethodSpec, method_status

BANNER = (
    "="
    * 78
    + "\nSYNTHETIC DEMO: every image below is a synthetic phantom written by cxrvlp.core.data.synthetic.\n"
    "The numbers check that the pipeline runs end to end; they say nothing about the methods.\n" + "=" * 78
)

# size -> mirror scale, image size, images per split, segmentation epochs, train overrides, probe seeds
SIZES = {
    "smoke": dict(
        scale=0.15, image_size=64, limit=8, seg_epochs=1, train=["epochs=1", "max_steps=3"], seeds=1
    ),
    "full": dict(scale=0.4, image_size=128, limit=60, seg_epochs=10, train=[], seeds=2),
}


@dataclass
class DemoOptions:
    """Where the demo writes, how big it is, which methods it tries."""

    out: Path
    size: str = "full"
    methods: Sequence[str] = ("carzero", "cxrclip", "mavl", "afloc", "mgca")
    seed: int = 0
    train_overrides: list[str] = field(default_factory=list)


def train_method(name: str, mimic_root: Path, out: Path, overrides: Sequence[str]) -> MethodSpec:
    """Train `name`'s tiny config on the synthetic MIMIC mirror; a MethodSpec that loads the result."""
    mod, why = method_status(name)
    if mod is None:
        return MethodSpec(name, None, "", skip_reason=why)
    run_dir = out / "train" / name
    try:
        run = Path(mod.train("tiny", [f"output_dir={run_dir}", f"data.root={mimic_root}", *overrides]))
    except Exception as e:  # a method whose training fails is reported, not hidden
        return MethodSpec(name, None, "", skip_reason=f"error: training failed ({type(e).__name__}: {e})")
    final = run / "final"
    if not final.exists():
        return MethodSpec(name, None, "", skip_reason=f"error: training wrote no {final}")
    return MethodSpec(
        name, lambda: mod.load_adapter(final), f"ours: {final} (tiny, synthetic MIMIC)", sha256_dir(final)
    )


def run_demo(o: DemoOptions) -> Path:
    """The whole demo; returns the output folder."""
    from cxrvlp.core.data.synthetic import write_all

    t0 = time.perf_counter()
    size = SIZES[o.size]
    print(BANNER, flush=True)
    out = Path(o.out)
    data_root = out / "synthetic_data"
    print(f"[1/4] writing synthetic mirrors under {data_root}", flush=True)
    roots = write_all(data_root, seed=o.seed, scale=size["scale"], image_size=size["image_size"])
    print("[2/4] training each available method briefly on the synthetic MIMIC-CXR mirror", flush=True)
    specs = []
    for m in o.methods:
        spec = train_method(m, roots["mimic-cxr"], out, [*size["train"], *o.train_overrides])
        print(f"  {m}: {'trained' if spec.load else spec.skip_reason}", flush=True)
        specs.append(spec)
    sources = {}
    for name in dsreg.MAIN_DATASETS:
        ds = dsreg.get(name)
        if ds.reader in roots:
            sources[name] = DataSource(ds, roots[ds.reader], synthetic=True, limit=size["limit"])
    print(f"[3/4] running the suite on {len(sources)} synthetic datasets", flush=True)
    opts = RunOptions(
        seeds=tuple(range(o.seed, o.seed + size["seeds"])),
        batch_size=16,
        skip_existing=True,
        task_options={"seg_epochs": size["seg_epochs"], "fractions": (0.1, 1.0)},
    )
    summary = run_suite(specs, sources, out, opts)
    print("[4/4] building the tables and figures", flush=True)
    csv_path, md_path = build(out)
    plots = plot_all(out)
    (out / "README.md").write_text(
        "# cxrvlp synthetic demo\n\n"
        + SYNTHETIC_BANNER
        + "\n\n"
        + "\n".join(f"- {s.name}: {'trained (tiny config)' if s.load else s.skip_reason}" for s in specs)
        + f"\n\nResults: `{md_path.name}`, `{csv_path.name}`, `plots/` ({len(plots)} figures), "
        + "`runs/` (one JSON each).\n"
    )
    print(
        f"done in {time.perf_counter() - t0:.0f} s: {len(summary.written)} result JSONs, "
        f"{len(summary.errors)} "
        f"errors, {len(plots)} figures; see {md_path}"
    )
    print("SYNTHETIC DATA: these numbers are a pipeline check only.")
    return out
