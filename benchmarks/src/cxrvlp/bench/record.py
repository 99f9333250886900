"""Result records: one JSON per (method, dataset, task, seed) with every choice that moves the numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from cxrvlp.core.zeroshot import AdapterInfo, ClassPrompts

VERSIONED_PACKAGES = (
    "cxrvlp-core",
    "cxrvlp-bench",
    "cxrvlp-mgca",
    "cxrvlp-cxrclip",
    "cxrvlp-carzero",
    "cxrvlp-afloc",
    "cxrvlp-mavl",
    "torch",
    "torchvision",
    "transformers",
    "timm",
    "accelerate",
    "scikit-learn",
    "numpy",
    "segmentation-models-pytorch",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can move results (None where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in VERSIONED_PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | Path) -> str:
    """One SHA-256 over the names and bytes of every file under `path` (checkpoint folders)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def prompts_record(classes: list[ClassPrompts], label: str) -> dict[str, Any]:
    """The prompts exactly as scored, with the protocol label."""
    return {
        "protocol": label,
        "classes": [
            {"name": c.name, "positive": list(c.positive), "negative": list(c.negative)} for c in classes
        ],
    }


def adapter_record(info: AdapterInfo) -> dict[str, Any]:
    """The adapter's self-description, labels as it states them."""
    return dataclasses.asdict(info)


def jsonable(x: Any) -> Any:
    """numpy scalars/arrays and non-finite floats -> plain JSON (NaN becomes null)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def result_path(out_dir: str | Path, method: str, dataset: str, task: str, seed: int) -> Path:
    """Where the JSON of one (method, dataset, task, seed) lives."""
    return Path(out_dir) / "runs" / method / dataset / task / f"seed{seed}.json"


def write_result(path: Path, record: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves a half JSON behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def is_finished(path: Path) -> bool:
    """A result JSON that exists and parses with a final status (what --skip-existing trusts)."""
    if not path.is_file():
        return False
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return rec.get("status") in ("ok", "skipped")


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every result JSON under `out_dir/runs`, sorted by path."""
    return [json.loads(p.read_text()) for p in sorted((Path(out_dir) / "runs").rglob("*.json"))]
