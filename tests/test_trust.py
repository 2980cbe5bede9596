"""Never certify a wrong answer (issue #8 items 1–4, 7; issue #9 items 2, 6).

Badly scaled columns, tiny and huge magnitudes, zero operators, overflowing data, the
certified ml_bp default, the non-negative Lasso and small API points. References: SciPy's
``nnls`` on the column-normalised problem (rescaled back) and scikit-learn's Lasso.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls as scipy_nnls

import unrolled as ur
from unrolled.algorithms.mlbp import METHODS as MLBP_METHODS
from unrolled.solvers import LASSO_METHODS, NNLS_METHODS


def _f(A, X, Y):
    return 0.5 * ((np.atleast_2d(X) @ A.T - np.atleast_2d(Y)) ** 2).sum(1)


def normalised_nnls(A, Y):
    """SciPy's exact NNLS on A diag(1/c) (c = column norms), mapped back: immune to column scale."""
    c = np.linalg.norm(A, axis=0)
    c[c == 0] = 1.0
    return np.stack([scipy_nnls(A / c, y, maxiter=100 * A.shape[1])[0] for y in np.atleast_2d(Y)]) / c


def spread_columns():
    """Column norms 1e-6 … 1e7 (ratio 1e13) and an optimum on the smallest and the largest column:
    columns 0, 1 live on rows 0–3, columns 2–4 (positive) on rows 4–7 where y < 0, so they stay at 0."""
    rng = np.random.default_rng(7)
    A = np.zeros((8, 5))
    A[:4, :2] = rng.random((4, 2)) + 0.1
    A[4:, 2:] = rng.random((4, 3)) + 0.1
    A[:, 0] *= 1e-6
    A[:, 1] *= 1e7
    Y = np.stack(
        [
            np.concatenate([A[:4, 0] * 3e5 + A[:4, 1] * 2e-7 + 0.05 * rng.standard_normal(4), -rng.random(4) - 0.1])
            for _ in range(3)
        ]
    )
    return A, Y


