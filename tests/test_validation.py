"""The public contract of ur.nnls / ur.lasso: kinds in = kinds out, warm starts, history
shapes, per-row independence of the batch, and clear errors for bad input."""

import os
import re

import numpy as np
import pytest
import torch

import unrolled as ur

RNG = np.random.default_rng(0)
A = RNG.standard_normal((12, 8))
D = RNG.standard_normal((10, 16))
YA = RNG.standard_normal((4, 12))
YD = RNG.standard_normal((4, 10))
LAM = 1.0


def _solvers():
    yield "nnls-pgd", lambda M, Y, **kw: ur.nnls(M, Y, "pgd", **kw), A, YA
    yield "nnls-apgd", lambda M, Y, **kw: ur.nnls(M, Y, "apgd", momentum="nesterov", restart=True, **kw), A, YA
    yield "nnls-ogd", lambda M, Y, **kw: ur.nnls(M, Y, "ogd", **kw), A, YA
    yield "lasso-ista", lambda M, Y, **kw: ur.lasso(M, Y, LAM, "ista", **kw), D, YD
    yield "lasso-fista", lambda M, Y, **kw: ur.lasso(M, Y, LAM, "fista", restart=True, **kw), D, YD
    yield "lasso-oista", lambda M, Y, **kw: ur.lasso(M, Y, LAM, "oista", **kw), D, YD


SOLVERS = {name: (f, M, Y) for name, f, M, Y in _solvers()}


# ---------------------------------------------------------------- kinds contract
@pytest.mark.parametrize("name", list(SOLVERS))
def test_kinds_numpy_torch_vector_batch(name):
    solve, M, Y = SOLVERS[name]
    n = M.shape[1]
    kw = dict(tol=1e-8, max_iter=3000)
    r = solve(M, Y, **kw)  # NumPy batch
    assert isinstance(r.x, np.ndarray) and r.x.shape == (4, n) and r.x.dtype == np.float64
    assert isinstance(r.n_iter, np.ndarray) and r.n_iter.shape == (4,)
    assert isinstance(r.converged, np.ndarray) and r.converged.shape == (4,) and r.converged.dtype == bool
    rt = solve(torch.from_numpy(M), torch.from_numpy(Y), **kw)  # torch batch
    assert isinstance(rt.x, torch.Tensor) and rt.x.shape == (4, n) and rt.x.dtype == torch.float64
    assert not rt.x.requires_grad
    np.testing.assert_allclose(rt.x.numpy(), r.x, rtol=1e-12, atol=1e-14)
    rv = solve(M, Y[1], **kw)  # NumPy vector
    assert isinstance(rv.x, np.ndarray) and rv.x.shape == (n,)
    assert isinstance(rv.n_iter, int) and isinstance(rv.converged, bool)
    np.testing.assert_allclose(rv.x, r.x[1], rtol=1e-10, atol=1e-12)
    assert rv.n_iter == r.n_iter[1]
    rtv = solve(torch.from_numpy(M), torch.from_numpy(Y[1]), **kw)  # torch vector
    assert isinstance(rtv.x, torch.Tensor) and rtv.x.shape == (n,)
    r1 = solve(M, Y[1:2], **kw)  # a batch of one stays a batch
    assert r1.x.shape == (1, n) and r1.n_iter.shape == (1,)
    rl = solve(M.tolist(), Y.tolist(), **kw)  # plain lists are NumPy-like
    assert isinstance(rl.x, np.ndarray)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_float32_in_float32_out(name):
    solve, M, Y = SOLVERS[name]
    r32 = solve(M.astype(np.float32), Y.astype(np.float32), tol=1e-4, max_iter=20000)
    assert r32.x.dtype == np.float32
    rt = solve(torch.from_numpy(M).float(), torch.from_numpy(Y).float(), tol=1e-4, max_iter=10)
    assert rt.x.dtype == torch.float32
    r64 = solve(M, Y, tol=1e-10, max_iter=20000)
    # a relative certificate of 1e-4 in float32 means a near-optimal objective
    np.testing.assert_allclose(r32.objective, r64.objective, rtol=1e-3)
    assert r32.converged.all()
    # mixed precision promotes to the wider type
    assert solve(M.astype(np.float32), Y, tol=1e-4, max_iter=10).x.dtype == np.float64


