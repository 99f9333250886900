"""mavl's entry in the cxrvlp method registry: named model configs and the method hooks."""

from __future__ import annotations

from cxrvlp.core.registry import register_model
from cxrvlp.mavl.model import Mavl, MavlModelConfig

METHOD = "mavl"


def _build(base: dict, overrides: dict) -> Mavl:
    return Mavl(MavlModelConfig(**{**base, **overrides}))


@register_model("mavl-r50", method=METHOD, description="MAVL ResNet-50 (layer3) + 4-layer 675-query decoder (paper)")
def mavl_r50(**overrides) -> Mavl:
    """The paper's model (19.65 M parameters without the books)."""
    return _build({}, overrides)


@register_model(
    "mavl-tiny",
    method=METHOD,
    description="MAVL wiring on a tiny CNN (64 px), d_model 32, 2 decoder layers: demo/tests, NOT the paper",
    paper_config=False,
)
def mavl_tiny(**overrides) -> Mavl:
    base = dict(
        backbone="tiny-cnn", tiny_channels=32, image_size=64, d_model=32, num_layers=2, nhead=2,
        dim_feedforward=64, pool_heads=2, text_dim=32, text_encoder=None,
    )  # fmt: skip
    return _build(base, overrides)
