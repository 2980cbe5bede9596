"""Learned NNLS networks (xie2019 LPGD/LAPGD/baselines, sen2024 UPGDM/LOGD) and their data.

The central check: with init="analytic" a depth-K net returns the solver's iterates
1..K (float64, 1e-10), computed by the methods of ``algorithms/nnls.py`` step by step.
"""

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.algorithms.nnls import APGD, OGD, PGD
from unrolled.data import gaussian_nonnegative, sparse_nonnegative
from unrolled.nets import LAPGD, LOGD, LPGD, NETS, UPGDM, Vanilla, load
from unrolled.operators import DenseOperator
from unrolled.problems import NNLS

K = 12


@pytest.fixture(scope="module")
def xie():
    A, Y, X = sparse_nonnegative(64, seed=3)
    return A, Y, X


def solver_iterates(method, Y, K, X0=None):
    state = method.init(Y, X0)
    out = []
    for k in range(1, K + 1):
        method.step(state, k)
        out.append(state["x"].clone())
    return out


def assert_iterates_equal(outs, ref, tol=1e-10):
    assert len(outs) == len(ref)
    for k, (o, r) in enumerate(zip(outs, ref), 1):
        scale = max(float(r.abs().max()), 1.0)
        err = float((o.detach() - r).abs().max()) / scale
        assert err <= tol, f"iterate {k}: relative difference {err:.3e}"


def problem_of(A):
    return NNLS(DenseOperator(torch.as_tensor(A, dtype=torch.float64)))


@pytest.mark.parametrize("tied", [True, False])
def test_lpgd_analytic_is_pgd(xie, tied):
    A, Y, _ = xie
    Yt = torch.as_tensor(Y)
    net = LPGD(A, K, tied=tied)
    ref = solver_iterates(PGD(problem_of(A)), Yt, K)
    assert_iterates_equal(net(Yt, return_all=True), ref)
    # and the iterates really move (not a trivially equal pair of zero sequences)
    assert float((ref[-1] - ref[0]).abs().max()) > 1.0


@pytest.mark.parametrize("tied", [True, False])
def test_lapgd_analytic_is_apgd_constant_momentum(xie, tied):
    A, Y, _ = xie
    Yt = torch.as_tensor(Y)
    net = LAPGD(A, K, tied=tied, gamma=0.9)
    ref = solver_iterates(APGD(problem_of(A), gamma=0.9, momentum="constant"), Yt, K)
    assert_iterates_equal(net(Yt, return_all=True), ref)
    # momentum makes a difference, so LAPGD ≠ LPGD here
    assert float((net(Yt) - LPGD(A, K)(Yt)).abs().max().detach()) > 1e-3


