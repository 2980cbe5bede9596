"""Data: operators and signals with known ground truth, and loaders for real data given a path.

``make_operator(kind, m, n, seed)`` draws the papers' sensing matrices; ``GENERATORS`` maps a
name to ``fn(n_samples, *, A=None, seed=0, **params) -> (A, Y, X)`` (A drawn when None), which
is what ``unrolled train CONFIG.toml`` uses for ``[data] generator = NAME``.
"""
from __future__ import annotations

import numpy as np

from .._validate import choice, positive_int
from .generators import gaussian_nonnegative, sparse_nonnegative

OPERATORS = ("uniform", "gaussian", "sphere")
GENERATORS: dict = {"xie2019": sparse_nonnegative, "sen2024": gaussian_nonnegative}


def make_operator(kind: str, m: int, n: int, seed: int = 0) -> np.ndarray:
    """An (m, n) matrix: ``uniform`` U[0,1] entries (xie2019 §3.1), ``gaussian`` N(0,1) entries
    (sen2024 §IV.A), ``sphere`` columns uniform on the unit sphere (Moreau talk; Chen et al. 2018)."""
    choice(kind, "operator kind", OPERATORS)
    m, n = positive_int(m, "m"), positive_int(n, "n")
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, (m, n))
    A = rng.standard_normal((m, n))
    return A / np.linalg.norm(A, axis=0, keepdims=True) if kind == "sphere" else A


__all__ = ["make_operator", "GENERATORS", "sparse_nonnegative", "gaussian_nonnegative"]
