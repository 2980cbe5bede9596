"""Data: synthetic generators with known ground truth, and loaders for real data given a path."""
from .generators import gaussian_nonnegative, sparse_nonnegative

__all__ = ["sparse_nonnegative", "gaussian_nonnegative"]
