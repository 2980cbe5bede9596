"""ur.train: losses, validation/best keeping, divergence guard, atomic checkpoints and resume."""

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.nets.base import UnrolledNet
from unrolled.problems import NNLS, Lasso
from unrolled.training import lasso_targets


class StepNet(UnrolledNet):
    """A test double: `depth` PGD layers with one learnable step size each."""

    def __init__(self, A, depth=3, lam=None):
        op = ur.as_operator(A)
        problem = Lasso(op, lam) if lam is not None else NNLS(op)
        super().__init__(A, depth, problem, lam=lam)
        self.steps = torch.nn.Parameter(torch.full((depth,), 0.5 / op.lipschitz, dtype=op.dtype))

    def iterates(self, Y, depth):
        A = self.operator
        x = Y.new_zeros(Y.shape[0], A.shape[1])
        for k in range(depth):
            x = torch.relu(x - self.steps[k] * ((x @ A.T - Y) @ A))
            yield x


def _data(seed=0, n_train=256):
    rng = np.random.default_rng(seed)
    A = rng.uniform(0, 1, (10, 20))
    X = np.zeros((n_train, 20))
    for i in range(n_train):
        X[i, rng.choice(20, 2, replace=False)] = rng.uniform(0, 1, 2)
    return A, X @ A.T, X


def test_supervised_training_lowers_loss_and_keeps_best():
    A, Y, X = _data()
    net = StepNet(A).double()
    with torch.no_grad():
        before = float(((net(torch.tensor(Y)) - torch.tensor(X)) ** 2).sum(1).mean())
    hist = ur.train(net, Y, X, epochs=15, lr=1e-3, batch_size=64, val=(Y[:64], X[:64]), progress=False)
    with torch.no_grad():
        after = float(((net(torch.tensor(Y[:64])) - torch.tensor(X[:64])) ** 2).sum(1).mean())
    assert len(hist.train_loss) == 15 and hist.best_epoch >= 0
    assert after < before
    assert after == pytest.approx(hist.best_loss, rel=1e-9)


def test_unsupervised_loss_is_the_objective():
    A, Y, _ = _data()
    net = StepNet(A, lam=0.01).double()
    with torch.no_grad():
        f0 = float(net.problem.objective(net(torch.tensor(Y)), torch.tensor(Y)).mean())
    hist = ur.train(net, Y, loss="unsupervised", epochs=10, lr=1e-3, progress=False)
    assert hist.train_loss[-1] < f0


def test_semi_supervised_targets_are_lasso_solutions():
    A, Y, _ = _data(n_train=32)
    net = StepNet(A, lam=0.05).double()
    Z = lasso_targets(net, torch.tensor(Y))
    ref = ur.lasso(A, Y, 0.05, "fista", tol=1e-12, max_iter=200000)
    np.testing.assert_allclose(Z.numpy(), ref.x, atol=1e-6)
    hist = ur.train(net, Y, loss="semi-supervised", epochs=3, progress=False)
    assert np.isfinite(hist.train_loss).all()


def test_semi_supervised_targets_on_a_convolution():
    """The targets come from the net's own operator, also when it is not a dense matrix (failed before:
    lasso_targets densified ``net.operator``, which a convolutional net does not hold)."""
    torch.manual_seed(0)
    op = ur.Conv2dOperator(torch.rand(3, 3, dtype=torch.float64), (6, 6))
    net = ur.nets.SLISTA(op, 3, lam=0.5)
    Y = torch.randn(8, op.m, dtype=torch.float64)
    Z = lasso_targets(net, Y, tol=1e-9)
    ref = ur.lasso(op.matrix(), Y, 0.5, tol=1e-12)
    np.testing.assert_allclose(Z.numpy(), ref.x.numpy(), atol=1e-5)


class FragileNet(StepNet):
    """Its output turns NaN as soon as a step exceeds 2/L (sqrt of a negative number)."""

    def iterates(self, Y, depth):
        L = float(torch.linalg.matrix_norm(self.operator, 2)) ** 2
        for x in super().iterates(Y, depth):
            yield x * torch.sqrt(2 / L - self.steps).prod()


def test_nan_guard_backs_off_instead_of_wrecking_weights():
    A, Y, X = _data()
    net = FragileNet(A).double()
    hist = ur.train(net, Y, X, epochs=3, lr=0.2, clip=None, schedule="none", progress=False)  # too large a rate
    assert hist.backoffs >= 1
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert np.isfinite(hist.train_loss).all()


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    A, Y, X = _data()
    ref = StepNet(A).double()
    ur.train(ref, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False)

    ckpt = tmp_path / "run.ckpt"
    net = StepNet(A).double()
    ur.train(net, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False, checkpoint=ckpt)
    # simulate a kill after epoch 3: a fresh run resumes from a checkpoint written at epoch 3
    part = StepNet(A).double()
    ckpt3 = tmp_path / "part.ckpt"

    class Stop(Exception):
        pass

    calls = {"n": 0}
    orig = StepNet.iterates

    def flaky(self, Y_, depth):
        calls["n"] += 1
        if calls["n"] > 3 * 4 + 1:  # 4 batches per epoch: die inside epoch 4
            raise Stop
        yield from orig(self, Y_, depth)

    StepNet.iterates = flaky
    try:
        with pytest.raises(Stop):
            ur.train(part, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False, checkpoint=ckpt3)
    finally:
        StepNet.iterates = orig
    resumed = StepNet(A).double()
    hist = ur.train(resumed, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False, checkpoint=ckpt3)
    assert hist.resumed_from == 3
    torch.testing.assert_close(resumed.steps, ref.steps, rtol=0, atol=1e-12)
    torch.testing.assert_close(net.steps, ref.steps, rtol=0, atol=1e-12)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    A, Y, X = _data()
    ckpt = tmp_path / "run.ckpt"
    ur.train(StepNet(A).double(), Y, X, epochs=1, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"another run \(model.config.depth: 3 -> 2; "):
        ur.train(StepNet(A, depth=2).double(), Y, X, epochs=1, progress=False, checkpoint=ckpt)


