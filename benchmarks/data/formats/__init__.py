"""Readers, one module per published format; each returns a :class:`benchmarks.data.raw.RawData`."""
