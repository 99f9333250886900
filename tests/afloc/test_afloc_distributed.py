"""Two CPU processes (torchrun, gloo): AFLoc's losses use the local batch only (official DataParallel per-GPU
losses, nothing gathered); the DDP gradient is the mean of the per-shard gradients."""

from __future__ import annotations

from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("afloc_ddp_worker.py")


def test_afloc_ddp_per_rank_losses_equal_single_process_on_the_shard(tmp_path, ddp_checks):
    ddp_checks.losses(WORKER, tmp_path, differ="loss", rel=1e-3)


@pytest.mark.slow
def test_afloc_two_process_training_on_synthetic_mirror(tmp_path, ddp_checks):
    ddp_checks.training(WORKER, tmp_path, tokenizer=True)
