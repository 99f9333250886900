"""Issue 24: the benchmark's ground-truth mask never wraps a negative box coordinate into a Python index."""

from __future__ import annotations

import numpy as np
import pytest
from cxrvlp.bench.tasks.grounding import gt_mask
from cxrvlp.core.data.contract import Sample
from cxrvlp.core.errors import MalformedRecordError
from hypothesis import given, settings
from hypothesis import strategies as st


def _sample(boxes, size=64):
    return Sample(
        image=np.zeros((size, size), np.float32),
        image_path="img.png",
        dataset="d",
        classes=("Mass",),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        box_labels=["Mass"] * len(boxes),
    )


def test_negative_box_does_not_wrap():
    # x = y = -30, w = h = 28 on a 64 px image used to slice m[0:-2, 0:-2]: 94 % of the image
    with pytest.raises(MalformedRecordError, match=r"img.png: row 0: box .* outside the 64x64 image"):
        gt_mask(_sample([[-30, -30, -2, -2]]), "Mass")
    m = gt_mask(_sample([[-30, -30, 4, 6]]), "Mass")
    assert m.sum() == 4 * 6 and m[:6, :4].all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-100, 160, allow_nan=False)] * 4), min_size=1, max_size=3))
def test_gt_mask_is_the_clipped_union(boxes):
    try:
        m = gt_mask(_sample(boxes), "Mass")
    except MalformedRecordError as err:
        assert "img.png" in str(err)
        return
    want = np.zeros((64, 64), np.uint8)
    for x0, y0, x1, y1 in boxes:
        c0, c1 = int(np.floor(np.clip(x0, 0, 64))), int(np.ceil(np.clip(x1, 0, 64)))
        r0, r1 = int(np.floor(np.clip(y0, 0, 64))), int(np.ceil(np.clip(y1, 0, 64)))
        assert c1 > c0 and r1 > r0
        want[r0:r1, c0:c1] = 1
    np.testing.assert_array_equal(m, want)
