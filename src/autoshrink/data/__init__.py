"""Data sets: image classification data and deterministic proxy splits (text data for RNNs)."""