@pytest.mark.parametrize("name", list(SOLVERS))
def test_history_shapes(name):
    solve, M, Y = SOLVERS[name]
    r = solve(M, Y, tol=0, max_iter=25, check_every=10, history="full")
    h = r.history
    assert list(h["iteration"]) == [0, 10, 20, 25]
    assert h["time"].shape == (4,) and (np.diff(h["time"]) >= 0).all()
    assert h["objective"].shape == (4, 4) and h["certificate"].shape == (4, 4)
    assert (r.n_iter == 25).all() and not r.converged.any()
    np.testing.assert_allclose(r.objective, h["objective"][-1])
    for key in ("objective_mean", "certificate_max", "certificate_median"):
        assert h[key].shape == (4,)
    np.testing.assert_allclose(h["certificate_max"], h["certificate"].max(1))
    np.testing.assert_allclose(r.certificate, h["certificate"][-1])
    summary = solve(M, Y, tol=0, max_iter=25, check_every=10).history
    assert "objective" not in summary and "certificate" not in summary
    np.testing.assert_allclose(summary["certificate_max"], h["certificate_max"])
    rv = solve(M, Y[0], tol=0, max_iter=25, check_every=10, history="full")
    assert rv.history["objective"].shape == (4,) and rv.history["certificate"].shape == (4,)
    assert rv.n_iter == 25 and rv.converged is False


@pytest.mark.parametrize("name", list(SOLVERS))
def test_rows_converging_early_keep_their_values(name):
    """The solver drops converged rows from the working batch: each row's result (x,
    n_iter, history) must equal solving that row alone."""
    solve, M, Y = SOLVERS[name]
    Yb = Y.copy()
    Yb[2] = 0.0  # converges at the first check
    Yb[0] *= 1e-3  # same problem, scaled: different n_iter only through rounding
    kw = dict(tol=1e-7, max_iter=5000, check_every=3, history="full")
    r = solve(M, Yb, **kw)
    assert r.converged.all()
    assert len(set(r.n_iter.tolist())) > 1, "want rows that stop at different iterations"
    for i in range(len(Yb)):
        ri = solve(M, Yb[i], **kw)
        assert ri.n_iter == r.n_iter[i]
        np.testing.assert_allclose(r.x[i], ri.x, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(ri.x).max()))
        np.testing.assert_allclose(
            r.history["objective"][:, i],
            np.pad(
                ri.history["objective"], (0, len(r.history["iteration"]) - len(ri.history["iteration"])), mode="edge"
            ),
            rtol=1e-9,
            atol=1e-15,
        )


@pytest.mark.parametrize("name", list(SOLVERS))
def test_warm_start(name):
    solve, M, Y = SOLVERS[name]
    n = M.shape[1]
    ref = solve(M, Y, tol=1e-10, max_iter=20000)
    # from the solution: certified before the first step
    r = solve(M, Y, x0=ref.x, tol=1e-8, check_every=1)
    assert r.converged.all() and (r.n_iter == 0).all()
    # one vector broadcast to the batch equals the same vector repeated
    x0 = np.abs(ref.x[0])
    a = solve(M, Y, x0=x0, tol=0, max_iter=7)
    b = solve(M, Y, x0=np.tile(x0, (4, 1)), tol=0, max_iter=7)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, solve(M, Y, tol=0, max_iter=7).x)
    with pytest.raises(ValueError, match="x0"):
        solve(M, Y, x0=np.zeros(n + 1))
    with pytest.raises(ValueError, match="x0"):
        solve(M, Y, x0=np.zeros((3, n)))
    with pytest.raises(ValueError, match="x0"):
        solve(M, Y, x0=np.full(n, np.nan))


def test_negative_x0_refused_for_nnls_only():
    with pytest.raises(ValueError, match="x0"):
        ur.nnls(A, YA, x0=-np.ones(8))
    ur.lasso(D, YD, LAM, x0=-np.ones(16), max_iter=5)  # fine for the Lasso


# ---------------------------------------------------------------- validation
def _raises(exc, words, call):
    """``call`` raises ``exc`` whose message names ``words``, from our own checks (not from torch)."""
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for w in words:  # as a word of its own: "D" must not match the "2-D" of "2-D matrix"
        assert re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", msg), msg
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename
    assert f"{os.sep}unrolled{os.sep}" in where and f"{os.sep}torch{os.sep}" not in where, where


