"""Two CPU processes (torchrun, gloo) per method: each rank's losses are those of its own shard alone and
the DDP gradient is the mean of the per-shard gradients, because no method's loss gathers anything across
processes except CXR-CLIP's (tests/cxrclip/test_cxrclip_loss.py checks its all-gather). Workers:
tests/<m>/<m>_ddp_worker.py.

- MGCA: ITA, CTA and the CPA Sinkhorn codes on the local batch, as the official DDP run.
- CARZero: each process scores its own B x B pairs, as the official (single-GPU) run.
- AFLoc: the official per-GPU DataParallel losses, nothing gathered.
- MAVL: presence, location and aspect-wise t2i terms on the local batch, as the official DDP run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# method -> (loss key whose two shards must differ, relative gap, tokenizer saved in final/)
CASES = {
    "mgca": ("ita_loss", 1e-3, True),
    "carzero": ("loss", 1e-4, True),
    "afloc": ("loss", 1e-3, True),
    "mavl": ("global_loss", 1e-3, False),
}


def _worker(method: str) -> Path:
    return TESTS / method / f"{method}_ddp_worker.py"


@pytest.mark.parametrize("method", sorted(CASES))
def test_ddp_per_rank_losses_equal_single_process_on_the_shard(method, tmp_path, ddp_checks):
    differ, rel, _ = CASES[method]
    ddp_checks.losses(_worker(method), tmp_path, differ=differ, rel=rel)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_process_training_on_synthetic_mirror(method, tmp_path, ddp_checks):
    ddp_checks.training(_worker(method), tmp_path, tokenizer=CASES[method][2])
