"""cxrvlp.core: datasets, encoders, losses, metrics, training helpers."""
