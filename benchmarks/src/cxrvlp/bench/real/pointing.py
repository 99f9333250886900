"""Box pointing game on manifest rows with boxes: a sanity figure for a fine-tuned model's localisation maps.

For each box, the box's own label ("Right Lung", "Atelectasis", ...) is the text query; a hit is the map's
maximum inside the box (ground truth sent through the adapter's preprocess, as the benchmark's grounding
task does). Chance = the mean fraction of the frame a box covers (the hit rate of a uniformly random point).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def rows_with_boxes(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Rows whose `boxes` cell holds at least one box."""
    return [r for r in rows if (r.get("boxes") or "").strip() not in ("", "[]")]


def pointing_game(
    adapter: Any, rows: Sequence[dict[str, str]], root: Path, n_boot: int, seed: int, batch_size: int = 32
) -> dict[str, Any] | None:
    """Hit rate over boxes with a 95 % bootstrap interval (over boxes) and the chance rate; None: no boxes."""
    from cxrvlp.bench.inference import map_images
    from cxrvlp.bench.real.manifest import manifest_samples
    from cxrvlp.bench.tasks.grounding import gt_mask, to_adapter_frame
    from cxrvlp.core.metrics.grounding import pointing_game as hits_of

    samples = manifest_samples(rows_with_boxes(rows), root, ())
    by_label: dict[str, list] = {}
    for s in samples:
        for lab in dict.fromkeys(s.box_labels):
            by_label.setdefault(lab, []).append(s)
    hits, cover, labels = [], [], []
    for lab, group in by_label.items():
        query = lab.replace("_", " ").lower()
        maps = map_images(
            adapter, group, lambda x, q=query: adapter.localize(x, [q])[:, 0], batch_size=batch_size
        )
        masks = np.stack([to_adapter_frame(adapter, gt_mask(s, lab)) for s in group])  # (N, S, S) bool
        hits += list(hits_of(maps, masks))
        cover += list(masks.reshape(len(masks), -1).mean(1))
        labels += [lab] * len(group)
    if not hits:
        return None
    h = np.asarray(hits, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = h[rng.integers(0, len(h), (n_boot, len(h)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "hit_rate": float(h.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "chance": float(np.mean(cover)),
        "n_boxes": len(h),
        "n_images": len(samples),
        "per_label": {lab: float(h[np.array(labels) == lab].mean()) for lab in by_label},
    }
