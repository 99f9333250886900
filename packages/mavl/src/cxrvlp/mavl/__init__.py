"""cxrvlp.mavl: mavl."""
