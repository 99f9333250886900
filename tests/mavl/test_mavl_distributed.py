"""Two CPU processes (torchrun, gloo): MAVL's losses use the local batch only, as the official DDP run."""

from __future__ import annotations

from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("mavl_ddp_worker.py")


def test_mavl_ddp_per_rank_losses_equal_single_process_on_the_shard(tmp_path, ddp_checks):
    ddp_checks.losses(WORKER, tmp_path, differ="global_loss", rel=1e-3)


@pytest.mark.slow
def test_mavl_two_process_training_on_synthetic_mirror(tmp_path, ddp_checks):
    ddp_checks.training(WORKER, tmp_path, tokenizer=False)
