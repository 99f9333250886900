"""Phantoms: deterministic, in range, and every finding visibly changes the pixels inside its own mask."""

from __future__ import annotations

import numpy as np
import pytest
from cxrvlp.core.data.synthetic import FINDINGS, render_phantom
from cxrvlp.core.data.synthetic.cases import random_params


def test_render_is_deterministic_and_seed_dependent():
    f = {"pleural_effusion": {"side": "left"}, "nodule": {"side": "right", "zone": "upper"}}
    a, ma = render_phantom(f, np.random.default_rng(3), 96)
    b, mb = render_phantom(f, np.random.default_rng(3), 96)
    c, _ = render_phantom(f, np.random.default_rng(4), 96)
    assert np.array_equal(a, b)
    assert ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", [64, 200, 256])
@pytest.mark.parametrize("view", ["PA", "AP", "LATERAL"])
def test_image_and_mask_types(size, view):
    img, masks = render_phantom(
        {"cardiomegaly": {}, "pleural_effusion": {}}, np.random.default_rng(0), size, view
    )
    assert img.shape == (size, size) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05
    assert set(masks) == {"cardiomegaly", "pleural_effusion"}
    for m in masks.values():
        assert m.shape == (size, size) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        assert m.any()


# sign: +1 the finding is denser (brighter) than what it replaces, -1 more lucent (darker)
@pytest.mark.parametrize(
    "finding, sign",
    [(f, -1 if f == "pneumothorax" else 1) for f in FINDINGS],
)
def test_finding_is_visible_inside_its_mask(finding, sign):
    size = 128
    for seed in range(3):
        params = random_params(finding, np.random.default_rng(100 + seed))
        # same generator state: identical anatomy and pose, only the finding is added
        base, base_masks = render_phantom({}, np.random.default_rng(seed), size)
        img, masks = render_phantom({finding: params}, np.random.default_rng(seed), size)
        assert base_masks == {}
        m = masks[finding].astype(bool)
        assert m.sum() >= 10, f"{finding}: empty mask"
        diff = float(img[m].mean() - base[m].mean())
        assert sign * diff > 0.05, f"{finding} (seed {seed}): mean change inside the mask {diff:+.3f}"


def test_sides_follow_radiological_convention():
    # the patient's left is on the image's right in a frontal view
    _, left = render_phantom({"pleural_effusion": {"side": "left"}}, np.random.default_rng(0), 128)
    _, right = render_phantom({"pleural_effusion": {"side": "right"}}, np.random.default_rng(0), 128)
    cols_left = np.nonzero(left["pleural_effusion"])[1]
    cols_right = np.nonzero(right["pleural_effusion"])[1]
    assert cols_left.mean() > 64 > cols_right.mean()


def test_cardiomegaly_enlarges_the_heart():
    widths = []
    for sev in ("mild", "severe"):
        _, m = render_phantom({"cardiomegaly": {"severity": sev}}, np.random.default_rng(5), 128)
        cols = np.nonzero(m["cardiomegaly"].any(axis=0))[0]
        widths.append(cols.max() - cols.min())
    assert widths[1] > widths[0] > 0.25 * 128  # cardiothoracic ratio well above normal


def test_unknown_finding_is_rejected():
    with pytest.raises(KeyError, match="unknown finding"):
        render_phantom({"fracture": {}}, np.random.default_rng(0), 64)
