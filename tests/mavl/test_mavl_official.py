"""Official checkpoint import: the paper-size TSV key set loads strictly; bad keys are all listed."""

from __future__ import annotations

import json

import pytest
import torch
from cxrvlp.core.errors import CheckpointError, CheckpointMismatchError
from cxrvlp.mavl.official import load_official_checkpoint
from cxrvlp.mavl.registry import mavl_r50, mavl_tiny


def _read_tsv(path) -> dict[str, list[int]]:
    rows = path.read_text().strip().splitlines()[1:]
    return {k: json.loads(s) for k, s, *_ in (r.split("\t") for r in rows)}


@pytest.fixture(scope="module")
def paper():
    return mavl_r50()


def _like(shapes):
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.full(s, 0.25)
        for k, s in shapes.items()
    }


def test_paper_size_key_set_loads_strictly(shared_dir, paper):
    shapes = _read_tsv(shared_dir / "specs" / "mavl_state_dict.tsv")
    assert len(shapes) == 353
    sd = {"module." + k: v for k, v in _like(shapes).items()}  # the release carries DDP's prefix
    books = {"ana_book": torch.ones(51, 768), "concept_book": torch.ones(675, 768)}
    model = load_official_checkpoint({"model": sd, "epoch": 46}, model=paper, books=books)
    assert all(torch.all(p == 0.25) for p in model.parameters())
    assert torch.all(model.concept_book == 1) and torch.all(model.ana_book == 1)
    n = sum(p.numel() for p in model.parameters())
    assert n == 19_654_220  # the official count (perf_official README)


def test_without_temp_and_books(shared_dir, paper):
    shapes = _read_tsv(shared_dir / "specs" / "mavl_state_dict.tsv")
    shapes.pop("temp")  # the zero-shot loaders drop it
    load_official_checkpoint(_like(shapes), model=paper)


def test_every_bad_key_is_listed(shared_dir, paper):
    sd = _like(_read_tsv(shared_dir / "specs" / "mavl_state_dict.tsv"))
    sd.pop("decoder.layers.3.norm2.bias")
    sd["cl_fc.weight"] = torch.zeros(768, 256)  # a MedKLIP key
    sd["classifier.weight"] = torch.zeros(2, 256)
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(sd, model=paper)
    err = info.value
    assert err.missing == ["decoder.layers.3.norm2.bias"]
    assert err.unexpected == ["cl_fc.weight"]
    assert [m[0] for m in err.mismatched] == ["classifier.weight"]


def test_release_file_round_trip(tmp_path):
    torch.manual_seed(0)
    src = mavl_tiny()
    sd = {"module." + k: v for k, v in src.state_dict().items() if not k.endswith("_book")}
    path = tmp_path / "checkpoint_full_46.pth"
    torch.save(
        {"model": sd, "optimizer": {}, "lr_scheduler": {}, "config": {"d_model": 32}, "epoch": 46}, path
    )
    books = {"ana_book": src.ana_book + 1, "concept_book": src.concept_book + 2}
    dst = load_official_checkpoint(path, model=mavl_tiny(), books=books)
    for k, v in src.state_dict().items():
        want = books[k] if k in books else v
        assert torch.equal(dst.state_dict()[k], want), k


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "config": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_official_checkpoint(path, model=mavl_tiny())
