"""Out-of-core `unrolled solve`: chunks of a memory-mapped / Zarr input, resumed after a failure,
equal to one in-memory call; the same with the chunks solved on a Dask LocalCluster."""

import json

import numpy as np
import pytest
import torch

import unrolled as ur
import unrolled.stream as stream
from unrolled.cli import main

ROWS, CHUNK = 3000, 400  # 8 chunks, the last one short


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    A, Y, _ = ur.data.sparse_nonnegative(ROWS, seed=3)
    np.save(root / "A.npy", A)
    np.save(root / "Y.npy", Y)
    net = ur.nets.LAPGD(torch.as_tensor(A), depth=3)
    net.save(root / "model.safetensors")
    return root, A, Y, net


def _solve(root, out, *extra):
    args = ["solve", "--model", str(root / "model.safetensors"), "--input", str(root / "Y.npy")]
    return main([*args, "--output", str(out), "--chunk", str(CHUNK), "--quiet", *extra])


def _fail_after(monkeypatch, k):
    """Make the k+1-th chunk solve raise (a run stopped midway); count the chunks solved."""
    solved = []
    real = stream.solve_chunk

    def failing(*args):
        if k is not None and len(solved) == k:
            raise OSError(28, "No space left on device")
        solved.append(args[3])
        return real(*args)

    monkeypatch.setattr(stream, "solve_chunk", failing)
    return solved


def test_a_stopped_run_resumes_and_equals_one_in_memory_call(problem, tmp_path, monkeypatch, capsys):
    root, A, Y, net = problem
    out = tmp_path / "X.npy"
    solved = _fail_after(monkeypatch, 3)
    assert _solve(root, out) == 1
    assert not out.exists() and solved == [1, 2, 3]  # chunk 0 is solved before the stores exist
    # another model onto the partial output is refused, naming why, and leaves it intact
    other = ur.nets.LAPGD(torch.as_tensor(A), depth=2)
    other.save(tmp_path / "other.safetensors")
    capsys.readouterr()
    args = ["solve", "--model", str(tmp_path / "other.safetensors"), "--input", str(root / "Y.npy")]
    assert main([*args, "--output", str(out), "--chunk", str(CHUNK), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model" in err and "another --output" in err
    monkeypatch.undo()
    solved = _fail_after(monkeypatch, None)
    assert _solve(root, out) == 0
    assert sorted(solved) == [4, 5, 6, 7]  # only the chunks not done
    assert json.loads(capsys.readouterr().out)["resumed_chunks"] == 4
    with torch.no_grad():
        expected = net(torch.as_tensor(Y)).numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-12)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial store or sidecar left


def _stopped_then_resumed_on_dask(problem, tmp_path, monkeypatch, processes):
    distributed = pytest.importorskip("distributed")
    root, A, Y, net = problem
    out = tmp_path / "X.npy"
    _fail_after(monkeypatch, 2)
    assert _solve(root, out) == 1
    monkeypatch.undo()
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None
    ) as cluster:
        assert _solve(root, out, "--scheduler", cluster.scheduler_address) == 0
    with torch.no_grad():
        expected = net(torch.as_tensor(Y)).numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-12)
    assert json.loads(out.with_suffix(".json").read_text())["resumed_chunks"] == 3


def test_a_stopped_run_resumes_on_a_dask_cluster_of_two_workers(problem, tmp_path, monkeypatch):
    _stopped_then_resumed_on_dask(problem, tmp_path, monkeypatch, processes=False)


@pytest.mark.slow
def test_a_stopped_run_resumes_on_a_dask_cluster_of_two_worker_processes(problem, tmp_path, monkeypatch):
    """The same with worker processes (each imports torch: ~10 s more), as ``--scheduler local`` runs."""
    _stopped_then_resumed_on_dask(problem, tmp_path, monkeypatch, processes=True)


def test_zarr_in_zarr_out_round_trip(problem, tmp_path):
    zarr = pytest.importorskip("zarr")
    root, A, Y, _ = problem
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("Y", shape=Y[:900].shape, chunks=(250, Y.shape[1]), dtype="float64")[:] = Y[:900]
    out = tmp_path / "X.zarr"
    args = ["solve", "--method", "nnls", "--operator", str(root / "A.npy"), "--input", str(tmp_path / "in.zarr")]
    assert main([*args, "--key", "Y", "--output", str(out), "--chunk", "300", "--quiet"]) == 0
    stored = zarr.open_array(str(out), mode="r")
    assert stored.chunks == (300, A.shape[1])
    # NNLS on 10×20 may have several minimisers: compare objectives (scaled by ½‖y‖²)
    X, ref = stored[:], ur.nnls(A, Y[:900]).x
    excess = (((X @ A.T - Y[:900]) ** 2).sum(1) - ((ref @ A.T - Y[:900]) ** 2).sum(1)) / (Y[:900] ** 2).sum(1)
    assert np.abs(excess).max() < 1e-9 and X.min() >= 0
    assert main([*args, "--key", "Z", "--output", str(tmp_path / "Z.zarr"), "--quiet"]) == 2  # no array Z


def test_solve_fast_equals_the_eager_net_and_is_refused_for_a_method(problem, tmp_path):
    root, A, Y, net = problem
    out = tmp_path / "X.npy"
    assert _solve(root, out, "--fast") == 0
    with torch.no_grad():
        np.testing.assert_allclose(np.load(out), net(torch.as_tensor(Y)).numpy(), rtol=0, atol=1e-10)
    args = ["solve", "--method", "nnls", "--operator", str(root / "A.npy"), "--input", str(root / "Y.npy")]
    assert main([*args, "--output", str(out), "--fast", "--quiet"]) == 2


@pytest.mark.parametrize("scheduler", ["bogus", "http//host", ""])
def test_a_malformed_scheduler_is_refused_before_any_work(problem, tmp_path, capsys, scheduler):
    """Checked before the first chunk (solved locally, it left a partial store; with a single chunk the
    address was never used and the run succeeded without Dask)."""
    out = tmp_path / "X.npy"
    assert _solve(problem[0], out, "--scheduler", scheduler) == 2
    err = capsys.readouterr().err
    assert "scheduler" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
