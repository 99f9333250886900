"""Image cache and the `cxrvlp` CLI (prepare, master table, datasets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cxrvlp.core.cli import main
from cxrvlp.core.data import get_dataset
from cxrvlp.core.data.cache import load_cache_index, prepare_cache, resize_long_side
from cxrvlp.core.errors import DatasetNotFoundError

from .conftest import make_mimic, tiny_png


def test_resize_long_side():
    assert resize_long_side(np.zeros((300, 200), np.float32), 256).shape == (256, 170)
    assert resize_long_side(np.zeros((20, 30), np.float32), 256).shape == (20, 30)


def covidx_root(tmp_path, n=4):
    root = tmp_path / "covidx"
    (root / "test").mkdir(parents=True)
    lines = []
    for i in range(n):
        tiny_png(root / f"test/{i}.png", h=40, w=30, value=10 * i + 5)
        lines.append(f"p{i} {i}.png {'positive' if i % 2 else 'negative'} src")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cache_roundtrip_and_skips(tmp_path):
    root = covidx_root(tmp_path)
    (root / "test/3.png").write_bytes(b"garbage")
    ds = get_dataset("covidx", root, on_error="skip")
    rep = prepare_cache(ds, tmp_path / "cache", size=20)
    assert rep.written == 3 and len(rep.skipped) == 1 and "3.png" in rep.skipped[0][0]
    idx = load_cache_index(tmp_path / "cache", "covidx")
    assert idx["test/0.png"][1:] == (40, 30)
    cached = get_dataset("covidx", root, cache_dir=tmp_path / "cache", on_error="skip")
    a, b = ds[1].image, cached[1].image
    assert b.shape == (20, 15) and abs(float(a.mean()) - float(b.mean())) < 2 / 255
    again = prepare_cache(ds, tmp_path / "cache", size=20)
    assert again.written == 0 and again.reused == 3
    with pytest.raises(DatasetNotFoundError, match="cache index"):
        get_dataset("covidx", root, cache_dir=tmp_path / "nocache")


def test_cli_prepare_cache(tmp_path, capsys):
    root = covidx_root(tmp_path)
    rc = main(
        ["prepare", "covidx", "--root", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--quiet"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "4 written" in out and "img/s/core" in out
    assert len(pd.read_csv(tmp_path / "c/covidx/index.csv")) == 4
    rc = main(
        ["prepare", "covidx", "--root", str(tmp_path / "missing"), "--out", str(tmp_path), "--size", "8"]
    )
    assert rc == 1 and "covidx" in capsys.readouterr().err
    assert main(["datasets"]) == 0 and "MimicCxrDataset" in capsys.readouterr().out


def test_cli_master_table(tmp_path, capsys):
    root = make_mimic(tmp_path / "mimic")
    out = tmp_path / "tables"
    assert (
        main(["prepare", "mimic-cxr", "--root", str(root), "--out", str(out), "--master-table", "--quiet"])
        == 0
    )
    df = pd.read_csv(out / "mimic_master_mgca.csv")
    assert len(df) == 4 and "impression" in df.columns
    rc = main(
        ["prepare", "mimic-cxr", "--root", str(root), "--out", str(tmp_path / "mc"), "--size", "8", "--quiet"]
    )
    assert rc == 0 and len(pd.read_csv(tmp_path / "mc/mimic-cxr/index.csv")) == 5
