"""Typed dataclass configs loaded from YAML, with `key=value` overrides on the command line.

    cfg = load_config(MgcaTrainConfig, "configs/mgca_vit.yaml", ["optimizer.lr=1e-5", "epochs=2"])

Every value is type-checked against the dataclass field type (bool, int, float, str, Path, Optional,
Literal, list[...], tuple[...], dict[str, ...], nested dataclasses). An unknown key or a value of the wrong
type raises `ConfigError` naming the dotted key and the file (or the override) it came from. Override
values are parsed with `yaml.safe_load`, so `a.b=[1, 2]`, `x=null` and `flag=true` work as in a file.

Dict-typed fields (e.g. MGCA's `model.vit: dict[str, Any]`) take dotted overrides into their keys
(`model.vit.depth=2`), and a mapping given for one (`model.vit={img_size: 32}`) is MERGED into what the file
set: keys it does not name keep their values (to drop a key, set it to null and let the consumer treat null
as its default).

After the whole config is built (file + overrides), `validate_config` checks it before anything is built
from it, naming the dotted key:
* field metadata: `field(default=..., metadata={"gt": 0})` (also "ge", "lt", "le", "choices");
* conventions for numeric fields: `lr` > 0; int `*_dim` / `*_size` > 0; `*temperature` > 0;
* a `validate(self)` method of any config dataclass (nested ones included), raising ConfigError;
* a top-level `model_name` set to something other than its class default must be a registered model of
  the method that owns the config class (`cxrvlp.core.registry`).
An empty YAML file is an error (it would silently mean "all defaults").
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml
from cxrvlp.core.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


# ----------------------------------------------------------------------------------------------------------
# The base training config (method packages subclass TrainConfig and add `model`, `loss`, `data`).
# ----------------------------------------------------------------------------------------------------------


@dataclass
class OptimizerConfig:
    """Optimizer choice and hyper-parameters (one group unless the task supplies `param_groups`)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    foreach: bool | None = None  # None: torch's default choice
    fused: bool | None = None

    def validate(self) -> None:
        """Ranges torch would only reject after the model is built (lr > 0 is the field convention)."""
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _require(self.eps > 0, "eps", "> 0", self.eps)
        _require(self.momentum >= 0, "momentum", ">= 0", self.momentum)
        _require(all(0 <= b < 1 for b in self.betas), "betas", "in [0, 1)", self.betas)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule; see `cxrvlp.core.training.schedules` for the exact formula of each name."""

    name: Literal[
        "constant",
        "warmup_cosine",
        "cosine",
        "step",
        "exponential",
        "plateau",
        "linear_warmup_cosine_restarts",
        "timm_cosine",
    ] = "constant"
    # Unit of `step` / `exponential` decay: once per epoch (AFLoc's StepLR) or once per optimizer step.
    interval: Literal["epoch", "step"] = "epoch"
    # Warm-up length: the first that is set wins (steps, then epochs, then a fraction of the horizon).
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    warmup_fraction: float | None = None
    # Horizon of the cosine (one cycle for the restarts schedule): steps, else epochs (default: cfg.epochs).
    total_steps: int | None = None
    total_epochs: float | None = None
    min_lr: float = 0.0
    warmup_start_lr: float | None = None  # timm_cosine: warmup_lr_init (default: min_lr)
    step_size: int = 1
    gamma: float = 0.1
    cycle_mult: float = 1.0  # restarts: next cycle length factor
    cycle_gamma: float = 1.0  # restarts: peak LR factor per cycle
    # timm_cosine, MAVL: in epoch 0 the warm-up t advances once every this many iterations, and epoch
    # e >= 1 runs at t = e + warmup_epochs. None: t = epoch.
    iter_warmup_every: int | None = None
    # plateau (torch ReduceLROnPlateau semantics, fed with `monitor` from `TrainingTask.evaluate`)
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0

    def validate(self) -> None:
        """Ranges of the schedule's numbers (None = unset is always fine)."""
        for key in ("warmup_steps", "warmup_epochs", "warmup_fraction", "total_steps", "total_epochs"):
            v = getattr(self, key)
            _require(v is None or v >= 0, key, ">= 0", v)
        _require(self.min_lr >= 0, "min_lr", ">= 0", self.min_lr)
        _require(self.step_size >= 1, "step_size", ">= 1", self.step_size)
        _require(self.gamma > 0, "gamma", "> 0", self.gamma)
        _require(self.factor > 0, "factor", "> 0", self.factor)
        _require(self.patience >= 0 and self.cooldown >= 0, "patience", ">= 0", self.patience)


