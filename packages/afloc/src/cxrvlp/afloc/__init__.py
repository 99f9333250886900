"""cxrvlp.afloc: afloc."""
