"""The batched working-set Lasso (``method="working-set"``) against scikit-learn: random,
ill-conditioned, badly scaled and float32 problems, the non-negative Lasso, λ ≥ λ_max, a warm start
at the optimum, and rows it cannot finish (a singular working set)."""

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso

import unrolled as ur
from unrolled.algorithms.lasso import WorkingSet, signed_least_squares
from unrolled.operators import DenseOperator
from unrolled.problems import Lasso


def _objective(D, Y, Z, lam):
    return 0.5 * ((Z @ D.T - Y) ** 2).sum(1) + lam * np.abs(Z).sum(1)


def _sklearn(D, Y, lam, positive=False):
    m = D.shape[0]
    sk = SkLasso(alpha=lam / m, fit_intercept=False, positive=positive, tol=1e-14, max_iter=100_000)
    with warnings.catch_warnings():  # (it stops short of 1e-14 on the ill-conditioned case: ours must be no worse)
        warnings.simplefilter("ignore")
        return np.stack([sk.fit(D, y).coef_ for y in Y])


@functools.cache
def _case(name):
    """(D, Y, λ, scikit-learn's objective) of a named case, computed once."""
    D, Y, lam = CASES[name]()
    return D, Y, lam, _objective(D, Y, _sklearn(D, Y, lam), lam)


def _random(m, n, batch=4, seed=0, frac=0.15):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n))
    Y = rng.standard_normal((batch, m))
    return D, Y, frac * np.abs(Y @ D).max(1).min()