def test_lapgd_with_zero_w2_is_lpgd(xie):
    """xie2019 §2: LAPGD degenerates to LPGD when W₂ = 0 (and W₁ = W)."""
    A, Y, _ = xie
    Yt = torch.as_tensor(Y)
    lapgd, lpgd = LAPGD(A, 6, init="paper", seed=1), LPGD(A, 6, init="paper", seed=2)
    with torch.no_grad():
        lapgd.W1[0].copy_(lpgd.W[0])
        lapgd.W2[0].zero_()
        lapgd.S[0].copy_(lpgd.S[0])
    torch.testing.assert_close(lapgd(Yt), lpgd(Yt), rtol=0, atol=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_upgdm_analytic_is_pgd(xie, tied):
    A, Y, _ = xie
    Yt = torch.as_tensor(Y)
    net = UPGDM(A, K, tied=tied)
    assert len(net.mu) == K and len(net.mu_gain) == K and len(net.W1) == (1 if tied else K)
    assert_iterates_equal(net(Yt, return_all=True), solver_iterates(PGD(problem_of(A)), Yt, K))


@pytest.mark.parametrize("power", [2, 3])
def test_logd_analytic_is_ogd_with_fixed_step(power):
    A, Y, _ = gaussian_nonnegative(16, m=30, n=60, seed=4)
    Yt = torch.as_tensor(Y)
    L = np.linalg.norm(A, 2) ** 2
    net = LOGD(A, K, power=power, eta=0.2 / (power * L), init_value=0.5)
    ref = solver_iterates(
        OGD(problem_of(A), power=power, eta=0.2 / (power * L)), Yt, K, X0=torch.full((16, 60), 0.5, dtype=torch.float64)
    )
    outs = net(Yt, return_all=True)
    assert_iterates_equal(outs, ref)
    # x = s^P ≥ 0: for even P always, for odd P because this step keeps s > 0
    assert all(bool((o >= 0).all()) for o in outs)
    # and OGD with that fixed step makes progress on the objective
    obj = NNLS(DenseOperator(torch.as_tensor(A))).objective
    assert float(obj(ref[-1], Yt).mean()) < 0.5 * float(obj(ref[0], Yt).mean())


def test_ogd_fixed_step_through_public_solver():
    A, Y, X = gaussian_nonnegative(4, m=20, n=30, seed=0)
    L = np.linalg.norm(A, 2) ** 2
    res = ur.nnls(A, Y, "ogd", eta=0.5 / L, x0=np.full(30, 0.3), max_iter=5, tol=0)
    net = LOGD(A, 5, eta=0.5 / L, init_value=0.3)
    np.testing.assert_allclose(net(Y), res.x, rtol=0, atol=1e-10)


def test_paper_init_is_uniform_small_and_symmetric(xie):
    A = xie[0]
    for net in (LPGD(A, 3, init="paper"), LAPGD(A, 3, init="paper"), Vanilla(A, 3, init="paper")):
        for name, p in net.named_parameters():
            assert float(p.detach().min()) >= 0 and float(p.detach().max()) <= 1e-3, name
            assert float(p.detach().std()) > 1e-4, name  # really random, not constant
            if p.shape[0] == p.shape[1] == net.n:
                torch.testing.assert_close(p, p.T, rtol=0, atol=0)
    # seeded: same seed, same weights; another seed, other weights
    a, b, c = LPGD(A, 3, init="paper", seed=5), LPGD(A, 3, init="paper", seed=5), LPGD(A, 3, init="paper", seed=6)
    assert torch.equal(a.W[0], b.W[0]) and not torch.equal(a.W[0], c.W[0])


def test_sen2024_nets_have_no_paper_init(xie):
    with pytest.raises(ValueError, match="init"):
        UPGDM(xie[0], 3, init="paper")
    with pytest.raises(ValueError, match="init"):
        LOGD(xie[0], 3, init="paper")


def test_lpgd_without_skip_and_vanilla_structure(xie):
    """Table 1 baselines: y enters the first layer only; Vanilla has untied weights."""
    A, Y, _ = xie
    Yt = torch.as_tensor(Y)
    net = LPGD(A, 4, init="random", skip=False, seed=3)
    W, S = net.W[0].detach(), net.S[0].detach()
    x = torch.relu(Yt @ S.T)
    for _ in range(3):
        x = torch.relu(x @ W.T)
    torch.testing.assert_close(net(Yt), x, rtol=0, atol=1e-12)
    assert len(net.S) == 1

    van = Vanilla(A, 4, init="random", seed=3)
    assert len(van.W) == 3 and not torch.equal(van.W[0], van.W[1])
    x = torch.relu(Yt @ van.S.detach().T)
    for Wk in van.W:
        x = torch.relu(x @ Wk.detach().T)
    torch.testing.assert_close(van(Yt), x, rtol=0, atol=1e-12)
    n, m = A.shape[1], A.shape[0]
    assert sum(p.numel() for p in van.parameters()) == n * m + 3 * n * n
    assert sum(p.numel() for p in LPGD(A, 4).parameters()) == n * m + n * n
    assert sum(p.numel() for p in LPGD(A, 4, tied=False).parameters()) == 4 * n * m + 3 * n * n


@pytest.mark.parametrize(
    "make",
    [
        lambda A: LPGD(A, 3),
        lambda A: LPGD(A, 3, skip=False, tied=False),
        lambda A: LAPGD(A, 3, tied=False),
        lambda A: Vanilla(A, 3, bias=True),
        lambda A: UPGDM(A, 3),
        lambda A: LOGD(A, 3),
    ],
)
def test_every_parameter_gets_a_gradient(xie, make):
    A, Y, X = xie
    net = make(A)
    loss = (net(torch.as_tensor(Y)) - torch.as_tensor(X)).pow(2).sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_registered_and_exported():
    for cls in (LPGD, LAPGD, Vanilla, UPGDM, LOGD):
        assert NETS[cls.__name__] is cls
        assert getattr(ur.nets, cls.__name__) is cls


def test_bad_arguments_are_named(xie):
    A = xie[0]
    with pytest.raises(ValueError, match="init"):
        LPGD(A, 3, init="xavier")
    with pytest.raises(ValueError, match="depth"):
        LAPGD(A, 0)
    with pytest.raises(TypeError, match="tied"):
        LPGD(A, 3, tied="yes")
    with pytest.raises(ValueError, match="power"):
        LOGD(A, 3, power=1)
    with pytest.raises(ValueError, match="step"):
        LPGD(A, 3, step=-1.0)
    with pytest.raises(ValueError, match="eta"):
        LOGD(A, 3, eta=0.0)


@pytest.mark.parametrize(
    "make",
    [lambda A: LPGD(A, 3), lambda A: LAPGD(A, 3), lambda A: Vanilla(A, 3), lambda A: UPGDM(A, 3), lambda A: LOGD(A, 3)],
)
def test_operator_fingerprint_and_width_are_checked(xie, make):
    A, Y, _ = xie
    net = make(A)
    net.check_operator(A)  # its own operator: fine
    other = A.copy()
    other[0, 0] += 0.5
    with pytest.raises(ValueError, match="operator"):
        net.check_operator(other)
    with pytest.raises(ValueError, match="m=10"):
        net(np.ones((2, 11)))


@pytest.mark.parametrize(
    "make",
    [
        lambda A: LPGD(A, 3, init="paper", seed=1),
        lambda A: LPGD(A, 4, skip=False, tied=False),
        lambda A: LAPGD(A, 3, init="random", gamma=0.5),
        lambda A: Vanilla(A, 3, bias=True, init="random"),
        lambda A: UPGDM(A, 3, tied=True),
        lambda A: LOGD(A, 3, power=3, init_value=0.2),
    ],
)
def test_save_load_is_bit_identical(xie, make, tmp_path):
    A, Y, _ = xie
    net = make(A)
    with torch.no_grad():  # weights that no constructor would produce
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = net.save(tmp_path / "m.safetensors")
    net2 = load(path)
    assert type(net2) is type(net) and net2.config == net.config
    Yt = torch.as_tensor(Y)
    assert torch.equal(net(Yt), net2(Yt))
    # a different operator is refused by the loaded net, too
    with pytest.raises(ValueError, match="operator"):
        net2.check_operator(A + 1.0)


def test_truncated_or_edited_model_file_is_refused(xie, tmp_path):
    A = xie[0]
    path = LAPGD(A, 3, init="paper").save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated|corrupted"):
        load(tmp_path / "cut.safetensors")
    edited = bytearray(raw)
    edited[-3] ^= 0xFF  # flip bits inside the last tensor's data
    (tmp_path / "edit.safetensors").write_bytes(bytes(edited))
    with pytest.raises(ValueError, match="modified|digest"):
        load(tmp_path / "edit.safetensors")


def test_float32_net_follows_input_dtype(xie):
    A, Y, _ = xie
    net = LPGD(A.astype(np.float32), 3)
    assert net(Y.astype(np.float32)).dtype == np.float32
    assert net.double()(torch.as_tensor(Y)).dtype == torch.float64


# -- data generators --------------------------------------------------------
def test_sparse_nonnegative_matches_xie2019_setting():
    A, Y, X = sparse_nonnegative(3000, seed=7)
    assert A.shape == (10, 20) and Y.shape == (3000, 10) and X.shape == (3000, 20)
    assert A.min() >= 0 and A.max() <= 1
    nnz = (X > 0).sum(1)
    assert set(np.unique(nnz)) == {1, 2, 3}
    assert all(abs((nnz == s).mean() - 1 / 3) < 0.04 for s in (1, 2, 3))
    vals = X[X > 0]
    assert vals.max() <= 100 and abs(vals.mean() - 50) < 2.5
    assert abs((X > 0).mean(0) - 0.1).max() < 0.03  # supports uniform over the 20 positions
    np.testing.assert_allclose(Y, X @ A.T)
    A2, Y2, X2 = sparse_nonnegative(3000, seed=7)
    assert np.array_equal(A, A2) and np.array_equal(X, X2)
    At, _, Xt = sparse_nonnegative(10, A=A, seed=8)
    assert np.array_equal(At, A) and not np.array_equal(Xt, X[:10])


def test_gaussian_nonnegative_matches_sen2024_setting():
    A, Y, X = gaussian_nonnegative(200, m=40, n=120, seed=1)
    assert A.shape == (40, 120) and X.min() >= 0
    assert abs(A.mean()) < 0.05 and abs(A.std() - 1) < 0.05
    assert abs((X > 0).mean() - 0.5) < 0.02
    np.testing.assert_allclose(Y, X @ A.T)
    F = gaussian_nonnegative(1, seed=0)[0]
    assert F.shape == (400, 1200)
    with pytest.raises(ValueError, match="density"):
        gaussian_nonnegative(5, density=1.5)
    with pytest.raises(ValueError, match="n_samples"):
        sparse_nonnegative(0)


# -- files saved by the code before the redesign ---------------------------------------------------
OLD = ["LPGD", "LAPGD", "UPGDM", "LOGD", "Vanilla", "LISTA_CP", "SLISTA", "LISTA", "ALISTA"]


@pytest.mark.parametrize("name", OLD)
def test_files_saved_before_the_redesign_load_and_give_the_same_outputs(name):
    """tests/data/old_*.safetensors were written by the pre-redesign code (perturbed weights), with their outputs."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    ref = np.load(data / "old_outputs.npz")
    net = load(data / f"old_{name}.safetensors")
    assert type(net).__name__ == name
    out = net(torch.as_tensor(ref["Y"])).detach().numpy()
    np.testing.assert_allclose(out, ref[name], rtol=0, atol=1e-12 * max(1.0, np.abs(ref[name]).max()))
    assert np.abs(ref[name]).max() > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda A: LPGD(A, 4, tied=False),
        lambda A: LAPGD(A, 4, tied=False),
        lambda A: Vanilla(A, 4, bias=True),
        lambda A: UPGDM(A, 4),
        lambda A: LOGD(A, 4),
        lambda A: LPGD(A, 4),
    ],
)
def test_layer_parameters_cover_the_net_and_follow_the_protocol(xie, make):
    from unrolled.protocols import Network

    net = make(xie[0])
    assert isinstance(net, Network)
    seen = {id(p) for t in range(net.depth) for p in net.layer_parameters(t)}
    assert seen == {id(p) for p in net.parameters()}
    # layer 0 of an untied net owns no weight that acts on x₀ = 0
    if not net.tied and hasattr(net, "W1") and isinstance(net, LAPGD):
        assert all(p is not net.W1[0] for p in net.layer_parameters(0))
    with pytest.raises(ValueError, match="layer"):
        net.layer_parameters(net.depth)


def test_lpgd_on_a_convolution_densifies_and_is_pgd(tmp_path):
    """LPGD's W, S are full matrices, so it densifies a Conv2dOperator; its analytic init is PGD on that operator."""
    from unrolled.operators import Conv2dOperator

    gen = torch.Generator().manual_seed(1)
    op = Conv2dOperator(torch.rand(2, 1, 3, 3, generator=gen, dtype=torch.float64), (1, 6, 6), stride=2)
    X = torch.rand(5, op.n, generator=gen, dtype=torch.float64) * (torch.rand(5, op.n, generator=gen) < 0.2)
    Y = op.forward(X)
    net = LPGD(op, K, tied=False)
    ref = solver_iterates(PGD(NNLS(op)), Y, K)
    assert_iterates_equal(net(Y, return_all=True), ref)
    assert float((ref[-1] - ref[0]).abs().max()) > 1e-3
    images = net(Y.reshape(5, *op.out_shape))
    assert images.shape == (5, *op.in_shape)
    assert torch.equal(load(net.save(tmp_path / "conv.safetensors"))(Y), net(Y))


def test_solver_methods_follow_the_protocol(xie):
    from unrolled.protocols import SolverMethod

    problem = problem_of(xie[0])
    for method in (PGD(problem), APGD(problem), OGD(problem, kappa=0.5)):
        assert isinstance(method, SolverMethod)
    with pytest.raises(TypeError, match="step"):
        OGD(problem, step=0.5)  # the fraction is called kappa now


def test_every_registered_net_takes_the_common_signature(xie):
    """NETS lists public classes only, and each takes (operator, depth, *, init="analytic", tied=...)."""
    import inspect

    from unrolled.nets.base import UnrolledNet

    A = xie[0]
    assert all(not name.startswith("_") for name in NETS) and UnrolledNet not in NETS.values()
    for name, cls in NETS.items():
        if cls.__module__.split(".")[0] != "unrolled":
            continue  # test doubles defined by other test modules
        params = inspect.signature(cls).parameters
        assert list(params)[:2] == ["operator", "depth"], name
        assert params["init"].kind is inspect.Parameter.KEYWORD_ONLY and "tied" in params, name
        kw = {"parametrization": "coupled"} if cls.__name__ == "LISTAFamily" else {}
        net = cls(A, 2, init="analytic", tied=False, **kw)
        assert net(torch.as_tensor(xie[1][:3])).shape == (3, A.shape[1])
