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
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from cxrvlp.core.errors import CheckpointError, ConfigError, CorruptImageError, NonFiniteLossError
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
from cxrvlp.core.training.sampling import (  # noqa: F401  (re-exported: tests and methods import them here)
    EpochShuffleSampler,
    SeededSampleDataset,
    _find_reseed,
    _mix_seed,
)
from cxrvlp.core.training.schedules import LRSchedule, SchedulePosition, build_schedule
from cxrvlp.core.training.selection import (
    BEST_DIR,
    TOP_K_DIR,
    BestTracker,
    prune_top_k,
    run_validation,
    top_k_name,
    validation_loader,
)
from cxrvlp.core.training.task import exported_model
from torch import nn
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger("cxrvlp.training")

CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"
_CKPT_PREFIX = "step_"
# What a run writes into its folder; `overwrite=True` removes exactly these.
RUN_ARTIFACTS = (
    CHECKPOINTS_DIR,
    FINAL_DIR,
    BEST_DIR,
    TOP_K_DIR,
    "tensorboard",
    "config.yaml",
    "history.jsonl",
)


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
    - `build_val_dataset() -> Dataset | None`: validation rows (same collate); enables `monitor` / best/
    - `validation_step(model, batch) -> dict[str, Tensor]`: named validation terms (default: training_step)
    - `save_resources(folder)`: write what the weights need beside them (tokenizer, vocab, cached text
      embeddings) into final/, best/ and top_k/ folders (main process)
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


def process_state(cfg: TrainConfig | None = None):
    """accelerate's process state set up as `run_training` will set it up (gloo on CPU under torchrun).

    Tasks that need their rank before the loop starts (to write a synthetic mirror or a tokenizer once)
    must use this, never a bare `PartialState()`: on a CPU-only machine that one would fix the process-wide
    state as a single process, and every torchrun rank would believe it is rank 0 of 1.
    """
    from accelerate import PartialState

    cpu = bool(cfg is not None and cfg.cpu) or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


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


def batch_size_at(cfg: TrainConfig, epoch: int) -> int:
    """Per-process batch size of `epoch` under `batch_size_schedule` (else `batch_size`)."""
    if not cfg.batch_size_schedule:
        return cfg.batch_size
    size = cfg.batch_size_schedule[0][1]
    for start, bs in cfg.batch_size_schedule:
        if epoch >= start:
            size = bs
    return size


def _apply_global_batch(cfg: TrainConfig, processes: int) -> None:
    """batch_size = global_batch_size / processes (ConfigError when it does not divide)."""
    if cfg.global_batch_size is None:
        return
    if cfg.batch_size_schedule:
        raise ConfigError(
            "global_batch_size and batch_size_schedule are both set; the schedule is per process"
        )
    if cfg.global_batch_size < processes or cfg.global_batch_size % processes:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} does not divide among the {processes} processes"
        )
    cfg.batch_size = cfg.global_batch_size // processes
    if cfg.val_batch_size is None:
        cfg.val_batch_size = cfg.batch_size


def _apply_scaling_switches(task: TrainingTask, cfg: TrainConfig, model: nn.Module, accelerator: Any) -> None:
    """gradient_checkpointing / compile on the freshly built task module; the accumulation warning."""
    from cxrvlp.core.training import scaling

    if cfg.gradient_checkpointing and not scaling.enable_gradient_checkpointing(model):
        raise ConfigError(
            "gradient_checkpointing=true, but the model has no stack of transformer blocks to checkpoint "
            "(CNN-only models keep their activations; BatchNorm blocks are never recomputed)"
        )
    if cfg.compile:
        scaling.compile_task_module(model, cfg.compile_backend, cfg.compile_mode)
    note = scaling.accumulation_warning(task, cfg, accelerator.num_processes)
    if note and accelerator.is_main_process:
        logger.warning(note)
        warnings.warn(note, stacklevel=2)


