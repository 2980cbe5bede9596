"""Two-layer multi-layer sparse coding (ML-SC) signals with exact sparsities (sulam2018 §2.3, after [1]).

x = D₁γ₁ = D₁D₂γ₂ with ‖γ₂‖₀ = s₂ and ‖γ₁‖₀ = s₁ exactly. A random γ₂ with s₂ non-zeros
would give a dense γ₁ = D₂γ₂; following Aberdam, Sulam & Elad ("Multi layer sparse coding:
the holistic way", [1] in sulam2018), the support S₁ of γ₁ is chosen first and γ₂ is drawn,
on a random support S₂, from the null space of the rows of D₂ *outside* S₁:

    D₂[S₁ᶜ, S₂] γ₂[S₂] = 0   ⇒   γ₁ = D₂γ₂ vanishes off S₁,

which needs s₂ > m₁ − s₁ (null space of dimension s₂ − (m₁ − s₁) for generic D₂). The
coefficient vector is a Gaussian combination of a null-space basis, so (with probability
one) every entry on S₂ and every entry of γ₁ on S₁ is non-zero; draws whose smallest entry
is below 1e-6 of the largest are redrawn. y = x + w with i.i.d. Gaussian w at the given SNR
(dB, per signal: ‖x‖²/(n σ²) = 10^{SNR/10}).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .generators import as_matrix


class MLSCSignals(NamedTuple):
    y: np.ndarray  # (N, n) noisy measurements
    x: np.ndarray  # (N, n) clean signals D₁γ₁
    gamma1: np.ndarray  # (N, m1), ‖·‖₀ = s1
    gamma2: np.ndarray  # (N, m2), ‖·‖₀ = s2, unit ℓ2 norm
    sigma: np.ndarray  # (N,) noise standard deviation per signal


def mlsc_dictionaries(n: int = 50, m1: int = 70, m2: int = 60, seed: int = 0):
    """Gaussian D₁ (n × m1), D₂ (m1 × m2) with unit-norm columns (sulam2018 §2.3 sizes by default)."""
    for name, v in (("n", n), ("m1", m1), ("m2", m2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rng = np.random.default_rng(seed)
    D1 = rng.standard_normal((n, m1))
    D2 = rng.standard_normal((m1, m2))
    return D1 / np.linalg.norm(D1, axis=0), D2 / np.linalg.norm(D2, axis=0)


def mlsc_signals(
    D1, D2, n_signals: int, s1: int = 42, s2: int = 30, snr_db: float | None = 10.0, seed: int = 0, max_tries: int = 100
) -> MLSCSignals:
    """Draw ``n_signals`` two-layer ML-SC signals with ‖γ₁‖₀ = s1, ‖γ₂‖₀ = s2 (see module doc).

    ``snr_db=None`` gives noiseless y = x. Returns :class:`MLSCSignals` of NumPy float64 arrays.
    """
    D1, D2 = as_matrix(D1, "D1"), as_matrix(D2, "D2")
    n, m1 = D1.shape
    if D2.shape[0] != m1:
        raise ValueError(f"D1 has {m1} columns but D2 has {D2.shape[0]} rows")
    m2 = D2.shape[1]
    if isinstance(n_signals, bool) or not isinstance(n_signals, (int, np.integer)) or n_signals <= 0:
        raise ValueError(f"n_signals must be a positive integer, got {n_signals!r}")
    if not 0 < s1 <= m1:
        raise ValueError(f"s1 must be in [1, {m1}], got {s1!r}")
    if not 0 < s2 <= m2:
        raise ValueError(f"s2 must be in [1, {m2}], got {s2!r}")
    if s2 <= m1 - s1:
        raise ValueError(f"need s2 > m1 - s1 (= {m1 - s1}) for γ₂ to exist with ‖D₂γ₂‖₀ = s1; got s2 = {s2}")
    if snr_db is not None and not np.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be finite or None, got {snr_db!r}")
    rng = np.random.default_rng(seed)
    G1, G2 = np.zeros((n_signals, m1)), np.zeros((n_signals, m2))
    for k in range(n_signals):
        for _ in range(max_tries):
            S1 = rng.choice(m1, s1, replace=False)
            S2 = rng.choice(m2, s2, replace=False)
            off = np.setdiff1d(np.arange(m1), S1)
            B = D2[np.ix_(off, S2)]  # (m1 − s1) × s2
            _, sv, Vt = np.linalg.svd(B)
            rank = int((sv > sv[0] * 1e-10).sum()) if off.size else 0
            N = Vt[rank:].T  # null-space basis, s2 × (s2 − rank)
            if N.shape[1] == 0:
                continue
            coef = N @ rng.standard_normal(N.shape[1])
            g2 = np.zeros(m2)
            g2[S2] = coef
            g2 /= np.linalg.norm(g2)
            g1 = D2 @ g2
            g1[off] = 0.0  # exact zeros (they are ~1e-16)
            if np.abs(g2[S2]).min() > 1e-6 * np.abs(g2).max() and np.abs(g1[S1]).min() > 1e-6 * np.abs(g1).max():
                G1[k], G2[k] = g1, g2
                break
        else:  # pragma: no cover - generic matrices never get here
            raise RuntimeError("could not draw an ML-SC signal with exact sparsities; is D2 degenerate?")
    X = G1 @ D1.T
    if snr_db is None:
        sigma = np.zeros(n_signals)
    else:
        sigma = np.linalg.norm(X, axis=1) / np.sqrt(n * 10 ** (float(snr_db) / 10))
    Y = X + sigma[:, None] * rng.standard_normal(X.shape)
    return MLSCSignals(Y, X, G1, G2, sigma)


__all__ = ["MLSCSignals", "mlsc_dictionaries", "mlsc_signals"]
