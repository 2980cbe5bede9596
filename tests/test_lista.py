"""The LISTA family (nets/lista.py), its training schedules (staged.py), data (data/lasso.py,
data/images.py) and metrics (metrics.py)."""

import gzip
import math

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.algorithms._common import soft_threshold
from unrolled.algorithms.lasso import ISTA
from unrolled.data.images import digits_lasso_data, load_digits, load_idx_images, read_idx, write_idx
from unrolled.data.lasso import (
    bernoulli_gaussian,
    equiregularization,
    gaussian_dictionary,
    sparse_measurements,
    sphere_dictionary,
)
from unrolled.metrics import jaccard, lasso_optimum, nmse_db, objective_gap, recovery_error, support_f1
from unrolled.nets import ALISTA, LISTA, LISTA_CP, SLISTA, LISTAFamily, load
from unrolled.nets.lista import alista_gain, alista_objective
from unrolled.operators import DenseOperator
from unrolled.problems import Lasso
from unrolled.staged import evaluate_layers, train_layerwise, train_staged
from unrolled.training import train


@pytest.fixture(scope="module")
def small():
    D = torch.as_tensor(sphere_dictionary(10, 20, seed=1))
    Y = torch.as_tensor(equiregularization(D, 16, seed=2))
    return D, Y


def ista_iterates(D, Y, lam, k, nonneg=False):
    if not nonneg:
        prob = Lasso(DenseOperator(D), lam)
        m = ISTA(prob)
        st = m.init(Y, None)
        out = []
        for i in range(k):
            m.step(st, i)
            out.append(st["x"].clone())
        return out
    L = float(torch.linalg.matrix_norm(D, ord=2)) ** 2
    z, out = torch.zeros(Y.shape[0], D.shape[1], dtype=D.dtype), []
    for _ in range(k):  # prox of λ‖·‖₁ + ι≥0: (u − λ/L)₊
        z = torch.relu(z - (z @ D.T - Y) @ D / L - lam / L)
        out.append(z)
    return out


# -- nets -------------------------------------------------------------------------------------

NETS = [
    (LISTA, {}),
    (LISTA_CP, {}),
    (SLISTA, {}),
    (ALISTA, {"gain": "dictionary"}),
    (LISTA, {"tied": True}),
    (LISTA_CP, {"tied": True}),
    (LISTAFamily, {"parametrization": "coupled"}),
]


@pytest.mark.parametrize("cls,kw", NETS)
@pytest.mark.parametrize("nonneg", [False, True])
def test_analytic_init_is_ista_iterate_for_iterate(small, cls, kw, nonneg):
    D, Y = small
    lam, K = 0.2, 15
    net = cls(D, K, lam, nonneg=nonneg, **kw)
    with torch.no_grad():
        outs = net(Y, return_all=True)
    ref = ista_iterates(D, Y, lam, K, nonneg=nonneg)
    for t, (a, b) in enumerate(zip(outs, ref)):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), f"layer {t + 1}"
    assert outs[-1].abs().sum() > 0  # not trivially zero
    if nonneg:
        assert (outs[-1] >= 0).all()


def test_alista_with_coherence_gain_is_its_own_iteration(small):
    D, Y = small
    lam = 0.2
    net = ALISTA(D, 4, lam)
    W = net.gain
    s0 = 1 / float(torch.linalg.matrix_norm(W.T @ D, ord=2))
    z = torch.zeros(Y.shape[0], 20, dtype=D.dtype)
    with torch.no_grad():
        outs = net(Y, return_all=True)
    for t in range(4):
        u = z - s0 * (z @ D.T - Y) @ W
        z = torch.sign(u) * torch.relu(u.abs() - lam * s0)
        assert torch.allclose(outs[t], z, atol=1e-12)


def test_alista_gain_minimises_the_coherence_objective():
    D = torch.as_tensor(gaussian_dictionary(20, 50, seed=3))
    W = alista_gain(D, tol=1e-13)
    # constraint w_iᵀd_i = 1
    assert torch.allclose((W * D).sum(0), torch.ones(50, dtype=D.dtype), atol=1e-10)
    # closed form of the separable problem: w_i ∝ (DDᵀ)⁻¹ d_i
    G = torch.linalg.inv(D @ D.T)
    Wc = G @ D / (D * (G @ D)).sum(0, keepdim=True)
    assert torch.allclose(W, Wc, atol=1e-6)
    f = alista_objective(W, D)
    assert f <= alista_objective(D / D.pow(2).sum(0), D)  # beats the feasible start
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # and every feasible perturbation
        P = torch.randn(W.shape, generator=gen, dtype=D.dtype) * 1e-3
        P -= (P * D).sum(0, keepdim=True) * D / D.pow(2).sum(0, keepdim=True)  # stay on the constraint
        assert alista_objective(W + P, D) >= f - 1e-12
    # lower generalised coherence than D itself (what ALISTA is for)
    C = (W.T @ D).abs()
    C.fill_diagonal_(0)
    assert float(C.max()) < ur.operators.mutual_coherence(D)


