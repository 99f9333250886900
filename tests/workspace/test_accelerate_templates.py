"""The `accelerate launch` templates (configs/accelerate/): they load; the CPU one trains with 2 ranks."""

from __future__ import annotations

import os
from pathlib import Path

import method_helpers as mh
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "configs" / "accelerate"


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.yaml")))
def test_template_is_a_valid_accelerate_config(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(TEMPLATES / name))
    assert str(cfg.compute_environment.value) == "LOCAL_MACHINE"
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1
    assert cfg.num_processes % cfg.num_machines == 0  # the same number of ranks on every machine
    # precision is the recipe's `mixed_precision` key, never the template's
    assert str(getattr(cfg.mixed_precision, "value", cfg.mixed_precision)) == "no"


def test_the_templates_named_in_the_readme_exist():
    names = {"cpu_2proc.yaml", "one_gpu.yaml", "multi_gpu.yaml", "multi_node.yaml", "slurm_multi_node.sh"}
    assert names <= {p.name for p in TEMPLATES.iterdir()}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(f"configs/accelerate/{n}" in readme for n in names)


def test_two_process_cpu_training_through_the_template(tmp_path, accelerate_launch):
    """`accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m cxrvlp.mgca.train tiny ...`:
    two ranks of one process group, one run folder, the same weights on both ranks afterwards."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = accelerate_launch(
        TEMPLATES / "cpu_2proc.yaml", "-m", "cxrvlp.mgca.train", "tiny", f"output_dir={out}",
        f"data.synthetic_dir={tmp_path / 'synth'}", "epochs=1", "max_steps=1", "batch_size=4",
        "data.synthetic_patients=12", "progress_bar=false", timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    mh.check_two_rank_run(proc, out, tmp_path)