def _ill_conditioned(m=30, n=60, seed=1):
    """Singular values from 1 to 1e-4 and pairs of nearly collinear columns."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, m)))
    D = U @ np.diag(np.logspace(0, -4, m)) @ V.T
    D[:, 1::2] = D[:, 0::2] + 1e-3 * rng.standard_normal((m, n // 2))
    Y = rng.standard_normal((4, m))
    return D, Y, 0.05 * np.abs(Y @ D).max(1).min()


CASES = {
    "tall": lambda: _random(40, 20),
    "square": lambda: _random(25, 25, seed=2),
    "wide": lambda: _random(20, 60, seed=3),
    "ill-conditioned": _ill_conditioned,
}


@pytest.mark.parametrize("case", list(CASES))
def test_agrees_with_sklearn(case):
    D, Y, lam, Fs = _case(case)
    res = ur.lasso(D, Y, lam, "working-set", tol=1e-9)
    assert res.converged.all() and (res.certificate <= 1e-9).all()
    F = _objective(D, Y, res.x, lam)
    assert (F <= Fs + 1e-7 * Fs).all(), (F - Fs) / Fs


def test_cold_start_rounds_are_exact():
    """warm=0: the active set alone from z = 0 reaches the optimum (the certificate is ~ rounding)."""
    D, Y, lam = _random(20, 60, seed=4)
    res = ur.lasso(D, Y, lam, "working-set", warm=0, tol=1e-12, check_every=1)
    assert res.converged.all() and (res.certificate <= 1e-12).all()
    np.testing.assert_allclose(res.x, _sklearn(D, Y, lam), atol=1e-6)


def test_badly_scaled_is_scale_invariant():
    """D → 1e-3 D, y → 1e5 y, λ → 1e2 λ: the same certificate, the answer scaled by 1e8."""
    D, Y, lam = _random(20, 50, seed=5)
    base = ur.lasso(D, Y, lam, "working-set", tol=1e-10)
    scaled = ur.lasso(1e-3 * D, 1e5 * Y, 1e2 * lam, "working-set", tol=1e-10)
    assert scaled.converged.all()
    np.testing.assert_allclose(scaled.x, 1e8 * base.x, rtol=1e-6, atol=1e-6 * np.abs(1e8 * base.x).max())


def test_float32():
    D, Y, lam = _random(20, 50, seed=6)
    Fs = _objective(D, Y, _sklearn(D, Y, lam), lam)
    res = ur.lasso(D.astype(np.float32), Y.astype(np.float32), lam, "working-set", tol=1e-5)
    assert res.x.dtype == np.float32 and res.converged.all()
    F = _objective(D, Y, res.x.astype(np.float64), lam)
    assert (F <= Fs * (1 + 1e-4)).all()


def test_nonnegative_matches_sklearn_positive():
    D, Y, lam = _random(20, 50, seed=7, frac=0.1)
    Zs = _sklearn(D, Y, lam, positive=True)
    res = ur.lasso(D, Y, lam, "working-set", positive=True, tol=1e-10)
    assert res.converged.all() and (res.x >= 0).all()
    F, Fs = _objective(D, Y, res.x, lam), _objective(D, Y, Zs, lam)
    assert (F <= Fs + 1e-8 * Fs).all()


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_lambda_at_least_lambda_max_gives_zero(factor):
    D, Y, _ = _random(15, 30, seed=8)
    lam_max = np.abs(Y @ D).max()
    res = ur.lasso(D, Y, factor * lam_max, "working-set", tol=1e-12)
    assert res.converged.all() and np.array_equal(res.x, np.zeros_like(res.x))


def test_warm_start_at_the_optimum_returns_after_zero_iterations():
    D, Y, lam = _random(20, 50, seed=9)
    opt = ur.lasso(D, Y, lam, "working-set", tol=1e-12)
    res = ur.lasso(D, Y, lam, "working-set", x0=opt.x, tol=1e-9)
    assert (res.n_iter == 0).all() and res.converged.all()


def test_singular_working_set_stops_uncertified():
    """Duplicate columns: D_SᵀD_S is singular once both copies enter S (FISTA's support has both), so
    the working set stops there and reports the rows as not converged, with their true certificate."""
    D, Y, lam = _random(15, 20, seed=10, frac=0.05)
    D = np.hstack([D, D])
    res = ur.lasso(D, Y, lam, "working-set", tol=1e-8)
    assert not res.converged.any() and (res.certificate > 1e-8).all()
    cert = Lasso(DenseOperator(torch.from_numpy(D)), lam).certificate(torch.from_numpy(res.x), torch.from_numpy(Y))
    np.testing.assert_allclose(res.certificate, cert.numpy())


def test_signed_least_squares_solves_the_sign_constrained_system():
    """t_S = (D_SᵀD_S)⁻¹(D_Sᵀy − λθ_S), zero off S, on padded supports of different sizes."""
    rng = np.random.default_rng(11)
    D, Y = rng.standard_normal((12, 30)), rng.standard_normal((3, 12))
    S = np.zeros((3, 30), dtype=bool)
    S[0, [1, 4, 7]], S[1, :10], S[2, [29]] = True, True, True
    sign = np.where(S, rng.choice([-1.0, 1.0], size=S.shape), 0.0)
    op = DenseOperator(torch.from_numpy(D))
    t, ok = signed_least_squares(
        op.gram, op.adjoint(torch.from_numpy(Y)), torch.from_numpy(S), torch.from_numpy(sign), 0.3
    )
    assert ok.all()
    for i in range(3):
        Ds = D[:, S[i]]
        expect = np.linalg.solve(Ds.T @ Ds, Ds.T @ Y[i] - 0.3 * sign[i, S[i]])
        np.testing.assert_allclose(t[i].numpy()[S[i]], expect, rtol=1e-10)
        assert (t[i].numpy()[~S[i]] == 0).all()


def test_refuses_what_it_cannot_solve():
    D, Y, _ = _random(10, 20)
    with pytest.raises(ValueError, match="lam > 0"):
        WorkingSet(Lasso(DenseOperator(torch.from_numpy(D)), 0.0))
    with pytest.raises(ValueError, match="warm"):
        ur.lasso(D, Y, 0.1, "working-set", warm=-1)
