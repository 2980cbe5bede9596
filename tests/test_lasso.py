"""Lasso solvers against scikit-learn; duality-gap certificate; FISTA rate; OISTA vs ISTA.

min_z ½‖Dz − y‖² + λ‖z‖₁. scikit-learn's ``Lasso`` minimises (1/(2m))‖y − Dw‖² + α‖w‖₁,
the same problem with α = λ/m.
"""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso

import unrolled as ur
from unrolled.algorithms.lasso import ISTA
from unrolled.operators import DenseOperator
from unrolled.problems import Lasso

SHAPES = {"tall": (30, 15), "square": (20, 20), "wide": (15, 30)}
METHODS = {
    "ista": ("ista", {}),
    "fista": ("fista", {}),
    "fista-restart": ("fista", {"restart": True}),
    "oista": ("oista", {}),
}


def _objective(D, Y, Z, lam):
    return 0.5 * ((Z @ D.T - Y) ** 2).sum(1) + lam * np.abs(Z).sum(1)


def _problem(m, n, batch=3, seed=0, frac=0.2):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n))
    Y = rng.standard_normal((batch, m))
    lam = frac * np.abs(Y @ D).max(1).min()
    Z = np.stack(
        [SkLasso(alpha=lam / m, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(D, y).coef_ for y in Y]
    )
    return D, Y, lam, Z, _objective(D, Y, Z, lam)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("method", list(METHODS))
def test_reaches_sklearn_objective(method, shape):
    D, Y, lam, Zs, Fs = _problem(*SHAPES[shape])
    name, opts = METHODS[method]
    res = ur.lasso(D, Y, lam, name, tol=1e-9, max_iter=50_000, **opts)
    assert res.converged.all(), res.n_iter
    F = _objective(D, Y, res.x, lam)
    np.testing.assert_array_less(np.abs(F - Fs), 1e-6 * Fs)
    # a relative gap ≤ tol certifies the relative sub-optimality
    assert (res.certificate <= 1e-9).all()


def test_duality_gap_is_a_certificate():
    """gap_k ≥ F(z_k) − F* ≥ 0 at every ISTA iterate, and gap_k → 0."""
    D, Y, lam, Zs, Fs = _problem(20, 30, seed=1)
    prob = Lasso(DenseOperator(D), lam)
    Yt = torch.from_numpy(Y)
    method = ISTA(prob)
    state = method.init(Yt, None)
    gaps = []
    for k in range(1, 3001):
        method.step(state, k)
        gap = prob.duality_gap(state["x"], Yt).numpy()
        sub = prob.objective(state["x"], Yt).numpy() - Fs
        assert (gap >= sub - 1e-10 * Fs).all(), k
        assert (sub >= -1e-10 * Fs).all(), k
        gaps.append(gap)
    gaps = np.array(gaps)
    assert (gaps[-1] <= 1e-8 * Fs).all() and (gaps[0] > 1e-3 * Fs).all()
    # relative certificate: zero at the solution, scale-free
    Zt = torch.from_numpy(Zs)
    assert float(prob.certificate(Zt, Yt).max()) <= 1e-10
    torch.testing.assert_close(Lasso(DenseOperator(D), 2 * lam).certificate(2 * Zt, 2 * Yt), prob.certificate(Zt, Yt))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_lambda_above_lambda_max_gives_zero(method, factor):
    D, Y, _, _, _ = _problem(15, 30)
    lam_max = np.abs(Y[0] @ D).max()
    prob = Lasso(DenseOperator(D), 1.0)
    assert abs(float(prob.lambda_max(torch.from_numpy(Y[:1]))[0]) - lam_max) <= 1e-12
    name, opts = METHODS[method]
    res = ur.lasso(D, Y[0], factor * lam_max, name, tol=1e-12, check_every=1, **opts)
    assert res.converged and res.n_iter == 0  # z = 0 is certified before the first step
    assert np.array_equal(res.x, np.zeros(30))
    # just below λ_max the solution is not zero
    res = ur.lasso(D, Y[0], 0.99 * lam_max, name, tol=1e-9, **opts)
    assert np.count_nonzero(res.x) >= 1


def test_ista_objective_never_increases():
    D, Y, lam, _, Fs = _problem(15, 30)
    h = ur.lasso(D, Y, lam, "ista", tol=0, max_iter=300, check_every=1, history="full").history["objective"]
    assert h.shape == (301, 3)
    assert (np.diff(h, axis=0) <= 1e-13 * h[0]).all()


def test_fista_rate_bound():
    """Beck–Teboulle 2009, Thm 4.4: F(z_k) − F* ≤ 2L‖z₀ − z*‖²/(k+1)² for every k ≥ 1 (z₀ = 0)."""
    for shape, seed in [((15, 30), 0), ((20, 20), 1), ((40, 20), 2)]:
        D, Y, lam, Zs, Fs = _problem(*shape, seed=seed, frac=0.05)
        L = DenseOperator(D).lipschitz
        res = ur.lasso(D, Y, lam, "fista", tol=0, max_iter=400, check_every=1, history="full")
        k = res.history["iteration"][1:, None]
        bound = 2 * L * (Zs**2).sum(1) / (k + 1) ** 2
        gap = res.history["objective"][1:] - Fs
        assert (gap <= bound + 1e-10 * Fs).all()
        assert (gap[-1] <= 1e-3 * Fs).all()  # and it does converge


def test_fista_restart_and_oista_consistent_with_ista_fixed_point():
    """All methods stop at the same z* (unique for a generic D)."""
    D, Y, lam, Zs, _ = _problem(30, 15, seed=4)
    for name, opts in METHODS.values():
        res = ur.lasso(D, Y, lam, name, tol=1e-12, max_iter=50_000, **opts)
        np.testing.assert_allclose(res.x, Zs, atol=1e-5)


def test_oista_fewer_iterations_than_ista(capsys):
    """Moreau talk: D ∈ R^{64×256}, columns uniform on the sphere, signals on the
    equiregularization set x = x̃/‖Dᵀx̃‖∞ (so λ_max = 1), λ = 0.1."""
    g = torch.Generator().manual_seed(0)
    D = torch.randn(64, 256, generator=g, dtype=torch.float64)
    D /= D.norm(dim=0)
    X = torch.randn(5, 64, generator=g, dtype=torch.float64)
    X /= (X @ D).abs().amax(1, keepdim=True)
    n = {}
    for name in ("ista", "oista"):
        res = ur.lasso(D, X, 0.1, name, tol=1e-4, max_iter=20_000, check_every=10)
        assert res.converged.all()
        n[name] = res.n_iter
    ratio = n["oista"].mean() / n["ista"].mean()
    with capsys.disabled():
        print(
            f"\nOISTA/ISTA mean iterations (64x256, lambda=0.1, rel. gap 1e-4): "
            f"{n['oista'].mean():.0f}/{n['ista'].mean():.0f} = {ratio:.2f}"
        )
    assert ratio < 1.0
    assert (n["oista"] <= n["ista"]).all()


def test_lambda_zero_is_least_squares():
    """λ = 0: the duality gap cannot certify (it stayed at 1 for ever); the stationarity
    certificate does, and the solution is the least-squares one."""
    rng = np.random.default_rng(12)
    D, Y = rng.standard_normal((20, 10)), rng.standard_normal((2, 20))
    res = ur.lasso(D, Y, 0.0, "fista", restart=True, tol=1e-10, max_iter=20_000)
    assert res.converged.all()
    np.testing.assert_allclose(res.x, np.linalg.lstsq(D, Y.T, rcond=None)[0].T, atol=1e-8)
