"""`write_all`: every synthetic mirror under one root, with a plain notice that the data are synthetic."""

from __future__ import annotations

from pathlib import Path

from cxrvlp.core.data.synthetic.chestxray14 import write_chestxray14
from cxrvlp.core.data.synthetic.chexpert import write_chexpert
from cxrvlp.core.data.synthetic.covidx import write_covidx
from cxrvlp.core.data.synthetic.files import SYNTHETIC_NOTICE, write_text
from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr
from cxrvlp.core.data.synthetic.openi import write_openi
from cxrvlp.core.data.synthetic.padchest import write_padchest
from cxrvlp.core.data.synthetic.rsna import write_rsna
from cxrvlp.core.data.synthetic.siim import write_siim

DATASET_NAMES: tuple[str, ...] = (
    "mimic-cxr",
    "chexpert",
    "chestxray14",
    "padchest",
    "openi",
    "rsna-pneumonia",
    "siim-acr",
    "covidx",
)
"""Folder names of the mirrors written by `write_all` (also the keys of its result)."""


def _n(value: int, scale: float, minimum: int = 4) -> int:
    return max(minimum, round(value * scale))


def write_all(
    root: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    image_size: int = 256,
    names: tuple[str, ...] | None = None,
) -> dict[str, Path]:
    """Write every synthetic mirror under root/<name>; returns {name: folder}.

    scale multiplies every default count (scale=0.1 gives a tiny smoke-test set); names restricts the
    datasets written. Also writes root/SYNTHETIC_README.txt saying plainly that the data are phantoms.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    todo = DATASET_NAMES if names is None else tuple(names)
    unknown = set(todo) - set(DATASET_NAMES)
    if unknown:
        raise KeyError(f"write_all: unknown dataset(s) {sorted(unknown)}; known: {DATASET_NAMES}")
    kw = {"seed": seed, "image_size": image_size}
    writers = {
        "mimic-cxr": lambda p: write_mimic_cxr(p, n_patients=_n(120, scale), **kw),
        "chexpert": lambda p: write_chexpert(
            p,
            n_train_patients=_n(150, scale),
            n_valid=_n(60, scale),
            n_test=_n(200, scale),
            n_per_class=_n(20, scale, 2),
            **kw,
        ),
        "chestxray14": lambda p: write_chestxray14(p, n_patients=_n(160, scale), **kw),
        "padchest": lambda p: write_padchest(p, n_studies=_n(110, scale), **kw),
        "openi": lambda p: write_openi(p, n_reports=_n(150, scale), **kw),
        "rsna-pneumonia": lambda p: write_rsna(p, n_images=_n(200, scale), **kw),
        "siim-acr": lambda p: write_siim(p, n_images=_n(200, scale), **kw),
        "covidx": lambda p: write_covidx(
            p, n_train=_n(160, scale), n_val=_n(50, scale), n_test=_n(100, scale), **kw
        ),
    }
    out: dict[str, Path] = {}
    for name in todo:
        out[name] = writers[name](root / name)
    readme = SYNTHETIC_NOTICE + (
        "\nWritten by cxrvlp.core.data.synthetic.write_all"
        f"(seed={seed}, scale={scale}, image_size={image_size}).\n"
        "Each folder mirrors one official dataset layout and holds a synthetic.json (seed, counts):\n"
        + "".join(f"  {n}/\n" for n in out)
    )
    write_text(root / "SYNTHETIC_README.txt", readme)
    return out
