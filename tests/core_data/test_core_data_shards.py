"""The uint8 shard cache (core.data.shards), its reader integration and `cxrvlp bench-loader`."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from cxrvlp.core.cli import main
from cxrvlp.core.data import get_dataset
from cxrvlp.core.data.cache import prepare_cache, resize_long_side
from cxrvlp.core.data.imaging import read_image, to_uint8
from cxrvlp.core.data.pretraining import MimicSourceConfig, mimic_images
from cxrvlp.core.data.shards import (
    MANIFEST,
    MARKER,
    ShardCacheError,
    ShardImageDataset,
    normalize_uint8,
    open_shard_cache,
    prepare_shards,
)
from cxrvlp.core.data.transforms import to_tensor
from cxrvlp.core.errors import CorruptImageError

from .conftest import make_mimic

SHAPES = [(40, 30), (30, 50), (12, 9), (64, 64), (25, 20)]  # portrait, landscape, smaller than S, square


def covidx_noise(tmp_path, shapes=SHAPES):
    """A covidx test split of noisy images of several shapes (so that resizing changes every pixel)."""
    root = tmp_path / "covidx"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate(shapes):
        cv2.imwrite(str(root / f"test/{i}.png"), rng.integers(0, 256, (h, w), dtype=np.uint8))
        lines.append(f"p{i} {i}.png {'positive' if i % 2 else 'negative'} src")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_round_trip_index_and_pixel_rule(tmp_path):
    root = covidx_noise(tmp_path)
    ds = get_dataset("covidx", root)
    rep = prepare_shards(ds, tmp_path / "sh", size=20, shard_rows=2)
    assert rep.written == 5 and rep.shards == 3 and not rep.skipped  # 2 + 2 + 1 rows: a short last shard
    man = json.loads((rep.folder / MANIFEST).read_text())
    assert man["size"] == 20 and man["count"] == 5 and man["version"] == 1 and len(man["fingerprint"]) == 32
    assert [np.load(rep.folder / s["file"], mmap_mode="r").shape for s in man["shards"]] == [
        (2, 20, 20),
        (2, 20, 20),
        (1, 20, 20),
    ]
    assert not (rep.folder / MARKER).exists()
    cache = open_shard_cache(tmp_path / "sh", "covidx", size=20, source_root=root)
    assert len(cache) == 5 and "test/1.png" in cache and cache.get("test/nope.png") is None
    with pytest.raises(KeyError):
        cache.padded("test/nope.png")
    for i, (h, w) in enumerate(SHAPES):
        want = to_uint8(resize_long_side(read_image(root / f"test/{i}.png"), 20))  # the PNG cache's pixels
        got, orig = cache.get(f"test/{i}.png")
        assert orig == (h, w) and got.dtype == np.uint8 and np.array_equal(got, want)
        row = np.asarray(cache.padded(f"test/{i}.png"))
        top, left = (20 - want.shape[0]) // 2, (20 - want.shape[1]) // 2  # symmetric zero pad
        assert row.shape == (20, 20) and np.array_equal(
            row[top : top + want.shape[0], left:][:, : want.shape[1]], want
        )
        assert row.sum() == want.astype(np.int64).sum()  # nothing but zeros around the image


def test_reader_over_shards_equals_png_cache(tmp_path):
    root = covidx_noise(tmp_path)
    ds = get_dataset("covidx", root)
    prepare_cache(ds, tmp_path / "png", size=20)
    prepare_shards(ds, tmp_path / "sh", size=20)
    via_png = get_dataset("covidx", root, cache_dir=tmp_path / "png")
    via_sh = get_dataset("covidx", root, cache_dir=tmp_path / "sh")
    assert via_sh._shards is not None and via_png._shards is None
    for i in range(len(ds)):
        a, b = via_png[i], via_sh[i]
        assert a.image.dtype == b.image.dtype == np.float32 and np.array_equal(a.image, b.image)
    # the fixed-size batch path: uint8 rows -> normalised float, as to_tensor does per image
    x, idx = torch.utils.data.default_collate([ShardImageDataset(via_sh._shards)[i] for i in range(3)])
    assert x.shape == (3, 1, 20, 20) and x.dtype == torch.uint8 and idx.tolist() == [0, 1, 2]
    for norm in ("mean0.5-std0.5", "imagenet"):
        want = torch.stack([to_tensor(x[i, 0].numpy(), norm) for i in range(3)])
        torch.testing.assert_close(normalize_uint8(x, norm), want, rtol=0, atol=1e-6)


def test_mimic_pretraining_path_reads_shards(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    base = get_dataset("mimic-cxr", root, split=None, views=None, load_reports=False)
    prepare_cache(base, tmp_path / "png", size=8)
    prepare_shards(base, tmp_path / "sh", size=8)
    png = mimic_images(MimicSourceConfig(image_cache_dir=str(tmp_path / "png")), root, "train")
    sh = mimic_images(
        MimicSourceConfig(image_cache_dir=str(tmp_path / "sh"), image_cache_size=8), root, "train"
    )
    assert sh._shards is not None and len(sh) == len(png) == 2
    for i in range(len(sh)):
        assert sh[i].image.shape == (8, 6) and np.array_equal(sh[i].image, png[i].image)
    with pytest.raises(ShardCacheError, match="built at 8 px but 16 px"):
        mimic_images(
            MimicSourceConfig(image_cache_dir=str(tmp_path / "sh"), image_cache_size=16), root, "train"
        )


def test_corrupt_source_reported_and_skipped(tmp_path):
    root = covidx_noise(tmp_path)
    (root / "test/3.png").write_bytes(b"not a png")
    ds = get_dataset("covidx", root, on_error="skip")
    rep = prepare_shards(ds, tmp_path / "sh", size=20)
    assert rep.written == 4 and len(rep.skipped) == 1 and rep.skipped[0][0].endswith("3.png")
    man = json.loads((rep.folder / MANIFEST).read_text())
    assert man["count"] == 4 and man["skipped"][0]["path"].endswith("3.png")
    cache = open_shard_cache(tmp_path / "sh", "covidx", source_root=root)
    assert "test/3.png" not in cache and "test/4.png" in cache
    # not in the cache: the reader falls back to the original, which raises or is skipped per on_error
    strict = get_dataset("covidx", root, cache_dir=tmp_path / "sh")
    with pytest.raises(CorruptImageError, match="3.png"):
        strict[3]
    lenient = get_dataset("covidx", root, cache_dir=tmp_path / "sh", on_error="skip")
    assert np.array_equal(lenient[3].image, strict[4].image) and "3.png" in lenient.skipped[0][0]


def test_half_written_cache_is_refused(tmp_path, monkeypatch):
    root = covidx_noise(tmp_path)
    ds = get_dataset("covidx", root)
    prepare_shards(ds, tmp_path / "sh", size=20)  # a complete cache, then a rebuild that dies midway
    import cxrvlp.core.data.shards as shards

    calls = {"n": 0}
    real = shards.shard_row

    def dying(img, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(img, size)

    monkeypatch.setattr(shards, "shard_row", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(ds, tmp_path / "sh", size=20)
    monkeypatch.undo()
    assert (tmp_path / "sh/covidx" / MARKER).is_file() and not (tmp_path / "sh/covidx" / MANIFEST).exists()
    with pytest.raises(ShardCacheError, match="half-written"):
        get_dataset("covidx", root, cache_dir=tmp_path / "sh")  # never the old cache, never the PNG path
    prepare_shards(ds, tmp_path / "sh", size=20)
    assert len(open_shard_cache(tmp_path / "sh", "covidx")) == 5


def test_size_source_and_truncation_mismatches(tmp_path):
    root = covidx_noise(tmp_path)
    ds = get_dataset("covidx", root)
    rep = prepare_shards(ds, tmp_path / "sh", size=20)
    with pytest.raises(ShardCacheError, match="built at 20 px but 224 px"):
        open_shard_cache(tmp_path / "sh", "covidx", size=224)
    # another source: same file name and size, other pixels
    rng = np.random.default_rng(1)
    cv2.imwrite(str(root / "test/2.png"), rng.integers(0, 256, (12, 9), dtype=np.uint8))
    with pytest.raises(ShardCacheError, match=r"fingerprint does not match the source: .*2\.png has changed"):
        get_dataset("covidx", root, cache_dir=tmp_path / "sh")
    (root / "test/2.png").unlink()
    with pytest.raises(ShardCacheError, match=r"2\.png is missing"):
        open_shard_cache(tmp_path / "sh", "covidx", source_root=root)
    assert len(open_shard_cache(tmp_path / "sh", "covidx", source_root=root, verify=0)) == 5
    # an edited index no longer matches the manifest's fingerprint
    idx = rep.folder / "shards_index.csv"
    text = idx.read_text()
    idx.write_text(text.replace("test/0.png,0,0", "test/0.png,0,1", 1))
    with pytest.raises(ShardCacheError, match="fingerprint"):
        open_shard_cache(tmp_path / "sh", "covidx")
    idx.write_text(text)
    shard = rep.folder / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(ShardCacheError, match="truncated"):
        open_shard_cache(tmp_path / "sh", "covidx")


def test_cli_prepare_shards_and_bench_loader(tmp_path, capsys):
    from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr

    root = write_mimic_cxr(tmp_path / "mimic", n_patients=4, seed=0, image_size=96)
    rc = main(
        ["prepare", "mimic-cxr", "--root", str(root), "--out", str(tmp_path / "s"), "--size", "32"]
        + ["--format", "shards", "--quiet", "--bench", "5"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "shard(s) at 32x32 uint8" in out and "img/s/core" in out
    n = json.loads((tmp_path / "s/mimic-cxr" / MANIFEST).read_text())["count"]
    assert n >= 8
    rc = main(
        ["bench-loader", "mimic-cxr", "--root", str(root), "--out", str(tmp_path / "b"), "--size", "32"]
        + ["--batch", "4", "--preset-batch", "4", "--workers", "0", "1", "--sample", "6"]
        + ["--max-batches", "2", "--min-seconds", "0.01", "--quiet", "--json", str(tmp_path / "r.json")]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "| shards | 4 | 1 |" in out
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["images"] == n and res["size"] == 32 and res["sample"] == 6
    assert set(res["single_core_img_s"]) >= {"originals (decode + resize)", "png cache (decode)"}
    rates = list(res["single_core_img_s"].values()) + [r["samples_s"] for r in res["loader"]]
    assert len(res["loader"]) == 8 and all(math.isfinite(v) and v > 0 for v in rates)
    assert {r["workers"] for r in res["loader"]} == {0, 1} and isinstance(res["goal"]["met"], bool)
    assert (tmp_path / "b/png32/mimic-cxr/index.csv").is_file() and (
        tmp_path / "b/shards32/mimic-cxr"
    ).is_dir()
