"""core.data.pretraining: the root guard, exact reads, whole-record substitution of unreadable images."""

from __future__ import annotations

import pytest
from cxrvlp.core.data.pretraining import MimicSourceConfig, load_with_substitute, resolve_mimic_root
from cxrvlp.core.errors import ConfigError, CorruptImageError


def test_root_guard_and_synthetic_only_by_name(tmp_path, caplog):
    with pytest.raises(ConfigError, match="data.root is not set"):
        resolve_mimic_root(MimicSourceConfig(), "m")
    assert resolve_mimic_root(MimicSourceConfig(root=str(tmp_path), synthetic=True), "m") == tmp_path
    cfg = MimicSourceConfig(synthetic=True, synthetic_dir=str(tmp_path / "s"), synthetic_patients=3)
    with caplog.at_level("WARNING"):
        root = resolve_mimic_root(cfg, "m")
    assert (root / "synthetic.json").is_file() and "SYNTHETIC DATA" in caplog.text


def test_substitution_takes_the_whole_next_record():
    items = {0: ("img0", "txt0"), 2: ("img2", "txt2"), 3: ("img3", "txt3")}

    def load(j):
        if j not in items:
            raise CorruptImageError(f"/x/{j}.jpg", "truncated")
        return items[j]

    assert load_with_substitute(0, 4, load, "skip") == (("img0", "txt0"), [])
    item, skipped = load_with_substitute(1, 4, load, "skip")
    assert item == ("img2", "txt2") and len(skipped) == 1 and "/x/1.jpg" in skipped[0]
    with pytest.raises(CorruptImageError, match="/x/1.jpg"):
        load_with_substitute(1, 4, load, "raise")
    with pytest.raises(CorruptImageError, match="no readable record"):
        load_with_substitute(0, 4, lambda j: load(9), "skip")
