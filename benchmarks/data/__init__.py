"""Datasets: readers for the published formats, download/caching, preprocessing and splits."""
