"""Training defaults per family (unrolled.defaults) and train()'s hook that applies them."""

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.defaults import AUTO, FAMILIES, GENERIC, parameter_groups, recipe_for, resolve
from unrolled.nets import ALISTA, LAPGD, LISTA, LISTA_CP, LOGD, LPGD, SLISTA, UPGDM, Vanilla
from unrolled.nets.base import load_tensors


def _sphere(m, n, seed):
    D = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return D / D.norm(dim=0, keepdim=True)


def test_every_public_net_has_a_recipe():
    A = torch.rand(6, 10, dtype=torch.float64)
    for net in (
        LPGD(A, 2),
        LAPGD(A, 2),
        Vanilla(A, 2),
        UPGDM(A, 2),
        LOGD(A, 2),
        LISTA(A, 2),
        LISTA_CP(A, 2),
        ALISTA(A, 2),
        SLISTA(A, 2),
    ):
        assert recipe_for(net) is not GENERIC, type(net).__name__
    assert recipe_for(LISTA_CP(A, 2)) is FAMILIES["LISTAFamily"]


def test_groups_found_by_name():
    net = LISTA_CP(_sphere(6, 10, 0), 3, 0.1)
    groups = parameter_groups(net, recipe_for(net))
    assert [g["lr"] for g in groups] == [10.0, 1.0]
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)][:2] for p in groups[0]["params"]} == {"a.", "b."}
    assert all(names[id(p)].startswith("W.") for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    # a net without matrices has one group, a net without named scalars one group at factor 1
    assert [
        g["lr"] for g in parameter_groups(SLISTA(_sphere(6, 10, 0), 3), recipe_for(SLISTA(_sphere(6, 10, 0), 3)))
    ] == [10.0]
    assert [g["lr"] for g in parameter_groups(LPGD(torch.rand(4, 6), 2), GENERIC)] == [1.0]


def test_explicit_arguments_win():
    net = SLISTA(_sphere(6, 10, 0), 3)
    mine = [{"params": list(net.parameters()), "lr": 2.0}]
    assert resolve(net, lr=0.5, batch_size=7, epochs=3, clip=None, params=mine) == (0.5, 7, 3, None, mine)
    r = recipe_for(net)
    lr, bs, ep, clip, groups = resolve(net, lr=None, batch_size=None, epochs=None, clip=AUTO, params=None)
    assert (lr, bs, ep, clip) == (r.lr, r.batch_size, r.epochs, r.clip) and len(groups) == 1


def test_train_records_the_family_defaults(tmp_path):
    D = _sphere(6, 10, 1)
    net = LISTA_CP(D.float(), 2, 0.1)
    Y = torch.randn(40, 6)
    ckpt = tmp_path / "c.safetensors"
    ur.train(net, Y, loss="unsupervised", epochs=1, progress=False, checkpoint=ckpt)
    _, meta = load_tensors(ckpt)
    r = FAMILIES["LISTAFamily"]
    assert meta["train"]["lr"] == r.lr and meta["train"]["batch_size"] == r.batch_size
    assert meta["train"]["clip"] == r.clip
    assert [g["lr_factor"] for g in meta["optim_groups"]] == [10.0, 1.0]


def test_bad_clip_is_refused():
    net = SLISTA(_sphere(6, 10, 0), 2)
    with pytest.raises((ValueError, TypeError), match="clip"):
        ur.train(net, torch.randn(10, 6), loss="unsupervised", clip="fast", epochs=1, progress=False)


# -- default training beats the classical solver at the same depth (settings of our own) -----------


def test_default_slista_beats_fista_at_same_depth():
    from unrolled.metrics import lasso_optimum

    torch.manual_seed(0)
    D, lam, depth = _sphere(20, 40, 3), 0.2, 5
    g = torch.Generator().manual_seed(4)

    def signals(N):
        Z = (torch.rand(N, 40, generator=g, dtype=torch.float64) < 0.1) * torch.randn(
            N, 40, generator=g, dtype=torch.float64
        )
        return Z @ D.T + 0.05 * torch.randn(N, 20, generator=g, dtype=torch.float64)

    Y, Yt = signals(500), signals(300)
    net = SLISTA(D.float(), depth, lam)
    ur.train(net, Y.float(), loss="unsupervised", progress=False)
    prob = ur.Lasso(ur.DenseOperator(D), lam)
    _, F_star = lasso_optimum(prob, Yt)
    fista = ur.lasso(D, Yt, lam, "fista", tol=0.0, max_iter=depth)
    with torch.no_grad():
        gap_net = float((prob.objective(net(Yt.float()).double(), Yt) - F_star).mean())
    gap_fista = float((prob.objective(fista.x, Yt) - F_star).mean())
    assert gap_net < gap_fista / 2


def test_default_lapgd_beats_apgd_at_same_depth():
    from unrolled.data.generators import sparse_nonnegative
    from unrolled.experiments.xie2019 import classical_errors, recovery_error

    torch.manual_seed(0)
    A = np.abs(np.random.default_rng(8).standard_normal((12, 24)))
    _, Y, X = sparse_nonnegative(2000, A=A, sparsities=(1, 2, 3), high=10.0, seed=1)
    _, Yt, Xt = sparse_nonnegative(500, A=A, sparsities=(1, 2, 3), high=10.0, seed=2)
    f = np.float32
    net = LAPGD(A.astype(f), 3)
    ur.train(net, Y.astype(f), X.astype(f), progress=False)
    classical = classical_errors(A, Yt, Xt, 3)
    assert recovery_error(net(Yt.astype(f)), Xt) < 0.8 * min(classical["APGD"][-1], classical["PGD"][-1])


def test_an_explicit_rate_is_every_parameters_rate():
    """lr given, params not: no family groups (failed before: SLISTA's log-steps trained at 10 × lr)."""
    net = SLISTA(np.eye(4, 8) + 0.1, 3, 0.1)
    lr, _, _, _, params = resolve(net, lr=0.05, batch_size=None, epochs=None, clip=AUTO, params=None)
    assert lr == 0.05 and params is None
    lr, _, _, _, params = resolve(net, lr=None, batch_size=None, epochs=None, clip=AUTO, params=None)
    assert lr == recipe_for(net).lr and [g["lr"] for g in params] == [10.0]
