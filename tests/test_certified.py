"""Certified learned inference: net.certify, ur.refine, and the certificate as a shift detector."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls as scipy_nnls
from sklearn.linear_model import Lasso as SkLasso

import unrolled as ur
from unrolled.certified import support_least_squares
from unrolled.data import equiregularization, sparse_nonnegative, sphere_dictionary


@pytest.fixture(scope="module")
def xie():
    A, Y, X = sparse_nonnegative(300, seed=0)
    return A, Y, X


@pytest.fixture(scope="module")
def moreau():
    D = sphere_dictionary(32, 64, seed=0)
    return D, equiregularization(D, 100, seed=1)


def _nnls_objective(A, X, Y):
    return 0.5 * ((X @ A.T - Y) ** 2).sum(1)


def test_certify_is_the_problems_certificate_of_the_output(xie, moreau):
    A, Y, _ = xie
    D, Yl = moreau
    A32, D32 = A.astype(np.float32), D.astype(np.float32)  # the net's problem is on its own (float32) matrix
    for net, Yb, problem in (
        (ur.nets.LAPGD(A32, 3, init="paper"), Y, ur.NNLS(ur.DenseOperator(A32.astype(float)))),
        (ur.nets.SLISTA(D32, 5, 0.1), Yl, ur.Lasso(ur.DenseOperator(D32.astype(float)), 0.1)),
    ):
        with torch.no_grad():
            X = net(torch.as_tensor(Yb, dtype=torch.float32)).double()
        Y64 = torch.as_tensor(Yb)
        c = net.certify(Yb)
        assert isinstance(c.certificate, np.ndarray) and c.certificate.shape == (len(Yb),)
        np.testing.assert_allclose(c.certificate, problem.certificate(X, Y64).numpy(), rtol=1e-12)
        np.testing.assert_allclose(c.objective, problem.objective(X, Y64).numpy(), rtol=1e-12)
        np.testing.assert_array_equal(c.x, X.float().numpy())


def test_certify_with_the_answers_runs_no_forward_pass(xie):
    A, Y, _ = xie
    net = ur.nets.LPGD(A, 4)
    X = net(Y)
    expected = net.certify(Y)

    def no_forward(*args, **kwargs):
        raise AssertionError("a second forward pass")

    net.iterates = no_forward
    c = net.certify(Y, X)
    np.testing.assert_array_equal(c.certificate, expected.certificate)
    with pytest.raises(ValueError, match="X has 2 rows"):
        net.certify(Y, X[:2])


def test_certify_keeps_the_callers_kind(xie):
    A, Y, _ = xie
    net = ur.nets.LPGD(A, 2)
    one = net.certify(Y[0])
    assert isinstance(one.certificate, float) and one.x.shape == (20,)
    batch = net.certify(torch.as_tensor(Y[:5]))
    assert isinstance(batch.certificate, torch.Tensor) and batch.certificate.shape == (5,)
    assert one.certificate == pytest.approx(float(batch.certificate[0]), rel=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("loop", ["compiled", "torch"])
def test_refine_nnls_is_certified_and_optimal(xie, scale, loop, monkeypatch):
    """Both routes: LH in C from the net's support, and (no C compiler) the batched support step + active set."""
    from unrolled.algorithms import _compiled

    if loop == "torch":
        monkeypatch.setitem(_compiled._state, "lib", None)
    elif _compiled.library() is None:
        pytest.skip("no C compiler")
    A, Y, _ = xie
    A, Y = A * scale, Y * scale  # badly scaled: the certificate and the result must not care
    net = ur.nets.LAPGD(A.astype(np.float32), 3, init="paper")
    res = ur.refine(net, Y, tol=1e-8)
    assert res.converged.all()
    assert (res.history["certificate"][-1] <= 1e-8).all()
    np.testing.assert_allclose(res.history["certificate"][0], net.certify(Y).certificate, rtol=1e-12)
    assert (res.x >= 0).all()
    X_ref = np.array([scipy_nnls(A, y)[0] for y in Y])
    f, f_ref = _nnls_objective(A, res.x, Y), _nnls_objective(A, X_ref, Y)
    assert (f - f_ref <= 1e-10 * (Y**2).sum(1)).all()


