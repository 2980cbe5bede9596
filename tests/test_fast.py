"""ur.fast(net): the NNLS nets fused into one compiled pass equal the eager nets; without a
compiler, or for another net, the eager net with a one-line warning."""

import importlib
import warnings

import numpy as np
import pytest
import torch

import unrolled as ur

fast_module = importlib.import_module("unrolled.fused")

A, Y, _ = ur.data.sparse_nonnegative(1500, seed=4)  # 1500 rows: blocks of 64 plus a tail; 2 threads split it


def _nets(dtype):
    At = torch.as_tensor(A, dtype=dtype)
    yield ur.nets.LAPGD(At, depth=3)
    yield ur.nets.LAPGD(At, depth=4, tied=False, init="random", seed=1)
    yield ur.nets.LPGD(At, depth=3)
    yield ur.nets.LPGD(At, depth=3, tied=False, init="random", seed=2)
    yield ur.nets.LPGD(At, depth=2, skip=False)
    yield ur.nets.Vanilla(At, depth=3, bias=True, init="random", seed=3)
    yield ur.nets.UPGDM(At, depth=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_equals_the_eager_net(dtype):
    Yt = torch.as_tensor(Y, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for net in _nets(dtype):
        if isinstance(net, ur.nets.Vanilla):
            with torch.no_grad():
                net.c[1].add_(0.5)  # a non-zero bias is used
        with torch.no_grad():
            expected = net(Yt)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fused path, not the fallback
            f = ur.fast(net)
        scale = expected.abs().max()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            try:
                got = f(Yt)
            finally:
                torch.set_num_threads(1)
            assert got.dtype == dtype and got.shape == expected.shape
            assert (got - expected).abs().max() <= tol * scale, type(net).__name__
        # NumPy in, NumPy out; a vector gives a vector; fewer rows than a block
        np.testing.assert_allclose(f(Y[:5].astype(np.float64)), net(Y[:5]), rtol=0, atol=tol * float(scale))
        assert f(Yt[7]).shape == (net.n,)


def test_a_net_without_a_fused_path_falls_back_to_eager_with_one_warning():
    net = ur.nets.LOGD(torch.as_tensor(A), depth=2)
    with pytest.warns(RuntimeWarning, match="LOGD has no fused path") as record:
        f = ur.fast(net)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    with torch.no_grad():
        assert torch.equal(f(torch.as_tensor(Y[:50])), net(torch.as_tensor(Y[:50])))


def test_no_compiler_falls_back_to_eager(monkeypatch, tmp_path):
    monkeypatch.setattr(fast_module, "_LIBRARY", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached there
    monkeypatch.delenv("UNROLLED_CACHE", raising=False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    net = ur.nets.LAPGD(torch.as_tensor(A), depth=3)
    with pytest.warns(RuntimeWarning, match="using the eager net"):
        f = ur.fast(net)
    with torch.no_grad():
        assert torch.equal(f(torch.as_tensor(Y)), net(torch.as_tensor(Y)))


def test_fast_refuses_rows_of_the_wrong_width():
    f = ur.fast(ur.nets.LAPGD(torch.as_tensor(A), depth=3))
    with pytest.raises(ValueError, match="entries per signal"):
        f(torch.zeros(3, A.shape[0] + 1, dtype=torch.float64))


def test_bench_inference_rows_on_the_device_given(capsys):
    from unrolled import bench

    rows, note = bench.bench_inference(512, 1, "cpu")
    by_name = {r["method"]: r for r in rows}
    assert by_name["ur.fast(net) (fused C kernel)"]["accuracy"] < 1e-5  # float32 rounding
    assert by_name["hand-written addmm/ReLU chain"]["accuracy"] < 1e-5
    assert 1e-6 < by_name["eager net, autocast bfloat16"]["accuracy"] < 0.1  # measured, not zero
    assert all(r["speedup"] > 0 for r in rows[1:]) and "cpu" in note
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--sets", "inference", "--device", "no-such-device"])
    assert "--device no-such-device" in capsys.readouterr().err


def test_fast_refuses_what_is_not_a_network():
    with pytest.raises(TypeError, match="unrolled network"):
        ur.fast("lapgd.safetensors")
