"""Where things come from: data roots (flags or a catalog YAML) and method adapters (ours or official)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from cxrvlp.bench import datasets as dsreg
from cxrvlp.bench.record import sha256_dir
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.errors import ConfigError, DatasetNotFoundError
from cxrvlp.core.zeroshot import ZeroShotAdapter

SYNTHETIC_MARKERS = ("SYNTHETIC", "SYNTHETIC.md", "synthetic.json")


class LazySplit(Sequence):
    """A split's samples, each decoded when indexed (a DataLoader reads them batch by batch).

    Nothing is materialised: memory does not grow with the split. `light()` gives the same samples without
    pixels (labels, boxes, reports, meta) for label matrices and bookkeeping.
    """

    def __init__(self, reader: Any, idx: Sequence[int]) -> None:
        self.reader, self.idx = reader, list(idx)
        self._light: list[Sample] | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.reader[self.idx[i]]

    def __iter__(self):
        for j in range(len(self)):
            yield self[j]

    def light(self) -> list[Sample]:
        """Samples without pixels (image None), in split order."""
        if self._light is None:
            recs = self.reader.records
            self._light = [self.reader.make_sample(recs[i], None, None) for i in self.idx]
        return self._light


def subset(samples: Sequence[Sample], keep: Sequence[int]) -> Sequence[Sample]:
    """The rows `keep` of a split, still lazy where the split is."""
    if isinstance(samples, LazySplit):
        return LazySplit(samples.reader, [samples.idx[i] for i in keep])
    return [samples[i] for i in keep]


def light_samples(samples: Sequence[Sample]) -> Sequence[Sample]:
    """Pixel-free view of a split where the source can give one, else the samples themselves."""
    return samples.light() if isinstance(samples, LazySplit) else samples


@dataclass
class DataSource:
    """One dataset's root and how to read it; `load(split)` caches the split's samples."""

    dataset: dsreg.BenchDataset
    root: Path
    synthetic: bool = False
    limit: int | None = None  # cap per split (smoke runs and the demo)
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    reader_fn: Callable[[str], Sequence[Sample]] | None = None  # replaces the core reader (tests, manifests)
    # share of the training patients held out as a derived validation split where the dataset has none
    # (VinDr-CXR always, COVIDx without val.txt); CXR-CLIP's 80/20 VinDr split is val_fraction=0.2
    val_fraction: float = 0.15
    derived: dict[str, str] = field(default_factory=dict)  # split -> how it was derived (into the JSON)
    _cache: dict[str, list[Sample]] = field(default_factory=dict, repr=False)

    def check(self) -> None:
        """Raise DatasetNotFoundError naming the dataset and the files expected when the root is missing."""
        if not self.root.exists():
            raise DatasetNotFoundError(self.dataset.name, self.root, self.dataset.expected_files)

    def resolve_classes(self) -> None:
        """Entries whose classes come from the data (CARZero's PadChest) get them from the test split's
        reader, alphabetically, minus the entry's dropped names; the registry entry itself is not changed."""
        drop = self.dataset.classes_from_reader
        if drop is None or self.dataset.classes:
            return
        test = self.load(self.dataset.test_split)
        reader_classes = getattr(getattr(test, "reader", None), "classes", None)
        if reader_classes is None:
            reader_classes = light_samples(test)[0].classes if len(test) else ()
        gone = {d.lower() for d in drop}
        classes = tuple(sorted(c for c in reader_classes if c.lower() not in gone))
        if not classes:
            raise ConfigError(f"{self.dataset.name}: the {self.dataset.test_split} split has no classes")
        self.dataset = dataclasses.replace(self.dataset, classes=classes)

    def load(self, split: str) -> Sequence[Sample]:
        """The samples of `split`, decoded on access (the reader raises DatasetNotFoundError naming any
        missing file). Core readers give a LazySplit: memory independent of the split's size."""
        if split not in self._cache:
            self.check()
            if self.reader_fn is not None:
                reader, idx = self.reader_fn(split), None
            else:
                reader, idx = self._open(split)
            idx = list(range(len(reader))) if idx is None else idx
            if self.limit is not None and len(idx) > self.limit:  # evenly spaced: lists are class-sorted
                idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, self.limit).round()]
            lazy = hasattr(reader, "records") and hasattr(reader, "make_sample")
            self._cache[split] = LazySplit(reader, idx) if lazy else [reader[i] for i in idx]
        return self._cache[split]

    def fingerprint(self, split: str) -> str:
        """What identifies the split's images for the feature cache (root, reader, split, limit, size)."""
        sk = self.dataset.split_kwargs.get(split, {"split": split})
        kw = {**self.dataset.reader_kwargs, **self.reader_kwargs}
        return repr((str(self.root.resolve()), self.dataset.reader, split, sorted(map(str, sk.items())),
                     sorted(map(str, kw.items())), self.limit, self.val_fraction,
                     len(self.load(split))))  # fmt: skip

    def _open(self, split: str):
        """The core reader for `split` and, for derived splits, the record indices of that part."""
        from cxrvlp.core.data import get_dataset

        kw = {**self.dataset.reader_kwargs, **self.reader_kwargs}
        sk = dict(self.dataset.split_kwargs.get(split, {"split": split}))
        part, fallback = sk.pop("_part", None), sk.pop("_fallback_part", None)
        val_of = sk.pop("_val_of", None)  # ("train"|"val", official validation split or None)
        if val_of is not None:
            return self._open_val_of(split, kw, sk, *val_of)
        per_class = sk.pop("_per_class", None)  # a 5x200-style subset: n images with exactly one class
        if per_class is not None:
            return self._open_per_class(split, kw, sk, int(per_class))
        if "split_csv" in sk:  # relative to the root; absent -> the derived split
            p = Path(sk["split_csv"])
            p = p if p.is_absolute() else self.root / p
            if p.exists():
                sk["split_csv"] = p
            elif fallback is not None:
                sk.pop("split_csv")
                part = fallback
            else:
                raise DatasetNotFoundError(self.dataset.name, p, f"the {split} split file")
        reader = get_dataset(self.dataset.reader, self.root, **kw, **sk)
        if part is None:
            return reader, None
        self.derived[split] = (
            f"derived: the '{part}' share of a patient-level 70/15/15 split (hash of the patient id) of "
            f"what the reader returns; the dataset has no official {split} split here"
        )
        return reader, [i for i, r in enumerate(reader.records) if split_part(_group_id(r)) == part]

    def _open_per_class(self, split: str, kw: dict, sk: dict, n: int):
        """Up to n images per benchmark class whose labels name that class and no other of them (positive
        = 1.0), picked by a hash of the image path: the MedCLIP / BenchX 5x200 recipe over a split."""
        from cxrvlp.core.data import get_dataset

        reader = get_dataset(self.dataset.reader, self.root, **kw, **sk)
        cols = dsreg.class_index(reader.classes, self.dataset.classes, self.dataset.name)
        by_class: dict[int, list[tuple[str, int]]] = {}
        for i, r in enumerate(reader.records):
            if r.labels is None:
                continue
            pos = np.flatnonzero(np.asarray(r.labels, np.float32)[cols] == 1.0)
            if len(pos) == 1:
                h = hashlib.sha256(str(r.image_path).encode()).hexdigest()
                by_class.setdefault(int(pos[0]), []).append((h, i))
        keep = sorted(i for c in by_class.values() for _, i in sorted(c)[:n])
        self.derived[split] = (
            f"derived: up to {n} images per class from the official '{sk.get('split')}' split whose labels "
            f"are positive for exactly one of {list(self.dataset.classes)} (lowest SHA-256 of the image "
            "path); "
            f"counts {[len(by_class.get(c, [])[:n]) for c in range(len(cols))]}"
        )
        return reader, keep

    def _open_val_of(self, split: str, kw: dict, sk: dict, part: str, official: str | None):
        """`part` of the training records under a patient-level val_fraction split, unless `official`
        (the dataset's own validation split) exists, in which case train and val are read as released."""
        from cxrvlp.core.data import get_dataset

        if official is not None:
            try:
                official_val = get_dataset(self.dataset.reader, self.root, **kw, split=official)
            except DatasetNotFoundError:
                official_val = None
            if official_val is not None:
                return (
                    official_val if part == "val" else get_dataset(self.dataset.reader, self.root, **kw, **sk)
                ), None
        reader = get_dataset(self.dataset.reader, self.root, **kw, **sk)
        f = float(self.val_fraction)
        self.derived[split] = (
            f"derived: {'held-out' if part == 'val' else 'remaining'} {f:.0%} / {1 - f:.0%} patient-level "
            f"share of the official '{sk.get('split', 'train')}' split (hash of the patient id; the dataset "
            f"{'has no' if official is None else 'lacks its'} official validation split)"
        )
        keep = [i for i, r in enumerate(reader.records) if split_part(_group_id(r), (1 - f, 1.0)) == part]
        return reader, keep


