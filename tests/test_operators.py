"""Operators: adjointness, Lipschitz constants (exact and iterative), caching, helpers."""
import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.operators import Conv2dOperator, DenseOperator, as_operator, mutual_coherence, power_iteration

F64 = torch.float64


def _adjoint_gap(op, batch=3, seed=0):
    """|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / (‖Ax‖‖y‖) for random rows x, y."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, op.n, generator=g, dtype=F64)
    Y = torch.randn(batch, op.m, generator=g, dtype=F64)
    AX, ATY = op.forward(X), op.adjoint(Y)
    assert AX.shape == (batch, op.m) and ATY.shape == (batch, op.n)
    lhs, rhs = (AX * Y).sum(1), (X * ATY).sum(1)
    return float(((lhs - rhs).abs() / (AX.norm(dim=1) * Y.norm(dim=1))).max())


@pytest.mark.parametrize("shape", [(7, 13), (13, 7), (10, 10), (1, 5), (5, 1)])
def test_dense_adjoint(shape):
    A = np.random.default_rng(1).standard_normal(shape)
    op = DenseOperator(A)
    assert op.shape == shape and op.dtype == F64
    assert _adjoint_gap(op) <= 1e-10
    X = torch.randn(4, shape[1], dtype=F64)
    np.testing.assert_allclose(op.forward(X).numpy(), X.numpy() @ A.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.normal(X).numpy(), X.numpy() @ A.T @ A, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kshape", [(1, 1), (3, 3), (4, 4), (5, 5), (2, 3)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("image", [(9, 9), (8, 10), (7, 6)])
def test_conv2d_adjoint_and_matrix(kshape, stride, image):
    kernel = np.random.default_rng(sum(kshape) + stride).standard_normal(kshape)
    op = Conv2dOperator(kernel, image, stride=stride, dtype=F64)
    assert op.n == image[0] * image[1]
    assert _adjoint_gap(op) <= 1e-10
    # the adjoint is the transpose of the forward map's matrix
    M = op.matrix()
    assert M.shape == op.shape
    R = torch.randn(2, op.m, dtype=F64)
    torch.testing.assert_close(op.adjoint(R), R @ M, rtol=1e-12, atol=1e-12)


def test_conv2d_is_a_convolution():
    """A delta image reproduces the kernel (convolution, not correlation), stride 1."""
    k = torch.arange(1.0, 10.0, dtype=F64).reshape(3, 3)
    op = Conv2dOperator(k, (7, 7), dtype=F64)
    x = torch.zeros(1, 49, dtype=F64)
    x[0, 3 * 7 + 3] = 1.0
    out = op.forward(x).reshape(op.out_shape[1:])
    assert op.in_shape == (1, 7, 7) and op.out_shape == (1, 7, 7)
    torch.testing.assert_close(out[2:5, 2:5], k)


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (20, 20)])
def test_dense_lipschitz_exact(shape):
    A = np.random.default_rng(2).standard_normal(shape)
    op = DenseOperator(A)
    exact = np.linalg.norm(A, 2) ** 2
    assert abs(op.lipschitz - exact) <= 1e-12 * exact
    # float32 operator: the constant of its own (float32) entries, computed in float64
    op32 = DenseOperator(A.astype(np.float32))
    assert abs(op32.lipschitz - np.linalg.norm(A.astype(np.float32).astype(np.float64), 2) ** 2) <= 1e-9 * exact


@pytest.mark.parametrize("kshape,stride,image", [((4, 4), 1, (9, 9)), ((3, 3), 1, (9, 9)), ((5, 5), 2, (12, 11)),
                                                 ((7, 7), 2, (16, 16))])
def test_conv2d_lipschitz_matches_svd_and_is_cached(kshape, stride, image, monkeypatch):
    """Power iteration agrees with ‖A‖₂² from the SVD of the operator's matrix to 1e-6 relative.

    The 4×4 / 9×9 case has clustered top eigenvalues: plain power iteration with a
    successive-difference stop stalled 1.8e-4 below the true value there.
    """
    kernel = np.random.default_rng(3).standard_normal(kshape)
    op = Conv2dOperator(kernel, image, stride=stride, dtype=F64)
    exact = float(torch.linalg.matrix_norm(op.matrix(), ord=2)) ** 2
    L = op.lipschitz
    assert abs(L - exact) <= 1e-6 * exact
    assert L >= exact * (1 - 1e-12)  # never below: a step 1/L must be safe
    calls = []
    monkeypatch.setattr(op, "normal", lambda X: calls.append(1) or Conv2dOperator.normal(op, X))
    assert op.lipschitz == L and not calls  # cached: no further operator application


def test_conv2d_float32_lipschitz():
    kernel = np.random.default_rng(4).random((5, 5))
    op = Conv2dOperator(kernel.astype(np.float32), (10, 10), stride=2)
    assert op.dtype == torch.float32
    exact = float(torch.linalg.matrix_norm(op.matrix().double(), ord=2)) ** 2
    assert abs(op.lipschitz - exact) <= 1e-6 * exact


def test_power_iteration_clustered_spectrum():
    """Top singular values 1, 1 − 1e-4, 1 − 2e-4, …: the estimate is still within 1e-8."""
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((60, 40)))
    V, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    s = 1 - 1e-4 * np.arange(40)
    A = torch.from_numpy(U @ np.diag(s) @ V.T)
    est = power_iteration(lambda X: X @ A.T @ A, 40)
    assert abs(est - 1.0) <= 1e-8
    assert power_iteration(lambda X: 0 * X, 5) == 0.0


def test_power_iteration_is_used_above_exact_size(monkeypatch):
    """Dense operators beyond EXACT_NORM_MAX fall back to the iterative estimate."""
    import unrolled.operators.dense as ops
    monkeypatch.setattr(ops, "EXACT_NORM_MAX", 3)
    A = np.random.default_rng(6).standard_normal((30, 20))
    op = DenseOperator(A)
    exact = np.linalg.norm(A, 2) ** 2
    assert abs(op.lipschitz - exact) <= 1e-6 * exact


def test_as_operator_and_to():
    A = np.random.default_rng(7).standard_normal((6, 4))
    op = as_operator(A)
    assert isinstance(op, DenseOperator) and as_operator(op) is op
    L = op.lipschitz
    op32 = as_operator(op, dtype=torch.float32)
    assert op32.dtype == torch.float32 and op32.lipschitz == L
    with pytest.raises(ValueError, match="D"):
        as_operator(np.ones(3), name="D")
    with pytest.raises(ValueError, match="kernel"):
        Conv2dOperator(np.ones(3), (4, 4))
    with pytest.raises(ValueError, match="image_shape"):
        Conv2dOperator(np.ones((3, 3)), (4, 4, 4))


def test_mutual_coherence():
    assert mutual_coherence(np.eye(5)) == 0.0
    D = np.random.default_rng(8).standard_normal((6, 4))
    D[:, 3] = -2 * D[:, 0]
    assert abs(mutual_coherence(D) - 1.0) <= 1e-12
    Dn = D[:, :3] / np.linalg.norm(D[:, :3], axis=0)
    G = np.abs(Dn.T @ Dn) - np.eye(3)
    assert abs(mutual_coherence(D[:, :3]) - G.max()) <= 1e-12


def test_solvers_accept_a_conv_operator():
    """ur.nnls on a Conv2dOperator equals ur.nnls on its dense matrix."""
    kernel = np.random.default_rng(9).random((3, 3))
    op = Conv2dOperator(kernel, (6, 6), stride=2, dtype=F64)
    Y = torch.from_numpy(np.random.default_rng(10).standard_normal((2, op.m)))
    a = ur.nnls(op, Y, "pgd", tol=0, max_iter=50)
    b = ur.nnls(op.matrix(), Y, "pgd", tol=0, max_iter=50)
    torch.testing.assert_close(a.x, b.x, rtol=1e-9, atol=1e-12)