def test_bad_arguments_are_named():
    A, Y, X = _data()
    net = StepNet(A).double()
    with pytest.raises(ValueError, match="loss"):
        ur.train(net, Y, X, loss="magic", progress=False)
    with pytest.raises(ValueError, match="epochs"):
        ur.train(net, Y, X, epochs=0, progress=False)
    with pytest.raises(ValueError, match="X is required"):
        ur.train(net, Y, loss="supervised", progress=False)
    with pytest.raises(ValueError, match="entries per signal|Y"):
        ur.train(net, Y[:, :5], X, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        Yb = Y.copy()
        Yb[0, 0] = np.nan
        ur.train(net, Yb, X, progress=False)


def test_parameter_groups_get_their_own_relative_rates():
    A, Y, X = _data()
    net = StepNet(A).double()
    before = net.steps.detach().clone()
    ur.train(
        net,
        Y,
        X,
        epochs=2,
        lr=1e-3,
        schedule="none",
        progress=False,
        params=[{"params": [net.steps], "lr": 0.0 + 1e-12}],
    )
    # a vanishing factor leaves the step sizes where they were; factor 1 moves them
    torch.testing.assert_close(net.steps.detach(), before, rtol=0, atol=1e-12)
    ur.train(net, Y, X, epochs=2, lr=1e-3, schedule="none", progress=False, params=[{"params": [net.steps]}])
    assert (net.steps.detach() - before).abs().max() > 1e-5
    with pytest.raises(ValueError, match="lr"):
        ur.train(net, Y, X, epochs=1, progress=False, params=[{"params": [net.steps], "lr": -1}])


def test_checkpoint_written_before_the_split_still_resumes(tmp_path):
    """tests/data/v0_checkpoint.safetensors: the pre-split code's run of 6 epochs killed in epoch 4
    (made by tests/data/make_v0_checkpoint.py)."""
    import shutil
    from pathlib import Path

    A, Y, X = _data()
    ref = StepNet(A).double()
    ur.train(ref, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False)
    ckpt = tmp_path / "old.ckpt"
    shutil.copy(Path(__file__).with_name("data") / "v0_checkpoint.safetensors", ckpt)
    resumed = StepNet(A).double()
    hist = ur.train(resumed, Y, X, epochs=6, lr=1e-3, batch_size=64, progress=False, checkpoint=ckpt)
    assert hist.resumed_from == 3 and len(hist.train_loss) == 6
    torch.testing.assert_close(resumed.steps, ref.steps, rtol=0, atol=1e-12)


def test_checkpoint_of_other_data_or_seed_is_refused(tmp_path):
    A, Y, X = _data()
    ckpt = tmp_path / "run.ckpt"
    ur.train(StepNet(A).double(), Y, X, epochs=2, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"another run \(data: "):
        ur.train(StepNet(A).double(), Y[:200], X[:200], epochs=2, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"another run \(train.seed: 0 -> 1\)"):
        ur.train(StepNet(A).double(), Y, X, epochs=2, seed=1, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"run.data.n_train: 256 -> 300"):
        ur.train(
            StepNet(A).double(),
            Y,
            X,
            epochs=2,
            progress=False,
            checkpoint=tmp_path / "r2.ckpt",
            run={"data": {"n_train": 256}},
        )
        ur.train(
            StepNet(A).double(),
            Y,
            X,
            epochs=2,
            progress=False,
            checkpoint=tmp_path / "r2.ckpt",
            run={"data": {"n_train": 300}},
        )
    hist = ur.train(StepNet(A).double(), Y, X, epochs=2, progress=False, checkpoint=ckpt, resume=False)
    assert hist.resumed_from == 0


def test_threads_argument_is_restored_after_the_call():
    A, Y, X = _data(n_train=32)
    before = torch.get_num_threads()
    seen = []

    class Spy(StepNet):
        def iterates(self, Y_, depth):
            seen.append(torch.get_num_threads())
            yield from super().iterates(Y_, depth)

    ur.train(Spy(A).double(), Y, X, epochs=1, progress=False, threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        ur.train(Spy(A).double(), Y, X, epochs=1, progress=False, threads=0)


def test_saved_files_are_0644_and_stale_temps_are_removed(tmp_path):
    import os

    A, Y, X = _data(n_train=32)
    ckpt = tmp_path / "run.ckpt"
    stale = tmp_path / ".run.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    old = os.umask(0o022)
    try:
        net = StepNet(A).double()
        ur.train(net, Y, X, epochs=1, progress=False, checkpoint=ckpt)
        net.save(tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert not stale.exists()
    assert (ckpt.stat().st_mode & 0o777) == 0o644
    assert ((tmp_path / "model.safetensors").stat().st_mode & 0o777) == 0o644
