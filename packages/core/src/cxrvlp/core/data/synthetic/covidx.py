"""COVIDx CXR mirror: train.txt / val.txt / test.txt ("patient_id filename class source") and images."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from cxrvlp.core.data.synthetic.cases import sample_case
from cxrvlp.core.data.synthetic.files import dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom


def _name(rng: np.random.Generator, source: str, k: int) -> tuple[str, str]:
    """(patient_id, filename) in the style of each COVIDx source."""
    if source == "rsna":
        u = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        return u, f"{u}.png"
    if source == "stonybrook":
        pid = f"A{int(rng.integers(100000, 999999))}"
        return (
            pid,
            f"{pid}-01-11-1901-NA-CHEST_AP_PORT-{int(rng.integers(10000, 99999))}-1.000000-AP-{k}-1-1.jpg",
        )
    pid = str(int(rng.integers(1, 5000)))
    return pid, f"{uuid.UUID(bytes=rng.bytes(16), version=4).hex[:8]}.jpg"


def write_covidx(
    root: str | Path,
    n_train: int = 160,
    n_val: int = 50,
    n_test: int = 100,
    seed: int = 0,
    image_size: int = 256,
) -> Path:
    """Write a COVIDx mirror under root; returns root.

    Positive (COVID-19) images show bilateral, peripheral lower-zone airspace opacities; negatives are
    normal or have other findings. About 45% positive; sources "rsna" (negatives, .png), "stonybrook"
    (positives, .jpg) and "cohen" (both). Train and val images go to train/ (the COVIDx CXR-2 val split is
    carved from the official train folder), test images to test/.
    """
    root = Path(root)
    rng = dataset_rng(seed, "covidx")
    counts: dict[str, int] = {}
    k = 0
    for split, n, folder in (("train", n_train, "train"), ("val", n_val, "train"), ("test", n_test, "test")):
        lines = []
        n_pos = 0
        for _ in range(n):
            k += 1
            positive = rng.random() < 0.45
            if positive:
                case = sample_case(rng, only=())
                case.findings["pneumonia"] = {"side": "bilateral", "zone": "lower", "severity": "moderate"}
                source = "stonybrook" if rng.random() < 0.8 else "cohen"
            else:
                case = sample_case(rng, only=("pleural_effusion", "cardiomegaly", "nodule", "atelectasis"))
                source = "rsna" if rng.random() < 0.9 else "cohen"
            pid, fname = _name(rng, source, k)
            img, _ = render_phantom(case.findings, rng, image_size, view=str(rng.choice(["AP", "PA"])))
            write_image(root / folder / fname, img)
            lines.append(f"{pid} {fname} {'positive' if positive else 'negative'} {source}\n")
            n_pos += positive
        write_text(root / f"{split}.txt", "".join(lines))
        counts[f"{split}_images"], counts[f"{split}_positive"] = n, n_pos
    write_meta(root, "covidx", seed, counts, image_size=image_size)
    return root