def test_refine_lasso_is_certified_and_matches_sklearn(moreau):
    D, Y = moreau
    lam = 0.1
    net = ur.nets.SLISTA(D.astype(np.float32), 5, lam)
    res = ur.refine(net, Y, tol=1e-9)
    assert res.converged.all() and (res.history["certificate"][-1] <= 1e-9).all()
    sk = SkLasso(alpha=lam / D.shape[0], fit_intercept=False, tol=1e-12, max_iter=100_000)
    Z_ref = np.array([sk.fit(D, y).coef_ for y in Y])

    def objective(Z):
        return 0.5 * ((Z @ D.T - Y) ** 2).sum(1) + lam * np.abs(Z).sum(1)

    np.testing.assert_allclose(objective(res.x), objective(Z_ref), rtol=1e-8)


def test_rows_within_tol_cost_nothing(xie):
    A, Y, _ = xie
    net = ur.nets.LPGD(A, 3)
    res = ur.refine(net, Y, tol=10.0)
    assert (res.n_iter == 0).all() and res.converged.all()
    assert list(res.history["iteration"]) == [0]
    np.testing.assert_array_equal(res.x, net(Y))


def test_refine_of_analytic_net_is_the_solver_run_longer(xie, moreau):
    A, Y, _ = xie
    K, J = 4, 7
    res = ur.refine(ur.nets.LPGD(A, K), Y[:50], tol=0.0, method="pgd", max_iter=J, check_every=1)
    ref = ur.nnls(A, Y[:50], "pgd", tol=0.0, max_iter=K + J, check_every=1)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10, atol=1e-10 * np.abs(ref.x).max())
    assert (res.n_iter == J).all() and not res.converged.any()
    D, Yl = moreau
    res = ur.refine(ur.nets.SLISTA(D, K, 0.1), Yl, tol=0.0, method="ista", max_iter=J, check_every=1)
    ref = ur.lasso(D, Yl, 0.1, "ista", tol=0.0, max_iter=K + J, check_every=1)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10, atol=1e-12)
    F_ref = ur.Lasso(ur.DenseOperator(D), 0.1).objective(torch.as_tensor(ref.x), torch.as_tensor(Yl)).numpy()
    np.testing.assert_allclose(res.history["objective"][-1], F_ref, rtol=1e-12)


def test_refine_vector_and_bad_input(xie):
    A, Y, _ = xie
    net = ur.nets.LPGD(A, 3)
    res = ur.refine(net, Y[0])
    assert isinstance(res.converged, bool) and res.converged and res.x.shape == (20,)
    with pytest.raises(ValueError, match="tol"):
        ur.refine(net, Y, tol=-1.0)
    with pytest.raises(ValueError, match="method"):
        ur.refine(net, Y, method="newton")
    with pytest.raises(ValueError, match="expected 10"):
        ur.refine(net, Y[:, :5])


def test_support_least_squares_is_exact_on_the_true_support():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((12, 30))
    X = np.zeros((40, 30))
    for row in X:
        row[rng.choice(30, 4, replace=False)] = rng.uniform(1, 2, 4)
    Y = X @ A.T
    G, aty = torch.as_tensor(A.T @ A), torch.as_tensor(Y @ A)
    guess = torch.as_tensor(X * rng.uniform(0.2, 5.0, X.shape))  # right support, wrong values
    np.testing.assert_allclose(support_least_squares(G, aty, guess, 12).numpy(), X, atol=1e-10)


def test_the_certificate_detects_a_shifted_distribution():
    """A net trained on signals supported on the first 3 entries, applied to xie2019's signals."""
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, (10, 20))
    X = np.zeros((1500, 20))
    X[:, :3] = rng.uniform(1, 100, (1500, 3))
    Y = X @ A.T
    net = ur.nets.LPGD(A, 1)
    ur.train(net, Y[:1000], X[:1000], epochs=60, batch_size=100, lr=1e-2, progress=False)
    own = np.median(net.certify(Y[1000:]).certificate)
    _, Y_shift, _ = sparse_nonnegative(500, A=A, seed=1)
    shifted = np.median(net.certify(Y_shift).certificate)
    assert shifted >= 10 * own
    res = ur.refine(net, Y_shift)
    assert res.converged.all()


def test_the_certificate_detects_shifts_of_another_operator_and_support():
    """Own setting: |N(0, 1)| 12×24, signals on the fixed support {4, 11, 17}; shifted to another fixed
    support and to random supports of 5. A scale of y (the net is positively homogeneous) is no shift."""
    rng = np.random.default_rng(3)
    A = np.abs(rng.standard_normal((12, 24)))

    def signals(n, support=None):
        X = np.zeros((n, 24))
        for row in X:
            cols = support if support is not None else rng.choice(24, 5, replace=False)
            row[cols] = rng.uniform(1, 10, len(cols))
        return X @ A.T, X

    Y, X = signals(900, [4, 11, 17])
    net = ur.nets.LPGD(A, 1)
    ur.train(net, Y[:600], X[:600], epochs=60, batch_size=100, lr=1e-2, progress=False)
    own = np.median(net.certify(Y[600:]).certificate)
    for support in ([0, 9, 20], None):
        shifted = np.median(net.certify(signals(300, support)[0]).certificate)
        assert shifted >= 10 * own, (support, shifted, own)
    assert np.median(net.certify(10 * Y[600:]).certificate) == pytest.approx(own, rel=1e-9)


