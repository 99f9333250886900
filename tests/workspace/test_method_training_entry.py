"""Every installed method's training entry point, through the contract: guards, 2 processes, bad images."""

from __future__ import annotations

import os
import re
from pathlib import Path

import method_helpers as mh
import pytest
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.registry import get_method, installed_methods

METHODS = sorted(installed_methods())
SMALL_RUN = ["epochs=1", "max_steps=1", "batch_size=4", "data.synthetic_patients=12", "progress_bar=false"]


def _paper_recipes(method: str) -> list[str]:
    return [r for r in get_method(method).recipes() if r not in ("tiny", "small")]


@pytest.mark.parametrize("method, recipe", [(m, r) for m in METHODS for r in _paper_recipes(m)])
def test_paper_recipe_without_data_root_stops_naming_the_key(method, recipe, tmp_path):
    spec = get_method(method)
    with pytest.raises(ConfigError, match=r"data\.root is not set.*data\.synthetic=true"):
        spec.train(spec.recipe(recipe), [f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("method", METHODS)
def test_two_process_torchrun_of_the_entry_point(method, tmp_path, torchrun):
    """`torchrun --nproc_per_node 2 -m cxrvlp.<m>.train tiny`: two ranks, one run folder, equal weights."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = torchrun(
        "-m", f"cxrvlp.{method}.train", "tiny", f"output_dir={out}",
        f"data.synthetic_dir={tmp_path / 'synth'}", *SMALL_RUN, timeout=900, env=env,
    )  # fmt: skip
    mh.check_two_rank_run(proc, out, tmp_path)


@pytest.mark.parametrize("method", METHODS)
def test_corrupt_image_skip_policy_trains_and_default_names_the_file(method, tmp_path):
    """One unreadable JPEG in the mirror: `data.on_error=skip` trains to the end and counts it; the default
    policy stops with the file named."""
    from cxrvlp.core.data import MimicCxrDataset
    from cxrvlp.core.data.pretraining import MimicSourceConfig, synthetic_mimic_root

    synth = tmp_path / "synth"
    root = synthetic_mimic_root(MimicSourceConfig(synthetic_dir=str(synth), synthetic_patients=12))
    recs = MimicCxrDataset(root, split="train", label_source=None, load_images=False).records
    bad = Path(recs[0].image_path)
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    spec = get_method(method)
    common = [f"data.synthetic_dir={synth}", "data.synthetic_patients=12", "epochs=1", "batch_size=4"]
    # no shuffle: dataset item 0 (built on the first train record) is in the first batch, never dropped
    common += ["progress_bar=false", "max_skipped_fraction=0.5", "shuffle=false"]
    run = spec.train(spec.recipe("tiny"), [f"output_dir={tmp_path / 'skip'}", "data.on_error=skip", *common])
    history = [__import__("json").loads(x) for x in (Path(run) / "history.jsonl").read_text().splitlines()]
    assert sum(row.get("skipped_samples", 0) for row in history) >= 1
    assert (Path(run) / "final" / "model.safetensors").is_file()
    with pytest.raises(Exception, match=re.escape(bad.name)):
        spec.train(spec.recipe("tiny"), [f"output_dir={tmp_path / 'raise'}", *common])