BAD = [
    # (label, exception, words in the message, call)
    ("Y wrong width", ValueError, ["Y", "12"], lambda: ur.nnls(A, np.ones(11))),
    ("Y 3-D", ValueError, ["Y"], lambda: ur.nnls(A, np.ones((2, 3, 12)))),
    ("Y empty", ValueError, ["Y"], lambda: ur.nnls(A, np.ones((0, 12)))),
    ("Y scalar", ValueError, ["Y"], lambda: ur.nnls(A, 3.0)),
    ("A 1-D", ValueError, ["A"], lambda: ur.nnls(np.ones(12), YA)),
    ("A 3-D", ValueError, ["A"], lambda: ur.nnls(np.ones((2, 12, 8)), YA)),
    ("D 1-D", ValueError, ["D"], lambda: ur.lasso(np.ones(10), YD, LAM)),
    ("D wrong height", ValueError, ["Y", "10"], lambda: ur.lasso(D[:9], YD, LAM)),
    ("NaN in A", ValueError, ["A", "NaN"], lambda: ur.nnls(np.where(A > 1, np.nan, A), YA)),
    ("inf in D", ValueError, ["D", "inf"], lambda: ur.lasso(np.where(D > 1, np.inf, D), YD, LAM)),
    ("NaN in Y", ValueError, ["Y", "NaN"], lambda: ur.nnls(A, np.where(YA > 1, np.nan, YA))),
    ("inf in torch Y", ValueError, ["Y"], lambda: ur.lasso(D, torch.full((10,), float("inf")), LAM)),
    ("negative lam", ValueError, ["lam"], lambda: ur.lasso(D, YD, -0.1)),
    ("NaN lam", ValueError, ["lam"], lambda: ur.lasso(D, YD, float("nan"))),
    ("inf lam", ValueError, ["lam"], lambda: ur.lasso(D, YD, float("inf"))),
    ("str lam", TypeError, ["lam"], lambda: ur.lasso(D, YD, "big")),
    ("None lam", TypeError, ["lam"], lambda: ur.lasso(D, YD, None)),
    ("unknown nnls method", ValueError, ["method", "pgd"], lambda: ur.nnls(A, YA, "newton")),
    ("unknown lasso method", ValueError, ["method", "fista"], lambda: ur.lasso(D, YD, LAM, "lars")),
    ("max_iter 0", ValueError, ["max_iter"], lambda: ur.nnls(A, YA, max_iter=0)),
    ("max_iter -3", ValueError, ["max_iter"], lambda: ur.lasso(D, YD, LAM, max_iter=-3)),
    ("max_iter float", ValueError, ["max_iter"], lambda: ur.nnls(A, YA, max_iter=10.5)),
    ("max_iter bool", ValueError, ["max_iter"], lambda: ur.nnls(A, YA, max_iter=True)),
    ("check_every 0", ValueError, ["check_every"], lambda: ur.nnls(A, YA, check_every=0)),
    ("check_every -1", ValueError, ["check_every"], lambda: ur.lasso(D, YD, LAM, check_every=-1)),
    ("negative tol", ValueError, ["tol"], lambda: ur.nnls(A, YA, tol=-1e-6)),
    ("NaN tol", ValueError, ["tol"], lambda: ur.lasso(D, YD, LAM, tol=float("nan"))),
    ("str Y", TypeError, ["Y"], lambda: ur.nnls(A, [["a"] * 12])),
    ("None Y", TypeError, ["Y"], lambda: ur.lasso(D, None, LAM)),
    ("str A", TypeError, ["A"], lambda: ur.nnls("matrix", YA)),
    ("object D", TypeError, ["D"], lambda: ur.lasso(np.array([[object()] * 16] * 10), YD, LAM)),
    ("complex Y", TypeError, ["Y"], lambda: ur.nnls(A, YA + 1j)),
    ("bad momentum", ValueError, ["momentum"], lambda: ur.nnls(A, YA, "apgd", momentum="heavy")),
    ("bad gamma", ValueError, ["gamma"], lambda: ur.nnls(A, YA, "apgd", gamma=1.5)),
    ("bad power", ValueError, ["power"], lambda: ur.nnls(A, YA, "ogd", power=1)),
    ("bad step", ValueError, ["step"], lambda: ur.nnls(A, YA, "pgd", step=-1.0)),
    ("bad lasso step", ValueError, ["step"], lambda: ur.lasso(D, YD, LAM, "ista", step=0.0)),
]


@pytest.mark.parametrize("exc,words,call", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_clearly(exc, words, call):
    _raises(exc, words, call)


def test_unknown_option_names_it():
    with pytest.raises(TypeError, match="momentum"):
        ur.nnls(A, YA, "pgd", momentum="nesterov")
