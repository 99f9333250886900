"""cxrvlp.mavl: MAVL (Phan et al., CVPR 2024), faithful to its official implementation."""

from cxrvlp.mavl.model import Mavl, MavlModelConfig
from cxrvlp.mavl.official import load_official_checkpoint

__all__ = ["Mavl", "MavlModelConfig", "load_official_checkpoint"]