def _check_batch_schedule(cfg: TrainConfig) -> None:
    sched = cfg.batch_size_schedule
    if not sched:
        return
    starts = [int(e) for e, _ in sched]
    if starts[0] != 0 or starts != sorted(set(starts)) or any(int(b) < 1 for _, b in sched):
        raise ConfigError(
            f"config key 'batch_size_schedule': needs [[0, B0], [e1, B1], ...] with increasing start epochs "
            f"and batch sizes >= 1, got {sched!r}"
        )
    # Step-based LR horizons assume one steps-per-epoch; epoch-level schedules do not.
    step_based = cfg.schedule.name not in ("constant", "plateau") and not (
        cfg.schedule.name in ("step", "exponential") and cfg.schedule.interval == "epoch"
    )
    if step_based:
        raise ConfigError(
            f"batch_size_schedule with schedule.name='{cfg.schedule.name}': the steps per epoch change with "
            f"the batch size; use a constant, plateau or per-epoch step/exponential schedule"
        )


@dataclass
class _Run:
    """What the epoch loop works with (built once by `run_training`)."""

    task: Any
    cfg: TrainConfig
    accelerator: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loaders: dict[int, Any]  # per-process batch size -> prepared loader
    steps_by_epoch: list[int]
    sampler: EpochShuffleSampler
    dataset: SeededSampleDataset
    loader_gen: torch.Generator
    schedule: LRSchedule
    base_lrs: list[float]
    state: TrainState
    logs_acc: _LogAccumulator
    out: Path
    pbar: Any = None
    val_loader: Any = None
    tracker: BestTracker | None = None
    epoch_seen: int = 0  # samples drawn this epoch on this rank (for the skipped fraction)
    epoch_skipped: list[str] = field(default_factory=list)  # unreadable records passed over (this rank)

    def ckpt_extra(self) -> dict[str, Any]:
        return {
            "schedule_state": self.schedule.state_dict(),
            "log_accumulator": self.logs_acc.state(),
            "steps_per_epoch": self.steps_by_epoch[0],
            "steps_by_epoch": self.steps_by_epoch,
            "num_processes": self.accelerator.num_processes,
            "selection_state": self.tracker.state_dict() if self.tracker else None,
            "epoch_skips": {"seen": self.epoch_seen, "skipped": self.epoch_skipped},
        }

    def save_checkpoint(self) -> Path:
        return _save_checkpoint(
            self.accelerator, self.out, self.state, self.ckpt_extra(), self.cfg.keep_last_checkpoints
        )


def _build_val_loader(task: Any, cfg: TrainConfig, accelerator) -> Any:
    build = getattr(task, "build_val_dataset", None)
    if not callable(build) or not cfg.eval_every_epochs:
        return None
    ds = build()
    if ds is None:
        return None
    if len(ds) == 0:
        raise ConfigError("the validation dataset is empty (build_val_dataset returned no rows)")
    ds = SeededSampleDataset(ds, cfg.seed)  # any randomness of the eval view is fixed (epoch 0 always)
    return validation_loader(
        ds, cfg.val_batch_size or cfg.batch_size, task.collate,
        accelerator.process_index, accelerator.num_processes, cfg.num_workers,
    )  # fmt: skip


