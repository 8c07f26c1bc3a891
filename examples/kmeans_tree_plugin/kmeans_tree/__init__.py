"""A genrec-bench plugin package: hierarchical k-means semantic ids (see scheme.py)."""
