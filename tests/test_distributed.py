"""Data-parallel training under torchrun (gloo, CPU) and data through torch.utils.data.

A 2-process run gives the weights of a 1-process run with the same global batch and seed (its
checkpoint after 2 epochs; the whole run in a slow test); a run whose rank dies by SIGKILL
resumes (in one process) from its last checkpoint and ends where an uninterrupted run ends.
A Dataset, an IterableDataset and a memory-mapped array give exactly what the same rows as
tensors give; FreshSamples is reproducible per epoch and rank.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

import unrolled as ur
from unrolled import distributed
from unrolled.cli import main
from unrolled.datasets import FreshSamples, array_fingerprint, source
from unrolled.nets.base import load_tensors
from unrolled.training import _batches

# 151 rows in global batches of 50: the last one (1 row) leaves rank 1 an empty share
CONFIG = """
seed = 3
[data]
generator = "xie2019"
n_train = 151
n_val = 40
[model]
name = "LPGD"
depth = 2
dtype = "float64"
[train]
epochs = 4
batch_size = 50
lr = 1e-2
"""

# rank 1 of a torchrun job dies by SIGKILL at its 11th optimiser step (epoch 3 of 4; epochs 1
# and 2 are checkpointed)
DIES = r"""
import os, signal, sys
import torch
from unrolled.cli import main
calls = {"n": 0}
step = torch.optim.Adam.step
def dies(*a, **k):
    calls["n"] += 1
    if os.environ["RANK"] == "1" and calls["n"] == 11:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(*a, **k)
