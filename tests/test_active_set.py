"""Batched Lawson–Hanson (method="active-set") against SciPy's nnls; FISTA speed options; bench smoke."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls as scipy_nnls

import unrolled as ur
from unrolled import bench
from unrolled.algorithms.lasso import support_polish
from unrolled.operators import DenseOperator


def _reference(A, Y):
    return np.array([scipy_nnls(A, y, maxiter=50 * A.shape[1])[0] for y in Y])


def _obj(A, X, Y):
    return 0.5 * ((X @ A.T - Y) ** 2).sum(1)


@pytest.mark.parametrize("m,n", [(30, 12), (15, 15), (12, 30)])
def test_equals_scipy_float64(m, n):
    """Gaussian A, Gaussian y: tall and square have a unique solution; wide compare objectives."""
    rng = np.random.default_rng(m * 100 + n)
    A, Y = rng.standard_normal((m, n)), rng.standard_normal((40, m))
    ref = _reference(A, Y)
    res = ur.nnls(A, Y, method="active-set", tol=1e-12)
    assert isinstance(res.x, np.ndarray) and res.x.shape == (40, n)
    assert res.converged.all()
    assert (res.x >= 0).all()
    scale = 0.5 * (Y**2).sum(1)
    assert np.max(np.abs(_obj(A, res.x, Y) - _obj(A, ref, Y)) / scale) < 1e-12
    if m >= n:  # unique solution: points agree
        assert np.max(np.abs(res.x - ref)) < 1e-10 * max(1.0, np.abs(ref).max())
    # certificates (relative KKT residual) at rounding level
    assert res.certificate.max() < 1e-12


def test_xie_setting_and_active_constraints():
    """xie2019's U[0,1] 10×20 A with sparse non-negative x (many active constraints)."""
    A, Y = bench.xie_problems(300, seed=1)
    ref = _reference(A, Y)
    res = ur.nnls(torch.from_numpy(A), torch.from_numpy(Y), method="active-set", tol=1e-12)
    assert isinstance(res.x, torch.Tensor)
    x = res.x.numpy()
    scale = 0.5 * (Y**2).sum(1)
    assert np.max((_obj(A, x, Y) - _obj(A, ref, Y)) / scale) < 1e-12
    assert res.converged.all()


def test_vector_and_torch_and_negative_y():
    rng = np.random.default_rng(3)
    A, y = rng.standard_normal((20, 8)), rng.standard_normal(20)
    res = ur.nnls(torch.from_numpy(A), torch.from_numpy(y), method="active-set", tol=1e-12)
    assert isinstance(res.x, torch.Tensor) and res.x.shape == (8,)
    assert isinstance(res.n_iter, int) and isinstance(res.converged, bool)
    np.testing.assert_allclose(res.x.numpy(), scipy_nnls(A, y)[0], atol=1e-10)
    # y in the cone {y : Aᵀy ≤ 0}: x = 0 is optimal, certified before the first step
    A = np.abs(rng.standard_normal((6, 4)))
    res = ur.nnls(A, -np.ones(6), method="active-set", tol=1e-12)
    assert np.all(res.x == 0) and res.n_iter == 0


@pytest.mark.parametrize("m,n", [(30, 12), (12, 30)])
def test_float32(m, n):
    rng = np.random.default_rng(7)
    A, Y = rng.standard_normal((m, n)), rng.standard_normal((50, m))
    ref = _reference(A, Y)
    res = ur.nnls(A.astype(np.float32), Y.astype(np.float32), method="active-set", tol=1e-5)
    assert res.x.dtype == np.float32 and (res.x >= 0).all()
    x = res.x.astype(np.float64)
    scale = 0.5 * (Y**2).sum(1)
    assert np.max(np.abs(_obj(A, x, Y) - _obj(A, ref, Y)) / scale) < 1e-5
    if m >= n:
        assert np.max(np.abs(x - ref)) < 1e-4 * np.abs(ref).max()


