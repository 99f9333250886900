"""Checkpoint helpers: safe loading of foreign files, key surgery, strict loading, our pretrained format.

Foreign files (Lightning `.ckpt`, `.pth` / `.tar` dicts) are read with `torch.load(weights_only=True)` only:
a pickle that would run code is refused with `CheckpointError`. Our own format is a folder with
`model.safetensors` + `config.json`, written atomically.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_NAME = "cxrvlp-pretrained"
FORMAT_VERSION = 1

StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write a file via `writer(tmp_path)` into a temp file next to `path`, fsync it, then rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, p)
        _fsync_dir(p.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (temp file, fsync, rename)."""
    return atomic_write(path, lambda t: t.write_text(text, encoding="utf-8"))


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder under `folder` (before renaming it into place)."""
    root = Path(folder)
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
        _fsync_dir(Path(dirpath))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Safe loading of torch pickles
# ----------------------------------------------------------------------------------------------------------


def _make_stub(full_name: str) -> type:
    """A class to alias `full_name` in the unpickler; "instances" are inert OrderedDicts.

    torch's weights_only unpickler only fills exact dict/OrderedDict types (SETITEM) and only builds
    allowlisted types, so the stub's constructor returns a plain OrderedDict tagged with the class name:
    dict items (e.g. Lightning's AttributeDict) land in it, pickled state (BUILD) in its `__dict__`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:
        od: OrderedDict = OrderedDict()
        od.__dict__.update({"stub_name": full_name, "stub_args": args})
        return od

    short = full_name.rsplit(".", 1)[-1]
    return type(short, (), {"__new__": __new__, "__module__": "cxrvlp.core.training.stubs"})


def is_stub(obj: Any) -> bool:
    """True for an object read through `safe_load(stub_globals=...)` in place of a named class."""
    return type(obj) is OrderedDict and "stub_name" in getattr(obj, "__dict__", {})


def stub_to_plain(obj: Any) -> Any:
    """Recursively turn stubs into plain dicts (items, then pickled state if it is a mapping)."""
    if is_stub(obj):
        out = {k: stub_to_plain(v) for k, v in obj.items()}
        extra = {k: v for k, v in vars(obj).items() if k not in ("stub_name", "stub_args")}
        out.update({str(k): stub_to_plain(v) for k, v in extra.items()})
        return out
    if isinstance(obj, Mapping):
        return {k: stub_to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [stub_to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(stub_to_plain(v) for v in obj)
    return obj


def safe_load(path: str | os.PathLike, stub_globals: Sequence[str] = ()) -> Any:
    """torch.load(path, weights_only=True, map_location="cpu") with `CheckpointError` for bad files.

    A file whose pickle would import or call anything beyond tensors and plain containers (e.g. a crafted
    `__reduce__`) is refused, never executed. `stub_globals` names classes (full dotted paths, e.g.
    "pytorch_lightning.utilities.parsing.AttributeDict" in a Lightning checkpoint's hyper_parameters) to
    be read as inert tagged OrderedDicts (`is_stub`, `stub_to_plain`) instead of being refused; their real
    code is never imported or run.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint file does not exist")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, expected a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: checkpoint file is empty (0 bytes)")
    stubs = [(_make_stub(name), name) for name in stub_globals]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "Unsupported operand" in msg:
            first = msg.strip().splitlines()[0] if msg.strip() else ""
            detail = ""
            m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            if m:
                detail = (
                    f" (it references {m.group(1)}; if that is plain data such as a config class, pass "
                    f"stub_globals=['{m.group(1)}'] to read it as an inert stub)"
                )
            raise CheckpointError(
                f"{p}: refused to load: the pickle would import or run code{detail}. Only tensors and plain "
                f"containers are loaded (torch.load weights_only=True). torch said: {first}"
            ) from None
        raise CheckpointError(f"{p}: corrupt checkpoint (cannot unpickle): {msg}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{p}: truncated or corrupt checkpoint ({type(e).__name__}: {first})") from e


# ----------------------------------------------------------------------------------------------------------
# State-dict extraction and key surgery
# ----------------------------------------------------------------------------------------------------------

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")


def read_checkpoint(
    source: str | os.PathLike | Mapping[str, Any], stub_globals: Sequence[str] = ()
) -> tuple[Any, str]:
    """(loaded object, its name for messages) of a released checkpoint: a `.safetensors` file, any torch
    pickle (read with `safe_load`: nothing is executed), or an already loaded dict (a copy of it)."""
    if isinstance(source, Mapping):
        return dict(source), "state dict"
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return load_file(str(path)), str(path)
    return safe_load(path, stub_globals=stub_globals), str(path)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def extract_state_dict(obj: Any, source: str = "checkpoint") -> StateDict:
    """The model state dict inside a loaded checkpoint.

    Handles Lightning `.ckpt` (`state_dict`), `.pth` / `.tar` dicts (`state_dict`, `model_state_dict`,
    `model`, ...) and plain state dicts. A DDP `module.` prefix on every key is removed.
    """
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    sd: Mapping[str, Any] | None = None
    if _is_state_dict(obj):
        sd = obj
    elif isinstance(obj, Mapping):
        for k in _NESTED_KEYS:
            if k in obj and _is_state_dict(obj[k]):
                sd = obj[k]
                break
        if sd is None:
            for k in _NESTED_KEYS:
                if k in obj and isinstance(obj[k], Mapping):
                    inner = obj[k]
                    tensors = {kk: v for kk, v in inner.items() if isinstance(v, torch.Tensor)}
                    if tensors and len(tensors) == len(inner):
                        sd = tensors
                        break
    if sd is None:
        keys = list(obj.keys())[:12] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{source}: no state dict found (top-level keys: {keys})")
    out = dict(sd)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def strip_prefixes(sd: Mapping[str, torch.Tensor], prefixes: str | Sequence[str]) -> StateDict:
    """Remove the first matching prefix from every key (keys without one are kept as they are)."""
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    out: StateDict = {}
    for k, v in sd.items():
        nk = k
        for p in prefixes:
            if k.startswith(p):
                nk = k[len(p) :]
                break
        if nk in out:
            raise CheckpointError(f"strip_prefixes: two keys map to '{nk}' after removing {list(prefixes)}")
        out[nk] = v
    return out


@dataclass(frozen=True)
class KeyRule:
    """One rename rule: a regex `pattern` replaced by `repl` (re.sub syntax); `repl=None` drops the key."""

    pattern: str
    repl: str | None

    def apply(self, key: str) -> str | None:
        if re.search(self.pattern, key) is None:
            return key
        if self.repl is None:
            return None
        return re.sub(self.pattern, self.repl, key)


def apply_key_map(
    sd: Mapping[str, torch.Tensor],
    rules: Iterable[KeyRule | tuple[str, str | None]],
) -> StateDict:
    """Rename keys with ordered rules (each applied in turn to every key); a None replacement drops the key.

    A rule given as a tuple is `(regex, replacement)`; use `^prefix\\.` style anchors for prefix renames.
    """
    compiled = [r if isinstance(r, KeyRule) else KeyRule(*r) for r in rules]
    out: StateDict = {}
    for k, v in sd.items():
        nk: str | None = k
        for r in compiled:
            nk = r.apply(nk)
            if nk is None:
                break
        if nk is None:
            continue
        if nk in out:
            raise CheckpointError(f"apply_key_map: two keys map to '{nk}' (the second is '{k}')")
        out[nk] = v
    return out


@dataclass
class LoadReport:
    """What `load_state_dict_strict` found: keys missing from / unexpected in the checkpoint, bad shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _aliases(model: nn.Module) -> dict[str, str]:
    """Tied tensors: alias key -> first key sharing its storage (safetensors stores each storage once)."""
    first: dict[tuple[int, int, tuple], str] = {}
    out: dict[str, str] = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if v.device.type == "meta" or v.numel() == 0:
            continue
        sig = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if sig in first:
            out[k] = first[sig]
        else:
            first[sig] = k
    return out


def load_state_dict_strict(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    source: str = "state dict",
    strict: bool = True,
    ignore_missing: Sequence[str] = (),
    ignore_unexpected: Sequence[str] = (),
) -> LoadReport:
    """Load `sd` into `model`, reporting every missing, unexpected and mis-shaped key at once.

    strict=True raises `CheckpointMismatchError` listing them all (nothing is loaded); strict=False loads
    the matching keys and returns the report. `ignore_*` are regexes of keys allowed to be missing /
    unexpected even in strict mode (e.g. a non-persistent `position_ids` buffer).
    """
    own = model.state_dict()
    aliases = _aliases(model)
    sd = dict(sd)
    # A tied tensor stored once (safetensors) also fills its aliases.
    for alias, target in aliases.items():
        if alias not in sd and target in sd:
            sd[alias] = sd[target]
    ig_m = [re.compile(p) for p in ignore_missing]
    ig_u = [re.compile(p) for p in ignore_unexpected]
    report = LoadReport()
    for k in own:
        if k not in sd and not any(p.search(k) for p in ig_m):
            report.missing.append(k)
    loadable: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in own:
            if not any(p.search(k) for p in ig_u):
                report.unexpected.append(k)
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
            continue
        loadable[k] = v
    if strict and not report.ok:
        raise CheckpointMismatchError(report.missing, report.unexpected, report.mismatched, source=source)
    model.load_state_dict(loadable, strict=False)
    return report


# ----------------------------------------------------------------------------------------------------------
# safetensors and the pretrained folder format
# ----------------------------------------------------------------------------------------------------------


def save_safetensors(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None
) -> Path:
    """Save a state dict as safetensors atomically (tied tensors are stored once, contiguous on CPU)."""
    seen: dict[tuple[int, int, tuple], str] = {}
    clean: StateDict = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"save_safetensors: value of '{k}' is {type(v).__name__}, not a tensor")
        sig = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() > 0 and sig in seen:
            continue  # an alias of a tensor already stored
        seen[sig] = k
        clean[k] = v.detach().to("cpu").contiguous()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda t: save_file(clean, str(t), metadata=meta or None))


def load_safetensors(path: str | os.PathLike) -> StateDict:
    """Load a safetensors file to CPU, with `CheckpointError` for a missing, truncated or corrupt file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: safetensors file does not exist")
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: truncated or corrupt safetensors file: {e}") from e


# ----------------------------------------------------------------------------------------------------------
# Verifying an accelerate checkpoint folder before a resume
# ----------------------------------------------------------------------------------------------------------

RNG_STATES_PREFIX = "random_states_"


def _load_accelerate_file(path: Path) -> Any:
    """Read one torch-pickled file as accelerate's `load_state` will (weights_only, its allowlist)."""
    from accelerate.utils import load as accelerate_load

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        return accelerate_load(str(path), map_location="cpu")
    except Exception as e:  # pickle refusals, zip errors, truncation...: all name the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        refused = "weights_only" in str(e) or "Unsupported global" in str(e)
        what = "refused to load (the pickle would import or run code)" if refused else "truncated or corrupt"
        raise CheckpointError(f"{path}: {what} ({type(e).__name__}: {first[:300]})") from None


def verify_resume_folder(
    folder: str | os.PathLike, process_index: int = 0, allow_rng_mismatch: bool = False
) -> dict[str, Any] | None:
    """Open every file of a checkpoint folder the way the resume will; `CheckpointError` naming the file.

    Returns this process's saved RNG states (`random_states_<i>.pkl`). When that file is missing, refused
    or unusable the resume stops with `CheckpointError`, unless `allow_rng_mismatch` (then a warning is
    logged and None returned: the run continues with un-restored RNG).
    """
    import logging

    log = logging.getLogger("cxrvlp.core.training")
    d = Path(folder)
    rng_name = f"{RNG_STATES_PREFIX}{process_index}.pkl"
    states: dict[str, Any] | None = None
    rng_error: CheckpointError | None = None
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        name = f.name
        try:
            if name.endswith(".safetensors"):
                load_safetensors(f)
            elif name.endswith(".json"):
                try:
                    json.loads(f.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise CheckpointError(f"{f}: corrupt JSON: {e}") from None
            elif name.endswith((".bin", ".pt", ".pth", ".pkl")):
                obj = _load_accelerate_file(f)
                if name == rng_name:
                    need = ("random_state", "numpy_random_seed", "torch_manual_seed")
                    if not isinstance(obj, dict) or any(k not in obj for k in need):
                        raise CheckpointError(f"{f}: not an accelerate RNG state (needs {list(need)})")
                    states = obj
        except CheckpointError as e:
            if name != rng_name:
                raise
            rng_error = e
    if states is None and rng_error is None:
        rng_error = CheckpointError(f"{d / rng_name}: the RNG states of process {process_index} are missing")
    if rng_error is not None:
        if not allow_rng_mismatch:
            raise CheckpointError(
                f"{rng_error} - the RNG cannot be restored; set resume_allow_rng_mismatch=true to resume "
                f"anyway with fresh RNG"
            )
        log.warning("resume: %s; continuing with un-restored RNG (resume_allow_rng_mismatch)", rng_error)
    return states


def check_rng_restored(states: dict[str, Any] | None, folder: str | os.PathLike, allow: bool = False) -> bool:
    """After `load_state`: True when Python, NumPy and torch CPU RNG equal the saved states.

    A mismatch (accelerate only logs "Could not load random states" at INFO) is a `CheckpointError` unless
    `allow`, then a warning. `states` None (already allowed by `verify_resume_folder`) returns False.
    """
    import logging
    import random

    import numpy as np

    if states is None:
        return False
    try:
        ok = (
            random.getstate() == states["random_state"]
            and torch.equal(torch.get_rng_state(), states["torch_manual_seed"])
            and all(
                np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
                for a, b in zip(np.random.get_state(), states["numpy_random_seed"])
            )
        )
    except Exception:
        ok = False
    if not ok:
        msg = f"{folder}: the saved RNG states were not restored"
        if not allow:
            raise CheckpointError(
                msg + "; set resume_allow_rng_mismatch=true to resume anyway with fresh RNG"
            )
        logging.getLogger("cxrvlp.core.training").warning("resume: %s (resume_allow_rng_mismatch)", msg)
    return ok


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from cxrvlp.core.training.config import config_to_dict

        return config_to_dict(config)
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str))
    raise TypeError(f"config must be a dict or a dataclass instance, got {type(config).__name__}")


