"""Layers shared by several methods (decoder layers, pooling, trunks); each tested on its own."""

from cxrvlp.core.layers.decoder import DecoderLayer, TransformerDecoder

__all__ = ["DecoderLayer", "TransformerDecoder"]