def run_training(task: TrainingTask, cfg: TrainConfig) -> TrainResult:
    """Train `task` as `cfg` says; returns the unwrapped model and writes `<output_dir>/final/`.

    With a validation set (`task.build_val_dataset()`) and `cfg.monitor`, also `best/` (and `top_k/`).
    """
    _validate(cfg)
    _check_batch_schedule(cfg)
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg, out)
    _apply_global_batch(cfg, accelerator.num_processes)
    if accelerator.is_main_process:
        prepare_output_dir(out, cfg.overwrite, resume=bool(cfg.resume))
    accelerator.wait_for_everyone()
    resume_dir, resume_state = _select_resume(accelerator, cfg, out)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")

    _seed_everything(cfg.seed, cfg.deterministic)
    model = task.build_model()
    _apply_scaling_switches(task, cfg, model, accelerator)
    dataset = SeededSampleDataset(task.build_train_dataset(), cfg.seed)
    if len(dataset) == 0:
        raise ConfigError("the training dataset is empty")
    sampler = EpochShuffleSampler(len(dataset), cfg.seed, cfg.shuffle)
    loader_gen = torch.Generator()  # worker base seeds come from here, never from the global RNG
    sizes = sorted({batch_size_at(cfg, e) for e in range(max(1, cfg.epochs))})

    def make_loader(bs: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=bs,
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
    model, optimizer, first = accelerator.prepare(model, optimizer, make_loader(sizes[0]))
    loaders = {sizes[0]: first, **{bs: accelerator.prepare(make_loader(bs)) for bs in sizes[1:]}}
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    accum = cfg.grad_accum_steps
    steps_by_epoch = []
    for e in range(max(1, cfg.epochs)):
        bs = batch_size_at(cfg, e)
        if len(loaders[bs]) == 0:
            raise ConfigError(
                f"batch_size={bs} (epoch {e}) x {accelerator.num_processes} process(es), drop_last: "
                f"no batch from {len(dataset)} samples"
            )
        steps_by_epoch.append(math.ceil(len(loaders[bs]) / accum))
    total_steps = sum(steps_by_epoch[: cfg.epochs])
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    schedule: LRSchedule = build_schedule(cfg.schedule, steps_by_epoch[0], cfg.epochs, cfg.max_steps)

    state = TrainState(steps_per_epoch=steps_by_epoch[0], total_steps=total_steps, accelerator=accelerator)
    logs_acc = _LogAccumulator()
    tracker = None
    if cfg.monitor:
        tracker = BestTracker(cfg.monitor, cfg.monitor_mode, cfg.keep_best_k, cfg.early_stop_patience)
    if resume_dir is not None:
        st = resume_state or {}
        saved = st.get("steps_by_epoch") or ([st["steps_per_epoch"]] if st.get("steps_per_epoch") else None)
        if saved is not None and list(saved) != steps_by_epoch[: len(saved)]:
            raise CheckpointError(
                f"{resume_dir}: saved with {saved} steps per epoch, this run has {steps_by_epoch} ("
                f"batch_size(_schedule), grad_accum_steps, process count or dataset changed)"
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
        if tracker is not None:
            tracker.load_state_dict(st.get("selection_state"))
        skips = st.get("epoch_skips") or {}
        accelerator.print(f"resumed from {resume_dir} at step {state.global_step} (epoch {state.epoch})")

    if cfg.tracker == "tensorboard":
        accelerator.init_trackers("train", config=_flat_hparams(config_to_dict(cfg)))

    run = _Run(
        task, cfg, accelerator, model, optimizer, loaders, steps_by_epoch, sampler, dataset, loader_gen,
        schedule, base_lrs, state, logs_acc, out, val_loader=_build_val_loader(task, cfg, accelerator),
        tracker=tracker,
    )  # fmt: skip
    if resume_dir is not None:
        run.epoch_seen, run.epoch_skipped = int(skips.get("seen", 0)), list(skips.get("skipped", []))
    if tracker is not None and run.val_loader is None and not callable(getattr(task, "evaluate", None)):
        raise ConfigError(f"monitor='{cfg.monitor}' needs a validation set, and this task builds none")
    if cfg.progress_bar and accelerator.is_main_process:
        from tqdm.auto import tqdm

        run.pbar = tqdm(total=total_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    try:
        _train_epochs(run)
    finally:
        if run.pbar is not None:
            run.pbar.close()

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    check_ranks_in_sync(accelerator, unwrapped)
    unwrapped = exported_model(unwrapped)  # a TaskModule's model: loss-owned parameters stay in checkpoints
    if accelerator.is_main_process:
        model_name = getattr(task, "model_name", None)
        save_pretrained(unwrapped, cfg, out / FINAL_DIR, model_name=model_name)
        _call_hook(task, "save_resources", out / FINAL_DIR)
        with open(out / "history.jsonl", "w", encoding="utf-8") as f:
            for row in state.history:
                f.write(json.dumps(row, default=_json_default) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(unwrapped, state.global_step, out, state.history, state.skipped_steps)


def _train_epochs(run: _Run) -> None:
    task, cfg, accelerator, model, optimizer = run.task, run.cfg, run.accelerator, run.model, run.optimizer
    state, logs_acc = run.state, run.logs_acc
    accum = cfg.grad_accum_steps
    device = accelerator.device
    while state.epoch < cfg.epochs and state.global_step < state.total_steps:
        epoch = state.epoch
        loader = run.loaders[batch_size_at(cfg, epoch)]
        state.steps_per_epoch = run.steps_by_epoch[epoch]
        run.sampler.set_epoch(epoch)
        run.dataset.set_epoch(epoch)
        run.loader_gen.manual_seed(_mix_seed(cfg.seed, epoch, 3))
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
            if isinstance(batch, dict):
                run.epoch_seen += len(batch.get("sample_ids", ()))
                run.epoch_skipped.extend(batch.get("skipped", ()))
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
                    for g, base in zip(optimizer.param_groups, run.base_lrs):
                        g["lr"] = run.schedule.lr(base, pos)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window_flags, window_ids, window_logs = [], [], []
                state.global_step += 1
                state.step_in_epoch += 1
                if run.pbar is not None:
                    run.pbar.update(1)
                if state.global_step % cfg.log_every_steps == 0:
                    _log_point(accelerator, optimizer, state, logs_acc, run.pbar)
                last_of_epoch = state.step_in_epoch >= state.steps_per_epoch
                if state.global_step >= state.total_steps:
                    stop = True
                    break
                every = cfg.save_every_steps
                if every and state.global_step % every == 0 and not last_of_epoch:
                    run.save_checkpoint()
        if stop and state.step_in_epoch < state.steps_per_epoch:
            # max_steps reached mid-epoch: save where we are and finish.
            run.save_checkpoint()
            return
        # End of epoch: validate/evaluate, select, feed a plateau schedule, save as "start of next epoch".
        row: dict[str, Any] = {"epoch": epoch, "step": state.global_step}
        row.update(_check_skipped(run, epoch))
        early_stop = False
        if cfg.eval_every_epochs and (epoch + 1) % cfg.eval_every_epochs == 0:
            metrics = _epoch_metrics(run)
            if metrics:
                run.schedule.observe(metrics)
                row.update(metrics)
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
            if run.tracker is not None:
                row.update(_select(run, metrics, epoch))
                early_stop = run.tracker.should_stop()
        state.history.append(row)
        state.epoch += 1
        state.step_in_epoch = 0
        done = state.epoch >= cfg.epochs or state.global_step >= state.total_steps
        if done or early_stop or state.epoch % cfg.save_every_epochs == 0:
            run.save_checkpoint()
        if early_stop:
            accelerator.print(
                f"early stop after epoch {epoch}: no improvement of {cfg.monitor} for "
                f"{run.tracker.bad_epochs} evaluated epochs (best {run.tracker.best:.6g} at epoch "
                f"{run.tracker.best_epoch})"
            )
            state.history.append({"epoch": epoch, "early_stop": True})
            return


def weights_checksum(model: nn.Module) -> torch.Tensor:
    """(2,) float64: sum and sum of squares of every parameter (a cheap fingerprint).

    Buffers are left out on purpose: DDP broadcasts rank 0's buffers at the start of each forward, so after
    the last forward each rank's BatchNorm statistics hold its own last batch (final/ saves rank 0's).
    """
    total = torch.zeros(2, dtype=torch.float64)
    for t in model.parameters():
        if t.is_floating_point():
            d = t.detach().double()
            total += torch.stack([d.sum().cpu(), (d * d).sum().cpu()])
    return total


def check_ranks_in_sync(accelerator, model: nn.Module) -> None:
    """Every rank ends with the same weights (DDP's promise), checked once at the end of a run.

    Each rank prints `rank R/W weights checksum S` (the tests read it); a mismatch is a RuntimeError on
    every rank, naming the ranks, instead of a final/ that silently holds rank 0's copy.
    """
    if accelerator.num_processes == 1:
        return
    local = weights_checksum(model).to(accelerator.device)
    every = accelerator.gather(local.reshape(1, 2)).cpu()  # (W, 2)
    rank, world = accelerator.process_index, accelerator.num_processes
    # one write() of one short line: atomic on a pipe, so two ranks' lines never run together
    sys.stdout.write(f"rank {rank}/{world} weights checksum {local[0].item():.12e} {local[1].item():.12e}\n")
    sys.stdout.flush()
    ref = every[0]
    bad = [r for r in range(every.shape[0]) if not torch.allclose(every[r], ref, rtol=1e-9, atol=0)]
    if bad:
        raise RuntimeError(f"weights differ between rank 0 and rank(s) {bad} at the end: {every.tolist()}")


def _check_skipped(run: _Run, epoch: int) -> dict[str, Any]:
    """Count (over ranks) and log this epoch's unreadable samples; stop past `max_skipped_fraction`."""
    acc = run.accelerator
    counts = torch.tensor([run.epoch_seen, len(run.epoch_skipped)], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        counts = acc.reduce(counts, reduction="sum")
    seen, skipped = int(counts[0]), int(counts[1])
    names = run.epoch_skipped[:5]
    run.epoch_seen, run.epoch_skipped = 0, []
    if not skipped:
        return {}
    fraction = skipped / max(1, seen + skipped)
    msg = f"epoch {epoch}: {skipped} unreadable sample(s) replaced by the next readable one ({fraction:.2%})"
    if acc.is_main_process:
        logger.warning("%s; first on this rank: %s", msg, names)
    if fraction > run.cfg.max_skipped_fraction:
        raise CorruptImageError(
            "training data",
            f"{msg} exceeds max_skipped_fraction={run.cfg.max_skipped_fraction}; first: {names}",
        )
    return {"skipped_samples": skipped}


def _epoch_metrics(run: _Run) -> dict[str, float]:
    """Validation loss terms (val_*) and the task's own `evaluate` metrics of this epoch."""
    metrics: dict[str, float] = {}
    if run.val_loader is not None:
        metrics.update(run_validation(run.task, run.model, run.val_loader, run.accelerator, run.state))
    evaluate = getattr(run.task, "evaluate", None)
    if callable(evaluate):
        run.model.eval()
        with torch.no_grad():
            extra = evaluate(run.model, run.accelerator) or {}
        run.model.train()
        metrics.update({k: float(v) for k, v in extra.items()})
    return metrics


def _select(run: _Run, metrics: dict[str, float], epoch: int) -> dict[str, Any]:
    """Update the tracker; write best/ and top_k/ (main process) when this epoch earns them."""
    is_best, entered = run.tracker.observe(metrics, epoch)
    acc = run.accelerator
    if (is_best or entered) and acc.is_main_process:
        unwrapped = exported_model(acc.unwrap_model(run.model))
        name = getattr(run.task, "model_name", None)
        note = {
            "monitor": run.cfg.monitor,
            "mode": run.cfg.monitor_mode,
            "value": metrics.get(run.cfg.monitor),
        }
        note = json.dumps({**note, "epoch": epoch, "step": run.state.global_step}, indent=1) + "\n"
        targets = [run.out / BEST_DIR] if is_best else []
        if run.cfg.keep_best_k > 1 and entered:
            targets.append(run.out / TOP_K_DIR / top_k_name(epoch))
        for folder in targets:
            save_pretrained(unwrapped, run.cfg, folder, model_name=name)
            atomic_write_text(folder / "selection.json", note)
            _call_hook(run.task, "save_resources", folder)
        if is_best:
            logger.info(
                "epoch %d: new best %s = %.6g -> %s", epoch, run.cfg.monitor, run.tracker.best, BEST_DIR
            )
        if run.cfg.keep_best_k > 1:
            prune_top_k(run.out, run.tracker)
    acc.wait_for_everyone()
    return {"best": is_best}


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
