"""Data: synthetic generators with known ground truth, and loaders for real data given a path."""
