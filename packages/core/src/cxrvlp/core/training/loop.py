"""The shared Accelerate training loop. A method implements `TrainingTask`; its `train.py` is ~30 lines:

    # packages/mgca/src/cxrvlp/mgca/train.py
    import sys
    from dataclasses import dataclass, field
    from cxrvlp.core.training import TrainConfig, load_config, run_training

    @dataclass
    class MgcaTrainConfig(TrainConfig):           # adds the method's own nested sections
        model: MgcaModelConfig = field(default_factory=MgcaModelConfig)
        data: MgcaDataConfig = field(default_factory=MgcaDataConfig)

    class MgcaTask:                                # satisfies cxrvlp.core.training.TrainingTask
        def __init__(self, cfg): self.cfg = cfg
        def build_model(self): return MGCA(self.cfg.model)
        def build_train_dataset(self): return MgcaPretrainDataset(self.cfg.data, split="train")
        def collate(self, samples): return {..., "sample_ids": [s.sample_id for s in samples]}
        def training_step(self, model, batch, state):
            out = model(batch)                     # losses of one micro-batch
            return out.loss, {"ita": out.ita, "cta": out.cta, "cpa": out.cpa}
        def on_after_backward(self, model, state):  # optional: freeze prototypes in epoch 0
            if state.epoch < self.cfg.model.freeze_prototypes_epochs:
                state.accelerator.unwrap_model(model).prototype_layer.weight.grad = None

    def main(argv=None):
        argv = sys.argv[1:] if argv is None else argv   # CONFIG.yaml key=value ...
        cfg = load_config(MgcaTrainConfig, argv[0] if argv and "=" not in argv[0] else None,
                          [a for a in argv if "=" in a])
        return run_training(MgcaTask(cfg), cfg).output_dir

    if __name__ == "__main__":
        main()

Run it with `python -m cxrvlp.mgca.train cfg.yaml epochs=2`, `accelerate launch --num_processes 2 -m ...` on
GPUs, or `torchrun --nproc_per_node 2 -m ...` (also on CPU, gloo: tested; accelerate 1.15's
`accelerate launch --cpu --num_processes 2` starts a single process). The run folder holds config.yaml,
checkpoints/step_XXXXXXXX/ (accelerate state + trainer_state.json, the last `keep_last_checkpoints`),
tensorboard/ and, at the end, final/ (model.safetensors + config.json, read back with
`checkpoint.load_pretrained_weights`).

Guarantees: data order and per-sample augmentation randomness depend only on (seed, epoch, sample index);
a run killed at any point and restarted with `resume=auto` continues from the last complete checkpoint and,
on CPU with `deterministic=true`, ends with the same weights as an uninterrupted run. A non-finite loss is
detected on every micro-step; the decision (skip the optimizer step or raise `NonFiniteLossError`) is
all-reduced so every rank takes it together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from cxrvlp.core.errors import CheckpointError, ConfigError, NonFiniteLossError
from cxrvlp.core.training.checkpoint import (
    _fsync_dir,
    atomic_write_text,
    check_rng_restored,
    fsync_tree,
    save_pretrained,
    sha256_file,
    verify_resume_folder,
)
from cxrvlp.core.training.config import TrainConfig, config_to_dict, save_config
from cxrvlp.core.training.optim import build_optimizer
from cxrvlp.core.training.schedules import LRSchedule, SchedulePosition, build_schedule
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger("cxrvlp.training")

CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"
_CKPT_PREFIX = "step_"
# What a run writes into its folder; `overwrite=True` removes exactly these.
RUN_ARTIFACTS = (CHECKPOINTS_DIR, FINAL_DIR, "tensorboard", "config.yaml", "history.jsonl")


# ----------------------------------------------------------------------------------------------------------
# The task protocol and the state handed to it
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Progress of a run; `training_step` and the hooks receive it (do not modify it)."""

    global_step: int = 0  # optimizer steps taken, skipped non-finite steps included
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps taken in the current epoch
    skipped_steps: int = 0  # optimizer steps skipped for a non-finite loss
    steps_per_epoch: int = 0
    total_steps: int = 0
    accelerator: Any = None  # the accelerate.Accelerator of the run
    history: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class TrainingTask(Protocol):
    """What a method implements; the optional hooks below are looked up with getattr.

    - `param_groups(model) -> list[dict] | Iterable[Parameter]` (default: all trainable parameters)
    - `on_after_backward(model, state)` after every backward (e.g. drop a frozen parameter's grad)
    - `on_epoch_start(model, epoch)` before each epoch's first batch (also when resuming mid-epoch)
    - `model_name: str` attribute: the registered model name written into `final/config.json`
    - `evaluate(model, accelerator) -> dict[str, float]` after each epoch (use `gather_for_metrics`);
      its metrics are logged and fed to a plateau schedule
    """

    def build_model(self) -> nn.Module:
        """The model to train (built after seeding, identically on every rank)."""
        ...

    def build_train_dataset(self) -> Dataset:
        """A map-style dataset whose items `collate` turns into a batch."""
        ...

    def collate(self, samples: list[Any]) -> dict[str, Any]:
        """A batch dict of tensors plus `sample_ids: list[str]`."""
        ...

    def training_step(
        self, model: nn.Module, batch: dict[str, Any], state: TrainState
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """(scalar loss of this micro-batch, extra values to log)."""
        ...


@dataclass
class TrainResult:
    """What `run_training` returns."""

    model: nn.Module  # unwrapped, on the training device
    global_step: int
    output_dir: Path
    history: list[dict[str, Any]]
    skipped_steps: int = 0

    @property
    def final_dir(self) -> Path:
        return self.output_dir / FINAL_DIR


# ----------------------------------------------------------------------------------------------------------
# Reproducible data order
# ----------------------------------------------------------------------------------------------------------


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class EpochShuffleSampler(Sampler[int]):
    """Permutation of range(n) drawn from (seed, epoch) only, so any rank or a resumed run sees the same."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(_mix_seed(self.seed, self.epoch, 1))
        return iter(torch.randperm(self.n, generator=g).tolist())


class SeededSampleDataset(Dataset):
    """Wraps a dataset so item i of epoch e is drawn under RNG seeded from (seed, e, i).

    torch, numpy and `random` are reseeded for the call and restored afterwards, so random augmentations are
    reproducible whatever the worker count, and loading never moves the training RNG (dropout) — which is
    what makes a mid-epoch resume exact despite the loader prefetching a batch ahead.

    Private generators are reseeded too, by duck typing: the dataset's own `reseed(seed)` if it has one,
    else `dataset.transform.reseed(seed)` (core's `transforms.Compose` draws from its own numpy Generator),
    looking inside ConcatDataset / Subset wrappers.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self._reseed = _find_reseed(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        s = _mix_seed(self.seed, self.epoch, int(index), 2)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU seeding on every item.
            torch.default_generator.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (2**32))
            if self._reseed is not None:
                self._reseed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def _find_reseed(dataset: Any, depth: int = 0) -> Callable[[int], None] | None:
    """The per-item reseed hook of a dataset: `dataset.reseed`, else `dataset.transform.reseed`, also
    inside ConcatDataset (`.datasets`) and Subset-style wrappers (`.dataset`)."""
    hooks: list[Callable[[int], None]] = []

    def collect(ds: Any, d: int) -> None:
        if ds is None or d > 4:
            return
        for owner in (ds, getattr(ds, "transform", None)):
            fn = getattr(owner, "reseed", None) if owner is not None else None
            if callable(fn):
                hooks.append(fn)
                return
        for child in getattr(ds, "datasets", None) or []:
            collect(child, d + 1)
        collect(getattr(ds, "dataset", None), d + 1)

    collect(dataset, depth)
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def reseed_all(seed: int) -> None:
        for fn in hooks:
            fn(seed)

    return reseed_all


# ----------------------------------------------------------------------------------------------------------
# Output folder and checkpoints
# ----------------------------------------------------------------------------------------------------------


def prepare_output_dir(output_dir: str | os.PathLike, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; refuse one with content unless `overwrite` (clears our artifacts) or resume."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir '{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise ConfigError(
                f"output_dir '{out}' already exists and is not empty; pass overwrite=true to replace the "
                f"run in it, resume=auto to continue it, or choose another output_dir"
            )
        for name in RUN_ARTIFACTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        logger.warning("overwrite=true: removed the previous run's outputs in %s", out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (step_XXXXXXXX), newest first; temp folders are ignored."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_CKPT_PREFIX) and p.name[len(_CKPT_PREFIX) :].isdigit():
            found.append((int(p.name[len(_CKPT_PREFIX) :]), p))
    return [p for _, p in sorted(found, reverse=True)]


def read_trainer_state(ckpt_dir: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """trainer_state.json of a checkpoint folder; with `verify`, every file's SHA-256 is checked."""
    d = Path(ckpt_dir)
    p = d / TRAINER_STATE
    if not p.is_file():
        raise CheckpointError(f"{d}: not a complete checkpoint ({TRAINER_STATE} is missing)")
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: corrupt trainer state: {e}") from e
    if not isinstance(state, dict) or "global_step" not in state or "files" not in state:
        raise CheckpointError(f"{p}: not a cxrvlp trainer state")
    if verify:
        for rel, digest in state["files"].items():
            f = d / rel
            if not f.is_file():
                raise CheckpointError(f"{d}: checkpoint file '{rel}' is missing")
            if sha256_file(f) != digest:
                raise CheckpointError(
                    f"{d}: checkpoint file '{rel}' is truncated or corrupt (SHA-256 mismatch)"
                )
    return state


def _broadcast(accelerator, obj: Any) -> Any:
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _select_resume(accelerator, cfg: TrainConfig, out: Path) -> tuple[Path | None, dict | None]:
    """Pick the checkpoint to resume from (main process verifies; the choice is broadcast)."""
    if not cfg.resume:
        return None, None
    choice: tuple[str | None, dict | None, str | None] = (None, None, None)
    if accelerator.is_main_process:
        if cfg.resume == "auto":
            candidates = list_checkpoints(out / CHECKPOINTS_DIR)
            explicit = False
        else:
            candidates = [Path(cfg.resume)]
            explicit = True
        err = None
        for c in candidates:
            try:
                st = read_trainer_state(c, verify=True)
                choice = (str(c), st, None)
                break
            except CheckpointError as e:
                if explicit:
                    err = str(e)
                    break
                logger.warning("resume: %s; falling back to the previous checkpoint", e)
        else:
            if candidates:
                err = f"resume=auto: no valid checkpoint in {out / CHECKPOINTS_DIR}"
        if err is not None:
            choice = (None, None, err)
    path, st, err = _broadcast(accelerator, choice)
    if err is not None:
        raise CheckpointError(err)
    if path is None:
        logger.info("resume=auto: no checkpoint in %s, starting from scratch", out / CHECKPOINTS_DIR)
        return None, None
    return Path(path), st


def _save_checkpoint(accelerator, out: Path, state: TrainState, extra: dict[str, Any], keep: int) -> Path:
    """accelerate save_state into a temp folder, then trainer_state.json + manifest, fsync, rename, prune."""
    root = out / CHECKPOINTS_DIR
    name = f"{_CKPT_PREFIX}{state.global_step:08d}"
    tmp = root / f".tmp-{name}"
    final = root / name
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[p.relative_to(tmp).as_posix()] = sha256_file(p)
        doc = {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "skipped_steps": state.skipped_steps,
            "history": state.history,
            "files": files,
            **extra,
        }
        atomic_write_text(tmp / TRAINER_STATE, json.dumps(doc, indent=1, default=_json_default) + "\n")
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[max(1, keep) :]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def _flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _seed_everything(seed: int, deterministic: bool) -> None:
    from accelerate.utils import set_seed

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    set_seed(seed)
    if deterministic:
        # warn_only: an op without a deterministic kernel warns instead of aborting a long run.
        torch.use_deterministic_algorithms(True, warn_only=True)


def _make_accelerator(cfg: TrainConfig, out: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    # accelerate keeps process-wide singletons; a second run in the same process (a notebook, a sweep, the
    # tests) may use another precision or accumulation. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()

    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard"))
    # accelerate only sets up multi-process CPU training (gloo) when told cpu=True.
    cpu = cfg.cpu or not torch.cuda.is_available()
    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with="tensorboard" if cfg.tracker == "tensorboard" else None,
        project_config=project,
    )


def _call_hook(task: Any, name: str, *args: Any) -> Any:
    fn: Callable | None = getattr(task, name, None)
    return fn(*args) if callable(fn) else None


def _validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.epochs >= 0, "epochs", "must be >= 0"),
        (cfg.batch_size >= 1, "batch_size", "must be >= 1"),
        (cfg.grad_accum_steps >= 1, "grad_accum_steps", "must be >= 1"),
        (cfg.max_steps is None or cfg.max_steps >= 0, "max_steps", "must be >= 0"),
        (cfg.save_every_steps is None or cfg.save_every_steps >= 1, "save_every_steps", "must be >= 1"),
        (cfg.keep_last_checkpoints >= 1, "keep_last_checkpoints", "must be >= 1"),
        (cfg.log_every_steps >= 1, "log_every_steps", "must be >= 1"),
        (cfg.grad_clip_norm is None or cfg.grad_clip_norm > 0, "grad_clip_norm", "must be > 0"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"config key '{key}': {why}, got {getattr(cfg, key)!r}")


class _LogAccumulator:
    """Sums of logged values between log points; kept as tensors so logging does not sync every step."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def means(self) -> dict[str, float]:
        if not self.count:
            return {}
        return {k: float(v) / self.count for k, v in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}

    def load(self, st: dict[str, Any] | None) -> None:
        self.sums = dict((st or {}).get("sums", {}))
        self.count = int((st or {}).get("count", 0))

    def reset(self) -> None:
        self.sums, self.count = {}, 0


def run_training(task: TrainingTask, cfg: TrainConfig) -> TrainResult:
    """Train `task` as `cfg` says; returns the unwrapped model and writes `<output_dir>/final/`."""
    _validate(cfg)
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg, out)
    if accelerator.is_main_process:
        prepare_output_dir(out, cfg.overwrite, resume=bool(cfg.resume))
    accelerator.wait_for_everyone()
    resume_dir, resume_state = _select_resume(accelerator, cfg, out)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")

    _seed_everything(cfg.seed, cfg.deterministic)
    model = task.build_model()
    dataset = SeededSampleDataset(task.build_train_dataset(), cfg.seed)
    if len(dataset) == 0:
        raise ConfigError("the training dataset is empty")
    sampler = EpochShuffleSampler(len(dataset), cfg.seed, cfg.shuffle)
    loader_gen = torch.Generator()  # worker base seeds come from here, never from the global RNG
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=cfg.drop_last,
        collate_fn=task.collate,
        num_workers=cfg.num_workers,
        generator=loader_gen,
        pin_memory=False,
    )
    groups = _call_hook(task, "param_groups", model)
    if groups is None:
        groups = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, groups)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ConfigError(
            f"batch_size={cfg.batch_size} x {accelerator.num_processes} process(es) with drop_last leaves no "
            f"batch from {len(dataset)} samples"
        )
    accum = cfg.grad_accum_steps
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    schedule: LRSchedule = build_schedule(cfg.schedule, steps_per_epoch, cfg.epochs, cfg.max_steps)

    state = TrainState(steps_per_epoch=steps_per_epoch, total_steps=total_steps, accelerator=accelerator)
    logs_acc = _LogAccumulator()
    if resume_dir is not None:
        st = resume_state or {}
        if st.get("steps_per_epoch") not in (None, steps_per_epoch):
            raise CheckpointError(
                f"{resume_dir}: saved with {st['steps_per_epoch']} steps per epoch, this run has "
                f"{steps_per_epoch} (batch_size, grad_accum_steps, process count or dataset changed)"
            )
        rng = verify_resume_folder(resume_dir, accelerator.process_index, cfg.resume_allow_rng_mismatch)
        try:
            accelerator.load_state(str(resume_dir))
        except CheckpointError:
            raise
        except Exception as e:  # anything verify_resume_folder did not foresee still names the folder
            raise CheckpointError(
                f"{resume_dir}: cannot restore the checkpoint: {type(e).__name__}: {e}"
            ) from e
        check_rng_restored(rng, resume_dir, cfg.resume_allow_rng_mismatch)
        state.global_step = int(st["global_step"])
        state.epoch = int(st["epoch"])
        state.step_in_epoch = int(st["step_in_epoch"])
        state.skipped_steps = int(st.get("skipped_steps", 0))
        state.history = list(st.get("history", []))
        schedule.load_state_dict(st.get("schedule_state", {}))
        logs_acc.load(st.get("log_accumulator"))
        accelerator.print(f"resumed from {resume_dir} at step {state.global_step} (epoch {state.epoch})")

    if cfg.tracker == "tensorboard":
        accelerator.init_trackers("train", config=_flat_hparams(config_to_dict(cfg)))

    def ckpt_extra() -> dict[str, Any]:
        return {
            "schedule_state": schedule.state_dict(),
            "log_accumulator": logs_acc.state(),
            "steps_per_epoch": steps_per_epoch,
            "num_processes": accelerator.num_processes,
        }

    pbar = None
    if cfg.progress_bar and accelerator.is_main_process:
        from tqdm.auto import tqdm

        pbar = tqdm(total=total_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    try:
        _train_epochs(
            task, cfg, accelerator, model, optimizer, loader, sampler, dataset, loader_gen,
            schedule, base_lrs, state, logs_acc, ckpt_extra, pbar, out,
        )  # fmt: skip
    finally:
        if pbar is not None:
            pbar.close()

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        model_name = getattr(task, "model_name", None)
        save_pretrained(unwrapped, cfg, out / FINAL_DIR, model_name=model_name)
        with open(out / "history.jsonl", "w", encoding="utf-8") as f:
            for row in state.history:
                f.write(json.dumps(row, default=_json_default) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(unwrapped, state.global_step, out, state.history, state.skipped_steps)


def _train_epochs(
    task, cfg, accelerator, model, optimizer, loader, sampler, dataset, loader_gen,
    schedule, base_lrs, state, logs_acc, ckpt_extra, pbar, out,
) -> None:  # fmt: skip
    accum = cfg.grad_accum_steps
    device = accelerator.device
    while state.epoch < cfg.epochs and state.global_step < state.total_steps:
        epoch = state.epoch
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        loader_gen.manual_seed(_mix_seed(cfg.seed, epoch, 3))
        loader.set_epoch(epoch)
        _call_hook(task, "on_epoch_start", model, epoch)
        model.train()
        skip = state.step_in_epoch * accum
        it = accelerator.skip_first_batches(loader, skip) if skip else loader
        window_flags: list[torch.Tensor] = []
        window_ids: list[list[str]] = []
        window_logs: list[dict[str, Any]] = []
        stop = False
        for batch in it:
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, logs = task.training_step(model, batch, state)
                if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                    raise TypeError("training_step must return a scalar loss tensor as its first value")
                window_flags.append(torch.isfinite(loss.detach()))
                window_ids.append(list(batch.get("sample_ids", [])) if isinstance(batch, dict) else [])
                accelerator.backward(loss)
                _call_hook(task, "on_after_backward", model, state)
                window_logs.append({"loss": loss.detach(), **(logs or {})})
                if not accelerator.sync_gradients:
                    continue
                # One optimizer step: decide on non-finite losses together on every rank.
                local_bad = torch.stack(window_flags).logical_not().any().reshape(1)
                local_bad = local_bad.to(device=device, dtype=torch.float32)
                bad = accelerator.reduce(local_bad, reduction="sum").item() > 0
                if bad:
                    _handle_non_finite(accelerator, cfg, state, window_flags, window_ids)
                    optimizer.zero_grad(set_to_none=True)
                    state.skipped_steps += 1
                else:
                    for values in window_logs:
                        logs_acc.add(values)
                    if cfg.grad_clip_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                    pos = SchedulePosition(
                        state.global_step, epoch, state.step_in_epoch, state.steps_per_epoch
                    )
                    for g, base in zip(optimizer.param_groups, base_lrs):
                        g["lr"] = schedule.lr(base, pos)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window_flags, window_ids, window_logs = [], [], []
                state.global_step += 1
                state.step_in_epoch += 1
                if pbar is not None:
                    pbar.update(1)
                if state.global_step % cfg.log_every_steps == 0:
                    _log_point(accelerator, optimizer, state, logs_acc, pbar)
                last_of_epoch = state.step_in_epoch >= state.steps_per_epoch
                if state.global_step >= state.total_steps:
                    stop = True
                    break
                every = cfg.save_every_steps
                if every and state.global_step % every == 0 and not last_of_epoch:
                    _save_checkpoint(accelerator, out, state, ckpt_extra(), cfg.keep_last_checkpoints)
        if stop and state.step_in_epoch < state.steps_per_epoch:
            # max_steps reached mid-epoch: save where we are and finish.
            _save_checkpoint(accelerator, out, state, ckpt_extra(), cfg.keep_last_checkpoints)
            return
        # End of epoch: evaluate, feed a plateau schedule, save with the position "start of next epoch".
        row: dict[str, Any] = {"epoch": epoch, "step": state.global_step}
        evaluate = getattr(task, "evaluate", None)
        if callable(evaluate) and cfg.eval_every_epochs and (epoch + 1) % cfg.eval_every_epochs == 0:
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model, accelerator) or {}
            model.train()
            metrics = {k: float(v) for k, v in metrics.items()}
            schedule.observe(metrics)
            row.update(metrics)
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
        state.history.append(row)
        state.epoch += 1
        state.step_in_epoch = 0
        done = state.epoch >= cfg.epochs or state.global_step >= state.total_steps
        if done or state.epoch % cfg.save_every_epochs == 0:
            _save_checkpoint(accelerator, out, state, ckpt_extra(), cfg.keep_last_checkpoints)


def _log_point(accelerator, optimizer, state: TrainState, logs_acc: _LogAccumulator, pbar) -> None:
    means = logs_acc.means()
    logs_acc.reset()
    means["lr"] = float(optimizer.param_groups[0]["lr"])
    means["skipped_steps"] = float(state.skipped_steps)
    accelerator.log({f"train/{k}": v for k, v in means.items()}, step=state.global_step)
    state.history.append({"step": state.global_step, "epoch": state.epoch, **means})
    if pbar is not None:
        pbar.set_postfix(loss=f"{means.get('loss', float('nan')):.4g}", lr=f"{means['lr']:.3g}")


def _handle_non_finite(
    accelerator, cfg: TrainConfig, state: TrainState, flags: Sequence[torch.Tensor], ids: Sequence[list[str]]
) -> None:
    """Log the offending micro-batches' sample ids (from every rank) and skip or stop as configured."""
    local = [sid for f, batch_ids in zip(flags, ids) if not bool(f) for sid in batch_ids]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        local = list(gather_object(local))
    step = state.global_step
    msg = (
        f"non-finite loss at optimizer step {step} (epoch {state.epoch}); samples of the offending "
        f"batch(es): {local[:64]}{' ...' if len(local) > 64 else ''}"
    )
    if cfg.nan_policy == "stop":
        raise NonFiniteLossError(msg)
    if accelerator.is_main_process:
        logger.warning("%s; optimizer step skipped (%d skipped so far)", msg, state.skipped_steps + 1)
    state.history.append({"step": step, "epoch": state.epoch, "skipped_non_finite": local})
