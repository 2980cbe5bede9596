"""Data: operators and signals with known ground truth, and loaders for real data given a path.

Every generator, loader and ``make_operator`` returns NumPy float64 arrays (labels: NumPy
int64; ``read_idx``: the file's own dtype; the image-set loaders of :mod:`.images`: float32
images (N, C, H, W)), never torch tensors: one kind, which the solvers
and networks accept as they are (``torch.as_tensor`` turns one into a tensor without a copy).
``make_operator(kind, m, n, seed)`` draws the papers' sensing matrices; ``GENERATORS`` maps a
name to ``fn(n_samples, *, A=None, seed=0, **params) -> (A, Y, X)`` (A drawn when None), which
is what ``unrolled train CONFIG.toml`` uses for ``[data] generator = NAME``.
"""

from __future__ import annotations

import numpy as np

from .._validate import choice, positive_int
from .generators import as_matrix, gaussian_nonnegative, sparse_nonnegative
from .lasso import equiregularization, gaussian_dictionary, sparse_measurements, sphere_dictionary
from .mlsc import mlsc_dictionaries, mlsc_signals

OPERATORS = ("uniform", "gaussian", "sphere")


def make_operator(kind: str, m: int, n: int, seed: int = 0) -> np.ndarray:
    """An (m, n) matrix: ``uniform`` U[0,1] entries (xie2019 §3.1), ``gaussian`` N(0,1) entries
    (sen2024 §IV.A), ``sphere`` columns uniform on the unit sphere (Moreau talk; Chen et al. 2018)."""
    choice(kind, "operator kind", OPERATORS)
    m, n = positive_int(m, "m"), positive_int(n, "n")
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, (m, n))
    if kind == "sphere":
        return sphere_dictionary(m, n, seed=seed)
    return rng.standard_normal((m, n))


def equiregularized_signals(n_samples: int, *, A=None, m: int = 64, n: int = 256, seed: int = 0):
    """(D, Y, None): D with columns on the sphere (unless given), Y on the equiregularization set
    (λ_max = 1; Moreau talk). No ground truth: train these unsupervised or semi-supervised."""
    D = sphere_dictionary(m, n, seed=seed) if A is None else as_matrix(A)
    return D, equiregularization(D, n_samples, seed=seed + 1), None


def bernoulli_gaussian_signals(
    n_samples: int, *, A=None, m: int = 250, n: int = 500, p: float = 0.1, snr_db: float | None = None, seed: int = 0
):
    """(A, Y, Z): Chen et al. 2018's setting, normalised Gaussian A, Bernoulli(p)–Gaussian codes Z,
    y = Az (+ noise at ``snr_db``)."""
    A = gaussian_dictionary(m, n, seed=seed) if A is None else as_matrix(A)
    Y, Z = sparse_measurements(A, n_samples, p=p, snr_db=snr_db, seed=seed + 1)
    return A, Y, Z


GENERATORS: dict = {
    "xie2019": sparse_nonnegative,
    "sen2024": gaussian_nonnegative,
    "equiregularization": equiregularized_signals,
    "bernoulli-gaussian": bernoulli_gaussian_signals,
}


__all__ = [
    "GENERATORS",
    "bernoulli_gaussian_signals",
    "equiregularization",
    "equiregularized_signals",
    "gaussian_dictionary",
    "gaussian_nonnegative",
    "make_operator",
    "mlsc_dictionaries",
    "mlsc_signals",
    "sparse_measurements",
    "sparse_nonnegative",
    "sphere_dictionary",
]
