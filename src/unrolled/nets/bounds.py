"""The network-size bound of xie2019 Theorem 2.1 for LPGD / LAPGD.

Theorem 2.1 (Xie, Wang, Pei & Tang, ICASSP 2019): let F* be the optimal value of
min ½‖Ax − y‖² s.t. x ≥ 0 (eq. 1.1). For every ε > 0 there is an LPGD (or LAPGD) network
g(y, W) with non-negative outputs, O(log_{(β−θ)/β}(ε/C)) layers and
O(n·log_{(β−θ)/β}(ε/C) + m) neurons such that ½‖A g(y, W) − y‖² ≤ F* + ε (eq. 2.1), where
β = ‖A‖₂², C = ‖y‖²/2 and θ > 0 depends on A only. The network is PGD itself
(W = I − AᵀA/β, S = Aᵀ/β): the proximal-PL inequality with constant θ gives PGD's linear
rate F(x_k) − F* ≤ (1 − θ/β)^k (F(x₀) − F*) (eq. 2.3, Karimi, Nutini & Schmidt 2016 Thm 5),
and from x₀ = 0, F(x₀) − F* ≤ C, so k ≥ log(ε/C) / log(1 − θ/β) iterations suffice (eq. 2.5):
⌈k⌉ + 1 layers (input, ⌈k⌉ hidden/output) and n⌈k⌉ + m neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from .._validate import choice, nonnegative_float, positive_int, to_tensor
from ..operators import as_operator

NETS = ("lpgd", "lapgd")
THETAS = ("hoffman", "sampled")


@dataclass(frozen=True)
class DepthBound:
    """What Theorem 2.1 guarantees for one A, ε and C.

    ``iterations`` = ⌈k⌉ of eq. 2.5 (the PGD steps: the depth of this package's nets),
    ``layers`` = ⌈k⌉ + 1 (the paper counts the input layer), ``neurons`` = n⌈k⌉ + m,
    ``rate`` = 1 − θ/β, and ``exact`` False when θ came from sampled bases (then θ is an
    upper bound of the Hoffman θ and the depth a lower bound of the theorem's).
    """

    iterations: int
    layers: int
    neurons: int
    theta: float
    beta: float
    C: float
    eps: float
    rate: float
    net: str
    exact: bool


def _basis_norms(A: np.ndarray, rows: list, cols: list) -> np.ndarray:
    """‖M_B⁻¹‖₂ for the bases B = rows ``rows[i]`` of A plus the unit rows e_j, j ∉ ``cols[i]``.

    Ordering the columns as (cols, the rest), M_B = [[A_{I,S}, A_{I,J}], [0, I]] is block
    triangular, so it is a basis iff A_{I,S} is non-singular; singular ones are skipped.
    """
    n = A.shape[1]
    out = []
    for I, S in zip(rows, cols):
        M = np.zeros((n, n))
        M[: len(I)] = A[list(I)]
        chosen = set(S)
        rest = [j for j in range(n) if j not in chosen]
        M[np.arange(len(I), n), rest] = 1.0
        s = np.linalg.svd(M, compute_uv=False)
        if s[-1] > n * np.finfo(float).eps * s[0]:
            out.append(1.0 / s[-1])
    return np.asarray(out)


def _all_bases(m: int, n: int):
    for k in range(min(m, n) + 1):
        for I in combinations(range(m), k):
            for S in combinations(range(n), k):
                yield I, S


def _sampled_bases(m: int, n: int, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = np.arange(min(m, n) + 1)
    weights = np.array([math.comb(m, k) * math.comb(n, k) for k in sizes], dtype=float)
    for k in rng.choice(sizes, size=samples, p=weights / weights.sum()):
        yield tuple(rng.choice(m, k, replace=False)), tuple(rng.choice(n, k, replace=False))


def hoffman_theta(A, *, sampled: bool = False, samples: int = 20_000, seed: int = 0, max_bases: int = 200_000):
    """θ = 1/H² with H the Güler–Hoffman–Rothblum bound on the Hoffman constant of [Aᵀ −Aᵀ −I]ᵀ.

    xie2019 §2 takes θ as the Hoffman constant of that system (Karimi et al. 2016 App. F),
    bounded through minimal singular values of its submatrices (Güler, Hoffman & Rothblum
    1995 Thm 4.2): H = max ‖M_B⁻¹‖₂ = max 1/σ_min(M_B) over the sets B of linearly independent
    rows of M = [A; −A; −I]. Signs do not change singular values and a row with its negative
    is dependent, so B takes rows of A and unit rows; by Cauchy interlacing (on M_B M_Bᵀ) adding
    a row never raises σ_min, so the maximum is over the bases (n rows, the rank of M):
    Σ_k C(m,k)C(n,k) = C(m+n, m) of them.

    Parameters
    ----------
    A : array (m, n)
    sampled : bool
        False: every basis (refused beyond ``max_bases``). True: ``samples`` bases drawn
        uniformly (seeded); the result is then ≥ the exact θ.
    samples, seed, max_bases : int

    Returns
    -------
    float θ.
    """
    m, n = A.shape
    if sampled:
        bases = list(_sampled_bases(m, n, samples, seed))
    else:
        count = math.comb(m + n, m)
        if count > max_bases:
            raise ValueError(
                f"theta: the exact Hoffman bound enumerates C(m+n, m) = {count} bases of a {m}×{n} A "
                f"(more than max_bases={max_bases}); pass theta='sampled' or a number"
            )
        bases = list(_all_bases(m, n))
    norms = _basis_norms(A, *zip(*bases))
    return 1.0 / float(norms.max()) ** 2


def _constant(y, C) -> float:
    if (y is None) == (C is None):
        raise ValueError("give exactly one of y (the measurements) and C (= ‖y‖²/2)")
    if C is not None:
        return nonnegative_float(C, "C", strict=True)
    Y = to_tensor(y, "y", dtype=None).double()
    Y = Y.reshape(1, -1) if Y.dim() == 1 else Y
    return float(0.5 * Y.pow(2).sum(1).max())


def depth_bound(
    A,
    eps,
    *,
    y=None,
    C=None,
    theta="hoffman",
    net: str = "lpgd",
    samples: int = 20_000,
    seed: int = 0,
) -> DepthBound:
    """Layers and neurons that xie2019 Theorem 2.1 guarantees for ½‖A g(y) − y‖² ≤ F* + ε.

    Theorem 2.1 (eq. 2.1–2.5): with β = ‖A‖₂², C = ‖y‖²/2 and θ the proximal-PL constant of
    F(x) = ½‖Ax − y‖² + ι_{x≥0}, PGD from x₀ = 0 with step 1/β satisfies
    F(x_k) − F* ≤ (1 − θ/β)^k C ≤ ε as soon as k ≥ log(ε/C) / log(1 − θ/β) = log_{(β−θ)/β}(ε/C),
    so the LPGD net with W = I − AᵀA/β, S = Aᵀ/β and ⌈k⌉ layers after the input reaches ε:
    ⌈k⌉ + 1 layers and n⌈k⌉ + m neurons. LAPGD with W₂ = 0 is that LPGD net, so the same bound
    holds for it (the paper's counterpart; it claims no faster rate for LAPGD).

    Assumptions. On A: any real m×n matrix (m < n in the paper); Proposition 1's conditions
    (self-regularizing + restricted eigenvalue, true w.h.p. for i.i.d. sub-Gaussian entries on
    R≥0) are needed only for x̂ to approach the sparse x*, not for the bound on the objective.
    On the data: y is any vector; the bound holds for each y with C = ‖y‖²/2 (for a batch we
    take the largest, so it holds for every row; pass ``C`` for another choice, e.g. the mean
    to bound the mean error), with no bound on x* needed. On the step: 1/β exactly (the
    analytic W, S). On θ: xie2019 takes the Hoffman constant of [Aᵀ −Aᵀ −I]ᵀ, bounded as in
    :func:`hoffman_theta`; any θ ≥ β is replaced by β (PL and β-smoothness imply θ ≤ β).

    Parameters
    ----------
    A : Operator, array or tensor (m, n)
        Densified (an operator through its matrix).
    eps : float > 0
        The accuracy ε on ½‖A g(y) − y‖² − F*.
    y : array (m,) or (batch, m), optional
        The measurements, giving C = max ‖y‖²/2. Exactly one of ``y`` and ``C``.
    C : float > 0, optional
    theta : {"hoffman", "sampled"} or float
        "hoffman": the exact bound over all C(m+n, m) bases (small A only); "sampled":
        ``samples`` random bases (θ too large, depth too small: a lower bound of the
        theorem's depth); a number: that θ > 0.
    net : {"lpgd", "lapgd"}
    samples, seed : int
        For ``theta="sampled"``.

    Returns
    -------
    DepthBound with ``iterations`` = ⌈k⌉, ``layers`` = ⌈k⌉ + 1, ``neurons`` = n⌈k⌉ + m.
    """
    M = as_operator(A, dtype=torch.float64).matrix().detach().cpu().numpy()
    eps = nonnegative_float(eps, "eps", strict=True)
    net = choice(net, "net", NETS)
    C = _constant(y, C)
    m, n = M.shape
    beta = float(np.linalg.norm(M, 2) ** 2)
    if beta == 0:
        raise ValueError("A is zero: F is constant, every depth reaches F*")
    if isinstance(theta, str):
        kind = choice(theta, "theta", THETAS)
        th = hoffman_theta(M, sampled=kind == "sampled", samples=positive_int(samples, "samples"), seed=seed)
    else:
        kind, th = "given", nonnegative_float(theta, "theta", strict=True)
    rate = 1.0 - min(th, beta) / beta
    if eps >= C:
        k = 0  # x₀ = 0 already has F(x₀) − F* ≤ C ≤ ε
    elif rate == 0.0:
        k = 1
    else:
        k = math.ceil(math.log(eps / C) / math.log(rate))
    return DepthBound(k, k + 1, n * k + m, th, beta, C, eps, rate, net, kind != "sampled")


__all__ = ["DepthBound", "depth_bound", "hoffman_theta"]
