"""cxrvlp.carzero: carzero."""