def test_warm_start_and_x0_give_the_same_optimum():
    rng = np.random.default_rng(11)
    A = rng.standard_normal((60, 30))
    Y = rng.standard_normal((25, 60))
    ref = _reference(A, Y)
    cold = ur.nnls(A, Y, method="active-set", tol=1e-12)
    warm = ur.nnls(A, Y, method="active-set", tol=1e-12, warm_start=30)
    x0 = ur.nnls(A, Y, method="apgd", tol=1e-3).x
    given = ur.nnls(A, Y, method="active-set", tol=1e-12, x0=x0)
    for res in (cold, warm, given):
        np.testing.assert_allclose(res.x, ref, atol=1e-10)
    # starting from (close to) the right support saves LH steps
    assert given.n_iter.mean() < cold.n_iter.mean()


def test_rank_deficient_columns():
    """Duplicate columns: LH must skip the dependent one, not divide by ~0."""
    rng = np.random.default_rng(5)
    B = rng.standard_normal((20, 6))
    A = np.hstack([B, B[:, :2]])
    Y = rng.standard_normal((30, 20)) + (B @ np.abs(rng.standard_normal((6, 30)))).T
    ref = _reference(A, Y)
    res = ur.nnls(A, Y, method="active-set", tol=1e-10)
    assert np.isfinite(res.x).all() and (res.x >= 0).all()
    scale = 0.5 * (Y**2).sum(1)
    assert np.max(np.abs(_obj(A, res.x, Y) - _obj(A, ref, Y)) / scale) < 1e-12


def test_bad_options():
    A = np.eye(3)
    with pytest.raises(ValueError, match="warm_start"):
        ur.nnls(A, np.ones(3), method="active-set", warm_start=-1)
    with pytest.raises(ValueError, match="rtol"):
        ur.nnls(A, np.ones(3), method="active-set", rtol=-1.0)


def test_support_polish_is_exact_lasso_solution():
    """The polished point satisfies the Lasso KKT conditions: its duality gap is ~0."""
    D, Y = bench.lasso_problems(60, seed=2)
    Dt, Yt = torch.from_numpy(D), torch.from_numpy(Y)
    rough = ur.lasso(Dt, Yt, 0.1, method="fista", restart=True, tol=1e-4)
    op = DenseOperator(Dt)
    Zp, ok = support_polish(op.gram, op.adjoint(Yt), torch.as_tensor(rough.x), 0.1)
    assert ok.float().mean() > 0.5
    gap = ur.Lasso(op, 0.1).certificate(Zp[ok], Yt[ok])
    assert float(gap.max()) < 1e-12


@pytest.mark.parametrize("kw", [dict(polish=True), dict(polish=True, precision="float32")])
def test_fista_speed_options_reach_the_same_optimum(kw):
    D, Y = bench.lasso_problems(100, seed=4)
    Dt, Yt = torch.from_numpy(D), torch.from_numpy(Y)
    ref = ur.lasso(Dt, Yt, 0.1, method="fista", restart=True, tol=1e-10, max_iter=50_000)
    res = ur.lasso(Dt, Yt, 0.1, method="fista", restart=True, tol=1e-6, max_iter=50_000, **kw)
    assert res.x.dtype == torch.float64 and res.converged.all()
    prob = ur.Lasso(DenseOperator(Dt), 0.1)
    F, F_ref = prob.objective(res.x, Yt), prob.objective(ref.x, Yt)
    assert float(((F - F_ref) / F_ref).max()) < 1e-6