def test_soft_threshold_and_support_selection():
    U = torch.tensor([[3.0, -2.0, 0.5, -0.2, 1.5]])
    assert torch.allclose(soft_threshold(U, 1.0), torch.tensor([[2.0, -1.0, 0.0, 0.0, 0.5]]))
    # the 2 largest |u| above the threshold pass untouched
    assert torch.allclose(soft_threshold(U, 1.0, keep=2), torch.tensor([[3.0, -2.0, 0.0, 0.0, 0.5]]))
    # keep never lets an entry below the threshold through
    assert torch.allclose(soft_threshold(U, 1.0, keep=5), torch.tensor([[3.0, -2.0, 0.0, 0.0, 1.5]]))
    assert torch.allclose(soft_threshold(U, 1.0, nonneg=True), torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.5]]))
    # the float path (softshrink) and the tensor path (learned thresholds) agree bit for bit
    V = torch.randn(50, 7, dtype=torch.float64)
    assert torch.equal(soft_threshold(V, 0.3), soft_threshold(V, torch.tensor(0.3, dtype=torch.float64)))
    out = soft_threshold(V, 0.0)
    assert torch.equal(out, V) and out is not V  # a copy, which a prox may overwrite


def test_fista_momentum_floats_tensors_and_restart():
    from unrolled.algorithms._common import extrapolate, fista_momentum, restart_test

    t_f, b_f = fista_momentum(1.0)
    assert t_f == (1 + 5**0.5) / 2 and b_f == 0.0
    t_f2, b_f2 = fista_momentum(t_f)
    t = torch.tensor([[t_f], [t_f]], dtype=torch.float64)
    restart = torch.tensor([[False], [True]])
    t2, b2 = fista_momentum(t, restart)
    assert float(t2[0]) == t_f2 and float(b2[0]) == b_f2 and float(t2[1]) == 1.0 and float(b2[1]) == 0.0
    x, x_new = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    expected = torch.tensor([[1 + b_f2] * 3, [1.0] * 3], dtype=torch.float64)
    assert torch.equal(extrapolate(x_new, x, b2), expected)
    assert torch.equal(extrapolate(x_new, x, b_f2), torch.full((2, 3), 1 + b_f2, dtype=torch.float64))
    # the gradient test: restart where the step goes against the momentum
    w = torch.tensor([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert restart_test(w, x_new, x).squeeze(1).tolist() == [True, False]


def test_support_selection_schedule_and_effect(small):
    D, Y = small
    net = LISTA_CP(D, 12, 0.2, support_selection=True, ss_percent=5.0, ss_max=20.0)
    assert [net.keep(t) for t in (0, 1, 3, 11)] == [1, 2, 4, 4]
    plain = LISTA_CP(D, 12, 0.2)
    with torch.no_grad():
        a, b = net(Y), plain(Y)
    assert not torch.allclose(a, b)


def test_parameters_tied_and_per_layer(small):
    D, _ = small
    untied, tied = LISTA_CP(D, 5, 0.1), LISTA_CP(D, 5, 0.1, tied=True)
    assert len(list(untied.parameters())) == 5 * 3 and len(list(tied.parameters())) == 5 * 2 + 1
    assert tied.layer_parameters(0)[-1] is tied.layer_parameters(4)[-1]
    assert len(list(SLISTA(D, 5, 0.1).parameters())) == 5
    assert len(list(ALISTA(D, 5, 0.1).parameters())) == 10
    full = LISTA(D, 5, 0.1)
    assert len(full.layer_parameters(0)) == 2 and len(full.layer_parameters(1)) == 3


def test_bad_arguments(small):
    D, Y = small
    with pytest.raises(ValueError, match="lam"):
        SLISTA(D, 3, -1.0)
    with pytest.raises(ValueError, match="parametrization"):
        LISTAFamily(D, 3, 0.1, parametrization="nope")
    with pytest.raises(ValueError, match="support_selection"):
        SLISTA(D, 3, 0.1, support_selection=True)
    with pytest.raises(ValueError, match="tied"):
        ALISTA(D, 3, 0.1, tied=True)
    with pytest.raises(ValueError, match="depth"):
        LISTA_CP(D, 0, 0.1)
    with pytest.raises(ValueError, match="Y has 7"):
        LISTA_CP(D, 2, 0.1)(torch.zeros(3, 7, dtype=D.dtype))


@pytest.mark.parametrize(
    "cls,kw",
    [
        (LISTA, {"tied": True}),
        (LISTA_CP, {"support_selection": True}),
        (ALISTA, {}),
        (SLISTA, {"nonneg": True}),
        (LISTAFamily, {"parametrization": "full"}),
    ],
)
def test_save_load_roundtrip(tmp_path, small, cls, kw):
    D, Y = small
    net = cls(D, 3, 0.3, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    net.save(tmp_path / "m.safetensors")
    net2 = load(tmp_path / "m.safetensors")
    assert type(net2) is cls and net2.config == net.config
    with torch.no_grad():
        assert torch.allclose(net(Y), net2(Y), atol=1e-12)


# -- training modes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_task():
    D = torch.as_tensor(sphere_dictionary(8, 16, seed=4))
    Z = torch.as_tensor(bernoulli_gaussian(300, 16, 0.2, seed=5))
    Y = Z @ D.T
    return D.float(), Y.float(), Z.float()


def test_unsupervised_training_lowers_the_lasso_objective(tiny_task):
    D, Y, _ = tiny_task
    net = SLISTA(D, 4, 0.1)
    with torch.no_grad():
        before = float(net.problem.objective(net(Y), Y).mean())
    h = train(net, Y, loss="unsupervised", epochs=15, lr=0.05, batch_size=50, progress=False)
    with torch.no_grad():
        after = float(net.problem.objective(net(Y), Y).mean())
    assert after < before - 1e-3 and h.best_loss <= h.train_loss[0]
    assert float(net.steps().mean() * net.op.lipschitz) > 1.0  # steps grew beyond 1/L


def test_supervised_training_lowers_nmse(tiny_task):
    D, Y, Z = tiny_task
    net = LISTA_CP(D, 4, 0.05)
    with torch.no_grad():
        before = nmse_db(net(Y).double(), Z.double())
    train(net, Y, Z, loss="supervised", epochs=30, lr=0.03, batch_size=50, progress=False)
    with torch.no_grad():
        after = nmse_db(net(Y).double(), Z.double())
    assert after < before - 1.0


def test_semi_supervised_targets_are_lasso_solutions(tiny_task):
    sklearn = pytest.importorskip("sklearn.linear_model")
    D, Y, _ = tiny_task
    lam = 0.1
    D64, Y64 = D.double(), Y.double()[:20]
    Zs, Fs = lasso_optimum(Lasso(DenseOperator(D64), lam), Y64)
    m = D.shape[0]
    for i in range(5):  # scikit-learn: (1/2m)‖y − Dz‖² + α‖z‖₁, so α = λ/m
        sk = sklearn.Lasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
            D64.numpy(), Y64[i].numpy()
        )
        assert np.allclose(Zs[i].numpy(), sk.coef_, atol=1e-5)
    net = LISTA_CP(D, 3, lam)
    with torch.no_grad():
        before = float((net(Y64.float()) - Zs.float()).pow(2).sum(1).mean())
    train(net, Y64.float(), loss="semi-supervised", epochs=20, lr=0.01, batch_size=10, progress=False)
    with torch.no_grad():
        after = float((net(Y64.float()) - Zs.float()).pow(2).sum(1).mean())
    assert after < before


def test_layerwise_training_is_nested(tiny_task):
    D, Y, _ = tiny_task
    net = LISTA_CP(D, 3, 0.1)
    snaps = []
    recs = train_layerwise(
        net,
        Y,
        loss="unsupervised",
        epochs_new=3,
        lr=0.01,
        batch_size=100,
        on_stage=lambda k, n: [p.detach().clone() for p in n.layer_parameters(0)],
    )
    snaps = [r["result"] for r in recs]
    assert [r["depth"] for r in recs] == [1, 2, 3]
    for a, b in zip(snaps[0], snaps[2]):  # layer 1 untouched after stage 1
        assert torch.equal(a, b)
    assert not torch.equal(snaps[0][0], torch.zeros(()))


def test_staged_schedule_refines_all_layers(tiny_task):
    D, Y, Z = tiny_task
    net = LISTA_CP(D, 3, 0.05)
    first = [p.detach().clone() for p in net.layer_parameters(0)]
    recs = train_staged(
        net, Y, Z, loss="supervised", stages=[1, 3], epochs_new=2, epochs_all=(1, 1), lr=0.01, batch_size=100
    )
    assert [r["depth"] for r in recs] == [1, 3] and len(recs[1]["histories"]) == 3
    assert any(not torch.equal(a, b) for a, b in zip(first, net.layer_parameters(0)))
    with pytest.raises(ValueError, match="stages"):
        train_staged(net, Y, Z, stages=[2, 1])
    ev = evaluate_layers(net, Y, Z, F_star=torch.zeros(Y.shape[0]))
    assert len(ev["nmse_db"]) == 3 and len(ev["gap"]) == 3


# -- data ------------------------------------------------------------------------------------------------


def test_generators():
    D = torch.as_tensor(sphere_dictionary(64, 256, seed=0))
    assert torch.allclose(D.norm(dim=0), torch.ones(256, dtype=D.dtype))
    Y = torch.as_tensor(equiregularization(D, 50, seed=1))
    assert torch.allclose((Y @ D).abs().amax(1), torch.ones(50, dtype=D.dtype))
    assert torch.allclose(Lasso(DenseOperator(D), 0.1).lambda_max(Y), torch.ones(50, dtype=D.dtype))
    Z = torch.as_tensor(bernoulli_gaussian(2000, 500, 0.1, seed=2))
    assert abs(float((Z != 0).double().mean()) - 0.1) < 0.005
    A = torch.as_tensor(gaussian_dictionary(250, 500, seed=3))
    assert torch.allclose(A.norm(dim=0), torch.ones(500, dtype=A.dtype))
    Yn, Zn = map(torch.as_tensor, sparse_measurements(A, 400, snr_db=40.0, seed=4))
    clean = Zn @ A.T
    snr = 10 * math.log10(float(clean.pow(2).sum() / (Yn - clean).pow(2).sum()))
    assert abs(snr - 40.0) < 0.3
    with pytest.raises(ValueError, match="p"):
        bernoulli_gaussian(3, 3, 1.5)
    assert np.array_equal(equiregularization(D, 5, seed=9), equiregularization(D, 5, seed=9))


def test_digits():
    X, y = map(torch.as_tensor, load_digits())
    assert X.shape == (1797, 64) and X.max() <= 1 and set(y.tolist()) == set(range(10))
    D, Ytr, Yte = map(torch.as_tensor, digits_lasso_data(256, 100, 50, seed=0))
    assert D.shape == (64, 256) and Ytr.shape == (100, 64) and Yte.shape == (50, 64)
    assert torch.allclose((Yte @ D).abs().amax(1), torch.ones(50, dtype=D.dtype))
    with pytest.raises(ValueError, match="exceeds"):
        digits_lasso_data(256, 1500, 100)


def test_idx_reader(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    write_idx(tmp_path / "i.idx", imgs)
    write_idx(tmp_path / "l.idx.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "i.idx"), imgs)
    assert np.array_equal(read_idx(tmp_path / "l.idx.gz"), labels)
    # hand-written header: magic 0 0, type 0x08, ndim 1, size 3 (big-endian)
    (tmp_path / "h.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(tmp_path / "h.idx").tolist() == [7, 8, 9]
    f = np.array([[1.5, -2.0]], dtype=np.float32)
    write_idx(tmp_path / "f.idx", f)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), f)
    X, lab, shape = load_idx_images(tmp_path / "i.idx", tmp_path / "l.idx.gz")
    assert X.shape == (5, 12) and shape == (4, 3) and lab.tolist() == list(range(5))
    assert np.allclose(X[0], imgs[0].reshape(-1) / 255.0)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="holds"):
        read_idx(tmp_path / "short.idx")
    with gzip.open(tmp_path / "x.gz", "wb") as fh:
        fh.write(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match="type code"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.idx")


# -- metrics ---------------------------------------------------------------------------------------------


def test_metrics_closed_forms():
    X = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    Xh = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    assert np.allclose(recovery_error(Xh, X), [math.sqrt(0.25 + 4), 1.0])
    assert math.isclose(nmse_db(Xh, X), 10 * math.log10((4.25 + 1) / 14))
    assert math.isclose(nmse_db(X * 1.1, X), 20 * math.log10(0.1))
    # supports: row 1 S={0,2}, Ŝ={0,1}; row 2 S={1}, Ŝ={1,3}
    assert math.isclose(support_f1(Xh, X), (2 * 1 / 4 + 2 * 1 / 3) / 2)
    assert math.isclose(jaccard(Xh, X), (1 / 3 + 1 / 2) / 2)
    assert support_f1(np.zeros((1, 3)), np.zeros((1, 3))) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        nmse_db(Xh[:, :3], X)
    assert isinstance(recovery_error(torch.tensor(Xh), torch.tensor(X)), torch.Tensor)


def test_objective_gap_against_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    D = torch.as_tensor(sphere_dictionary(15, 30, seed=7))
    Y = torch.as_tensor(equiregularization(D, 4, seed=8))
    lam = 0.2
    prob = Lasso(DenseOperator(D), lam)
    gaps0 = objective_gap(prob, torch.zeros(4, 30, dtype=D.dtype), Y)
    assert (gaps0 > 0).all()
    Zsk = np.stack(
        [
            sklearn.Lasso(alpha=lam / 15, fit_intercept=False, tol=1e-12, max_iter=100_000)
            .fit(D.numpy(), Y[i].numpy())
            .coef_
            for i in range(4)
        ]
    )
    g = objective_gap(prob, Zsk, Y.numpy())
    assert isinstance(g, np.ndarray) and np.all(np.abs(g) < 1e-8)


# -- nets on operators that are not matrices ----------------------------------------------------
from unrolled.operators import Conv2dOperator, learned  # noqa: E402


@pytest.fixture(scope="module")
def conv():
    """A two-filter strided convolution's adjoint as the dictionary: codes (2, 4, 4) → images (1, 7, 7)."""
    gen = torch.Generator().manual_seed(0)
    kernel = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64)
    D = Conv2dOperator(kernel, (1, 7, 7), stride=2, padding=1).T
    X = torch.zeros(6, D.n, dtype=torch.float64)
    X[:, ::5] = torch.randn(6, len(range(0, D.n, 5)), generator=gen, dtype=torch.float64)
    return D, D.forward(X)


def ista_on(D, Y, lam, K):
    method = ISTA(Lasso(D, lam))
    state, out = method.init(Y, None), []
    for k in range(1, K + 1):
        method.step(state, k)
        out.append(state["x"].clone())
    return out


CONV_NETS = [(SLISTA, {}), (LISTA_CP, {}), (LISTA_CP, {"tied": True}), (ALISTA, {"gain": "dictionary"})]


@pytest.mark.parametrize("cls,kw", CONV_NETS)
@pytest.mark.parametrize("on_learned", [False, True])
def test_nets_on_a_convolution_are_ista_without_densifying(conv, cls, kw, on_learned):
    D, Y = conv
    lam, K = 0.05, 8
    op = learned(D) if on_learned else D
    net = cls(op, K, lam, **kw)
    assert not any(t.shape == (D.m, D.n) for t in net.state_dict().values())  # no dense copy of D anywhere
    with torch.no_grad():
        outs = net(Y, return_all=True)
    ref = ista_on(D, Y, lam, K)
    for t, (a, b) in enumerate(zip(outs, ref), 1):
        assert float((a - b).abs().max()) <= 1e-10 * max(1.0, float(b.abs().max())), f"layer {t}"
    assert float(ref[-1].abs().max()) > 0 and float((ref[-1] - ref[0]).abs().max()) > 1e-3


@pytest.mark.parametrize("cls,kw", CONV_NETS)
@pytest.mark.parametrize("on_learned", [False, True])
def test_conv_nets_save_load_and_move(conv, cls, kw, on_learned, tmp_path):
    D, Y = conv
    net = cls(learned(D) if on_learned else D, 4, 0.05, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = net(Y)
    net2 = load(net.save(tmp_path / "m.safetensors"))
    assert type(net2.op) is type(net.op) and net2.fingerprint == net.fingerprint
    assert torch.equal(net2(Y), out)
    net2.check_operator(D if not on_learned else learned(D))
    f32 = net2.float()
    assert f32.op.dtype == torch.float32 and f32.problem.op is f32.op
    torch.testing.assert_close(f32(Y.float()), out.float(), rtol=1e-4, atol=1e-5)


def test_learned_dictionary_gets_gradients_and_images_go_through(conv):
    D, Y = conv
    net = SLISTA(learned(D), 3, 0.05)
    images = Y.reshape(Y.shape[0], *D.out_shape)
    X = net(images)
    assert X.shape == (Y.shape[0], *D.in_shape)
    torch.testing.assert_close(X.reshape(Y.shape[0], -1), net(Y), rtol=0, atol=0)
    X.pow(2).sum().backward()
    weight = net.op.base.weight
    assert weight.grad is not None and float(weight.grad.abs().max()) > 0


# -- the recipe of CONTRIBUTING.md, followed once: ADMM for the Lasso and LADMM -------------------
from unrolled.algorithms.lasso import ADMM  # noqa: E402
from unrolled.nets import LADMM  # noqa: E402


@pytest.mark.parametrize("tied", [False, True])
def test_ladmm_analytic_is_admm_iterate_for_iterate(small, tied):
    D, Y = small
    lam, K = 0.1, 12
    net = LADMM(D, K, lam, tied=tied)
    method = ADMM(Lasso(DenseOperator(D), lam))
    state, ref = method.init(Y, None), []
    for k in range(1, K + 1):
        method.step(state, k)
        ref.append(state["x"].clone())
    outs = net(Y, return_all=True)
    for t, (a, b) in enumerate(zip(outs, ref), 1):
        assert float((a.detach() - b).abs().max()) <= 1e-10 * max(1.0, float(b.abs().max())), f"layer {t}"
    assert float((ref[-1] - ref[0]).abs().max()) > 1e-3
    outs[-1].pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert {id(p) for t in range(K) for p in net.layer_parameters(t)} == {id(p) for p in net.parameters()}


def test_lasso_admm_solver_reaches_the_fista_solution(small, tmp_path):
    D, Y = small
    D = D.double()
    res = ur.lasso(D, Y, 0.1, method="admm", tol=1e-9, max_iter=20_000)
    ref = ur.lasso(D, Y, 0.1, method="fista", restart=True, tol=1e-12, max_iter=50_000)
    assert bool(np.all(res.converged))
    cert = Lasso(DenseOperator(D), 0.1).certificate(torch.as_tensor(res.x), Y)
    assert float(cert.max()) <= 1e-9
    np.testing.assert_allclose(res.x, ref.x, atol=1e-5 * float(ref.x.abs().max()))
    # ill-conditioned dictionary: still converges, to the same point
    Dill = D * torch.logspace(0, -3, D.shape[1], dtype=D.dtype)
    r1 = ur.lasso(Dill, Y, 0.01, method="admm", tol=1e-8, max_iter=50_000)
    r2 = ur.lasso(Dill, Y, 0.01, method="fista", restart=True, tol=1e-8, max_iter=200_000)
    assert bool(np.all(r1.converged))
    obj = Lasso(DenseOperator(Dill), 0.01).objective
    assert float((obj(r1.x, Y) - obj(r2.x, Y)).abs().max()) <= 1e-6 * float(obj(r2.x, Y).max())
    net = LADMM(D, 3, 0.1, rho=2.0)
    assert torch.equal(load(net.save(tmp_path / "ladmm.safetensors"))(Y), net(Y))
    with pytest.raises(ValueError, match="rho"):
        ur.lasso(D, Y, 0.1, method="admm", rho=-1.0)


def test_problem_follows_the_net_and_is_a_constructor_argument(small):
    D, Y = small
    net = SLISTA(D.float(), 3, 0.2)
    assert net.problem.op is net.op and net.problem.lam == 0.2 and net.problem.op.dtype == torch.float32
    D_copy = D.float().clone()
    net2 = LISTA_CP(D_copy, 3, 0.2)
    D_copy.mul_(2.0)  # the caller's tensor changes: the net keeps its own copy
    assert torch.equal(net2.problem.op.matrix(), D.float())
    net.double()
    assert net.problem.op is net.op and net.op.dtype == torch.float64 and net.problem.lam == 0.2
    assert net(Y).dtype == torch.float64
    torch.testing.assert_close(net.problem.objective(net(Y), Y), Lasso(DenseOperator(D), 0.2).objective(net(Y), Y))


@pytest.mark.parametrize("cls", [SLISTA, LISTA_CP, LISTA])
def test_nets_on_a_learned_dense_dictionary_equal_ista_and_reload(small, cls, tmp_path):
    D, Y = small
    net = cls(learned(DenseOperator(D)), 6, 0.2)
    ref = ista_on(DenseOperator(D), Y, 0.2, 6)
    outs = net(Y, return_all=True)
    assert max(float((a.detach() - b).abs().max()) for a, b in zip(outs, ref)) <= 1e-10
    assert torch.equal(load(net.save(tmp_path / "m.safetensors"))(Y), net(Y))
