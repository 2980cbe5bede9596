"""Multi-layer sparse coding nets (nets/mlbp.py): the feed-forward pass, shared parameters, the
analytic nets against the ML-BP solvers, save/load, and a fit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unrolled as ur
from unrolled.nets import LayeredBPNet, MLFISTANet, MLISTANet
from unrolled.operators import Conv2dOperator

CLASSES = (MLISTANet, MLFISTANet, LayeredBPNet)


def dense_case(seed=0, sizes=(30, 25, 20), batch=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    Ds = [torch.randn(a, b, generator=g, dtype=dtype) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    return Ds, torch.randn(batch, sizes[0], generator=g, dtype=dtype)


def conv_case(seed=0, batch=3, dtype=torch.float64):
    """D_1ᵀ: 1 → 4 channels, kernel 3, stride 2 on 9×9 images; D_2ᵀ: 4 → 6 channels, kernel 3, stride 1."""
    g = torch.Generator().manual_seed(seed)
    k1 = torch.randn(4, 1, 3, 3, generator=g, dtype=dtype) / 3
    k2 = torch.randn(6, 4, 3, 3, generator=g, dtype=dtype) / 6
    C1 = Conv2dOperator(k1, (1, 9, 9), stride=2)
    C2 = Conv2dOperator(k2, C1.out_shape, stride=1)
    return [C1.T, C2.T], torch.randn(batch, 1, 9, 9, generator=g, dtype=dtype), (k1, k2), (C1, C2)


def perturb(net, seed=1):
    """Move every parameter off its analytic value (under no_grad, so cached constants follow)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("cls", CLASSES)
def test_one_pass_is_the_feed_forward_network_dense(cls):
    Ds, Y = dense_case()
    net = cls(Ds, 5, [0.1, 0.2], nonneg=True)
    perturb(net)
    W1, W2 = net.op.weight, net.stack[0].weight
    (e1, e2), (b1, b2) = net.steps(), net.bias()
    with torch.no_grad():
        expected = torch.relu(e2 * (torch.relu(e1 * (Y @ W1) + b1) @ W2) + b2)
        assert torch.equal(net(Y, depth=1), expected)
        assert not torch.equal(net(Y, depth=2), expected)


@pytest.mark.parametrize("cls", CLASSES)
def test_one_pass_is_the_feed_forward_network_conv(cls):
    """The talk's γ₂ = ReLU(μ₂D₂ᵀReLU(μ₁D₁ᵀy + b₁) + b₂) with Dᵢᵀ strided multi-channel convolutions."""
    Ds, Y, _, (C1, C2) = conv_case()
    net = cls(Ds, 3, [0.1, 0.1], nonneg=True)
    perturb(net)
    k1, k2 = net.op.base.weight, net.stack[0].base.weight
    (e1, e2), (b1, b2) = net.steps(), net.bias()
    with torch.no_grad():
        g1 = torch.relu(e1 * F.conv2d(Y, k1.flip(-2, -1), stride=2, padding=1) + b1[:, None, None])
        g2 = torch.relu(e2 * F.conv2d(g1, k2.flip(-2, -1), stride=1, padding=1) + b2[:, None, None])
        out = net(Y, depth=1)
        assert out.shape == (3, *C2.out_shape)
        assert torch.equal(out, g2)


@pytest.mark.parametrize("cls", CLASSES)
def test_every_depth_has_the_same_parameters(cls):
    Ds, Y = dense_case()
    counts = {d: sum(p.numel() for p in cls(Ds, d, [0.1, 0.1]).parameters()) for d in (1, 2, 7)}
    assert len(set(counts.values())) == 1
    W1, W2 = Ds
    assert counts[1] == W1.numel() + W2.numel() + 2 + W1.shape[1] + W2.shape[1]  # D_i, η_i, b_i per atom
    deep, shallow = cls(Ds, 7, [0.1, 0.1]), cls(Ds, 2, [0.1, 0.1])
    shallow.load_state_dict(deep.state_dict())
    with torch.no_grad():
        assert torch.equal(deep(Y, depth=2), shallow(Y))
    convs = conv_case()[0]
    assert len({sum(p.numel() for p in cls(convs, d, [0.1, 0.1]).parameters()) for d in (1, 4)}) == 1


def _solver_iterates(Ds, Y, lams, method, depth, **options):
    return [
        torch.as_tensor(ur.ml_bp(Ds, Y, lams, method=method, tol=0.0, max_iter=k, **options).x)
        for k in range(1, depth + 1)
    ]


@pytest.mark.parametrize("cls,method", [(MLISTANet, "ml-ista"), (MLFISTANet, "ml-fista")])
@pytest.mark.parametrize("sizes,lams", [((30, 25, 20), [0.3, 0.2]), ((24, 30, 18, 12), [0.05, 0.1, 0.2])])
def test_analytic_net_is_the_solver_dense(cls, method, sizes, lams):
    Ds, Y = dense_case(sizes=sizes)
    net = cls(Ds, 8, lams, mu_scale=0.7)
    with torch.no_grad():
        outs = net(Y, return_all=True)
    for out, ref in zip(outs, _solver_iterates(Ds, Y, lams, method, 8, mu_scale=0.7)):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    assert float(outs[-1].abs().max()) > 0 and not torch.equal(outs[-1], outs[-2])