torch.optim.Adam.step = dies
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*command) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(ur.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    for key in distributed.ENV:
        env.pop(key, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    return subprocess.run([*launcher, *command], env=env, capture_output=True, text=True, timeout=180, check=False)


def _weights(out) -> dict:
    return load_tensors(Path(out) / "model.safetensors")[0]


def _close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "run.toml").write_text(CONFIG)
    return root / "run.toml"


@pytest.fixture(scope="module")
def reference(config):
    """An uninterrupted 1-process run: its weights and history."""
    out = config.parent / "one"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    assert not torch.distributed.is_initialized()  # a plain process starts no process group
    return _weights(out), json.loads((out / "history.json").read_text())


@pytest.mark.slow  # its fast sibling: the killed run's epoch-2 checkpoint equals the 1-process one
def test_two_processes_give_the_one_process_weights(config, reference, tmp_path):
    out = tmp_path / "two"
    run = _torchrun("-m", "unrolled.cli", "train", str(config), "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained LPGD") == 1  # rank 0 alone reports
    _close(_weights(out), reference[0])
    hist = json.loads((out / "history.json").read_text())
    np.testing.assert_allclose(hist["train_loss"], reference[1]["train_loss"], rtol=1e-10)
    np.testing.assert_allclose(hist["val_loss"], reference[1]["val_loss"], rtol=1e-10)


def _stopped_at_step_11(config, out, monkeypatch) -> tuple[dict, dict]:
    """The checkpoint (tensors, metadata) of a 1-process run stopped by Ctrl-C at step 11 (epoch 3)."""
    calls, step = {"n": 0}, torch.optim.Adam.step

    def stops(*a, **k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return step(*a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", stops)
        assert main(["train", str(config), "--out", str(out), "--quiet"]) == 130
    return load_tensors(out / "checkpoint.safetensors")


def test_a_killed_rank_then_a_rerun_on_one_process_resumes(config, reference, tmp_path, monkeypatch):
    out, script = tmp_path / "killed", tmp_path / "dies.py"
    script.write_text(DIES)
    run = _torchrun(str(script), "train", str(config), "--out", str(out), "--quiet")
    assert run.returncode != 0
    assert "Signals.SIGKILL" in run.stderr or "-9" in run.stderr, run.stderr[-3000:]
    assert not (out / "model.safetensors").exists()
    tensors, meta = load_tensors(out / "checkpoint.safetensors")
    assert meta["epoch"] == 2
    # two processes took the steps of one: weights, best weights and Adam's moments after 2 epochs
    one_tensors, one_meta = _stopped_at_step_11(config, tmp_path / "one", monkeypatch)
    _close(tensors, one_tensors)
    np.testing.assert_allclose(meta["history"]["train_loss"], one_meta["history"]["train_loss"], rtol=1e-10)
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0  # another number of processes
    assert json.loads((out / "history.json").read_text())["resumed_from"] == 2
    _close(_weights(out), reference[0])


def _problem(n_train=130, seed=0):
    A, Y, X = ur.data.sparse_nonnegative(n_train, seed=seed)
    return A, Y, X


def _fit(A, Y, X=None, **kw) -> tuple[dict, ur.TrainHistory]:
    torch.manual_seed(0)
    net = ur.nets.LAPGD(torch.as_tensor(A), depth=2)
    opts = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "seed": 1, "progress": False}
    hist = ur.train(net, Y, X, **{**opts, **kw})
    return net.state_dict(), hist


def _same(a, b):
    (wa, ha), (wb, hb) = a, b
    for k, v in wa.items():
        torch.testing.assert_close(v, wb[k], rtol=0, atol=0)
    assert ha.train_loss == hb.train_loss and ha.val_loss == hb.val_loss


class SeededRows(IterableDataset):
    """The rows in the tensor path's order of each epoch (set_epoch), streamed one by one."""

    def __init__(self, Y, X, seed):
        self.Y, self.X, self.seed, self.epoch = torch.as_tensor(Y), torch.as_tensor(X), seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(len(self.Y), generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return ((self.Y[i], self.X[i]) for i in order)


def test_dataset_iterable_and_memmap_give_the_tensor_result(tmp_path):
    A, Y, X = _problem()
    val = (Y[:40], X[:40])
    expected = _fit(A, Y, X, val=val)
    _same(_fit(A, TensorDataset(torch.as_tensor(Y), torch.as_tensor(X)), val=val), expected)
    _same(_fit(A, SeededRows(Y, X, seed=1), val=val), expected)
    np.save(tmp_path / "Y.npy", Y)
    np.save(tmp_path / "X.npy", X)
    Ym, Xm = (np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in "YX")
    _same(_fit(A, Ym, Xm, val=(Ym[:40], Xm[:40])), expected)
    _same(_fit(A, TensorDataset(torch.as_tensor(Y)), loss="unsupervised"), _fit(A, Y, loss="unsupervised"))


def test_memmap_checkpoint_is_refused_after_the_file_changes(tmp_path):
    A, Y, X = _problem()
    for k, v in (("Y", Y), ("X", X)):
        np.save(tmp_path / f"{k}.npy", v)
    Ym, Xm = (np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in "YX")
    before = array_fingerprint(Ym)
    _fit(A, Ym, Xm, checkpoint=tmp_path / "ckpt.safetensors")
    np.save(tmp_path / "Y.npy", Y * 2)
    Ym = np.load(tmp_path / "Y.npy", mmap_mode="r")
    assert array_fingerprint(Ym) != before
    with pytest.raises(ValueError, match="another run"):
        _fit(A, Ym, Xm, checkpoint=tmp_path / "ckpt.safetensors")


def test_fresh_samples_are_new_each_epoch_reproducible_and_dealt_to_ranks(monkeypatch):
    A = ur.data.make_operator("uniform", 10, 20)
    fresh = FreshSamples("xie2019", 9, A=A, seed=5, block=4)

    def rows(epoch):
        fresh.set_epoch(epoch)
        return torch.stack([y for y, _ in fresh])

    first = rows(0)
    assert first.shape == (9, 10)
    torch.testing.assert_close(rows(0), first, rtol=0, atol=0)
    assert not torch.equal(rows(1)[:4], first[:4])
    for y, x in fresh:  # the pairs are the generator's: y = A x
        torch.testing.assert_close(y, torch.as_tensor(A) @ x)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    share = rows(0)
    assert share.shape == (4, 10) and not torch.equal(share, first[:4])
    assert distributed.rank() == 1 and distributed.shard(torch.arange(5)).tolist() == [1, 3]


def test_each_rank_gets_its_share_of_every_global_batch(monkeypatch):
    A, Y, X = _problem(51)
    ds = TensorDataset(torch.as_tensor(Y), torch.as_tensor(X))
    data = source(ds, None, name="", m=10, n=20, needs_x=True, dtype=torch.float64, device="cpu")
    cfg = {"batch_size": 25}
    shares = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        shares.append(list(_batches(data, cfg, seed=1, epoch=0)))
    monkeypatch.delenv("RANK")
    whole = list(_batches(data, cfg, seed=1, epoch=0))
    assert [len(b[0]) for b in whole] == [25, 25, 1]
    assert shares[1][-1] is None  # the 1-row batch leaves rank 1 nothing
    for k, batch in enumerate(whole):  # rank r holds rows r, r + 2, … of the one-process batch
        for rank, share in enumerate(s[k] for s in shares):
            for got, want in zip(share or (), batch):
                torch.testing.assert_close(got, want[rank::2], rtol=0, atol=0)


def test_config_memmap_and_fresh_generator(tmp_path, capsys):
    A, Y, X = _problem(200, seed=2)
    for k, v in (("A", A), ("Y", Y), ("X", X)):
        np.save(tmp_path / f"{k}.npy", v)
    model = '[model]\nname = "LPGD"\ndepth = 2\ndtype = "float64"\n[train]\nepochs = 2\nbatch_size = 50\n'
    mm = f'[operator]\nfile = "{tmp_path / "A.npy"}"\n[data]\npath = "{tmp_path / "Y.npy"}"\n'
    (tmp_path / "mm.toml").write_text(mm + f'targets = "{tmp_path / "X.npy"}"\nn_val = 40\n' + model)
    (tmp_path / "fresh.toml").write_text('[data]\ngenerator = "xie2019"\nfresh = true\nn_train = 100\n' + model)
    for name in ("mm", "fresh"):
        assert main(["train", str(tmp_path / f"{name}.toml"), "--out", str(tmp_path / name), "--quiet"]) == 0
    hist = json.loads((tmp_path / "fresh" / "history.json").read_text())
    assert len(hist["train_loss"]) == 2 and all(np.isfinite(hist["train_loss"]))
    (tmp_path / "bad.toml").write_text(mm.replace("Y.npy", "Y.npz") + model)
    assert main(["train", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "[data] path must name a .npy file" in capsys.readouterr().err
    for device, says in (("gpu", "is not a device"), ("cuda", "no CUDA device")):
        if device == "cuda" and torch.cuda.is_available():
            continue
        assert main(["train", str(tmp_path / "mm.toml"), "--out", str(tmp_path / "d"), "--device", device]) == 2
        assert says in capsys.readouterr().err