def _group_id(rec: Any) -> str:
    return str(getattr(rec, "patient_id", None) or getattr(rec, "image_path", rec))


def split_part(group: str, fractions: tuple[float, float] = (0.7, 0.85)) -> str:
    """Deterministic patient-level 70/15/15 assignment from a hash of the patient id (seed-free, stable)."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else "val" if u < fractions[1] else "test"


def is_synthetic_root(root: Path) -> bool:
    """A root written by `cxrvlp.core.data.synthetic` carries a marker file."""
    return any((root / m).exists() for m in SYNTHETIC_MARKERS)


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """["name=value", ...] -> dict, with a clear error on a malformed pair."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"{what}: expected NAME=VALUE, got '{p}'")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_catalog(path: str | Path) -> dict[str, dict[str, Any]]:
    """catalog.yaml `{datasets: {name: root | {root, synthetic, limit, reader_kwargs}}}` -> dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"catalog '{p}' does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    entries = raw.get("datasets", raw)
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{p}: expected a mapping of dataset name -> root")
    out = {}
    for name, v in entries.items():
        v = {"root": v} if isinstance(v, str) else dict(v)
        if "root" not in v:
            raise ConfigError(f"{p}: dataset '{name}' has no 'root'")
        root = Path(v["root"])
        v["root"] = root if root.is_absolute() else (p.parent / root)
        out[name] = v
    return out


def data_sources(
    names: Sequence[str], roots: Mapping[str, Any], limit: int | None = None, synthetic: bool | None = None
) -> dict[str, DataSource]:
    """Build DataSources for the requested datasets; unknown names raise KeyError listing the registry."""
    out = {}
    for n in names:
        ds = dsreg.get(n)
        entry = roots.get(n) or roots.get(ds.reader)
        if entry is None:
            continue
        entry = entry if isinstance(entry, Mapping) else {"root": entry}
        root = Path(entry["root"])
        syn = entry.get("synthetic", synthetic if synthetic is not None else is_synthetic_root(root))
        out[n] = DataSource(
            ds,
            root,
            bool(syn),
            entry.get("limit", limit),
            dict(entry.get("reader_kwargs", {})),
            val_fraction=float(entry.get("val_fraction", 0.15)),
        )
    return out


@dataclass
class MethodSpec:
    """A method to benchmark: how to get its adapter, from which checkpoint, or why it is skipped."""

    name: str
    load: Callable[[], ZeroShotAdapter] | None
    source: str  # "ours: <dir>", "official: <source>", "test double"
    checkpoint_sha256: str | None = None
    skip_reason: str | None = None


def method_status(name: str) -> tuple[Any | None, str | None]:
    """(its MethodSpec, None) for an implemented method, else (None, why it is skipped)."""
    from cxrvlp.core.registry import get_method, installed_methods

    if name not in installed_methods():
        import importlib.util

        try:
            present = importlib.util.find_spec(f"cxrvlp.{name}") is not None
        except ModuleNotFoundError:
            present = False
        if present:  # the distribution is installed but registers no method yet (an empty package)
            return None, "skipped: not implemented yet"
        return None, "skipped: not installed"
    from cxrvlp.core.method import MethodContractError

    try:
        spec = get_method(name)
    except MethodContractError as e:  # an installed package that does not (yet) fulfil the contract
        return None, f"skipped: not implemented yet ({e})"
    return spec, None


def resolve_methods(
    names: Sequence[str],
    checkpoints: Mapping[str, str],
    officials: Mapping[str, str],
    device: str | None = None,
) -> list[MethodSpec]:
    """MethodSpecs: our checkpoint dir (load_adapter) or an official source (load_official_adapter)."""
    specs = []
    for n in names:
        mod, why = method_status(n)
        if mod is None:
            specs.append(MethodSpec(n, None, "", skip_reason=why))
            continue
        if n in checkpoints:
            ck = Path(checkpoints[n])
            if not ck.exists():
                raise ConfigError(f"{n}: checkpoint '{ck}' does not exist")
            specs.append(
                MethodSpec(
                    n, lambda m=mod, c=ck: _call(m.load_adapter, c, device), f"ours: {ck}", sha256_dir(ck)
                )
            )
        elif n in officials:
            src = officials[n]
            sha = sha256_dir(src) if Path(src).exists() else None
            fn = getattr(mod, "load_official_adapter", None)
            if fn is None:
                specs.append(MethodSpec(n, None, "", skip_reason="skipped: no official importer"))
                continue
            specs.append(MethodSpec(n, lambda f=fn, s=src: _call(f, s, device), f"official: {src}", sha))
        else:
            specs.append(
                MethodSpec(n, None, "", skip_reason="skipped: no checkpoint given (--checkpoint/--official)")
            )
    return specs


def _call(fn: Callable, path: Any, device: str | None) -> ZeroShotAdapter:
    if "device" in inspect.signature(fn).parameters:
        return fn(path, device=device)
    return fn(path)
