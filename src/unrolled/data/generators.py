"""Synthetic NNLS data with known ground truth, as in xie2019 §3.1 and sen2024 §IV-A.

Each generator returns ``(A, Y, X)`` NumPy float64 arrays with signals as rows: ``X`` (N, n) the
non-negative ground truth, ``Y = X Aᵀ`` (N, m) the noiseless measurements. Pass the ``A``
of a training set to draw a test set for the same operator. Seeded: the same ``seed``
gives the same arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validate import nonnegative_float, positive_int
from ..operators import Operator


def as_matrix(A, name: str = "A") -> np.ndarray:
    """``A`` (array, tensor or operator) as a finite, non-empty 2-D NumPy float64 matrix."""
    if isinstance(A, Operator):
        A = A.matrix()
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().numpy()
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or 0 in A.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {A.shape}")
    if not np.isfinite(A).all():
        raise ValueError(f"{name} contains NaN or inf")
    return A


def _operator(A, draw):
    return draw() if A is None else as_matrix(A)


def sparse_nonnegative(
    n_samples: int, *, m: int = 10, n: int = 20, sparsities=(1, 2, 3), high: float = 100.0, A=None, seed: int = 0
):
    """xie2019 §3.1: s ~ U{sparsities}, support uniform, values i.i.d. U[0, high]; A i.i.d. U[0, 1].

    Defaults are the paper's (A ∈ R^{10×20}, s ∈ {1, 2, 3}, values U[0, 100]).
    Returns ``(A, Y, X)`` with ``Y = X Aᵀ``.
    """
    n_samples = positive_int(n_samples, "n_samples")
    m, n = positive_int(m, "m"), positive_int(n, "n")
    high = nonnegative_float(high, "high", strict=True)
    sparsities = [positive_int(int(s), "sparsities") for s in np.atleast_1d(sparsities)]
    if max(sparsities) > n:
        raise ValueError(f"sparsities must be <= n={n}, got {sparsities}")
    rng = np.random.default_rng(seed)
    A = _operator(A, lambda: rng.uniform(0.0, 1.0, size=(m, n)))
    m, n = A.shape
    s = rng.choice(sparsities, size=n_samples)
    # support: the first s entries of a random permutation of each row
    ranks = np.argsort(rng.random((n_samples, n)), axis=1)
    mask = np.zeros((n_samples, n), dtype=bool)
    np.put_along_axis(mask, ranks, np.arange(n)[None, :] < s[:, None], axis=1)
    X = np.where(mask, rng.uniform(0.0, high, size=(n_samples, n)), 0.0)
    Y = X @ A.T
    return A, Y, X


def gaussian_nonnegative(n_samples: int, *, m: int = 400, n: int = 1200, density: float = 0.5, A=None, seed: int = 0):
    """sen2024 §IV-A: F ∈ R^{m×n} i.i.d. N(0, 1) (400 × 1200), x = F s with s ≥ 0.

    The paper's signals are "non-negative vectors with 0 mean and 1 variance", which no
    non-negative vector can be; we read it as N(0, 1) entries projected on the orthant,
    s = ReLU(z), z ~ N(0, 1) (so half the entries are zero: ``density=0.5``). Another
    ``density`` keeps each entry with that probability and draws |z| for it.
    Returns ``(F, X_meas, S)`` as ``(A, Y, X)`` with ``Y = X Aᵀ``.
    """
    n_samples = positive_int(n_samples, "n_samples")
    m, n = positive_int(m, "m"), positive_int(n, "n")
    density = nonnegative_float(density, "density", strict=True)
    if density > 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    rng = np.random.default_rng(seed)
    A = _operator(A, lambda: rng.standard_normal((m, n)))
    m, n = A.shape
    Z = np.abs(rng.standard_normal((n_samples, n)))
    X = np.where(rng.random((n_samples, n)) < density, Z, 0.0)
    Y = X @ A.T
    return A, Y, X


__all__ = ["as_matrix", "gaussian_nonnegative", "sparse_nonnegative"]