def save_pretrained(
    model: nn.Module,
    config: Mapping[str, Any] | Any,
    out_dir: str | os.PathLike,
    model_name: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write `out_dir/model.safetensors` + `out_dir/config.json` atomically (temp folder, fsync, swap).

    config.json holds {"format", "format_version", "model_name", "config": <config as a dict>}.
    `model_name` defaults to config["model_name"], else config["model"]["name"], else the class name.

    Replacing an existing `out_dir` never leaves a moment without one: the new folder is swapped in with
    one atomic exchange (Linux renameat2 RENAME_EXCHANGE), so `out_dir` is at every instant either the
    complete old or the complete new folder. Where the filesystem cannot exchange, the old folder is
    renamed to `.<name>.old-<pid>` and the new one renamed in; a crash between those two renames leaves the
    old folder there, and the next `save_pretrained` / `recover_pretrained_dir` puts it back. A full disk
    (or any write error) is a `CheckpointError` naming the folder; the temporary folder is removed and the
    old `out_dir` is untouched.
    """
    out = Path(out_dir)
    cfg = _config_dict(config)
    if model_name is None:
        model_name = cfg.get("model_name")
        if model_name is None and isinstance(cfg.get("model"), Mapping):
            model_name = cfg["model"].get("name")
        if model_name is None:
            model_name = type(model).__name__
    recover_pretrained_dir(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: folder exists and is not empty (pass overwrite=True)")
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        sd = model.state_dict()
        save_safetensors(sd, tmp / WEIGHTS_NAME, metadata={"format": "pt", "model_name": model_name})
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_name": model_name,
            "weights": WEIGHTS_NAME,
            "weights_sha256": sha256_file(tmp / WEIGHTS_NAME),
            "config": cfg,
        }
        atomic_write_text(tmp / CONFIG_NAME, json.dumps(doc, indent=2, sort_keys=False) + "\n")
        fsync_tree(tmp)
        _replace_dir(tmp, out)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"{out}: no space left on the device while saving the model ({e.strerror}); nothing was "
                f"replaced and the temporary folder was removed. Free space and save again"
            ) from e
        raise CheckpointError(f"{out}: cannot save the model: {type(e).__name__}: {e}") from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this filesystem / kernel cannot exchange: fall back to the two renames
    raise OSError(err, os.strerror(err), str(b))


def _old_name(dst: Path) -> str:
    return f".{dst.name}.old-"


def recover_pretrained_dir(dst: str | os.PathLike) -> Path | None:
    """Put back an old folder left aside by an interrupted two-rename replacement (see save_pretrained)."""
    d = Path(dst)
    if d.exists() or not d.parent.is_dir():
        return None
    olds = sorted(
        (p for p in d.parent.iterdir() if p.name.startswith(_old_name(d)) and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    if not olds:
        return None
    os.replace(olds[-1], d)
    _fsync_dir(d.parent)
    return d


def _replace_dir(src: Path, dst: Path) -> None:
    """Put folder `src` at `dst` with no instant where `dst` is missing (see save_pretrained)."""
    if not dst.exists():
        os.replace(src, dst)
        _fsync_dir(dst.parent)
        return
    if _exchange(src, dst):  # dst is now the new folder, src the old one
        _fsync_dir(dst.parent)
        shutil.rmtree(src, ignore_errors=True)
        return
    old = dst.with_name(f"{_old_name(dst)}{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    os.replace(dst, old)
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_pretrained_config(pretrained_dir: str | os.PathLike) -> dict[str, Any]:
    """The config.json document of a pretrained folder ({"model_name", "config", ...})."""
    d = Path(pretrained_dir)
    p = d / CONFIG_NAME
    if not p.is_file():
        raise CheckpointError(f"{d}: not a cxrvlp pretrained folder ({CONFIG_NAME} is missing)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: corrupt config.json: {e}") from e
    if not isinstance(doc, dict) or "config" not in doc or "model_name" not in doc:
        raise CheckpointError(f"{p}: not a cxrvlp config.json (needs 'model_name' and 'config')")
    return doc


def load_pretrained_weights(
    model: nn.Module, pretrained_dir: str | os.PathLike, strict: bool = True, verify_hash: bool = False
) -> LoadReport:
    """Load `pretrained_dir/model.safetensors` into `model` (strict by default)."""
    d = Path(pretrained_dir)
    w = d / WEIGHTS_NAME
    if verify_hash:
        doc = read_pretrained_config(d)
        want = doc.get("weights_sha256")
        if want and sha256_file(w) != want:
            raise CheckpointError(f"{w}: SHA-256 does not match config.json (corrupt or replaced file)")
    sd = load_safetensors(w)
    return load_state_dict_strict(model, sd, source=str(w), strict=strict)


def load_trained_model(
    pretrained_dir: str | os.PathLike,
    config_from_dict: Callable[[dict[str, Any]], Any],
    build: Callable[[Any], nn.Module],
    no_init: Sequence[str] = ("image_pretrained", "text_pretrained"),
) -> tuple[nn.Module, dict[str, Any]]:
    """(model, config.json document) of a folder written by training (`final/`, `best/`).

    The model is built from the recorded config with the fields in `no_init` set to None, since every
    weight comes from the folder (no hub download, no weight package needed), then `model.cfg` is set back
    to the config as recorded and the weights are loaded strictly.
    """
    doc = read_pretrained_config(pretrained_dir)
    cfg = doc["config"]
    model_cfg = config_from_dict(cfg["model"] if "model" in cfg else cfg)
    model = build(dataclasses.replace(model_cfg, **{k: None for k in no_init}))
    model.cfg = model_cfg
    load_pretrained_weights(model, pretrained_dir)
    return model, doc