def test_cli_solve_writes_certificates_and_refines_in_chunks(xie, tmp_path, capsys):
    import json

    from unrolled.cli import main

    A, Y, _ = xie
    net = ur.nets.LAPGD(A.astype(np.float32), 3, init="paper")
    net.save(tmp_path / "m.safetensors")
    np.save(tmp_path / "Y.npy", Y[:10])
    common = [
        "solve",
        "--model",
        str(tmp_path / "m.safetensors"),
        "--input",
        str(tmp_path / "Y.npy"),
        "--quiet",
        "--chunk",
        "3",
    ]
    assert main([*common, "--output", str(tmp_path / "X.npy"), "--certificates", str(tmp_path / "c.npy")]) == 0
    expected = net.certify(Y[:10]).certificate
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), expected, rtol=1e-6)
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["certificate_worst"] == pytest.approx(expected.max(), rel=1e-6)
    assert info["certificate_median"] == pytest.approx(np.median(expected), rel=1e-6)
    assert main([*common, "--output", str(tmp_path / "R.npy"), "--refine", "--tol", "1e-9"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["converged"] == 1.0 and info["certificate_worst"] <= 1e-9
    cert = ur.NNLS(ur.DenseOperator(A.astype(np.float32).astype(float))).certificate(
        torch.as_tensor(np.load(tmp_path / "R.npy")), torch.as_tensor(Y[:10])
    )
    assert (cert <= 1e-9).all()
    np.save(tmp_path / "A.npy", A)
    assert (
        main(
            [
                "solve",
                "--method",
                "apgd",
                "--operator",
                str(tmp_path / "A.npy"),
                "--input",
                str(tmp_path / "Y.npy"),
                "--output",
                str(tmp_path / "Z.npy"),
                "--refine",
            ]
        )
        == 2
    )
    assert "--refine" in capsys.readouterr().err


def test_reproduce_certified_inference_quick(tmp_path):
    import json

    from unrolled.experiments import reproduce

    res = reproduce("certified-inference", quick=True, out=tmp_path)
    assert (tmp_path / "certificates.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == "certified-inference"
    lapgd, slista = res["studies"]["LAPGD-3"], res["studies"]["SLISTA-10"]
    for study in (lapgd, slista):
        assert all(r["refine"]["certified"] == 1.0 for r in study.values())
    assert lapgd["sparsity 6–8"]["median"] > 2 * lapgd["in distribution"]["median"]
    assert slista["operator ×3"]["median"] > 2 * slista["in distribution"]["median"]
    # LAPGD is positively homogeneous and the certificate scale-invariant: a scaled operator is no shift
    assert lapgd["operator ×10"]["median"] == pytest.approx(lapgd["in distribution"]["median"], rel=1e-6)
    # ... and its answers are as good as in distribution, by the objective against the certified optimum
    assert lapgd["operator ×10"]["excess_vs_in_distribution"] == pytest.approx(1.0, rel=1e-4)
    assert lapgd["sparsity 6–8"]["excess_vs_in_distribution"] > 2
    assert all(r["detected"] == (r["median_vs_in_distribution"] >= 10) for s in (lapgd, slista) for r in s.values())


def test_bench_rows_reach_the_tolerance(xie, moreau):
    from unrolled.experiments.certified import TOL, _bench_setting

    A, Y, _ = xie
    D, Yl = moreau
    for label, kind, net, op, Yb in (
        ("xie", "nnls", ur.nets.LAPGD(A, 3), A, Y[:40]),
        ("lasso", "lasso", ur.nets.SLISTA(D, 5, 0.1), D, Yl[:40]),
    ):
        rows, ratio, vs_ref = _bench_setting(label, kind, net, op, Yb, repeat=1, n_ref=5)
        names = [r["method"] for r in rows]
        assert any(n.endswith("+ refine") for n in names) and ratio > 0 and vs_ref > 0
        refined = rows[names.index(next(n for n in names if n.endswith("+ refine")))]
        assert refined["problems"] == 40 and refined["accuracy"] <= TOL
