"""xie2019 Theorem 2.1's size bound (``ur.nets.depth_bound``): a hand calculation and the guarantee itself."""

import math

import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

import unrolled as ur
from unrolled.nets import depth_bound, hoffman_theta

PHI = (1 + math.sqrt(5)) / 2


def test_two_by_two_matches_hand_calculation():
    # A = [[1, 1], [0, 1]], y = (1, 1), ε = 1e-3.
    # β = ‖A‖₂² : AᵀA = [[1, 1], [1, 2]] has eigenvalues (3 ± √5)/2 = φ², φ⁻², so β = φ².
    # Bases of the rows of [A; I] (a1 = (1,1), a2 = (0,1), e1, e2) and ‖M_B⁻¹‖₂ = 1/σ_min(M_B):
    #   {a1, a2} = [[1,1],[0,1]]: σ = φ, 1/φ → φ      {a1, e1} = [[1,1],[1,0]]: eigenvalues φ, −1/φ → φ
    #   {a1, e2} = [[1,1],[0,1]] → φ                  {a2, e1} = [[0,1],[1,0]] → 1
    #   {e1, e2} = I → 1                              {a2, e2}: dependent, not a basis
    # H = φ, θ = 1/H² = φ⁻², θ/β = φ⁻⁴ ≈ 0.1459, rate = 1 − φ⁻⁴ ≈ 0.8541.
    # C = ‖y‖²/2 = 1; k ≥ ln(1e-3)/ln(1 − φ⁻⁴) = −6.9078/−0.15772 ≈ 43.80 → ⌈k⌉ = 44 iterations,
    # 45 layers (the input layer counts), n⌈k⌉ + m = 2·44 + 2 = 90 neurons.
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    b = depth_bound(A, 1e-3, y=np.array([1.0, 1.0]))
    assert b.beta == pytest.approx(PHI**2, rel=1e-12)
    assert b.theta == pytest.approx(PHI**-2, rel=1e-12)
    assert b.rate == pytest.approx(1 - PHI**-4, rel=1e-12)
    assert b.C == 1.0
    assert (b.iterations, b.layers, b.neurons) == (44, 45, 90)
    assert b.exact and b.net == "lpgd"
    # LAPGD with W₂ = 0 is LPGD: the paper's counterpart gives the same size
    lap = depth_bound(A, 1e-3, y=np.array([1.0, 1.0]), net="lapgd")
    assert (lap.iterations, lap.layers, lap.neurons, lap.net) == (44, 45, 90, "lapgd")


def _pgd_objective_after(A, y, k):
    res = ur.nnls(A, y, "pgd", max_iter=k, tol=0) if k else None
    x = np.zeros(A.shape[1]) if res is None else res.x
    return 0.5 * np.sum((A @ x - y) ** 2)


@pytest.mark.parametrize(
    "A, y",
    [
        ([[2.0, 0.0, 1.0], [0.0, 1.0, 1.0]], [3.0, -1.0]),  # F* > 0: y is outside the cone A·R≥0
        ([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]], [1.0, 2.0, 3.0]),
    ],
)
def test_pgd_at_the_bound_reaches_eps(A, y):
    # the theorem's network is PGD with step 1/β: after ⌈k⌉ steps F − F* ≤ ε (F* by SciPy's NNLS).
    # Integer A keep the Hoffman bound moderate (a random real A has near-singular square
    # submatrices, θ ~ 1e-6 and millions of layers: the bound is loose, not wrong).
    A, y = np.array(A), np.array(y)
    eps = 1e-4
    b = depth_bound(A, eps, y=y)
    F_star = 0.5 * scipy_nnls(A, y)[1] ** 2
    assert 0 < b.theta <= b.beta
    assert 0 < b.iterations < 5000
    assert _pgd_objective_after(A, y, b.iterations) - F_star <= eps


def test_hoffman_theta_equals_the_max_over_every_independent_row_set():
    # brute force over all row subsets of M = [A; −A; −I] with independent rows: the bases suffice
    from itertools import combinations

    A = np.random.default_rng(2).uniform(0, 1, (2, 3))
    M = np.vstack([A, -A, -np.eye(3)])
    H = 0.0
    for k in range(1, 4):
        for rows in combinations(range(M.shape[0]), k):
            s = np.linalg.svd(M[list(rows)], compute_uv=False)
            if s[-1] > 1e-12:
                H = max(H, 1 / s[-1])
    assert hoffman_theta(A) == pytest.approx(1 / H**2, rel=1e-10)


def test_sampled_theta_is_an_upper_bound_and_batches_take_the_largest_C():
    rng = np.random.default_rng(3)
    A = rng.uniform(0, 1, (3, 6))
    exact = hoffman_theta(A)
    assert hoffman_theta(A, sampled=True, samples=50, seed=1) >= exact
    Y = rng.uniform(0, 1, (4, 3))
    b = depth_bound(A, 1e-2, y=Y, theta=0.05)
    assert b.C == pytest.approx(0.5 * (Y**2).sum(1).max())
    assert b.theta == 0.05
    assert depth_bound(A, 1e-2, y=Y, theta="sampled", samples=50).exact is False
    # ε ≥ C: x₀ = 0 already qualifies; θ ≥ β: one step
    assert depth_bound(A, 10.0, C=1.0, theta=0.05).iterations == 0
    assert depth_bound(A, 1e-2, C=1.0, theta=1e9).iterations == 1


def test_an_operator_gives_the_bound_of_its_matrix():
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    op = ur.operators.DenseOperator(A)
    assert depth_bound(op, 1e-3, C=1.0) == depth_bound(A, 1e-3, C=1.0)


def test_bad_input_is_refused_by_name():
    A = np.eye(2)
    with pytest.raises(ValueError, match="A must be a non-empty 2-D"):
        depth_bound(np.ones(3), 1e-3, C=1.0)
    with pytest.raises(ValueError, match="eps"):
        depth_bound(A, 0.0, C=1.0)
    with pytest.raises(ValueError, match="exactly one of y"):
        depth_bound(A, 1e-3)
    with pytest.raises(ValueError, match="net"):
        depth_bound(A, 1e-3, C=1.0, net="lista")
    with pytest.raises(ValueError, match="theta"):
        depth_bound(A, 1e-3, C=1.0, theta="exact")
    with pytest.raises(ValueError, match="theta: the exact Hoffman bound"):
        depth_bound(np.ones((10, 20)), 1e-3, C=1.0)
