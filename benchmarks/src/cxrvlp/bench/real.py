"""`real`: linear probes on real images described by a manifest (columns of ../shared/data/real/manifest.csv).

Fit/eval rows: `--eval-manifest` when given, else `suggested_role` (demo_pretrain = fit, demo_eval = eval).
The linear probe is fitted on a patient-level split of the eval rows (60 % probe-train / 40 % probe-test,
by seed) on frozen features of the bare image encoder, ImageNet-initialised and randomly initialised;
every AUROC comes with a 95 % bootstrap interval over probe-test images.

Contrastive part (`--methods`): the fit rows with text are written as a MIMIC-CXR-shaped folder
(`mimic_export`), each method's own `train(config)` fine-tunes on it, and its adapter is then scored
zero-shot and by linear probe on the eval rows through the benchmark runner. A method that cannot train
is recorded with the reason. (No bootstrap intervals or random-init baseline for this part yet.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from cxrvlp.bench import scoring
from cxrvlp.bench.record import jsonable, package_versions, sha256_file
from cxrvlp.bench.sources import split_part
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

COLUMNS = (
    "dataset",
    "image_path",
    "labels",
    "report",
    "boxes",
    "view",
    "width",
    "height",
    "patient_id",
    "suggested_role",
)
NORMALISATION = "imagenet mean/std on [0, 1] grey replicated to 3 channels"


@dataclass
class RealOptions:
    """What `cxrvlp-bench real` reads and writes."""

    manifest: Path
    images: Path | None = None
    eval_manifest: Path | None = None
    eval_images: Path | None = None
    out: Path = Path("outputs/real")
    seeds: Sequence[int] = (0,)
    image_size: int = 224
    max_rows: int | None = None  # per dataset, for smoke runs
    methods: Sequence[str] = ()
    contrastive: bool = True
    bootstrap: int = 1000
    batch_size: int = 32
    tasks: Sequence[str] | None = None  # task names to run (default: all that the labels allow)
    config: str = "small"  # each method's config for the contrastive fine-tune
    train_overrides: Sequence[str] = ()
    # method -> our checkpoint dir: its adapter is also scored (zero-shot + probe) on the eval rows
    checkpoints: dict[str, str] = field(default_factory=dict)


@dataclass
class BinaryTask:
    """One probe task: which rows, and which labels make a row positive / negative."""

    name: str
    dataset: str
    positive: str  # label that makes a row positive
    negative: str | None  # label a negative row must carry (None: any row without `positive`)


@dataclass
class ProbeResult:
    """AUROC with its bootstrap interval for one (task, encoder init, seed)."""

    task: str
    init: str
    seed: int
    auroc: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    n_pos_test: int
    extra: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV; a missing file or column raises the library's errors."""
    import pandas as pd

    if not path.is_file():
        raise DatasetNotFoundError("real-manifest", path, "a manifest CSV with columns " + ", ".join(COLUMNS))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("dataset", "image_path", "labels", "patient_id") if c not in df.columns]
    if missing:
        raise MalformedRecordError(path, 1, f"missing column(s) {missing}")
    return df.to_dict("records")


def default_tasks(rows: Sequence[dict[str, str]]) -> list[BinaryTask]:
    """Binary tasks the labels allow: pneumonia vs no finding, COVID-19 vs other findings, NIH labels."""
    by_ds: dict[str, list[set[str]]] = {}
    for r in rows:
        by_ds.setdefault(r["dataset"], []).append(set(filter(None, r["labels"].split("|"))))
    tasks = []
    for ds, labs in sorted(by_ds.items()):

        def has(lab: str, labs: list[set[str]] = labs) -> int:
            return sum(lab in s for s in labs)

        if has("Pneumonia") >= 10 and has("No Finding") >= 10 and has("COVID-19") == 0:
            tasks.append(BinaryTask(f"{ds}: pneumonia vs no finding", ds, "Pneumonia", "No Finding"))
        if has("COVID-19") >= 10 and len(labs) - has("COVID-19") >= 10:
            tasks.append(BinaryTask(f"{ds}: COVID-19 vs other findings", ds, "COVID-19", None))
        if ds.startswith("nih"):
            counts = {lab: has(lab) for s in labs for lab in s if lab != "No Finding"}
            for lab in sorted(counts, key=lambda k: -counts[k])[:3]:
                if counts[lab] >= 15:
                    tasks.append(BinaryTask(f"{ds}: {lab} vs rest", ds, lab, None))
    return tasks