def test_bench_quick_accuracy_column(capsys, tmp_path):
    out = tmp_path / "bench.json"
    results = bench.main(["--quick", "--sets", "nnls-10x20,lasso-64x256,memory", "--out", str(out)])
    assert out.exists()
    printed = capsys.readouterr().out
    assert "nnls-10x20" in printed and "µs/problem" in printed
    xie = {r["method"]: r for r in results["sets"]["nnls-10x20"]["rows"]}
    assert xie["active-set f64 (exact)"]["accuracy"] < 1e-12
    assert xie["default ur.nnls(A, Y)"]["accuracy"] < 1e-6
    assert "default ur.lasso(D, Y, λ)" in {r["method"] for r in results["sets"]["lasso-64x256"]["rows"]}
    mem = results["sets"]["memory"]
    assert mem["converged"] == mem["problems"] and mem["peak_rss_mib"] >= mem["peak_rss_mib_data"] > 0
    assert all(r["accuracy"] < 1e-6 for r in xie.values())
    for r in results["sets"]["lasso-64x256"]["rows"]:
        assert r["accuracy"] < 1e-6, r


@pytest.fixture(params=["compiled", "torch"])
def route(request, monkeypatch):
    """ur.nnls(..., "active-set") through LH in C, or through the batched torch steps (no compiler)."""
    from unrolled.algorithms import _compiled

    if request.param == "torch":
        monkeypatch.setitem(_compiled._state, "lib", None)
    elif _compiled.library() is None:
        pytest.skip("no C compiler")
    return request.param


def _hard_cases():
    rng = np.random.default_rng(21)
    scaled = rng.standard_normal((20, 10)) * np.logspace(-6, 6, 10)  # columns over 12 orders of magnitude
    base = rng.standard_normal((16, 6))
    duplicated = np.hstack([base, base[:, :3] * np.array([1.0, 1e3, 1e-3])])
    low_rank = rng.standard_normal((15, 4)) @ rng.standard_normal((4, 12))  # rank 4 < min(m, n)
    xie, _ = bench.xie_problems(1, seed=3)
    return {"scaled": scaled, "duplicated": duplicated, "low rank": low_rank, "xie 10x20": xie}


@pytest.mark.parametrize("case", ["scaled", "duplicated", "low rank", "xie 10x20"])
def test_both_routes_solve_the_hard_cases_like_scipy(route, case):
    """Certified, and no objective above SciPy's (on the column-normalised problem, where SciPy is accurate)."""
    A = _hard_cases()[case]
    rng = np.random.default_rng(len(case))
    Y = np.vstack([rng.standard_normal((20, A.shape[0])), (A @ np.abs(rng.standard_normal((A.shape[1], 20)))).T])
    c = np.linalg.norm(A, axis=0)
    ref = _reference(A / c, Y) / c
    res = ur.nnls(A, Y, method="active-set", tol=1e-9)
    assert res.converged.all() and (res.x >= 0).all() and res.certificate.max() < 1e-9
    scale = 0.5 * (Y**2).sum(1)
    assert np.max((_obj(A, res.x, Y) - _obj(A, ref, Y)) / scale) < 1e-10
    r32 = ur.nnls(A.astype(np.float32), Y.astype(np.float32), method="active-set", tol=1e-5)
    assert r32.x.dtype == np.float32 and r32.converged.all()
    assert np.max((_obj(A, r32.x.astype(np.float64), Y) - _obj(A, ref, Y)) / scale) < 1e-5


def test_compiled_route_counts_steps_and_honours_warm_starts(route):
    """n_iter counts LH steps; a start within tol costs 0 steps; a start near the answer saves steps."""
    A, Y = bench.xie_problems(200, seed=5)
    cold = ur.nnls(A, Y, method="active-set", tol=1e-12)
    assert cold.converged.all() and (cold.n_iter >= 1).all()
    again = ur.nnls(A, Y, method="active-set", tol=1e-6, x0=cold.x)
    assert (again.n_iter == 0).all() and np.array_equal(again.x, cold.x)
    near = ur.nnls(A, Y, method="active-set", tol=1e-12, x0=cold.x * 0.9)
    assert near.converged.all() and near.n_iter.mean() < cold.n_iter.mean()
    capped = ur.nnls(A, Y, method="active-set", tol=1e-12, max_iter=1)
    assert (capped.n_iter <= 1).all() and not capped.converged.all()
