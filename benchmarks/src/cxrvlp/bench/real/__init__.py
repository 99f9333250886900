"""`cxrvlp-bench real`: what real pretrained weights give on real radiographs described by a manifest.

Rows: `--manifest` (fit rows) and `--eval-manifest` (eval rows, optional; else `suggested_role`
demo_eval, else a patient split). Tasks come from the eval rows' labels (pneumonia vs no finding, COVID-19
vs other findings, the three most frequent NIH findings). Every figure is an AUROC with a 95 % percentile
bootstrap interval, and every pretrained figure has its random-init twin and a paired bootstrap difference.

Two probe protocols, each a named figure (`EVALUATIONS` says what each name means):

- "linear probe fitted on the fit rows (all eval rows)": where the fit rows carry a task's labels, a probe
  is fitted on those fit rows (less any row sharing an image file or a patient with the eval rows) and
  scores EVERY eval row, so a held-out folder is judged by a probe trained on the data given for fitting.
  Where they do not, the record says so per task (`fit_row_probe`) and no such figure is made.
- "linear probe" (and "..., K per class"), the eval split: each task's eval rows split by patient per seed
  into probe-train (60 %) and probe-test (40 %). It needs no labelled fit rows, and it is what the
  contrastive part's probes use. The fit-row probe is also paired with it on its probe-test rows.

1. Bare encoder: frozen EfficientNet-Lite0 (ImageNet weights vs the same architecture at random init),
   logistic-regression probes on its pooled features, both protocols.
2. Contrastive part (`methods`): each method's `small` config (EfficientNet-Lite0 + MiniLM-L6 backbones
   with the method's own heads and losses; not the paper's backbones) fine-tuned on the fit rows with text,
   once from the pretrained backbones and once from random init, then zero-shot (the method's prompt
   protocol) and the eval-split linear probe on the eval rows. The fit rows' texts are clinical notes, not
   radiology reports (see `cxrvlp.bench.mimic_export`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cxrvlp.bench.real.finetune import TrainedModel, finetune_all, score_model
from cxrvlp.bench.real.frozen import (
    ENCODER,
    NORMALISATION,
    RESIZE,
    ImageCache,
    build_encoder,
    dataset_size,
    encode,
)
from cxrvlp.bench.real.manifest import (
    COLUMNS,
    BinaryTask,
    default_tasks,
    manifest_samples,
    manifest_source,
    probe_split,
    read_manifest,
    select_tasks,
    split_roles,
    task_rows,
)
from cxrvlp.bench.real.pointing import pointing_game
from cxrvlp.bench.real.report import markdown, plot
from cxrvlp.bench.real.stats import (
    Figure,
    auroc,
    bootstrap_auroc,
    paired_difference,
    probe_name,
    probe_scores,
    probes,
)
from cxrvlp.bench.record import jsonable, package_versions, sha256_file

__all__ = [
    "COLUMNS",
    "EVALUATIONS",
    "FIT_PROBE",
    "BinaryTask",
    "Figure",
    "RealOptions",
    "auroc",
    "bootstrap_auroc",
    "default_tasks",
    "fit_rows_for_tasks",
    "manifest_samples",
    "manifest_source",
    "paired_difference",
    "read_manifest",
    "run_real",
    "task_rows",
]

PROBE = (
    "scikit-learn LogisticRegression (L2) on standardised features; C from {0.001, 0.01, 0.1, 1, 10} by "
    "5-fold patient-grouped cross-validation (AUROC) on the rows the probe is fitted on (see Evaluations)"
)


FIT_PROBE = "linear probe fitted on the fit rows (all eval rows)"
FIT_POINTING = "fit (images seen in fine-tuning; boxes never used)"
FIT_MIN_PER_CLASS = 2  # labelled fit rows per class the fit-row probe needs
EVALUATIONS = {
    FIT_PROBE: "probe fitted on every fit row (--manifest) with the task's labels, less rows sharing an "
    "image file or a patient with the eval rows; scores every eval row",
    probe_name(None): "eval split: probe fitted on the probe-train rows (60 % of the task's eval rows, "
    "patient split by seed); scores the probe-test rows (the other 40 %)",
    probe_name(16): "eval split as above, probe fitted on 16 probe-train rows per class (label efficiency)",
    "zero-shot": "the method's own prompt protocol, no probe; scores the probe-test rows",
}


@dataclass
class RealOptions:
    """What `cxrvlp-bench real` reads, runs and writes."""

    manifest: Path
    images: Path | None = None
    eval_manifest: Path | None = None
    eval_images: Path | None = None
    out: Path = Path("outputs/real")
    seeds: Sequence[int] = (0,)
    shots: Sequence[int | None] = (None, 16)  # probe on all probe-train rows, and on 16 per class
    image_size: int = 224  # bare-encoder probe (a dataset of smaller images keeps its own size)
    max_rows: int | None = None  # per task (eval) and per dataset (fit), evenly spaced: smoke runs
    tasks: Sequence[str] | None = None  # task names or datasets (default: every task the labels allow)
    bootstrap: int = 1000
    batch_size: int = 32
    methods: Sequence[str] = ()  # contrastive part: methods whose `config` is fine-tuned
    config: str = "small"
    finetune_image_size: int | None = 128  # None: the config's own (224)
    finetune_epochs: int | None = 2  # None: the config's own
    finetune_text_length: int | None = 64  # tokens; None: the config's own
    finetune_inits: Sequence[str] = ("pretrained", "random")
    finetune_parallel: int = 2  # fine-tunes at once (own processes, cpu_count / parallel threads each)
    train_overrides: Sequence[str] = ()
    checkpoints: dict[str, str] = field(default_factory=dict)  # method -> our final/ dir, scored as given


def _cap_per_dataset(rows: list[dict[str, str]], n: int | None) -> list[dict[str, str]]:
    if n is None:
        return rows
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == ds]
        pick = np.linspace(0, len(sub) - 1, min(n, len(sub))).round().astype(int)
        out += [sub[i] for i in dict.fromkeys(pick)]
    return out


def _figure(task, model, init, evaluation, seed, y_te, s, n_train, n_boot, extra=None) -> Figure:
    a, lo, hi = bootstrap_auroc(y_te, s, n_boot, seed)
    if not all(np.isfinite([a, lo, hi])):
        raise FloatingPointError(f"{task.name} / {model} / {init} / {evaluation}: non-finite AUROC")
    return Figure(
        task.name, model, init, evaluation, seed, a, lo, hi, n_train, len(y_te), int(y_te.sum()), extra or {}
    )


def run_real(o: RealOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run both parts; write real_results.json, real_results.md and real_auroc.png into o.out."""
    t0 = time.perf_counter()
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(o.manifest)
    fit_root = Path(o.images or Path(o.manifest).parent)
    given_eval = read_manifest(o.eval_manifest) if o.eval_manifest is not None else None
    eval_root = (
        Path(o.eval_images or Path(o.eval_manifest).parent) if o.eval_manifest is not None else fit_root
    )
    fit_rows, eval_rows = split_roles(rows, given_eval, seed=o.seeds[0])
    fit_rows = _cap_per_dataset(fit_rows, o.max_rows)
    skipped: list[str] = []
    tasks = select_tasks(default_tasks(eval_rows, skipped=skipped), o.tasks)
    if not tasks:
        raise ValueError(f"{o.eval_manifest or o.manifest}: no task with enough labelled eval rows")
    data = {t: task_rows(t, eval_rows, o.max_rows) for t in tasks}
    sizes = {t.dataset: dataset_size(data[t][0], o.image_size) for t in tasks}
    masks = {(t, s): probe_split(data[t][0], s) for t in tasks for s in o.seeds}
    for (t, s), m in masks.items():
        y = data[t][1]
        if len(np.unique(y[m])) < 2 or len(np.unique(y[~m])) < 2:
            raise ValueError(f"{t.name}, seed {s}: probe-train or probe-test rows hold one class only")

    figures: list[Figure] = []
    pointing: list[dict[str, Any]] = []
    scores: dict[tuple, np.ndarray] = {}  # (task, model, init, evaluation, seed) -> probe-test scores

    def add(t: BinaryTask, model: str, init: str, seed: int, extra: dict, evals: dict) -> None:
        """Record {evaluation: (probe-test scores, n probe-train rows[, C])} as figures with intervals."""
        y_te = data[t][1][~masks[(t, seed)]]
        for ev, (s, n_train, *c) in evals.items():
            scores[(t.name, model, init, ev, seed)] = s
            more = {**extra, "C": c[0]} if c else extra
            figures.append(_figure(t, model, init, ev, seed, y_te, s, n_train, o.bootstrap, more))

    def patients(rs: Sequence[dict[str, str]]) -> np.ndarray:
        """Patient of each row (the probes' cross-validation folds never split a patient)."""
        return np.array([f"{r['dataset']}/{r['patient_id']}" for r in rs])

    # Probes fitted on the FIT rows where those carry the task's labels (a held-out folder is then judged by
    # a probe trained on the data the user gave for fitting); they score every eval row. The eval-split probe
    # (60 % of the eval rows) stays as a second, named figure.
    fit_data, fit_probe = fit_rows_for_tasks(tasks, fit_rows, fit_root, eval_rows, eval_root)
    fit_tasks = [t for t in tasks if fit_probe[t.name]["fitted"]]
    for t in tasks:
        log(f"[real] {t.name}: fit-row probe {fit_probe[t.name]['note']}")
    # one encoding per dataset of the fit rows its tasks use (the NIH tasks share their images)
    fit_ds_rows: dict[str, dict[str, dict[str, str]]] = {}
    for t in fit_tasks:
        for r in fit_data[t][0]:
            fit_ds_rows.setdefault(t.dataset, {}).setdefault(r["image_path"], r)
    fit_pos = {d: {path: i for i, path in enumerate(rs)} for d, rs in fit_ds_rows.items()}
    fit_where = {
        t: np.array([fit_pos[t.dataset][r["image_path"]] for r in fit_data[t][0]]) for t in fit_tasks
    }
    fit_scores: dict[tuple, np.ndarray] = {}  # (task, init, seed) -> scores on all eval rows

    cache = ImageCache()
    for init, pretrained in (("imagenet", True), ("random", False)):
        feats: dict[str, np.ndarray] = {}
        fit_feats: dict[str, np.ndarray] = {}
        for seed in o.seeds:
            if not pretrained or not feats:  # ImageNet features do not depend on the seed; random ones do
                enc = build_encoder(pretrained, seed)
                fit_feats = {
                    d: encode(
                        enc,
                        [fit_root / p for p in rs],
                        sizes[d],
                        cache,
                        o.batch_size,
                        desc=f"{ENCODER} {init} {d} fit rows",
                    )
                    for d, rs in fit_ds_rows.items()
                }
                feats = {
                    t.dataset: encode(
                        enc,
                        [eval_root / r["image_path"] for r in data[t][0]],
                        sizes[t.dataset],
                        cache,
                        o.batch_size,
                        desc=f"{ENCODER} {init} {t.dataset}",
                    )
                    for t in tasks
                }
            for t in tasks:
                add(
                    t,
                    ENCODER,
                    init,
                    seed,
                    {},
                    probes(
                        feats[t.dataset], data[t][1], masks[(t, seed)], seed, o.shots, patients(data[t][0])
                    ),
                )
            for t in fit_tasks:
                f_fit = fit_feats[t.dataset][fit_where[t]]
                s_all, c = probe_scores(
                    f_fit, fit_data[t][1], feats[t.dataset], seed, patients(fit_data[t][0])
                )
                fit_scores[(t.name, init, seed)] = s_all
                n_fit = len(fit_data[t][1])
                extra = {"train_rows": "fit rows", "test_rows": "all eval rows", "C": c}
                figures.append(
                    _figure(t, ENCODER, init, FIT_PROBE, seed, data[t][1], s_all, n_fit, o.bootstrap, extra)
                )
        log(f"[real] {ENCODER} {init}: probes done ({time.perf_counter() - t0:.0f} s)")

    contrastive: dict[str, Any] = {"summary": "not run (no methods given)"}
    trained: list[TrainedModel] = []
    if o.methods:
        from cxrvlp.bench.mimic_export import export_mimic

        mimic = export_mimic(fit_rows, fit_root, out / "fit_as_mimic")
        n_text = sum(bool((r.get("report") or "").strip()) for r in fit_rows)
        trained, status = finetune_all(
            o.methods,
            mimic,
            out,
            o.config,
            o.finetune_image_size,
            o.finetune_epochs,
            o.train_overrides,
            o.finetune_inits,
            o.finetune_text_length,
            log,
            o.finetune_parallel,
        )
        knobs = (o.finetune_image_size, o.finetune_text_length, o.finetune_epochs)
        contrastive = {
            "summary": f"config '{o.config}' of {list(o.methods)} fine-tuned on {n_text} fit rows with text "
            f"(image size, text length, epochs: {knobs}; None = the config's own), "
            f"inits {list(o.finetune_inits)}",
            "fit_rows_with_text": n_text,
            "status": status,
        }
    trained += [TrainedModel(m, "checkpoint", Path(d), None, f"given: {d}") for m, d in o.checkpoints.items()]
    if trained:
        from cxrvlp.core.registry import get_method

        # One pass per dataset, not per task (the NIH tasks share their images): rows of all its tasks,
        # zero-shot scores of every task's class on the rows some seed holds out, features of every row.
        ds_rows: dict[str, dict[str, dict[str, str]]] = {}
        for t in tasks:
            for r in data[t][0]:
                ds_rows.setdefault(t.dataset, {}).setdefault(r["image_path"], r)
        pos = {d: {path: i for i, path in enumerate(rs)} for d, rs in ds_rows.items()}  # row of each image
        where = {t: np.array([pos[t.dataset][r["image_path"]] for r in data[t][0]]) for t in tasks}
        ds_tasks = {d: [t for t in tasks if t.dataset == d] for d in ds_rows}
        held_out = {}
        for d, ts in ds_tasks.items():
            h = np.zeros(len(ds_rows[d]), bool)
            for t in ts:
                for seed in o.seeds:
                    h[where[t][~masks[(t, seed)]]] = True
            held_out[d] = h
        samples = {d: manifest_samples(list(rs.values()), eval_root, ()) for d, rs in ds_rows.items()}
        for tm in trained:
            try:
                adapter = get_method(tm.method).load_adapter(tm.final_dir)
            except Exception as e:  # recorded; the other models are still scored
                contrastive.setdefault("status", {})[f"{tm.method}/{tm.init}"] = (
                    f"error: cannot load {tm.final_dir} ({type(e).__name__}: {e})"
                )
                log(f"[real] {tm.method} ({tm.init}): cannot load its adapter: {type(e).__name__}: {e}")
                continue
            for d, ts in ds_tasks.items():
                got = score_model(
                    adapter, tm.method, d, [t.positive for t in ts], samples[d], o.batch_size, held_out[d]
                )
                for k, t in enumerate(ts):
                    y, idx = data[t][1], where[t]
                    extra = {"protocol": got["protocol"], "trained": tm.note, "final_dir": str(tm.final_dir)}
                    for seed in o.seeds:
                        m = masks[(t, seed)]
                        evals = {"zero-shot": (got["zero-shot"][idx][~m, k], 0)}
                        evals.update(probes(got["features"][idx], y, m, seed, o.shots, patients(data[t][0])))
                        add(t, tm.method, tm.init, seed, extra, evals)
            for which, rs, root in (("eval", eval_rows, eval_root), (FIT_POINTING, fit_rows, fit_root)):
                got = pointing_game(adapter, rs, root, o.bootstrap, o.seeds[0], o.batch_size)
                if got is not None:
                    pointing.append({"model": tm.method, "init": tm.init, "rows": which, **got})
            log(f"[real] {tm.method} ({tm.init}) scored ({time.perf_counter() - t0:.0f} s)")

    differences = []
    for (task, model, init, ev, seed), s in scores.items():
        if init not in ("imagenet", "pretrained") or (task, model, "random", ev, seed) not in scores:
            continue
        t = next(x for x in tasks if x.name == task)
        y = data[t][1][~masks[(t, seed)]]
        d, lo, hi = paired_difference(y, s, scores[(task, model, "random", ev, seed)], o.bootstrap, seed)
        differences.append(
            {"task": task, "model": model, "evaluation": ev, "seed": seed, "a": init, "b": "random",
             "diff": d, "ci_low": lo, "ci_high": hi}
        )  # fmt: skip

    for (task, init, seed), s_fit in fit_scores.items():
        if init != "imagenet":
            continue
        t = next(x for x in tasks if x.name == task)
        y_all, m = data[t][1], masks[(t, seed)]
        if (task, "random", seed) in fit_scores:  # pretrained vs random init, both fitted on the fit rows
            d, lo, hi = paired_difference(y_all, s_fit, fit_scores[(task, "random", seed)], o.bootstrap, seed)
            differences.append(
                {"task": task, "model": ENCODER, "evaluation": FIT_PROBE, "seed": seed, "a": init,
                 "b": "random", "diff": d, "ci_low": lo, "ci_high": hi}
            )  # fmt: skip
        eval_split = scores.get((task, ENCODER, "imagenet", probe_name(None), seed))
        if eval_split is not None:  # fit-rows probe vs eval-split probe, paired on the probe-test rows
            d, lo, hi = paired_difference(y_all[~m], s_fit[~m], eval_split, o.bootstrap, seed)
            differences.append(
                {"task": task, "model": ENCODER,
                 "evaluation": f"{FIT_PROBE} vs {probe_name(None)} (probe-test rows)",
                 "seed": seed, "a": f"{init} fit rows", "b": f"{init} eval split", "diff": d, "ci_low": lo,
                 "ci_high": hi}
            )  # fmt: skip

    weights = {ENCODER: _weights_entry("efficientnet-lite0")}
    if trained:
        weights["minilm-l6"] = _weights_entry("minilm-l6")
    record = {
        "kind": "real-image evaluation",
        "synthetic": False,
        "manifest": {"path": str(o.manifest), "sha256": sha256_file(o.manifest)},
        "eval_manifest": None
        if o.eval_manifest is None
        else {"path": str(o.eval_manifest), "sha256": sha256_file(o.eval_manifest)},
        "rows": {"fit": len(fit_rows), "eval": len(eval_rows)},
        "tasks": [asdict(t) for t in tasks],
        "tasks_not_formed": skipped,
        "frozen_encoder": {"name": ENCODER, "resize": RESIZE, "normalisation": NORMALISATION},
        "image_sizes": sizes,
        "weights": weights,
        "probe": PROBE,
        "evaluations": {k: v for k, v in EVALUATIONS.items() if any(f.evaluation == k for f in figures)},
        "fit_row_probe": fit_probe,
        "interval": f"95 % percentile bootstrap over the scored rows ({o.bootstrap} resamples, paired for "
        "differences)",
        "seeds": list(o.seeds),
        "results": [asdict(f) for f in figures],
        "differences": differences,
        "pointing_game": pointing,
        "contrastive": contrastive,
        "versions": package_versions(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "real_results.json").write_text(json.dumps(jsonable(record), indent=2, allow_nan=False))
    (out / "real_results.md").write_text(markdown(record))
    plot(record["results"], out / "real_auroc.png")
    log(f"[real] wrote {out / 'real_results.md'} ({record['wall_s']} s)")
    return record


def fit_rows_for_tasks(
    tasks: Sequence[BinaryTask],
    fit_rows: Sequence[dict[str, str]],
    fit_root: Path,
    eval_rows: Sequence[dict[str, str]],
    eval_root: Path,
) -> tuple[dict[BinaryTask, tuple[list[dict[str, str]], np.ndarray]], dict[str, dict[str, Any]]]:
    """Per task, the fit rows its fit-row probe trains on and a status saying whether it is fitted and why.

    A fit row of the task's dataset with the task's labels is used unless its image file (resolved, so a
    symlinked folder counts) or its patient is also among the eval rows: those are left out and counted."""
    eval_files = {(eval_root / r["image_path"]).resolve() for r in eval_rows}
    eval_patients = {(r["dataset"], r["patient_id"]) for r in eval_rows}
    data, status = {}, {}
    for t in tasks:
        rows, y = task_rows(t, fit_rows, None)
        keep = np.array(
            [
                (fit_root / r["image_path"]).resolve() not in eval_files
                and (r["dataset"], r["patient_id"]) not in eval_patients
                for r in rows
            ],
            dtype=bool,
        )
        rows, y = [r for r, k in zip(rows, keep) if k], y[keep]
        data[t] = (rows, y)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        negative = t.negative or f"no {t.positive}"
        fitted = n_pos >= FIT_MIN_PER_CLASS and n_neg >= FIT_MIN_PER_CLASS
        if fitted:
            note = f"fitted on {len(y)} fit rows ({n_pos} {t.positive}, {n_neg} {negative})"
        else:
            note = (
                f"NOT fitted: the fit rows hold {n_pos} '{t.positive}' and {n_neg} '{negative}' rows of "
                f"dataset '{t.dataset}' (needs {FIT_MIN_PER_CLASS} of each); only the eval-split probe is "
                "reported"
            )
        if int((~keep).sum()):
            note += f"; {int((~keep).sum())} fit rows sharing an image or patient with the eval rows left out"
        status[t.name] = {
            "fitted": fitted,
            "n_fit": len(y),
            "n_fit_pos": n_pos,
            "excluded_overlap": int((~keep).sum()),
            "note": note,
        }
    return data, status


def _weights_entry(name: str) -> dict[str, str]:
    """Path and sha256 of packaged weights (the MiniLM folder's model.safetensors)."""
    from cxrvlp.core.encoders.packaged import resolve_model_source

    p = Path(resolve_model_source(name))
    f = p / "model.safetensors" if p.is_dir() else p
    return {"path": str(f), "sha256": sha256_file(f)}
