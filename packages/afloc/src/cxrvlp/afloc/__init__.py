"""cxrvlp.afloc: AFLoc (annotation-free pathology localisation), faithful to the official implementation."""

from cxrvlp.afloc.config import AFLocConfig
from cxrvlp.afloc.model import AFLoc
from cxrvlp.afloc.official import load_official_checkpoint

__all__ = ["AFLoc", "AFLocConfig", "load_official_checkpoint"]
