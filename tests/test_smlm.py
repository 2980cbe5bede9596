"""SMLM (xie2019 §3.3): the non-stationary PSF operator, the simulator, the ISBI loader and metrics, xie-smlm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

import unrolled as ur
from unrolled.data.isbi import isbi_metrics, load_isbi, localize, save_isbi
from unrolled.data.smlm import expected_frames, field_sigma, grid_truth, psf_operator, simulate
from unrolled.operators import KINDS, GaussianPSF, from_spec


def small_psf(camera=(6, 5), dtype=torch.float64, **kw):
    return psf_operator(camera, dtype=dtype, **kw)


def test_adjoint_dot_test():
    op = small_psf()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4, op.n, generator=g, dtype=torch.float64)
    R = torch.randn(4, op.m, generator=g, dtype=torch.float64)
    lhs, rhs = (op.forward(X) * R).sum(1), (X * op.adjoint(R)).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert op.in_shape == (1, 12, 10) and op.out_shape == (1, 6, 5) and op.shape == (30, 120)


def test_column_is_the_pixel_integrated_gaussian():
    op = small_psf(centre_nm=120.0, edge_nm=300.0, astigmatism=0.3)
    p, q = 7, 2  # node (row, column) on the 12×10 grid of 100 nm
    sx, sy = op.sigma[0, p, q].item(), op.sigma[1, p, q].item()
    x, y = (q + 0.5) * 100.0, (p + 0.5) * 100.0
    ex, ey = np.arange(6) * 200.0, np.arange(7) * 200.0
    fx = ndtr((ex[1:] - x) / sx) - ndtr((ex[:-1] - x) / sx)
    fy = ndtr((ey[1:] - y) / sy) - ndtr((ey[:-1] - y) / sy)
    column = op.matrix()[:, p * 10 + q].numpy().reshape(6, 5)
    np.testing.assert_allclose(column, np.outer(fy, fx), rtol=1e-12, atol=1e-15)


def _kronecker_rank(op) -> int:
    """Rank of A rearranged so that A = B ⊗ C (one row blur, one column blur) has rank 1 (Van Loan)."""
    H, W = op.camera_shape
    Gh, Gw = op.grid_shape
    A = op.matrix().reshape(H, W, Gh, Gw).permute(0, 2, 1, 3).reshape(H * Gh, W * Gw)
    s = torch.linalg.svdvals(A)
    return int((s > 1e-10 * s[0]).sum())


def test_width_varying_in_2d_is_not_separable():
    assert _kronecker_rank(GaussianPSF(180.0, (6, 5), dtype=torch.float64)) == 1  # a constant width: one pair of blurs
    assert _kronecker_rank(small_psf()) > 1


def test_spec_fingerprint_dtype_and_registration():
    op = small_psf()
    config, tensors = op.spec()
    assert KINDS["gaussian_psf"] is GaussianPSF
    back = from_spec(json.loads(json.dumps(config)), tensors)
    assert back.fingerprint() == op.fingerprint()
    assert torch.equal(back.matrix(), op.matrix())
    f32 = op.to(dtype=torch.float32)
    assert f32.dtype == torch.float32 and f32.fingerprint() == op.fingerprint()
    assert from_spec(*f32.spec()).dtype == torch.float32
    assert small_psf(centre_nm=151.0).fingerprint() != op.fingerprint()
    assert math.isclose(op.lipschitz, float(torch.linalg.matrix_norm(op.matrix(), ord=2)) ** 2, rel_tol=1e-12)
    assert op.T.forward(torch.ones(1, op.m, dtype=torch.float64)).shape == (1, op.n)


@pytest.mark.parametrize(
    "sigma, camera, message",
    [(-1.0, (4, 4), "sigma"), (np.ones((3, 3)), (4, 4), "sigma"), (150.0, (4,), "camera_shape")],
)
def test_bad_arguments_are_named(sigma, camera, message):
    with pytest.raises(ValueError, match=message):
        GaussianPSF(sigma, camera)


def test_emitter_on_a_node_gives_the_operator_column():
    op = small_psf()
    p, q = 5, 4
    positions = np.array([[0, (q + 0.5) * 100.0, (p + 0.5) * 100.0, 1500.0]])
    frame = expected_frames(positions, 1, op).reshape(-1)
    np.testing.assert_allclose(frame, 1500.0 * op.matrix()[:, p * 10 + q].numpy(), rtol=1e-12)


def test_one_emitter_is_localised_within_a_tenth_of_a_pixel_by_the_exact_solver():
    op = small_psf((8, 8))
    truth = np.array([[0, 812.3, 777.7, 2000.0]])  # off the 100 nm grid
    frame = expected_frames(truth, 1, op).reshape(1, -1)
    for A, method in ((op.matrix(), "active-set"), (op, None)):
        res = ur.nnls(A, frame, method=method, tol=1e-8, max_iter=100_000)
        assert bool(res.converged.all())
        found = localize(res.x, op.grid_shape, op.grid_nm, threshold=100.0)
        assert len(found) == 1
        assert np.abs(found[0, 1:3] - truth[0, 1:3]).max() < 0.1 * op.pixel_nm


def test_simulator_frames_and_truth():
    op = small_psf((8, 8), dtype=torch.float32)
    frames, positions, curves = simulate(50, op, per_frame=2.0, background=10.0, read_noise=1.0, seed=3)
    assert frames.shape == (50, 8, 8) and positions.shape[1] == 4 and len(curves) == 4
    assert positions[:, 1:3].min() >= 0 and positions[:, 1:3].max() < 1600
    assert frames.mean() > 10.0  # background plus the emitters' photons
    X = grid_truth(positions, 50, op.grid_shape, op.grid_nm)
    np.testing.assert_allclose(X.sum(1), np.bincount(positions[:, 0].astype(int), positions[:, 3], minlength=50))
    found = localize(X, op.grid_shape, op.grid_nm, threshold=1.0)
    alone = np.bincount(positions[:, 0].astype(int), minlength=50) == 1  # a lone emitter: exact centroid
    lone = positions[alone[positions[:, 0].astype(int)]]
    got = found[alone[found[:, 0].astype(int)]]
    np.testing.assert_allclose(got[np.argsort(got[:, 0])][:, 1:3], lone[np.argsort(lone[:, 0])][:, 1:3], atol=1e-9)
    sig = field_sigma((16, 16), 100.0)
    assert sig.shape == (2, 16, 16) and sig[0].min() >= 150.0 and sig[0].max() <= 250.0


def test_isbi_metrics_by_hand():
    truth = np.array([[0, 0.0, 0.0, 1], [0, 100.0, 0.0, 1], [1, 500.0, 500.0, 1]])
    detected = np.array([[0, 60.0, 0.0, 1], [0, -50.0, 0.0, 1], [1, 800.0, 500.0, 1], [2, 10.0, 10.0, 1]])
    m = isbi_metrics(detected, truth, tolerance_nm=150.0)
    # frame 0: the optimal pairs are (60→100: 40 nm) and (−50→0: 50 nm), 90 nm in all, not
    # (60→0: 60) + (−50→100: 150) = 210; frame 1: 300 nm apart, a FP and a FN; frame 2: a FP
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 1)
    assert (
        math.isclose(m["jaccard"], 2 / 5) and math.isclose(m["recall"], 2 / 3) and math.isclose(m["precision"], 1 / 2)
    )
    assert math.isclose(m["rmse_nm"], math.sqrt((40**2 + 50**2) / 2))
    tight = isbi_metrics(detected, truth, tolerance_nm=45.0)
    assert (tight["tp"], tight["rmse_nm"]) == (1, 40.0)
    empty = isbi_metrics(np.zeros((0, 4)), truth)
    assert empty["jaccard"] == 0.0 and math.isnan(empty["rmse_nm"])


def test_isbi_loader_round_trip(tmp_path):
    pytest.importorskip("tifffile")
    op = small_psf((8, 8), dtype=torch.float32)
    frames, positions, _ = simulate(5, op, seed=1)
    save_isbi(tmp_path / "stack.tif", tmp_path / "truth.csv", frames, positions)
    f, p = load_isbi(tmp_path / "stack.tif", tmp_path / "truth.csv")
    np.testing.assert_allclose(f, frames.astype(np.float32))
    np.testing.assert_allclose(p, positions)
    # the challenge's own column names, extra columns, and no header at all
    (tmp_path / "named.csv").write_text("id,frame,xnano,ynano,znano,intensity\n1,2,10.5,20.5,0,300\n")
    assert load_isbi(tmp_path / "stack.tif", tmp_path / "named.csv")[1].tolist() == [[1.0, 10.5, 20.5, 300.0]]
    (tmp_path / "bare.csv").write_text("5,1.0,2.0,3.0\n")
    assert load_isbi(tmp_path / "stack.tif", tmp_path / "bare.csv")[1].tolist() == [[4.0, 1.0, 2.0, 3.0]]
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_isbi(tmp_path / "stack.tif", tmp_path / "missing.csv")
    (tmp_path / "late.csv").write_text("frame,x,y,intensity\n9,1,1,1\n")
    with pytest.raises(ValueError, match="outside 1..5"):
        load_isbi(tmp_path / "stack.tif", tmp_path / "late.csv")


def test_nets_on_the_psf_operator_save_load_and_solve(tmp_path):
    from unrolled.cli import main

    op = small_psf((4, 4))
    Y = torch.as_tensor(expected_frames(np.array([[0, 300.0, 420.0, 1.0]]), 1, op).reshape(1, -1))
    net = ur.nets.LAPGD(op, 3, init="analytic", gamma=0.9)
    apgd = ur.nnls(op, Y, method="apgd", gamma=0.9, max_iter=3, tol=0.0, check_every=3)
    np.testing.assert_allclose(net(Y).detach().numpy(), apgd.x.numpy(), rtol=1e-10, atol=1e-13)
    net.save(tmp_path / "net.safetensors")
    back = ur.load(tmp_path / "net.safetensors")
    assert back.fingerprint == op.fingerprint() and type(back.op) is GaussianPSF
    np.save(tmp_path / "frames.npy", Y.numpy())
    model, frames, answer = (str(tmp_path / f) for f in ("net.safetensors", "frames.npy", "x.npy"))
    assert main(["solve", "--model", model, "--input", frames, "--output", answer, "--quiet"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), apgd.x.numpy(), rtol=1e-10, atol=1e-12)


TINY = {
    "camera": [8, 8],
    "n_train": 100,
    "n_test": 50,
    "n_filaments": 2,
    "per_frame": 1.0,
    "photons": [300.0, 2000.0],
    "background": 100.0,
    "read_noise": 5.0,
    "depth": 7,
    "long_iterations": 30,
    "epochs": 1,
    "batch_size": 50,
    "lr": 3e-4,
}


def test_xie_smlm_tiny_run(tmp_path):
    from unrolled.experiments import EXPERIMENTS, MODULES
    from unrolled.experiments.xie_smlm import _run

    assert "xie_smlm" in MODULES and "xie-smlm" in EXPERIMENTS
    res = _run(TINY, tmp_path, 0, torch.device("cpu"), progress=False)
    names = ["APGD-7", "APGD-30", "LPGD-7", "LAPGD-7"]
    assert list(res["metrics"]) == names and [r[0] for r in res["table"][1:]] == names
    for m in res["metrics"].values():
        assert 0.0 <= m["jaccard"] <= 1.0 and m["tp"] + m["fn"] == res["emitters_test"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["stage"] == "done" and (tmp_path / "fig4.png").exists()
    assert ur.load(tmp_path / "LAPGD-7.safetensors").depth == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_xie_smlm_refuses_a_missing_cuda_device(tmp_path):
    from unrolled.experiments import reproduce

    with pytest.raises(ValueError, match="no CUDA device"):
        reproduce("xie-smlm", quick=True, out=tmp_path, device="cuda")