@dataclass
class TrainConfig:
    """Base config of every method's training run (method packages subclass it)."""

    output_dir: str = "outputs/run"
    overwrite: bool = False  # an existing run folder with content is never overwritten without it
    resume: str | None = None  # "auto" (latest valid checkpoint of output_dir), a checkpoint folder, or None
    seed: int = 42
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; stops early when reached
    batch_size: int = 8  # per process
    # The recipe's GLOBAL batch (CXR-CLIP: 128): when set, batch_size = global_batch_size / processes, so
    # the in-batch negatives of a gathering loss do not change with the GPU count
    global_batch_size: int | None = None
    grad_accum_steps: int = 1
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = True
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_clip_norm: float | None = None
    log_every_steps: int = 10
    save_every_steps: int | None = None  # None: save only at the end of each epoch
    save_every_epochs: int = 1
    keep_last_checkpoints: int = 2
    eval_every_epochs: int = 1  # 0: never evaluate (validation and the task's `evaluate` hook)
    # Per-epoch batch-size curriculum: [[start_epoch, per-process batch], ...] sorted by epoch, first at 0
    # (CARZero: [[0, 64], [2, 128], [6, 256]]). None: `batch_size` throughout. Batches of a larger size are
    # more in-batch negatives; gradient accumulation never is (each micro-batch is its own loss).
    batch_size_schedule: list[tuple[int, int]] | None = None
    val_batch_size: int | None = None  # per process; None: batch_size
    # Checkpoint selection on validation (official recipes: MGCA val_loss min, patience 5; CXR-CLIP mean
    # validation contrastive loss; CARZero val_loss min, patience 10). `monitor` names a key of the epoch's
    # validation/evaluate metrics ("val_loss", "val_ita_loss", ...); None: no selection, final/ only.
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] = "min"
    keep_best_k: int = 1  # best/ holds the best; with k > 1, top_k/ keeps the k best epochs' weights
    early_stop_patience: int | None = None  # stop after this many evaluated epochs without improvement
    nan_policy: Literal["skip", "stop"] = "stop"
    # With data.on_error=skip: stop when more than this fraction of an epoch's samples was unreadable
    max_skipped_fraction: float = 0.01
    tracker: Literal["tensorboard"] | None = "tensorboard"
    deterministic: bool = False
    cpu: bool = False  # force CPU even when a GPU is visible (CPU is used anyway when there is none)
    progress_bar: bool = True
    num_threads: int | None = None  # torch CPU threads (1 avoids OpenMP oversubscription on a busy CPU)
    # Recompute the activations of the model's transformer-block stacks in backward (less memory, ~1 more
    # forward of those blocks; same loss and gradients): core.training.scaling
    gradient_checkpointing: bool = False
    # torch.compile of the task module (model + loss) in place; backend/mode as torch.compile takes them
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    # A resume whose saved RNG states cannot be restored stops with CheckpointError unless this is True
    # (then it continues with a warning: data order is still exact, random augmentations are not).
    resume_allow_rng_mismatch: bool = False

    def validate(self) -> None:
        """Ranges of the loop's numbers, checked when the config is loaded (before anything is built)."""
        _require(self.epochs >= 0, "epochs", ">= 0", self.epochs)
        _require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        _require(self.grad_accum_steps >= 1, "grad_accum_steps", ">= 1", self.grad_accum_steps)
        _require(self.max_steps is None or self.max_steps >= 0, "max_steps", ">= 0", self.max_steps)
        _require(self.log_every_steps >= 1, "log_every_steps", ">= 1", self.log_every_steps)
        _require(self.save_every_epochs >= 1, "save_every_epochs", ">= 1", self.save_every_epochs)
        _require(self.keep_last_checkpoints >= 1, "keep_last_checkpoints", ">= 1", self.keep_last_checkpoints)
        _require(self.eval_every_epochs >= 0, "eval_every_epochs", ">= 0", self.eval_every_epochs)
        _require(
            self.save_every_steps is None or self.save_every_steps >= 1,
            "save_every_steps",
            ">= 1",
            self.save_every_steps,
        )
        _require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            "grad_clip_norm",
            "> 0",
            self.grad_clip_norm,
        )


