"""The CUDA path: solvers, networks and training on a GPU agree with the CPU (skipped without one)."""

import numpy as np
import pytest
import torch

import unrolled as ur

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("method", ["pgd", "apgd", "ogd", "active-set"])
def test_nnls_on_cuda_matches_cpu(method):
    A, Y, _ = ur.data.sparse_nonnegative(64, seed=0)
    cpu = ur.nnls(A, Y, method, tol=1e-9, max_iter=50_000)
    gpu = ur.nnls(torch.tensor(A, device="cuda"), torch.tensor(Y, device="cuda"), method, tol=1e-9, max_iter=50_000)
    assert gpu.x.device.type == "cuda"
    np.testing.assert_allclose(gpu.objective, cpu.objective, rtol=1e-6, atol=1e-9)


@cuda
@pytest.mark.parametrize("method", ["ista", "fista", "oista"])
def test_lasso_on_cuda_matches_cpu(method):
    rng = np.random.default_rng(0)
    D = rng.standard_normal((32, 64))
    D /= np.linalg.norm(D, axis=0)
    Y = rng.standard_normal((50, 32))
    cpu = ur.lasso(D, Y, 0.1, method, tol=1e-10, max_iter=100_000)
    gpu = ur.lasso(
        torch.tensor(D, device="cuda"), torch.tensor(Y, device="cuda"), 0.1, method, tol=1e-10, max_iter=100_000
    )
    np.testing.assert_allclose(gpu.x.cpu().numpy(), cpu.x, atol=1e-6)


@cuda
def test_nets_train_and_run_on_cuda(tmp_path):
    A, Y, X = ur.data.sparse_nonnegative(600, seed=1)
    for net in (ur.nets.LPGD(A, depth=3), ur.nets.LAPGD(A, depth=3), ur.nets.LISTA(A, depth=3, lam=0.1)):
        cpu_out = net.double()(torch.tensor(Y[:50]))
        net = net.to("cuda")
        gpu_out = net(torch.tensor(Y[:50], device="cuda"))
        torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-9, atol=1e-9)
        loss = "unsupervised" if isinstance(net.problem, ur.Lasso) else "supervised"
        hist = ur.train(
            net,
            Y[100:],
            X[100:] if loss == "supervised" else None,
            loss=loss,
            epochs=2,
            progress=False,
            checkpoint=tmp_path / f"{type(net).__name__}.ckpt",
        )
        assert np.isfinite(hist.train_loss).all()
        net.save(tmp_path / "m.safetensors")
        back = ur.load(tmp_path / "m.safetensors", map_location="cuda")
        torch.testing.assert_close(back(torch.tensor(Y[:50], device="cuda")), net(torch.tensor(Y[:50], device="cuda")))