@pytest.mark.parametrize("cls,method", [(MLISTANet, "ml-ista"), (MLFISTANet, "ml-fista")])
def test_analytic_net_is_the_solver_conv(cls, method):
    Ds, Y, _, _ = conv_case()
    rows, lams = Y.reshape(Y.shape[0], -1), [0.02, 0.05]
    net = cls(Ds, 6, lams)
    with torch.no_grad():
        outs = net(rows, return_all=True)
    for out, ref in zip(outs, _solver_iterates(Ds, rows, lams, method, 6)):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    assert float(outs[-1].abs().max()) > 0


@pytest.mark.parametrize("inner", ["ista", "fista"])
@pytest.mark.parametrize("case", ["dense", "conv"])
def test_layered_bp_net_is_the_layered_solver(inner, case):
    if case == "dense":
        Ds, Y = dense_case(sizes=(24, 30, 18, 12))
        lams = [0.05, 0.1, 0.2]
    else:
        Ds, Y = conv_case()[:2]
        Y, lams = Y.reshape(Y.shape[0], -1), [0.02, 0.05]
    net = LayeredBPNet(Ds, 6, lams, inner=inner)
    for k in (1, 2, 6):
        ref = ur.ml_bp(Ds, Y, lams, method="layered-bp", inner=inner, tol=0.0, max_iter=k).x
        with torch.no_grad():
            torch.testing.assert_close(net(Y, depth=k), torch.as_tensor(ref), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", ["dense", "conv"])
def test_save_load_round_trip(tmp_path, cls, case):
    if case == "dense":
        Ds, Y = dense_case(sizes=(24, 30, 18, 12))
        lams = [0.05, 0.1, 0.2]
    else:
        Ds, Y = conv_case()[:2]
        lams = [0.02, 0.05]
    net = cls(Ds, 4, lams, nonneg=True)
    perturb(net)
    net.save(tmp_path / "net.safetensors")
    back = ur.load(tmp_path / "net.safetensors")
    assert type(back) is cls and back.config == net.config
    with torch.no_grad():
        assert torch.equal(back(Y), net(Y))
        torch.testing.assert_close(back.steps(), net.steps(), rtol=0, atol=0)
    assert back.stack[-1].lipschitz == pytest.approx(net.stack[-1].lipschitz, rel=1e-9)


def test_tiny_regression_fit_learns():
    """Codes of a two-layer model from noisy signals: training lowers the loss and moves the dictionaries."""
    g = torch.Generator().manual_seed(3)
    Ds, _ = dense_case(sizes=(20, 16, 12), dtype=torch.float32)
    X = torch.relu(torch.randn(300, 12, generator=g)) * (torch.rand(300, 12, generator=g) < 0.25)
    Y = X @ (Ds[0] @ Ds[1]).T + 0.01 * torch.randn(300, 20, generator=g)
    g0 = torch.Generator().manual_seed(4)
    start = [D + 0.3 * torch.randn(D.shape, generator=g0) / D.shape[0] ** 0.5 for D in Ds]
    net = MLFISTANet(start, 4, [0.01, 0.01], nonneg=True)
    before = [D.detach().clone() for D in (net.op.weight, net.stack[0].weight)]
    with torch.no_grad():
        loss0 = float((net(Y) - X).pow(2).sum(1).mean())
    ur.train(net, Y[:250], X[:250], epochs=40, batch_size=50, lr=1e-2, val=(Y[250:], X[250:]), progress=False)
    with torch.no_grad():
        loss1 = float((net(Y) - X).pow(2).sum(1).mean())
    assert loss1 < 0.3 * loss0
    assert not torch.equal(net.op.weight.detach(), before[0])


def test_bad_arguments():
    Ds, _ = dense_case()
    with pytest.raises(ValueError, match="D_2 has"):
        MLISTANet([Ds[0], Ds[1][:-1]], 2, [0.1, 0.1])
    with pytest.raises(ValueError, match="one λ per layer"):
        MLISTANet(Ds, 2, [0.1])
    with pytest.raises(ValueError, match="lams"):
        MLFISTANet(Ds, 2, [0.1, -1.0])
    with pytest.raises(ValueError, match="inner"):
        LayeredBPNet(Ds, 2, [0.1, 0.1], inner="admm")
    with pytest.raises(ValueError, match="depth"):
        MLISTANet(Ds, 0, [0.1, 0.1])
    same = MLISTANet(Ds, 2, np.array([0.1, 0.1]))
    assert same.lams == [0.1, 0.1] and MLISTANet(Ds, 2, 0.1).lams == [0.1, 0.1]
    with pytest.raises(ValueError, match="at least one"):
        MLISTANet([], 2, [])


def _cascade_iterates(Ds, Y, lams, depth, momentum):
    """The layered-BP cascade solver method (algorithms.mlbp.LayeredBP), one step per pass."""
    from unrolled.algorithms.mlbp import LayeredBP
    from unrolled.operators import as_operator
    from unrolled.problems import MLBP

    method = LayeredBP(MLBP([as_operator(D) for D in Ds], lams), momentum=momentum)
    state, out = method.init(Y, None), []
    for k in range(1, depth + 1):
        method.step(state, k)
        out.append(state["x"].clone())
    return out


@pytest.mark.parametrize("cls,momentum", [(MLISTANet, False), (MLFISTANet, True)])
@pytest.mark.parametrize("case", ["dense", "conv"])
def test_rho_zero_is_the_layer_wise_cascade(cls, momentum, case):
    """sulam2018 Supplementary B: at ρ = 0 each layer makes one step on its own pursuit."""
    if case == "dense":
        Ds, Y = dense_case(sizes=(24, 30, 18, 12))
        lams = [0.05, 0.1, 0.2]
    else:
        Ds, Y = conv_case()[:2]
        Y, lams = Y.reshape(Y.shape[0], -1), [0.02, 0.05]
    net = cls(Ds, 7, lams, rho=0.0)
    net.biases.load_state_dict(LayeredBPNet(Ds, 1, lams).biases.state_dict())  # thresholds λ_i/‖D_i‖²
    with torch.no_grad():
        outs = net(Y, return_all=True)
        for out, ref in zip(outs, _cascade_iterates(Ds, Y, lams, 7, momentum)):
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
        net.rho = 1.0
        assert (net(Y) - outs[-1]).abs().max() > 1e-3


def test_rho_between_is_saved_trained_and_checked(tmp_path):
    Ds, Y = dense_case()
    net = MLFISTANet(Ds, 4, [0.1, 0.2], rho=0.5)
    with torch.no_grad():
        half = net(Y)
        net.rho = 0.0
        zero = net(Y)
        net.rho = 1.0
        one = net(Y)
    assert min(float((half - zero).abs().max()), float((half - one).abs().max())) > 1e-6
    net.rho = 0.25
    net.save(tmp_path / "relaxed.safetensors")
    back = ur.load(tmp_path / "relaxed.safetensors")
    assert back.rho == 0.25
    with torch.no_grad():
        assert torch.equal(back(Y), net(Y))
    net(Y).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            net.rho = bad
    with pytest.raises(ValueError, match="rho"):
        MLISTANet(Ds, 2, [0.1, 0.1], rho=2.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_untied_nets_have_steps_and_biases_per_pass(cls):
    Ds, Y = dense_case()
    lams = [0.3, 0.2]
    tied, untied = cls(Ds, 4, lams), cls(Ds, 4, lams, tied=False)
    extra = 3 * (2 + Ds[0].shape[1] + Ds[1].shape[1])  # η_i and b_i of passes 2..4
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in tied.parameters()) + extra
    with torch.no_grad():
        torch.testing.assert_close(untied(Y), tied(Y), rtol=0, atol=1e-12)  # the same analytic values
        one, two = untied(Y, depth=1), untied(Y, depth=2)
        untied.biases[0][1].add_(0.5)  # pass 2's b_1
        assert torch.equal(untied(Y, depth=1), one) and not torch.equal(untied(Y, depth=2), two)
    assert untied.layer_parameters(1)[-2] is untied.biases[0][1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", CLASSES)
def test_cuda_matches_cpu(cls):
    Ds, Y = conv_case()[:2]
    net = cls(Ds, 4, [0.02, 0.05], nonneg=True)
    perturb(net)
    with torch.no_grad():
        cpu = net(Y)
    net.to("cuda")
    gpu = net(Y.cuda())
    gpu.sum().backward()
    assert gpu.is_cuda and net.op.base.weight.grad.is_cuda
    torch.testing.assert_close(gpu.detach().cpu(), cpu, rtol=0, atol=1e-9)


def test_mlbp_of_an_analytic_net_is_the_solvers_problem():
    from unrolled.problems import MLBP

    Ds, Y = dense_case()
    lams = [0.3, 0.2]
    net = MLFISTANet(Ds, 200, lams, mu_scale=0.5)
    problem, ref = net.mlbp(), MLBP([ur.operators.DenseOperator(D) for D in Ds], lams, mu_scale=0.5)
    assert problem.etas == pytest.approx(ref.etas, rel=1e-12) and problem.mus == pytest.approx(ref.mus, rel=1e-12)
    with torch.no_grad():
        first, last = net(Y, return_all=True)[::199]
    assert float(problem.certificate(last, Y).max()) < 1e-2 * float(problem.certificate(first, Y).min())
