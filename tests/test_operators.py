"""Operators: adjointness, Lipschitz constants (exact and iterative), caching, persistence, learned operators."""

import json

import numpy as np
import pytest
import torch

import unrolled as ur
import unrolled.operators as ops
import unrolled.operators.base as ops_base
import unrolled.operators.dense as ops_dense
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


@pytest.mark.parametrize(
    "kshape,stride,image", [((4, 4), 1, (9, 9)), ((3, 3), 1, (9, 9)), ((5, 5), 2, (12, 11)), ((7, 7), 2, (16, 16))]
)
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
    monkeypatch.setattr(ops_dense, "EXACT_NORM_MAX", 3)
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


# -- dense fingerprint: byte-identical to the one stored in saved models -------------
def test_dense_fingerprint_unchanged():
    """Values computed with the single-module operators.py that wrote the first saved models."""
    A = np.arange(12.0).reshape(3, 4) / 7
    assert DenseOperator(A).fingerprint() == "dense:36650e243834091a"
    assert DenseOperator(A.astype(np.float32)).fingerprint() == "dense:36650e243834091a"
    assert DenseOperator(np.random.default_rng(0).standard_normal((5, 9))).fingerprint() == "dense:e175b518e03ae480"


# -- multi-channel, strided convolutions ---------------------------------------------
def _conv_reference(kernel, image, stride, padding):
    """y_o = S(Σ_i k_{o,i} ∗ x_i) with SciPy's convolve2d, for one (C_in, H, W) image."""
    from scipy.signal import convolve2d

    (ph, pw), (sh, sw) = padding, stride
    padded = np.pad(image, ((0, 0), (ph, ph), (pw, pw)))
    return np.stack(
        [
            sum(convolve2d(padded[i], kernel[o, i], mode="valid") for i in range(kernel.shape[1]))
            for o in range(kernel.shape[0])
        ]
    )[:, ::sh, ::sw]


CONV_CASES = [
    ((1, 1, 3, 3), (7, 7), 1, None),
    ((3, 2, 3, 3), (2, 9, 8), 2, None),
    ((2, 3, 4, 4), (3, 10, 11), 2, 1),
    ((4, 1, 5, 3), (1, 8, 9), (2, 1), (2, 1)),
    ((2, 2, 2, 2), (2, 6, 7), 3, 0),
    ((1, 2, 3, 3), (2, 5, 5), 1, 2),
]


