"""cxrvlp.mgca: mgca."""