def tall_with_big_columns():
    """An ordinary tall Gaussian problem whose columns 2 and 5 are scaled by 1e8 and 1e10."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 10))
    A[:, 2] *= 1e8
    A[:, 5] *= 1e10
    return A, rng.standard_normal((4, 40))


NNLS_CALLS = {
    "default": {},
    "active-set": {"method": "active-set"},
    "apgd-restart": {"method": "apgd", "momentum": "nesterov", "restart": True},
    "pgd": {"method": "pgd"},
}


# ---------------------------------------------------------------- item 1: column scale
@pytest.mark.parametrize("case", [spread_columns, tall_with_big_columns])
@pytest.mark.parametrize("call", list(NNLS_CALLS))
def test_converged_only_at_the_optimum_whatever_the_column_scale(case, call):
    """Fails on the old code: active-set certified x with a 3–0.6 % excess objective."""
    A, Y = case()
    ref = normalised_nnls(A, Y)
    f_ref = _f(A, ref, Y)
    res = ur.nnls(A, Y, tol=1e-8, max_iter=5000, **NNLS_CALLS[call])
    excess = (_f(A, res.x, Y) - f_ref) / f_ref
    assert (excess[res.converged] <= 1e-7).all(), excess
    if call in ("default", "active-set"):  # the exact method must actually solve them
        assert res.converged.all() and (excess <= 1e-10).all(), excess


def test_default_route_for_wide_problems_finishes_badly_scaled_rows_exactly():
    """n > ACTIVE_SET_MAX_N: APGD first, then the active set for the rows APGD cannot certify."""
    from unrolled.solvers import ACTIVE_SET_MAX_N

    rng = np.random.default_rng(8)
    n = ACTIVE_SET_MAX_N + 16
    A, Y = rng.standard_normal((2 * n, n)), rng.standard_normal((3, 2 * n))
    A[:, 3] *= 1e8
    A[:, 7] *= 1e10
    ref = normalised_nnls(A, Y)
    res = ur.nnls(A, Y, tol=1e-8, max_iter=2000)
    assert res.converged.all() and "active_set" in res.history
    np.testing.assert_allclose(_f(A, res.x, Y), _f(A, ref, Y), rtol=1e-10)
    easy = ur.nnls(A[:, : n - 1] / np.linalg.norm(A[:, : n - 1], axis=0), Y, tol=1e-8)
    assert easy.converged.all() and "active_set" not in easy.history


def test_spread_columns_optimum_has_two_nonzeros():
    A, Y = spread_columns()
    ref = normalised_nnls(A, Y)
    assert ((ref > 0).sum(1) == 2).all() and (ref[:, :2] > 0).all()
    res = ur.nnls(A, Y, method="active-set", tol=1e-10)
    np.testing.assert_allclose(res.x, ref, rtol=1e-6, atol=0)
    for dtype in (np.float32,):  # float32 input: same support and objective to float32 accuracy
        r32 = ur.nnls(A.astype(dtype), Y.astype(dtype), method="active-set", tol=1e-5)
        assert r32.converged.all() and ((r32.x > 0) == (ref > 0)).all()


def test_certificate_is_invariant_to_column_scaling():
    rng = np.random.default_rng(0)
    A, Y = rng.standard_normal((12, 6)), rng.standard_normal((3, 12))
    X = np.abs(rng.standard_normal((3, 6)))
    s = 10.0 ** rng.uniform(-6, 6, 6)
    cert = ur.NNLS(ur.DenseOperator(A)).certificate
    torch.testing.assert_close(
        cert(torch.from_numpy(X), torch.from_numpy(Y)),
        ur.NNLS(ur.DenseOperator(A * s)).certificate(torch.from_numpy(X / s), torch.from_numpy(Y)),
    )


# ---------------------------------------------------------------- #9.6: tiny and huge scales
def _solve_all(A, Y, D, lam):
    return {
        "nnls": ur.nnls(A, Y, tol=1e-9),
        "nnls-apgd": ur.nnls(A, Y, "apgd", momentum="nesterov", restart=True, tol=1e-9, max_iter=20_000),
        "lasso": ur.lasso(D, Y, lam, tol=1e-9),
        "lasso-ista": ur.lasso(D, Y, lam, "ista", tol=1e-9, max_iter=50_000),
        "ml_bp": ur.ml_bp([D, np.eye(D.shape[1])], Y, [0.0, lam], tol=1e-9),
    }


def test_tiny_scale_gives_the_same_answer_and_certificate():
    """Fails on the old code: at 1e-18 the TINY = 1e-30 floor certified wrong answers."""
    rng = np.random.default_rng(1)
    A, D, Y = rng.random((10, 20)), rng.standard_normal((10, 20)), rng.standard_normal((4, 10))
    lam = 0.3 * np.abs(Y @ D).max()
    base = _solve_all(A, Y, D, lam)
    s = 1e-18
    small = _solve_all(A * s, Y * s, D * s, lam * s * s)
    for name, r in base.items():
        assert r.converged.all() and small[name].converged.all(), name
        f, fs = r.objective, small[name].objective / s**2
        np.testing.assert_allclose(fs, f, rtol=1e-8, err_msg=name)
        assert (small[name].certificate <= 1e-9).all(), name


@pytest.mark.parametrize("scale", [1e-170, 1e200])
def test_out_of_range_magnitudes_are_refused_in_one_line(scale):
    """Fails on the old code: ZeroDivisionError at 1e-170, OverflowError / NaN at 1e200."""
    rng = np.random.default_rng(2)
    A, Y = rng.random((6, 8)) * scale, rng.random((2, 6)) * scale
    calls = [
        lambda: ur.nnls(A, Y),
        lambda: ur.nnls(A, Y, "pgd"),
        lambda: ur.lasso(A, Y, 1.0),
        lambda: ur.lasso(A, Y, 1.0, "ista"),
        lambda: ur.ml_bp([A, np.eye(8)], Y, [0.1, 0.1]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="range|overflow|too small|too large") as err:
            call()
        assert "\n" not in str(err.value)


def test_overflowing_products_are_refused():
    """Fails on the old code: L = inf gave x = NaN with converged=False and no error."""
    A = np.full((3, 4), 1e300)
    with pytest.raises(ValueError, match="overflow|range"):
        ur.nnls(A, np.ones(3))
    with pytest.raises(ValueError, match="overflow|range"):
        ur.lasso(A, np.ones(3), 1.0, "fista")
    with pytest.raises(ValueError, match="overflow|range"):  # A fine, AᵀY overflows
        ur.lasso(np.full((3, 4), 1e150), np.full(3, 1e160), 1.0)


# ---------------------------------------------------------------- item 2: zero operator
@pytest.mark.parametrize("zero", [np.zeros((5, 7)), np.zeros((5, 7), dtype=np.float32)])
def test_zero_operator_gives_zero_with_gap_zero(zero):
    """Fails on the old code: ZeroDivisionError in ISTA.__init__ / PGD.__init__."""
    Y = np.random.default_rng(0).standard_normal((3, 5)).astype(zero.dtype)
    results = [ur.nnls(zero, Y, m) for m in NNLS_METHODS] + [ur.nnls(zero, Y)]
    results += [ur.lasso(zero, Y, 0.5, m) for m in LASSO_METHODS] + [ur.lasso(zero, Y, 0.5)]
    results += [ur.ml_bp([zero, np.eye(7, dtype=zero.dtype)], Y, [0.1, 0.1], m) for m in MLBP_METHODS]
    results += [ur.ml_bp([np.eye(5), zero], Y, [0.1, 0.1])]
    for r in results:
        assert np.array_equal(r.x, np.zeros((3, 7))) and r.converged.all() and (r.certificate == 0).all()
        np.testing.assert_allclose(r.objective, 0.5 * (Y.astype(np.float64) ** 2).sum(1), rtol=1e-6)


# ---------------------------------------------------------------- item 4: ml_bp default
def test_ml_bp_default_solves_the_stated_problem():
    """Fails on the old code: the default (ML-FISTA) stopped 6e-3 above F* and said converged."""
    from unrolled.data.mlsc import mlsc_dictionaries, mlsc_signals

    D1, D2 = mlsc_dictionaries(seed=0)
    s = mlsc_signals(D1, D2, 6, seed=1)
    lams = [0.05, 0.05]
    ref = ur.ml_bp([D1, D2], s.y, lams, "admm", tol=1e-11, max_iter=50_000)
    assert ref.converged.all()
    res = ur.ml_bp([D1, D2], s.y, lams, tol=1e-6)
    assert res.converged.all() and "duality gap" in res.certified
    assert ((res.objective - ref.objective) / ref.objective <= 1e-6).all()
    fixed = ur.ml_bp([D1, D2], s.y, lams, "ml-fista", tol=1e-6, max_iter=50_000)
    assert "fixed-point" in fixed.certified


# ---------------------------------------------------------------- item 7: API points
def test_lasso_lambda_is_sklearn_alpha_times_n_samples():
    from sklearn.linear_model import Lasso as SkLasso

    rng = np.random.default_rng(4)
    D, y = rng.standard_normal((30, 50)), rng.standard_normal(30)
    alpha = 0.05
    sk = SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(D, y)
    res = ur.lasso(D, y, alpha * 30, tol=1e-12, max_iter=50_000)
    np.testing.assert_allclose(res.x, sk.coef_, atol=1e-6)
    gap = ur.Lasso(ur.DenseOperator(D), alpha * 30).duality_gap(
        torch.from_numpy(sk.coef_[None]), torch.from_numpy(y[None])
    )
    assert float(gap[0]) / 30 == pytest.approx(sk.dual_gap_, rel=1e-3, abs=1e-14)


@pytest.mark.parametrize("method", [None, "fista", "ista"])
def test_nonnegative_lasso_matches_sklearn_positive(method):
    """Fails on the old code (no positive option)."""
    from sklearn.linear_model import Lasso as SkLasso

    rng = np.random.default_rng(5)
    D, Y = rng.standard_normal((25, 40)), rng.standard_normal((3, 25))
    lam = 2.0
    res = ur.lasso(D, Y, lam, method, positive=True, tol=1e-10, max_iter=100_000)
    assert res.converged.all() and (res.x >= 0).all()
    for y, x in zip(Y, res.x):
        sk = SkLasso(alpha=lam / 25, fit_intercept=False, positive=True, tol=1e-14, max_iter=200_000).fit(D, y)
        f = _f(D, x, y) + lam * x.sum()
        f_sk = _f(D, sk.coef_, y) + lam * sk.coef_.sum()
        assert f <= f_sk * (1 + 1e-9)
    # its certificate refuses a point with a negative entry, and knows the one-sided dual
    prob = ur.Lasso(ur.DenseOperator(D), lam, positive=True)
    Yt = torch.from_numpy(Y)
    assert torch.isinf(prob.certificate(-torch.ones(3, 40, dtype=torch.float64), Yt)).all()
    assert (prob.lambda_max(Yt) <= ur.Lasso(ur.DenseOperator(D), lam).lambda_max(Yt)).all()
    with pytest.raises(ValueError, match="positive"):
        ur.lasso(D, Y, lam, "oista", positive=True)


def test_sparse_input_is_refused_clearly():
    sparse = pytest.importorskip("scipy.sparse")
    A = sparse.random(6, 8, density=0.5, random_state=0, format="csr")
    with pytest.raises(TypeError, match="sparse input is not supported"):
        ur.nnls(A, np.ones(6))
    with pytest.raises(TypeError, match="sparse input is not supported"):
        ur.lasso(np.ones((6, 8)), sparse.csr_matrix(np.ones((2, 6))), 0.1)


def test_read_only_input_raises_no_warning():
    rng = np.random.default_rng(0)
    A, Y = rng.random((6, 8)), rng.random((2, 6))
    A.flags.writeable = False
    Y.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ur.nnls(A, Y)
        ur.lasso(A, Y, 0.1)


@pytest.mark.parametrize(
    "solve",
    [
        lambda A, Y, **kw: ur.nnls(A, Y, **kw),
        lambda A, Y, **kw: ur.nnls(A, Y, "apgd", **kw),
        lambda A, Y, **kw: ur.lasso(A, Y, 0.5, **kw),
        lambda A, Y, **kw: ur.lasso(A, Y, 0.5, "ista", **kw),
    ],
)
def test_warm_start_at_the_optimum_takes_zero_iterations(solve):
    """Fails on the old code: one step was always taken before the first check."""
    rng = np.random.default_rng(6)
    A, Y = rng.standard_normal((12, 6)), rng.standard_normal((3, 12))
    ref = solve(A, Y, tol=1e-12, max_iter=50_000)
    res = solve(A, Y, x0=ref.x, tol=1e-8, check_every=5)
    assert res.converged.all() and (res.n_iter == 0).all()
    np.testing.assert_array_equal(res.x, ref.x)


# ---------------------------------------------------------------- #9.2: bounded history
def test_default_history_is_bounded_by_checks_not_problems():
    """Fails on the old code: (checks × batch) arrays of objective and certificate by default."""
    rng = np.random.default_rng(0)
    A, Y = rng.random((10, 20)), rng.random((500, 10))
    res = ur.nnls(A, Y, "pgd", tol=0, max_iter=50, check_every=1)
    for key, value in res.history.items():
        assert np.asarray(value).size <= 51, key
    assert res.objective.shape == (500,) and res.certificate.shape == (500,)
    assert res.history["certificate_max"][-1] == pytest.approx(res.certificate.max())
    full = ur.nnls(A, Y, "pgd", tol=0, max_iter=50, check_every=1, history="full")
    assert full.history["objective"].shape == (51, 500)
    with pytest.raises(ValueError, match="history"):
        ur.nnls(A, Y, history="all")


# ---------------------------------------------------------------- the "must hold" of #8, by hypothesis
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
TOL = {np.float64: 1e-6, np.float32: 1e-4}


@st.composite
def matrices(draw, max_m=12, max_n=12, bits=20):
    """Random shapes; column scalings over 12 orders of magnitude (2^-20 … 2^20, exact in both
    dtypes); exactly rank-deficient (a product of small integer factors, so that rounding does
    not turn it into a merely ill-conditioned one) and exactly duplicated columns; float32/float64."""
    m, n = draw(st.integers(2, max_m)), draw(st.integers(1, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    rank = draw(st.integers(1, min(m, n)))
    if rank < min(m, n):
        A = (rng.integers(-3, 4, (m, rank)) @ rng.integers(-3, 4, (rank, n))).astype(np.float64)
    else:
        A = rng.standard_normal((m, n))
    A *= 2.0 ** rng.integers(-bits, bits + 1, n)
    if n > 1 and draw(st.booleans()):
        A[:, -1] = A[:, 0]
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    Y = rng.standard_normal((3, m)) * 10.0 ** rng.uniform(-3, 3)
    return A.astype(dtype), Y.astype(dtype), dtype


def _excess_is_within_tol(f, f_ref, scale, converged, dtype):
    """converged ⇒ f − f* ≤ tol·f* + the rounding of x to ``dtype`` ((10³ε)²·½‖y‖²: f* may be 0)."""
    allowed = TOL[dtype] * f_ref + (1e3 * np.finfo(dtype).eps) ** 2 * scale
    return not (converged & (f - f_ref > allowed)).any()


@PROPERTY
@given(matrices())
def test_property_nnls_default_never_certifies_a_wrong_answer(data):
    A, Y, dtype = data
    res = ur.nnls(A, Y, tol=TOL[dtype])
    assert res.converged.all()  # the default (exact active set here) solves every one
    A64, Y64 = A.astype(np.float64), Y.astype(np.float64)
    ref = normalised_nnls(A64, Y64)
    f, f_ref = _f(A64, res.x.astype(np.float64), Y64), _f(A64, ref, Y64)
    assert _excess_is_within_tol(f, f_ref, 0.5 * (Y64**2).sum(1), res.converged, dtype), (f, f_ref)


@PROPERTY
@given(matrices(), st.floats(0.05, 0.9))
def test_property_lasso_default_never_certifies_a_wrong_answer(data, frac):
    from sklearn.linear_model import Lasso as SkLasso

    D, Y, dtype = data
    D64, Y64 = D.astype(np.float64), Y.astype(np.float64)
    lam = frac * float(np.abs(Y64 @ D64).max())
    res = ur.lasso(D, Y, lam, tol=TOL[dtype])
    m = D.shape[0]
    for i, y in enumerate(Y64):
        sk = SkLasso(alpha=lam / m, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(D64, y)
        f_sk = _f(D64, sk.coef_, y)[0] + lam * np.abs(sk.coef_).sum()
        x = np.asarray(res.x[i], dtype=np.float64)
        f = _f(D64, x, y)[0] + lam * np.abs(x).sum()
        assert _excess_is_within_tol(f, f_sk, 0.5 * (y**2).sum(), res.converged[i], dtype), (f, f_sk)


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(matrices(max_m=8, max_n=8, bits=5), st.integers(2, 8), st.floats(0.05, 0.5), st.floats(0.0, 0.5))
def test_property_ml_bp_default_never_certifies_a_wrong_answer(data, n2, frac, frac1):
    D1, Y, dtype = data
    D2 = np.random.default_rng(n2).standard_normal((D1.shape[1], n2)).astype(dtype)
    D1_64, D2_64, Y64 = D1.astype(np.float64), D2.astype(np.float64), Y.astype(np.float64)
    lam2 = frac * float(np.abs(Y64 @ D1_64 @ D2_64).max())
    lams = [frac1 * lam2, lam2]
    res = ur.ml_bp([D1, D2], Y, lams, tol=TOL[dtype], max_iter=200)  # (ADMM's inner loop is costly)
    ref = ur.ml_bp([D1_64, D2_64], Y64, lams, "admm", tol=1e-10, max_iter=2000, inner_iter=200)
    G = np.asarray(res.x, dtype=np.float64)
    f = _f(D1_64 @ D2_64, G, Y64) + lams[0] * np.abs(G @ D2_64.T).sum(1) + lams[1] * np.abs(G).sum(1)
    assert _excess_is_within_tol(f, ref.objective, 0.5 * (Y64**2).sum(1), res.converged, dtype), (f, ref.objective)


def test_chunked_batch_equals_one_batch():
    """Large batches are solved CHUNK rows at a time: same answers, summaries chunk after chunk."""
    from unrolled.algorithms.active_set import ActiveSet
    from unrolled.problems import NNLS
    from unrolled.solve import iterate

    rng = np.random.default_rng(0)
    A, Y = torch.from_numpy(rng.random((10, 20))), torch.from_numpy(rng.random((7, 10)))
    prob = NNLS(ur.DenseOperator(A))
    one = iterate(ActiveSet(prob), prob, Y, None, tol=1e-9, max_iter=100, chunk=None)
    parts = iterate(ActiveSet(prob), prob, Y, None, tol=1e-9, max_iter=100, chunk=3)
    torch.testing.assert_close(parts.x, one.x, rtol=1e-12, atol=1e-12)  # BLAS rounding differs with the batch size
    np.testing.assert_array_equal(parts.n_iter, one.n_iter)
    np.testing.assert_array_equal(parts.converged, one.converged)
    assert set(parts.history["chunk"]) == {0, 1, 2} and "chunk" not in one.history


def test_matrix_free_column_norms_equal_the_dense_ones():
    """The NNLS certificate needs ‖a_j‖: computed chunk by chunk for a convolution, never as an n × n identity."""
    from unrolled.problems import column_norms

    kernel = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3)))
    op = ur.Conv2dOperator(kernel, (9, 7))
    torch.testing.assert_close(column_norms(op, chunk=5), column_norms(ur.DenseOperator(op.matrix())))
