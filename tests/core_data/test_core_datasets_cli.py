"""`cxrvlp datasets` prints, for every reader, the files it expects under its root (issue 26)."""

from __future__ import annotations

from cxrvlp.core.cli import main
from cxrvlp.core.data import DATASETS


def test_every_reader_lists_the_files_it_expects(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split()[0]: b for b in out.strip().split("\n\n") if b.strip()}
    assert set(blocks) == set(DATASETS)
    for name, block in blocks.items():
        assert "expects:" in block and "<root>/" in block, f"{name} prints no expected files:\n{block}"
    assert "test_list.txt" in blocks["chestxray14"] and "train-rle.csv" in blocks["siim-acr"]


def test_one_reader_and_an_unknown_name(capsys):
    assert main(["datasets", "padchest"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("padchest") and "PADCHEST_chest_x_ray_images_labels_160K" in out
    assert main(["datasets", "no-such-set"]) == 2
    assert "no-such-set" in capsys.readouterr().err


def test_synthetic_mirror_of_exactly_n_test_images(tmp_path, capsys):
    """`cxrvlp synthetic --datasets chestxray14 --images N --image-size S --out DIR` (issue 26's command)."""
    from cxrvlp.core.data import get_dataset

    out = tmp_path / "d"
    args = ["synthetic", "--datasets", "chestxray14", "--images", "7", "--image-size", "32"]
    args += ["--out", str(out)]
    assert main(args) == 0
    root = out / "chestxray14"
    assert len((root / "test_list.txt").read_text().split()) == 7
    assert len(get_dataset("chestxray14", root, split="test")) == 7
    assert main([*args[:3], "chexpert", *args[3:]]) == 2  # --images is defined for chestxray14 alone
    assert "chestxray14 alone" in capsys.readouterr().err
