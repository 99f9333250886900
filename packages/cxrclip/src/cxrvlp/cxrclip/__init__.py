"""cxrvlp.cxrclip: cxrclip."""
