"""Generative backbones (T5 encoder-decoder, decoder-only causal LMs) and decoding."""