def load_image(path: Path, size: int) -> torch.Tensor:
    """PNG/JPEG -> (3, size, size) ImageNet-normalised, aspect kept by zero-padding to a square."""
    from cxrvlp.core.data import read_image

    img = torch.from_numpy(read_image(path))[None, None]  # (1, 1, H, W) in [0, 1]
    h, w = img.shape[-2:]
    s = size / max(h, w)
    img = F.interpolate(
        img, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False
    )
    ph, pw = size - img.shape[-2], size - img.shape[-1]
    img = F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    return (img[0].expand(3, -1, -1) - mean) / std


def encoder(pretrained: bool, seed: int):
    """Core EfficientNet-Lite0: ImageNet weights, or the same architecture at a seeded random init."""
    from cxrvlp.core.encoders.base import create_image_encoder

    torch.manual_seed(seed)
    return create_image_encoder("efficientnet-lite0", pretrained=pretrained).eval()


def features(enc, paths: Sequence[Path], size: int, batch_size: int) -> np.ndarray:
    """(N, 1280) global features of the images."""
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            x = torch.stack([load_image(p, size) for p in paths[i : i + batch_size]])
            out.append(enc(x).global_feat.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def bootstrap_auroc(y: np.ndarray, s: np.ndarray, n: int, seed: int) -> tuple[float, float, float]:
    """AUROC and its 95 % percentile bootstrap interval (resamples lacking a class are redrawn)."""
    auc = scoring.classification(y[:, None], s[:, None], ["c"])["auroc_macro"]
    rng = np.random.default_rng(seed)
    vals: list[float] = []
    while len(vals) < n:
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            vals.append(scoring.classification(y[idx, None], s[idx, None], ["c"])["auroc_macro"])
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(auc), float(lo), float(hi)


def probe_auroc(f_tr, y_tr, f_te, y_te, seed: int) -> np.ndarray:
    """Standardised logistic regression (C=0.1); probe-test probabilities."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    clf = LogisticRegression(C=0.1, max_iter=3000, random_state=seed).fit((f_tr - mu) / sd, y_tr)
    return clf.predict_proba((f_te - mu) / sd)[:, 1]


def task_rows(task: BinaryTask, rows: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], np.ndarray]:
    """Rows of the task's dataset that are positive or valid negatives, and their 0/1 labels."""
    keep, y = [], []
    for r in rows:
        if r["dataset"] != task.dataset:
            continue
        labs = set(filter(None, r["labels"].split("|")))
        if task.positive in labs:
            keep.append(r)
            y.append(1.0)
        elif task.negative is None or task.negative in labs:
            keep.append(r)
            y.append(0.0)
    return keep, np.asarray(y)


def run_real(o: RealOptions) -> dict[str, Any]:
    """Run the probes; write real_results.json, real_results.md and real_probe.png into o.out."""
    t0 = time.perf_counter()
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    fit_rows = read_manifest(o.manifest)
    img_root = o.images or o.manifest.parent
    if o.eval_manifest is not None:
        eval_rows, eval_root = read_manifest(o.eval_manifest), o.eval_images or o.eval_manifest.parent
    else:
        eval_rows = [r for r in fit_rows if r.get("suggested_role") == "demo_eval"]
        fit_rows = [r for r in fit_rows if r.get("suggested_role") != "demo_eval"]
        eval_root = img_root
    tasks = default_tasks(eval_rows)
    if o.tasks is not None:
        tasks = [t for t in tasks if t.name in o.tasks or t.dataset in o.tasks]
    results: list[ProbeResult] = []
    weights = {}
    for seed in o.seeds:
        for init, pretrained in (("imagenet", True), ("random", False)):
            enc = encoder(pretrained, seed)
            for task in tasks:
                rows, y = task_rows(task, eval_rows)
                if o.max_rows is not None and len(rows) > o.max_rows:
                    pick = np.random.default_rng(0).permutation(len(rows))[: o.max_rows]
                    pick.sort()
                    rows, y = [rows[i] for i in pick], y[pick]
                part = np.array([split_part(f"{seed}:{r['patient_id']}", (0.6, 0.6)) for r in rows])
                tr, te = part == "train", part != "train"
                f = features(enc, [eval_root / r["image_path"] for r in rows], o.image_size, o.batch_size)
                if not np.isfinite(f).all():
                    raise FloatingPointError(f"{task.name}: non-finite features ({init})")
                p = probe_auroc(f[tr], y[tr], f[te], y[te], seed)
                auc, lo, hi = bootstrap_auroc(y[te], p, o.bootstrap, seed)
                results.append(
                    ProbeResult(
                        task.name, init, seed, auc, lo, hi, int(tr.sum()), int(te.sum()), int(y[te].sum())
                    )
                )
    from cxrvlp.core.encoders.efficientnet import efficientnet_lite0_weights_path

    wpath = efficientnet_lite0_weights_path()
    weights["efficientnet-lite0"] = {"path": str(wpath), "sha256": sha256_file(wpath)}
    record = {
        "kind": "real-data linear probe",
        "synthetic": False,
        "manifest": {"path": str(o.manifest), "sha256": sha256_file(o.manifest)},
        "eval_manifest": None
        if o.eval_manifest is None
        else {"path": str(o.eval_manifest), "sha256": sha256_file(o.eval_manifest)},
        "rows": {"fit": len(fit_rows), "eval": len(eval_rows)},
        "encoder": "core efficientnet-lite0 (timm tf_efficientnet_lite0), frozen, global 1280-d average pool",
        "weights": weights,
        "image_size": o.image_size,
        "resize": "long side to image_size, zero-pad to a square",
        "normalisation": NORMALISATION,
        "probe": "scikit-learn LogisticRegression(C=0.1) on standardised features; patient-level 60/40 split "
        "of the eval rows by seed",
        "interval": f"95 % percentile bootstrap over probe-test images ({o.bootstrap} resamples)",
        "seeds": list(o.seeds),
        "results": [r.__dict__ for r in results],
        "contrastive": "not run (--no-contrastive or no --methods)",
        "versions": package_versions(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if o.contrastive and o.methods:
        record["contrastive"] = contrastive(o, fit_rows, img_root, eval_rows, eval_root, tasks, out)
    if o.checkpoints:  # methods' adapters on the eval rows: zero-shot and linear probe through the runner
        from cxrvlp.bench.runner import RunOptions, run_suite
        from cxrvlp.bench.sources import resolve_methods

        specs = resolve_methods(list(o.checkpoints), o.checkpoints, {})
        sources = {
            s.dataset.name: s for s in (manifest_source(t, eval_rows, eval_root, o.max_rows) for t in tasks)
        }
        run_suite(specs, sources, out, RunOptions(tasks=("zeroshot", "linear_probe"), seeds=tuple(o.seeds)))
        record["method_runs"] = str(out / "runs")
    (out / "real_results.json").write_text(json.dumps(jsonable(record), indent=2, allow_nan=False))
    (out / "real_results.md").write_text(markdown(record))
    plot(results, out / "real_probe.png")
    return record


def markdown(rec: dict[str, Any]) -> str:
    """Markdown table: task, init, AUROC [95 % CI], sizes."""
    lines = [
        "# Linear probe on real images (../shared/data/real)",
        "",
        "Real, small, domain-shifted images: these numbers show the pipeline and the pretrained weights work "
        "on real radiographs, not paper-level results.",
        "",
        f"Encoder: {rec['encoder']}; image size {rec['image_size']}; {rec['normalisation']}. {rec['probe']}. "
        f"{rec['interval']}.",
        "",
        "| task | init | seed | AUROC [95 % CI] | n train / test (pos) |",
        "|---|---|---|---|---|",
    ]
    for r in rec["results"]:
        lines.append(
            f"| {r['task']} | {r['init']} | {r['seed']} | {r['auroc']:.3f} [{r['ci_low']:.3f}, "
            f"{r['ci_high']:.3f}] | {r['n_train']} / {r['n_test']} ({r['n_pos_test']}) |"
        )
    lines += ["", f"Contrastive part: {rec['contrastive']}.", ""]
    return "\n".join(lines)


def plot(results: Sequence[ProbeResult], path: Path) -> Path:
    """Bar chart: AUROC per task, ImageNet vs random init side by side, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in results))
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(tasks)), 4.2))
    for k, (init, colour) in enumerate((("imagenet", "tab:blue"), ("random", "tab:gray"))):
        rs = [[r for r in results if r.task == t and r.init == init] for t in tasks]
        m = [np.mean([r.auroc for r in x]) if x else np.nan for x in rs]
        lo = [np.mean([r.ci_low for r in x]) if x else np.nan for x in rs]
        hi = [np.mean([r.ci_high for r in x]) if x else np.nan for x in rs]
        xs = np.arange(len(tasks)) + (k - 0.5) * 0.38
        ax.bar(xs, m, width=0.36, color=colour, label=f"{init} init")
        ax.errorbar(
            xs, m, yerr=[np.subtract(m, lo), np.subtract(hi, m)], fmt="none", ecolor="black", capsize=4
        )
    ax.axhline(0.5, color="red", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(tasks)), [t.replace(": ", ":\n") for t in tasks], fontsize=8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("probe-test AUROC (95 % bootstrap CI)")
    ax.set_title("Linear probe on frozen EfficientNet-Lite0 features, real images", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def manifest_samples(rows: Sequence[dict[str, str]], root: Path, classes: Sequence[str]) -> list:
    """Manifest rows -> core `Sample`s (labels over `classes`, 1 if listed else 0; lung boxes kept)."""
    from cxrvlp.core.data import read_image
    from cxrvlp.core.data.contract import Sample

    out = []
    for r in rows:
        labs = set(filter(None, r["labels"].split("|")))
        boxes, blabels = None, []
        if r.get("boxes"):
            items = json.loads(r["boxes"])
            boxes = np.array(
                [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (i["bbox_xywh"] for i in items)], np.float32
            ).reshape(-1, 4)
            blabels = [i["label"] for i in items]
        out.append(
            Sample(
                image=read_image(root / r["image_path"]),
                image_path=str(root / r["image_path"]),
                dataset=r["dataset"],
                classes=tuple(classes),
                labels=np.array([float(c in labs) for c in classes], np.float32),
                report=r.get("report") or None,
                boxes=boxes,
                box_labels=blabels,
                patient_id=r["patient_id"],
                view=r.get("view") or None,
            )
        )
    return out


def manifest_source(
    task: BinaryTask, rows: Sequence[dict[str, str]], root: Path, max_rows: int | None = None
):
    """A benchmark DataSource over one binary task of a manifest: patient-level 60/20/20 train/val/test."""
    from cxrvlp.bench.datasets import BenchDataset
    from cxrvlp.bench.sources import DataSource

    keep, _ = task_rows(task, rows)
    if max_rows is not None and len(keep) > max_rows:  # evenly spaced: manifests are class-sorted
        keep = [keep[int(k)] for k in np.linspace(0, len(keep) - 1, max_rows).round()]
    parts = {r["patient_id"]: split_part(r["patient_id"], (0.6, 0.8)) for r in keep}
    ds = BenchDataset(
        name=f"real-{task.dataset}",
        reader="manifest",
        classes=(task.positive,),
        tasks=("zeroshot", "linear_probe"),
        test_split="test",
        val_split="val",
        train_split="train",
        expected_files="manifest.csv and its images",
        description=f"real images ({task.name}), manifest rows",
        extra=True,
    )
    by_split = {s: [r for r in keep if parts[r["patient_id"]] == s] for s in ("train", "val", "test")}
    return DataSource(
        ds, root, synthetic=False, reader_fn=lambda s: manifest_samples(by_split[s], root, (task.positive,))
    )


def contrastive(
    o: RealOptions, fit_rows, fit_root: Path, eval_rows, eval_root: Path, tasks, out: Path
) -> dict:
    """Fine-tune each method's config on the fit rows with text; zero-shot + linear probe on the eval rows."""
    from cxrvlp.bench.mimic_export import export_mimic
    from cxrvlp.bench.record import sha256_dir
    from cxrvlp.bench.runner import RunOptions, run_suite
    from cxrvlp.bench.sources import MethodSpec, method_status

    mimic = export_mimic(fit_rows, fit_root, out / "fit_as_mimic")
    status: dict[str, Any] = {
        "fit_rows_with_text": sum(bool(r.get("report")) for r in fit_rows),
        "config": o.config,
        "export": str(mimic),
    }
    specs = []
    for m in o.methods:
        mod, why = method_status(m)
        if mod is None:
            status[m] = why
            continue
        try:
            run = Path(
                mod.train(
                    o.config, [f"output_dir={out / 'train' / m}", f"data.root={mimic}", *o.train_overrides]
                )
            )
        except Exception as e:  # reported, never hidden
            status[m] = f"error: training failed ({type(e).__name__}: {e})"
            continue
        final = run / "final"
        specs.append(
            MethodSpec(m, lambda mod=mod, f=final: mod.load_adapter(f), f"ours: {final}", sha256_dir(final))
        )
        status[m] = f"trained ({o.config}) on {status['fit_rows_with_text']} real image-text rows"
    if specs:
        sources = {
            s.dataset.name: s for s in (manifest_source(t, eval_rows, eval_root, o.max_rows) for t in tasks)
        }
        run_suite(specs, sources, out, RunOptions(tasks=("zeroshot", "linear_probe"), seeds=tuple(o.seeds)))
        status["results"] = str(out / "runs")
    return status