def _require(ok: bool, key: str, want: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"key '{key}': must be {want}, got {got!r}")


# ----------------------------------------------------------------------------------------------------------
# Conversion and type checking
# ----------------------------------------------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a dataclass config (tuples become lists, Paths strings)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # an unresolvable annotation is a programming error in the config class
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {e}") from e


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` against annotation `tp`; returns the value converted (list->tuple, str->Path, ...)."""

    def fail(extra: str = "") -> ConfigError:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return ConfigError(
            f"{where}: key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {shown}{extra}"
        )

    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(e)
        raise fail()
    if origin is Literal:
        for a in args:
            # bool is an int in Python: `True == 1`; keep them apart.
            if value == a and type(value) is type(a):
                return a
        raise ConfigError(f"{where}: key '{key}': expected one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(" (a mapping of its fields)")
        return _build(tp, value, key, where)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise fail()
        inner = args[0] if args else Any
        return [_coerce(x, inner, f"{key}[{i}]", where) for i, x in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], f"{key}[{i}]", where) for i, x in enumerate(value))
        if len(value) != len(args):
            raise fail(f" (expected {len(args)} items, got {len(value)})")
        return tuple(_coerce(x, a, f"{key}[{i}]", where) for i, (x, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise fail()
        kt, vt = args if args else (Any, Any)
        return {
            _coerce(k, kt, f"{key}.{k}", where): _coerce(v, vt, f"{key}.{k}", where) for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept a plain float literal for float fields.
        if isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise fail() from None
            if math.isnan(out) and value.strip().lower() not in ("nan", ".nan"):
                raise fail()
            return out
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise fail()
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str, where: str) -> T:
    """Construct dataclass `cls` from a mapping, checking every key and value."""
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if not isinstance(k, str) or k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key '{dotted}' (known keys here: {known})")
        kwargs[k] = _coerce(v, hints[k], dotted, where)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        ):
            dotted = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: missing required key '{dotted}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid value in '{prefix or cls.__name__}': {e}") from e


def _field_type(cls: type, dotted: str, where: str) -> Any:
    """The annotation of the dotted key inside `cls` (raises ConfigError for an unknown key)."""
    tp: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        inner = _dataclass_of(tp)
        if inner is None and i > 0 and _dict_value_type(tp) is not None:
            # a key inside a dict-typed field: its value type applies to every key (and anything deeper)
            vt = _dict_value_type(tp)
            return vt if i == len(parts) - 1 else Any
        if inner is None:
            raise ConfigError(f"{where}: unknown key '{dotted}' ('{'.'.join(parts[:i])}' has no sub-keys)")
        hints = _type_hints(inner)
        names = {f.name for f in dataclasses.fields(inner) if f.init}
        if part not in names:
            raise ConfigError(
                f"{where}: unknown key '{dotted}' (known keys under "
                f"'{'.'.join(parts[:i]) or '<top>'}': {', '.join(sorted(names))})"
            )
        tp = hints[part]
    return tp


def _dict_value_type(tp: Any) -> Any:
    """The value type of a dict-typed annotation (also through Optional[...]), or None if not a dict."""
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) in (dict, Mapping) or t is dict:
            args = typing.get_args(t)
            return args[1] if len(args) == 2 else Any
    return None


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside `tp` (also through Optional[...]), or None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for a in typing.get_args(tp):
        if dataclasses.is_dataclass(a) and isinstance(a, type):
            return a
    return None


def parse_override(item: str) -> tuple[str, Any]:
    """Split one `key=value` override; the value is parsed with yaml.safe_load."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r}: expected 'key=value' (e.g. optimizer.lr=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{key}': cannot parse value {raw!r} as YAML: {e}") from e
    return key, value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        merged = dict(node[last])
        merged.update(value)
        node[last] = merged
    else:
        node[last] = value


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file's top-level mapping (empty file -> {}); ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: type[T], yaml_path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build config `cls` from a YAML file (optional) plus `key=value` overrides (dotted keys)."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"load_config expects a dataclass type, got {cls!r}")
    where = str(yaml_path) if yaml_path is not None else "<defaults>"
    data = read_yaml_mapping(yaml_path) if yaml_path is not None else {}
    if yaml_path is not None and not data:
        raise ConfigError(
            f"{yaml_path}: config file is empty; it would silently mean every default. Name a packaged "
            f"recipe or write the keys you mean (pass no file to use the defaults on purpose)"
        )
    # Validate the file alone first so an error names the file, not an override.
    _build(cls, data, "", where)
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        key, value = parse_override(item)
        tp = _field_type(cls, key, f"override '{item}'")
        _coerce(value, tp, key, f"override '{item}'")
        _set_dotted(data, key, value)
    where = f"{where} + overrides" if overrides else where
    cfg = _build(cls, data, "", where)
    validate_config(cfg, where)
    return cfg


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write `cfg` as YAML (atomically: temp file, fsync, rename); load_config reads it back equal."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "<dict>") -> T:
    """Build config `cls` from a plain mapping (e.g. a saved config.json), with the same checks."""
    cfg = _build(cls, dict(data), "", where)
    validate_config(cfg, where)
    return cfg


# ----------------------------------------------------------------------------------------------------------
# Validation of a built config (ranges, hooks, registered names)
# ----------------------------------------------------------------------------------------------------------

_OPS = {
    "gt": (lambda v, b: v > b, ">"),
    "ge": (lambda v, b: v >= b, ">="),
    "lt": (lambda v, b: v < b, "<"),
    "le": (lambda v, b: v <= b, "<="),
}


def _convention(name: str, value: Any) -> str | None:
    """The range a numeric field's name implies (see the module docstring), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if name == "lr" or name.endswith("temperature"):
        return "gt"
    if isinstance(value, int) and (name == "dim" or name.endswith(("_dim", "_size"))):
        return "gt"
    return None


def validate_config(cfg: Any, where: str = "<config>", prefix: str = "") -> None:
    """Check a built config (recursively): field metadata, name conventions, `validate()` hooks, and a
    registered `model_name`; ConfigError naming the dotted key and `where`."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        return
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name, None)
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_config(value, where, dotted)
            continue
        if value is None:
            continue
        checks = [(op, f.metadata[op]) for op in _OPS if op in f.metadata]
        conv = _convention(f.name, value)
        if conv is not None and not any(op == conv for op, _ in checks):
            checks.append((conv, 0))
        for op, bound in checks:
            ok, sym = _OPS[op]
            try:
                good = ok(value, bound)
            except TypeError:
                good = False
            if not good:
                raise ConfigError(f"{where}: key '{dotted}': must be {sym} {bound}, got {value!r}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(
                f"{where}: key '{dotted}': must be one of {list(f.metadata['choices'])}, got {value!r}"
            )
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        try:
            hook()
        except ConfigError as e:
            msg = str(e)
            if prefix:  # a nested hook names its keys relative to itself
                msg = msg.replace("key '", f"key '{prefix}.", 1) if "key '" in msg else f"{prefix}: {msg}"
            raise ConfigError(f"{where}: {msg}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: invalid value in '{prefix or type(cfg).__name__}': {e}") from e
    if not prefix:
        _check_model_name(cfg, where)


def _check_model_name(cfg: Any, where: str) -> None:
    """A top-level `model_name` (default included) must be a registered model of the method owning the config.

    The method is the package of the config class (`cxrvlp.mgca.train` -> `mgca`); configs outside a method
    package (tests, notebooks) are not checked.
    """
    name = getattr(cfg, "model_name", None)
    if "model_name" not in {f.name for f in dataclasses.fields(cfg)} or not isinstance(name, str):
        return
    from cxrvlp.core import registry

    parts = type(cfg).__module__.split(".")
    method = parts[1] if len(parts) > 2 and parts[0] == "cxrvlp" else None
    if method not in registry.installed_methods():
        return
    registry.check_model_name(name, method, where)
