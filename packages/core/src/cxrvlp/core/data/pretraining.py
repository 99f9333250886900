"""What every method's pretraining data shares: where MIMIC-CXR is, the synthetic mirror, bad-image policy.

- `MimicSourceConfig`: the `data:` fields every method's config has (root, reports, cache, split names,
  `on_error`, the synthetic mirror). A method's data config subclasses it and adds its own fields.
- `resolve_mimic_root`: the real root, or the synthetic mirror ONLY when asked for by name
  (`data.synthetic=true`, with a banner in the log). A paper recipe without `data.root` is a `ConfigError`:
  a forgotten override must never train the paper recipe on phantoms.
- `read_exact` / `load_with_substitute`: an item is always built from ONE record (image and text of the
  same sample id). With `on_error="skip"` an unreadable image is replaced by the next readable record as a
  whole (its own image and its own text), the skipped path is returned so the loop can count and log it,
  and the batch keeps its size (methods that all-gather need equal batch sizes on every rank).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from cxrvlp.core.errors import ConfigError, CorruptImageError, CxrvlpError

logger = logging.getLogger("cxrvlp.data")
T = TypeVar("T")

SYNTHETIC_BANNER = (
    "*** SYNTHETIC DATA: data.synthetic=true trains on a generated MIMIC-CXR mirror (procedural phantoms and "
    "template reports) at {root}. Nothing learned here says anything about real radiographs. ***"
)


@dataclass
class MimicSourceConfig:
    """The MIMIC-CXR source of a pretraining run (methods subclass it for their `data:` section)."""

    root: str | None = None  # MIMIC-CXR-JPG 2.0.0 root (files/, mimic-cxr-2.0.0-*.csv.gz)
    reports_root: str | None = None  # mimic-cxr-reports folder (files/pXX/.../sYYY.txt); default: root
    sectioned_csv: str | None = None  # mimic_cxr_sectioned.csv instead of parsing the .txt reports
    # core's resized-image cache (`cxrvlp prepare mimic-cxr`): the PNG cache, or the uint8 shard cache
    # (`--format shards`, found by its manifest; read with no decoding)
    image_cache_dir: str | None = None
    image_cache_size: int | None = None  # when set, a shard cache built at another size is refused
    split: str = "train"
    val_split: str | None = "validate"  # None: no validation pass (final/ only)
    # "raise": an unreadable image stops the run naming the file; "skip": it is replaced by the next
    # readable record (image AND text of that record), counted and logged per epoch
    on_error: Literal["raise", "skip"] = "raise"
    # The synthetic mirror is used only when asked for by name (tests, demo, tiny/small configs)
    synthetic: bool = False
    synthetic_dir: str | None = None  # default: $XDG_CACHE_HOME/cxrvlp/synthetic/mimic-cxr-<n>-<seed>-...
    synthetic_patients: int = 120
    synthetic_seed: int = 0
    synthetic_image_size: int = 256


def mimic_images(cfg: MimicSourceConfig, root: str | Path, split: str | None, views=("PA", "AP")):
    """The MIMIC-CXR image records of `split` (None: every split) as the `data:` section says where reports,
    the resized-image cache and the error policy are; no labels (pretraining reads the reports)."""
    from cxrvlp.core.data.mimic_cxr import MimicCxrDataset

    return MimicCxrDataset(
        root, split=split, views=views, label_source=None, reports_root=cfg.reports_root,
        sectioned_csv=cfg.sectioned_csv, cache_dir=cfg.image_cache_dir, on_error=cfg.on_error,
        cache_size=cfg.image_cache_size,
    )  # fmt: skip


def synthetic_mimic_root(cfg: MimicSourceConfig) -> Path:
    """Generate (once, atomically) and return the synthetic MIMIC-CXR mirror `cfg` describes."""
    from cxrvlp.core.data.synthetic import GENERATOR_VERSION
    from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr

    if cfg.synthetic_dir:
        root = Path(cfg.synthetic_dir).expanduser()
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        n, seed, size = cfg.synthetic_patients, cfg.synthetic_seed, cfg.synthetic_image_size
        # the generator version is in the tag: a mirror written by an older generator is never reused
        root = cache / "cxrvlp" / "synthetic" / f"mimic-cxr-{n}-{seed}-{size}-g{GENERATOR_VERSION}"
    if not (root / "synthetic.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
        write_mimic_cxr(tmp, cfg.synthetic_patients, cfg.synthetic_seed, cfg.synthetic_image_size)
        try:
            os.replace(tmp, root)  # atomic: a concurrent writer of the same mirror simply loses the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def resolve_mimic_root(cfg: MimicSourceConfig, method: str) -> Path:
    """`data.root`, or the synthetic mirror when `data.synthetic` is true; ConfigError when neither is set.

    Call it inside `PartialState().main_process_first()` (or the loop's process state) so one rank writes
    the mirror and the others read it.
    """
    if cfg.root:  # a given root always wins (the small/tiny recipes default to the mirror)
        if cfg.synthetic:
            logger.info("%s: data.root=%s given, data.synthetic=true ignored", method, cfg.root)
        return Path(cfg.root).expanduser()
    if not cfg.synthetic:
        raise ConfigError(
            f"{method}: data.root is not set. Point it at the MIMIC-CXR-JPG 2.0.0 root (the folder holding "
            f"files/ and mimic-cxr-2.0.0-split.csv.gz), e.g. data.root=/data/mimic-cxr-jpg, or pass "
            f"data.synthetic=true to train on the generated synthetic mirror (tests and demos only)"
        )
    root = synthetic_mimic_root(cfg)
    logger.warning(SYNTHETIC_BANNER.format(root=root))
    return root


def read_exact(dataset: Any, index: int) -> Any:
    """Sample `index` of a core reader, never another one (CxrvlpError when its image is unreadable)."""
    rec = dataset.records[index]
    img, orig = dataset.read_pixels(rec)
    return dataset.make_sample(rec, img, orig)


def load_with_substitute(
    index: int, n: int, load: Callable[[int], T], on_error: str, what: str = "dataset"
) -> tuple[T, list[str]]:
    """(load(j), skipped) for the first j = index, index + 1, ... (mod n) that loads.

    With on_error="raise" the first failure propagates (its message names the file). `skipped` holds
    "<path or index>: <reason>" of every record passed over, for the loop's per-epoch count.
    """
    skipped: list[str] = []
    for attempt in range(n):
        j = (index + attempt) % n
        try:
            return load(j), skipped
        except CxrvlpError as err:
            if on_error != "skip":
                raise
            skipped.append(str(err))
    raise CorruptImageError(what, f"no readable record left in {what} ({n} tried)")
