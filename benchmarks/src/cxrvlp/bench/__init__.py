"""cxrvlp.bench: the benchmark."""
