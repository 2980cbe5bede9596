"""Synthetic sparse-coding data for the Lasso family (Moreau talk; Chen et al. 2018 §5).

Dictionaries are (m, n) with atoms as columns (signals have m entries, codes n). All
generators take a ``seed`` and return NumPy float64 arrays, like the rest of
``unrolled.data``; they draw from their own seeded torch generator, so a run is
reproducible and independent of torch's global RNG.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import as_batch, nonnegative_float, positive_int
from ..operators import as_operator


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def sphere_dictionary(m: int, n: int, *, seed: int = 0) -> np.ndarray:
    """D ∈ R^{m×n} with columns d_k i.i.d. uniform on the unit sphere S^{m−1} (Moreau talk,
    "Performances": D_k ~ U(S^{n−1})): Gaussian columns divided by their norms."""
    m, n = positive_int(m, "m"), positive_int(n, "n")
    D = torch.randn(m, n, generator=_gen(seed), dtype=torch.float64)
    return (D / D.norm(dim=0, keepdim=True)).numpy()


def gaussian_dictionary(m: int, n: int, *, normalize: bool = True, seed: int = 0) -> np.ndarray:
    """A ∈ R^{m×n} with i.i.d. N(0, 1/m) entries, columns scaled to unit norm when ``normalize``
    (Chen et al. 2018 §5: m = 250, n = 500)."""
    m, n = positive_int(m, "m"), positive_int(n, "n")
    A = torch.randn(m, n, generator=_gen(seed), dtype=torch.float64) / math.sqrt(m)
    if normalize:
        A = A / A.norm(dim=0, keepdim=True)
    return A.numpy()


def equiregularization(D, n_samples: int, *, seed: int = 0) -> np.ndarray:
    """Rows x = x̃/‖Dᵀx̃‖∞ with x̃ ~ N(0, I_m): points of B∞ = {x : ‖Dᵀx‖∞ = 1}, so that
    λ_max(x) = 1 for every sample and λ ∈ (0, 1) sets the sparsity (Moreau talk, "Interlude")."""
    op = as_operator(D, name="D")
    n_samples = positive_int(n_samples, "n_samples")
    Xt = torch.randn(n_samples, op.m, generator=_gen(seed), dtype=torch.float64)
    return scale_to_equiregularization(op, Xt)


def scale_to_equiregularization(D, Y) -> np.ndarray:
    """Scale every row y of ``Y`` (batch, m) to y/‖Dᵀy‖∞ (so that λ_max = 1); rows with Dᵀy = 0 are refused."""
    op = as_operator(D, name="D", dtype=torch.float64)
    Yt, _ = as_batch(Y, "Y", op.m, dtype=torch.float64, device=op.device)
    with torch.no_grad():
        lam_max = op.adjoint(Yt).abs().amax(1, keepdim=True)
    if (lam_max <= 0).any():
        raise ValueError("Y has a row orthogonal to every atom (Dᵀy = 0): it cannot be scaled to λ_max = 1")
    return (Yt / lam_max).cpu().numpy()


def bernoulli_gaussian(n_samples: int, n: int, p: float = 0.1, *, seed: int = 0) -> np.ndarray:
    """Codes z with z_i = b_i g_i, b_i ~ Bernoulli(p), g_i ~ N(0, 1) (Chen et al. 2018 §5, p = 0.1)."""
    n_samples, n = positive_int(n_samples, "n_samples"), positive_int(n, "n")
    p = nonnegative_float(p, "p")
    if p > 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    g = _gen(seed)
    mask = torch.rand(n_samples, n, generator=g, dtype=torch.float64) < p
    return (mask * torch.randn(n_samples, n, generator=g, dtype=torch.float64)).numpy()


def sparse_measurements(
    D, n_samples: int, *, p: float = 0.1, snr_db: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(Y, Z): Bernoulli(p)–Gaussian codes Z and measurements y = Dz + w, with white noise w at
    ``snr_db`` = 10 log10(E‖Dz‖²/E‖w‖²) (None: noiseless)  (Chen et al. 2018 §5: SNR 40 dB)."""
    op = as_operator(D, name="D", dtype=torch.float64, device="cpu")
    Z = torch.from_numpy(bernoulli_gaussian(n_samples, op.n, p, seed=seed))
    with torch.no_grad():
        Y = op.forward(Z)
    if snr_db is not None:
        snr = float(snr_db)
        noise = torch.randn(Y.shape, generator=_gen(seed + 7919), dtype=torch.float64)
        sig_power = Y.pow(2).mean()
        Y = Y + noise * torch.sqrt(sig_power / 10 ** (snr / 10))
    return Y.numpy(), Z.numpy()


__all__ = [
    "bernoulli_gaussian",
    "equiregularization",
    "gaussian_dictionary",
    "scale_to_equiregularization",
    "sparse_measurements",
    "sphere_dictionary",
]
