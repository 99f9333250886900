"""One small set of synthetic mirrors shared by the writer and reader tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from cxrvlp.core.data.synthetic import write_all

MIRROR_SCALE = 0.1
MIRROR_SIZE = 64


@pytest.fixture(scope="session")
def synthetic_mirrors(tmp_path_factory) -> dict[str, Path]:
    """write_all(seed=0, scale=0.1, image_size=64) into a temporary folder, once per session."""
    return write_all(tmp_path_factory.mktemp("synthetic"), seed=0, scale=MIRROR_SCALE, image_size=MIRROR_SIZE)
