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
    ur.train(net, Y.astype(f), X.astype(f), epochs=100, progress=False)  # the defaults but a tenth of the epochs
    classical = classical_errors(A, Yt, Xt, 3)
    assert recovery_error(net(Yt.astype(f)), Xt) < 0.8 * min(classical["APGD"][-1], classical["PGD"][-1])


def test_an_explicit_rate_is_every_parameters_rate():
    """lr given, params not: no family groups (failed before: SLISTA's log-steps trained at 10 × lr)."""
    net = SLISTA(np.eye(4, 8) + 0.1, 3, 0.1)
    lr, _, _, _, params = resolve(net, lr=0.05, batch_size=None, epochs=None, clip=AUTO, params=None)
    assert lr == 0.05 and params is None
    lr, _, _, _, params = resolve(net, lr=None, batch_size=None, epochs=None, clip=AUTO, params=None)
    assert lr == recipe_for(net).lr and [g["lr"] for g in params] == [10.0]


# -- NNLS families: the experiments' recipes are the defaults ----------------------------------------


@pytest.mark.parametrize("Net, kw", [(UPGDM, {}), (LOGD, {"init_value": 0.4})])
def test_sen_nets_defaults_reach_the_recipe(Net, kw):
    """Every default vs sen-synthetic's hand recipe on a 20×40 setting of our own (main's generic
    defaults — lr 1e-3, batch 200, clipping, 100 epochs — ended 13–15 % above it)."""
    from unrolled.data.generators import gaussian_nonnegative

    f = np.float32
    A, Y, X = gaussian_nonnegative(500, m=20, n=40, seed=1)
    _, Yt, Xt = gaussian_nonnegative(300, A=A, seed=3)

    def error(net):
        return float(np.linalg.norm(net(Yt.astype(f)) - Xt, axis=1).mean())

    torch.manual_seed(0)
    net = Net(A.astype(f), 3, **kw)
    ur.train(net, Y.astype(f), X.astype(f), progress=False)
    recipe = Net(A.astype(f), 3, **kw)
    ur.train(recipe, Y.astype(f), X.astype(f), lr=3e-2, batch_size=250, epochs=40, clip=None, progress=False)
    assert error(net) <= 1.05 * error(recipe)


def test_xie_nets_train_a_depth_curriculum(monkeypatch, tmp_path):
    """LPGD/LAPGD/Vanilla: depths 1, …, K−1 first (xie-table1's recipe), only when the whole net is
    trained afresh; a family without one (SLISTA) trains once."""
    import unrolled.training as training

    calls = []
    real = training.train

    def spy(net, *args, **kw):
        calls.append(kw.get("depth"))
        return real(net, *args, **kw)

    monkeypatch.setattr(training, "train", spy)
    A = np.abs(np.random.default_rng(0).standard_normal((5, 8)))
    _, Y, X = __import__("unrolled.data.generators", fromlist=["x"]).sparse_nonnegative(40, A=A, seed=1)
    ckpt = tmp_path / "c.safetensors"
    spy(LAPGD(A, 3), Y, X, epochs=12, progress=False, checkpoint=ckpt)
    assert calls == [None, 1, 2]  # the outer call, then the curriculum, then the whole net in it
    calls.clear()
    spy(LAPGD(A, 3), Y, X, epochs=12, progress=False, checkpoint=ckpt)  # resumed: no second curriculum
    spy(LAPGD(A, 3), Y, X, epochs=12, progress=False, depth=3)
    spy(SLISTA(_sphere(5, 8, 0), 3, 0.1), Y, progress=False, epochs=2)
    assert calls == [None, 3, None]
    from unrolled.defaults import warmup_stages

    net = LPGD(A, 4)
    assert warmup_stages(net, depth=None, epochs=None, layer_weights=None, params=None, resuming=False) == [
        (1, 50),
        (2, 50),
        (3, 50),
    ]
    assert warmup_stages(net, depth=None, epochs=30, layer_weights=None, params=None, resuming=False)[0] == (1, 5)
