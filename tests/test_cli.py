"""The `unrolled` command: train from TOML, solve with a model or a method, refuse a foreign operator."""

import json

import numpy as np
import pytest

import unrolled as ur
from unrolled.cli import main

CONFIG = """
seed = 0
[data]
generator = "xie2019"
n_train = 400
n_val = 100
[model]
name = "LPGD"
depth = 2
dtype = "float64"
[train]
epochs = 3
batch_size = 100
lr = 1e-3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "run.toml").write_text(CONFIG)
    assert main(["train", str(root / "run.toml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root


def test_train_writes_model_config_history_and_checkpoint(trained):
    run = trained / "run"
    for name in ("model.safetensors", "checkpoint.safetensors", "config.toml", "history.json", "operator.npy"):
        assert (run / name).is_file(), name
    hist = json.loads((run / "history.json").read_text())
    assert len(hist["train_loss"]) == 3
    # rerunning resumes from the finished checkpoint instead of training again
    assert main(["train", str(trained / "run.toml"), "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "history.json").read_text())["resumed_from"] == 3


def test_solve_with_model_matches_the_loaded_net(trained):
    run = trained / "run"
    A = np.load(run / "operator.npy")
    _, Y, _ = ur.data.sparse_nonnegative(20, A=A, seed=3)
    np.save(trained / "Y.npy", Y)
    out = trained / "X.npy"
    assert (
        main(
            [
                "solve",
                "--model",
                str(run / "model.safetensors"),
                "--operator",
                str(run / "operator.npy"),
                "--input",
                str(trained / "Y.npy"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    net = ur.load(run / "model.safetensors")
    np.testing.assert_array_equal(np.load(out), net(Y))
    assert json.loads(out.with_suffix(".json").read_text())["net"] == "LPGD"


def test_solve_refuses_a_foreign_operator(trained, capsys):
    np.save(trained / "B.npy", np.random.default_rng(12345).uniform(size=(10, 20)))
    _, Y, _ = ur.data.sparse_nonnegative(5, A=np.load(trained / "run" / "operator.npy"), seed=3)
    np.save(trained / "Y2.npy", Y)
    rc = main(
        [
            "solve",
            "--model",
            str(trained / "run" / "model.safetensors"),
            "--operator",
            str(trained / "B.npy"),
            "--input",
            str(trained / "Y2.npy"),
            "--output",
            str(trained / "never.npy"),
        ]
    )
    assert rc == 2 and "trained for operator" in capsys.readouterr().err
    assert not (trained / "never.npy").exists()


def test_solve_with_a_classical_method_matches_the_library(tmp_path, capsys):
    A, Y, _ = ur.data.sparse_nonnegative(10, seed=4)
    np.save(tmp_path / "A.npy", A)
    np.savez(tmp_path / "Y.npz", Y=Y)
    out = tmp_path / "X.npy"
    assert (
        main(
            [
                "solve",
                "--method",
                "apgd",
                "--operator",
                str(tmp_path / "A.npy"),
                "--input",
                str(tmp_path / "Y.npz"),
                "--output",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(out), ur.nnls(A, Y, "apgd").x)
    rc = main(
        [
            "solve",
            "--method",
            "fista",
            "--operator",
            str(tmp_path / "A.npy"),
            "--input",
            str(tmp_path / "Y.npz"),
            "--output",
            str(out),
        ]
    )
    assert rc == 2 and "--lam" in capsys.readouterr().err


def test_reproduce_lists_experiments(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert "xie-table1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, culprit",
    [(["--device", "cuda"], "--device"), (["--paper"], "--paper"), (["--data", "mnist"], "NAME=PATH")],
)
def test_reproduce_refuses_an_option_the_experiment_does_not_take(tmp_path, capsys, args, culprit):
    rc = main(["reproduce", "sulam-synthetic", "--quick", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and culprit in err and len(err.strip().splitlines()) == 1


def test_reproduce_passes_a_zero_option_on_to_be_checked(tmp_path, capsys):
    """--epochs 0 is a value, refused by the experiment (it was dropped as unset and the full run started)."""
    rc = main(["reproduce", "xie-smlm", "--quick", "--epochs", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "epochs" in err and len(err.strip().splitlines()) == 1


def test_train_lista_unsupervised_from_config(tmp_path):
    (tmp_path / "lista.toml").write_text("""
[data]
generator = "equiregularization"
m = 16
n = 32
n_train = 200
n_val = 50
[model]
name = "SLISTA"
depth = 4
lam = 0.3
dtype = "float64"
[train]
loss = "unsupervised"
epochs = 3
batch_size = 50
lr = 1e-2
""")
    assert main(["train", str(tmp_path / "lista.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    net = ur.load(tmp_path / "run" / "model.safetensors")
    D = np.load(tmp_path / "run" / "operator.npy")
    _, Y, _ = ur.data.equiregularized_signals(20, A=D, seed=9)
    ista = ur.lasso(D, Y, 0.3, "ista", max_iter=4, tol=0)

    def F(Z):
        return 0.5 * ((Z @ D.T - Y) ** 2).sum(1) + 0.3 * np.abs(Z).sum(1)

    assert F(net(Y)).mean() <= F(ista.x).mean() * 1.01  # trained steps do at least as well as 4 ISTA steps


def test_solve_in_chunks_equals_one_batch(trained, tmp_path):
    run = trained / "run"
    A = np.load(run / "operator.npy")
    _, Y, _ = ur.data.sparse_nonnegative(10, A=A, seed=5)
    np.save(tmp_path / "Y.npy", Y)
    np.save(tmp_path / "y.npy", Y[0])
    np.save(tmp_path / "A.npy", A)
    net = ur.load(run / "model.safetensors")
    for args, expected in (
        (["--model", str(run / "model.safetensors")], net(Y)),
        (["--method", "fista", "--lam", "0.5", "--operator", str(tmp_path / "A.npy")], ur.lasso(A, Y, 0.5, "fista").x),
    ):
        out = tmp_path / "X.npy"
        assert (
            main(["solve", *args, "--input", str(tmp_path / "Y.npy"), "--output", str(out), "--chunk", "3", "--quiet"])
            == 0
        )
        np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-12)
        assert main(["solve", *args, "--input", str(tmp_path / "y.npy"), "--output", str(out), "--quiet"]) == 0
        np.testing.assert_allclose(np.load(out), expected[0], rtol=0, atol=1e-9)  # alone: its own stopping step
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("method, lam", [("nnls", None), ("lasso", 0.5)])
def test_solve_default_routes(tmp_path, method, lam):
    """--method nnls / lasso take the library's default route (they were refused as unknown methods)."""
    A, Y, _ = ur.data.sparse_nonnegative(12, seed=5)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "Y.npy", Y)
    args = ["solve", "--method", method, "--operator", str(tmp_path / "A.npy"), "--input", str(tmp_path / "Y.npy")]
    args += ["--output", str(tmp_path / "X.npy"), "--quiet"] + (["--lam", str(lam)] if lam else [])
    assert main(args) == 0
    ref = ur.nnls(A, Y) if lam is None else ur.lasso(A, Y, lam)
    np.testing.assert_allclose(np.load(tmp_path / "X.npy"), ref.x, atol=1e-8)
