"""AFLoc's entry in the cxrvlp registry (filled in below)."""

from __future__ import annotations

from cxrvlp.afloc.config import AFLocConfig

CONFIGS: dict[str, AFLocConfig] = {"afloc-r50": AFLocConfig()}