@pytest.mark.parametrize("kshape,image,stride,padding", CONV_CASES)
def test_conv2d_multichannel_matches_scipy(kshape, image, stride, padding):
    rng = np.random.default_rng(sum(kshape))
    kernel = rng.standard_normal(kshape)
    op = Conv2dOperator(kernel, image, stride=stride, padding=padding, dtype=F64)
    c_in = kshape[1]
    assert op.in_shape == (c_in, *image[-2:]) and op.n == int(np.prod(op.in_shape))
    X = rng.standard_normal((2, *op.in_shape))
    Y = op.forward(torch.from_numpy(X.reshape(2, -1))).reshape(2, *op.out_shape).numpy()
    for x, y in zip(X, Y):
        np.testing.assert_allclose(y, _conv_reference(kernel, x, op.stride, op.padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kshape,image,stride,padding", CONV_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_conv2d_multichannel_adjoint(kshape, image, stride, padding, dtype, tol):
    """⟨Ax, y⟩ = ⟨x, Aᵀy⟩ and Aᵀ is the transpose of the densified forward map."""
    kernel = np.random.default_rng(1 + sum(kshape)).standard_normal(kshape)
    op = Conv2dOperator(kernel, image, stride=stride, padding=padding, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    X, R = torch.randn(3, op.n, generator=g, dtype=dtype), torch.randn(3, op.m, generator=g, dtype=dtype)
    lhs, rhs = (op.forward(X) * R).sum(1), (X * op.adjoint(R)).sum(1)
    assert float(((lhs - rhs).abs() / (op.forward(X).norm(dim=1) * R.norm(dim=1))).max()) <= tol
    torch.testing.assert_close(op.adjoint(R), R @ op.matrix(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kshape,image,stride,padding", CONV_CASES[1:4])
def test_conv2d_multichannel_lipschitz_matches_svd(kshape, image, stride, padding):
    kernel = np.random.default_rng(2 + sum(kshape)).standard_normal(kshape)
    op = Conv2dOperator(kernel, image, stride=stride, padding=padding, dtype=F64)
    exact = float(torch.linalg.matrix_norm(op.matrix(), ord=2)) ** 2
    assert exact * (1 - 1e-12) <= op.lipschitz <= exact * (1 + 1e-6)


def test_conv2d_two_dimensional_kernel_is_one_channel():
    kernel = np.random.default_rng(11).standard_normal((3, 4))
    a = Conv2dOperator(kernel, (8, 9), stride=2, dtype=F64)
    b = Conv2dOperator(kernel[None, None], (1, 8, 9), stride=2, dtype=F64)
    torch.testing.assert_close(a.matrix(), b.matrix(), rtol=0, atol=0)
    assert a.fingerprint() == b.fingerprint() and a.padding == (1, 1)  # default: kh // 2 on both axes


@pytest.mark.parametrize(
    "args,kw,match",
    [
        (((2, 2, 3), (4, 4)), {}, "kernel"),
        (((2, 3, 3, 3), (2, 6, 6)), {}, "channels"),
        (((1, 1, 5, 5), (3, 3)), {"padding": 0}, "larger"),
        (((1, 1, 3, 3), (6, 6)), {"stride": 0}, "stride"),
        (((1, 1, 3, 3), (6, 6)), {"padding": (1, -1)}, "padding"),
        (((1, 1, 3, 3), 6), {}, "image_shape"),
    ],
)
def test_conv2d_rejects_bad_geometry(args, kw, match):
    with pytest.raises(ValueError, match=match):
        Conv2dOperator(np.ones(args[0]), args[1], **kw)


# -- the adjoint as an operator --------------------------------------------------------
def _ops64():
    rng = np.random.default_rng(12)
    return [
        DenseOperator(rng.standard_normal((6, 9))),
        Conv2dOperator(rng.standard_normal((3, 2, 3, 3)), (2, 7, 6), stride=2, dtype=F64),
    ]


@pytest.mark.parametrize("i", [0, 1])
def test_transpose_is_the_adjoint(i):
    op = _ops64()[i]
    t = op.T
    assert t.shape == (op.n, op.m) and t.in_shape == op.out_shape and t.out_shape == op.in_shape
    assert t.T is op and t.dtype == op.dtype
    torch.testing.assert_close(t.matrix(), op.matrix().T, rtol=0, atol=0)
    R = torch.randn(2, op.m, dtype=F64)
    torch.testing.assert_close(t.forward(R), op.adjoint(R), rtol=0, atol=0)
    assert _adjoint_gap(t) <= 1e-12
    assert t.lipschitz == op.lipschitz
    assert t.fingerprint() != op.fingerprint() and t.fingerprint().startswith(op.fingerprint())


# -- .to() keeps the cached constant -----------------------------------------------------
@pytest.mark.parametrize(
    "make", [lambda op: op, lambda op: op.T, lambda op: ops.learned(op)], ids=["fixed", "transpose", "learned"]
)
@pytest.mark.parametrize("i", [0, 1])
def test_to_keeps_cached_lipschitz(make, i, monkeypatch):
    op = make(_ops64()[i])
    L = op.lipschitz
    for module in (ops_base, ops_dense):
        monkeypatch.setattr(module, "power_iteration", _forbidden)
    monkeypatch.setattr(torch.linalg, "matrix_norm", _forbidden)
    moved = op.to(dtype=torch.float32)
    assert moved.dtype == torch.float32 and moved.lipschitz == L
    assert moved.to(dtype=F64).lipschitz == L


def _forbidden(*args, **kwargs):
    raise AssertionError("the Lipschitz constant was recomputed")


# -- persistence -----------------------------------------------------------------------------
def _all_kinds():
    rng = np.random.default_rng(13)
    dense, conv = (
        DenseOperator(rng.standard_normal((5, 8))),
        Conv2dOperator(rng.standard_normal((2, 3, 3, 2)), (3, 6, 7), stride=(2, 1), padding=(1, 0), dtype=F64),
    )
    return [dense, conv, dense.T, conv.T, ops.learned(dense), ops.learned(conv), ops.learned(conv).T]


@pytest.mark.parametrize("i", range(7))
def test_spec_round_trip(i):
    op = _all_kinds()[i]
    config, tensors = op.spec()
    config = json.loads(json.dumps(config))
    assert "kind" in config and all(isinstance(t, torch.Tensor) for t in tensors.values())
    back = ops.from_spec(config, tensors)
    assert type(back) is type(op) and back.fingerprint() == op.fingerprint()
    assert back.shape == op.shape and back.in_shape == op.in_shape and back.out_shape == op.out_shape
    X, R = torch.randn(2, op.n, dtype=F64), torch.randn(2, op.m, dtype=F64)
    torch.testing.assert_close(back.forward(X), op.forward(X), rtol=0, atol=0)
    torch.testing.assert_close(back.adjoint(R), op.adjoint(R), rtol=0, atol=0)
    single = ops.from_spec(config, tensors, dtype=torch.float32)
    assert single.dtype == torch.float32 and single.fingerprint() == op.fingerprint()


def test_fingerprints_tell_kinds_and_geometry_apart():
    prints = [op.fingerprint() for op in _all_kinds()[:4]]
    assert len(set(prints)) == 4
    k = np.random.default_rng(14).standard_normal((2, 1, 3, 3))
    a = Conv2dOperator(k, (6, 6)).fingerprint()
    assert a != Conv2dOperator(k, (6, 6), stride=2).fingerprint() != Conv2dOperator(k, (7, 6)).fingerprint()
    assert a != Conv2dOperator(k.reshape(1, 2, 3, 3), (2, 6, 6)).fingerprint()  # same bytes, other channels


@pytest.mark.parametrize(
    "config,tensors,match",
    [
        ({"kind": "sparse"}, {}, "unknown operator kind"),
        ({}, {}, "kind"),
        ("dense", {}, "kind"),
        ({"kind": "dense"}, {}, "lacks 'A'"),
        ({"kind": "transpose", "of": None}, {}, "kind"),
    ],
)
def test_from_spec_rejects_bad_specs(config, tensors, match):
    with pytest.raises(ValueError, match=match):
        ops.from_spec(config, tensors)


# -- learned operators -------------------------------------------------------------------------
@pytest.mark.parametrize("i", [0, 1])
def test_learned_starts_at_the_operator(i):
    op = _ops64()[i]
    for fixed, trained in ((op, ops.learned(op)), (op.T, ops.learned(op.T))):
        assert isinstance(trained, ops.LearnedOperator) and isinstance(trained, torch.nn.Module)
        assert trained.shape == fixed.shape and trained.in_shape == fixed.in_shape
        X, R = torch.randn(3, fixed.n, dtype=F64), torch.randn(3, fixed.m, dtype=F64)
        torch.testing.assert_close(trained.forward(X), fixed.forward(X), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(trained.adjoint(R), fixed.adjoint(R), rtol=1e-12, atol=1e-12)
        assert trained.fingerprint() == fixed.fingerprint()
        assert abs(trained.lipschitz - fixed.lipschitz) <= 1e-12 * fixed.lipschitz


def test_learned_weights_are_parameters_and_copies():
    dense, conv = _ops64()
    ld, lc = ops.learned(dense), ops.learned(conv)
    assert list(ld.state_dict()) == ["weight"] and ld.weight.shape == dense.shape
    assert lc.weight.shape == (3, 2, 3, 3) and lc.stride == (2, 2)
    assert list(lc.T.state_dict()) == ["base.weight"] and next(iter(lc.T.parameters())) is lc.weight
    with torch.no_grad():
        ld.weight.mul_(2)
    assert float(dense.A.abs().max()) * 2 == float(ld.weight.detach().abs().max())  # the source is untouched
    copy = ops.learned(ld)
    assert copy.weight is not ld.weight and torch.equal(copy.weight, ld.weight)


def _functional(op, method):
    """w ↦ op.<method>(Z) with the weight w substituted (for gradcheck)."""

    def apply(w, Z):
        return torch.func.functional_call(_Call(op, method), {"op.weight": w}, (Z,))

    return apply


class _Call(torch.nn.Module):
    def __init__(self, op, method):
        super().__init__()
        self.op, self.method = op, method

    def forward(self, Z):
        return getattr(self.op, self.method)(Z)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ops.LearnedDense(torch.randn(3, 4, dtype=F64)),
        lambda: ops.LearnedConv2d(torch.randn(2, 1, 2, 2, dtype=F64), (1, 4, 5), stride=2),
    ],
    ids=["dense", "conv"],
)
def test_learned_is_differentiable_in_the_weights(make):
    op = make()
    w = op.weight.detach().clone().requires_grad_(True)
    X = torch.randn(2, op.n, dtype=F64, requires_grad=True)
    R = torch.randn(2, op.m, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_functional(op, "forward"), (w, X))
    assert torch.autograd.gradcheck(_functional(op, "adjoint"), (w, R))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("i", [0, 1])
def test_learned_lipschitz_follows_the_weights(i, foreach):
    op = ops.learned(_ops64()[i])
    L0, print0 = op.lipschitz, op.fingerprint()
    assert op.weight.grad is None
    loss = op.forward(torch.ones(1, op.n, dtype=F64)).square().sum()
    loss.backward()
    torch.optim.Adam(op.parameters(), lr=0.1, foreach=foreach).step()
    exact = float(torch.linalg.matrix_norm(op.frozen().matrix(), ord=2)) ** 2
    assert op.lipschitz != L0 and op.fingerprint() != print0
    assert exact * (1 - 1e-12) <= op.lipschitz <= exact * (1 + 1e-6)
    op.load_state_dict({"weight": ops.learned(_ops64()[i]).weight.detach()})
    assert op.lipschitz == L0 and op.fingerprint() == print0


def test_learned_lipschitz_is_cached_while_weights_stay(monkeypatch):
    op = ops.learned(_ops64()[1])
    L = op.lipschitz
    monkeypatch.setattr(ops_base, "power_iteration", _forbidden)
    op.forward(torch.ones(1, op.n, dtype=F64)).sum().backward()
    assert op.lipschitz == L and op.T.lipschitz == L
    net = torch.nn.Sequential(op)
    net.double().float()
    assert op.lipschitz == L and op.dtype == torch.float32


def test_learned_to_is_the_module_one():
    op = ops.learned(_ops64()[0])
    assert op.to(dtype=torch.float32) is op and op.weight.dtype == torch.float32
    assert op.double() is op and op.dtype == F64
    assert op.to("cpu") is op


def test_as_operator_does_not_change_a_learned_operator():
    op = ops.learned(_ops64()[0])
    single = as_operator(op, dtype=torch.float32)
    assert single is not op and single.dtype == torch.float32 and op.dtype == F64
    assert as_operator(op) is op


def test_learned_rejects_unknown_operators():
    with pytest.raises(TypeError, match="op must be"):
        ops.learned(_NotAnOperator())
    with pytest.raises(ValueError, match="A must be"):
        ops.LearnedDense(np.ones(3))


class _NotAnOperator(ops.Operator):
    shape, dtype, device = (2, 2), F64, torch.device("cpu")
