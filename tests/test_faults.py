"""Faults as users meet them: kill -9 anywhere in `unrolled train` (inside a checkpoint write too),
Ctrl-C, a full disk, a changed config; and a catalogue of bad inputs, each refused in one line
naming the culprit, with exit 2 for a user error and 1 for a failure."""

import errno
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.cli import main
from unrolled.nets.base import _digest, load_tensors

CONFIG = """
seed = {seed}
[data]
generator = "xie2019"
n_train = {n_train}
n_val = 50
[model]
name = "LPGD"
depth = 2
dtype = "float64"
[train]
epochs = 4
batch_size = 50
lr = {lr}
"""

# A child `unrolled train` that dies by SIGKILL at the AT-th call of a chosen function:
# "step" (an optimiser step, inside an epoch), "write" (after half a checkpoint is written) or
# "rename" (a checkpoint fully written, not yet renamed into place).
CHILD = r"""
import os, signal, sys
import safetensors.torch, torch
from unrolled.cli import main
where, at = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}
def dies(orig, before=None):
    def wrapper(*a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            if before:
                before(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*a, **k)
    return wrapper
def half(tensors, path, metadata=None):
    safetensors.torch.__dict__["_orig"](tensors, path, metadata=metadata)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
safetensors.torch._orig = safetensors.torch.save_file
if where == "step":
    torch.optim.Adam.step = dies(torch.optim.Adam.step)
elif where == "write":
    safetensors.torch.save_file = dies(safetensors.torch.save_file, before=half)
else:
    os.replace = dies(os.replace)
sys.exit(main(sys.argv[3:]))
"""


def _config(tmp_path, name="run.toml", seed=0, n_train=200, lr=1e-3) -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(seed=seed, n_train=n_train, lr=lr))
    return path


def _train(config, out, *extra) -> int:
    return main(["train", str(config), "--out", str(out), "--quiet", *extra])


def _weights(out) -> dict:
    return load_tensors(Path(out) / "model.safetensors")[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The weights of an uninterrupted run."""
    root = tmp_path_factory.mktemp("ref")
    assert _train(_config(root), root / "run") == 0
    return _weights(root / "run")


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=0)


@pytest.mark.parametrize("where, lo, hi", [("step", 2, 16), ("write", 1, 4), ("rename", 1, 4)])
def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_weights(tmp_path, reference, where, lo, hi):
    at = random.Random(f"{where}-7").randint(lo, hi)  # 4 epochs of 4 steps, one checkpoint per epoch
    config, out = _config(tmp_path), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(ur.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, where, str(at), "train", str(config), "--out", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    assert not (out / "model.safetensors").exists()
    if where != "step":
        assert list(out.glob(".checkpoint.safetensors.*.tmp")), "the kill should leave a temp file"
    assert _train(config, out) == 0
    assert not list(out.glob(".*.tmp"))
    _same(_weights(out), reference)


def test_ctrl_c_exits_130_and_the_rerun_resumes(tmp_path, reference, monkeypatch, capsys):
    config, out = _config(tmp_path), tmp_path / "run"
    orig, calls = torch.optim.Adam.step, {"n": 0}

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # in epoch 2, after the first checkpoint
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", interrupted)
    assert _train(config, out) == 130
    assert capsys.readouterr().err.strip() == "interrupted; rerun to resume from epoch 1"
    monkeypatch.setattr(torch.optim.Adam, "step", orig)
    assert _train(config, out) == 0
    assert json.loads((out / "history.json").read_text())["resumed_from"] == 1
    _same(_weights(out), reference)


def test_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, reference, monkeypatch, capsys):
    import safetensors.torch

    config, out = _config(tmp_path), tmp_path / "run"
    orig, calls = safetensors.torch.save_file, {"n": 0}

    def full_disk(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 3:
            orig(tensors, path, metadata=metadata)  # the partial write a full disk leaves behind
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return orig(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    assert _train(config, out) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and "(epoch 2) is intact" in err
    assert load_tensors(out / "checkpoint.safetensors")[1]["epoch"] == 2
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(safetensors.torch, "save_file", orig)
    assert _train(config, out) == 0
    _same(_weights(out), reference)


@pytest.mark.parametrize(
    "change, says", [({"n_train": 250}, "config.data.n_train: 200 -> 250"), ({"seed": 1}, "config.seed: 0 -> 1")]
)
def test_a_changed_config_refuses_to_resume(tmp_path, reference, capsys, change, says):
    out = tmp_path / "run"
    assert _train(_config(tmp_path), out) == 0
    first = (out / "config.toml").read_text()
    changed = _config(tmp_path, "changed.toml", **change)
    assert _train(changed, out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and says in err and "--fresh" in err
    assert (out / "config.toml").read_text() == first  # still describes the model in the folder
    assert _train(changed, out, "--fresh") == 0
    assert json.loads((out / "history.json").read_text())["resumed_from"] == 0
    assert (out / "config.toml").read_text() == changed.read_text()


def test_training_without_validation(tmp_path):
    cfg = _config(tmp_path).read_text().replace("n_val = 50", "n_val = 0")
    (tmp_path / "noval.toml").write_text(cfg)
    assert _train(tmp_path / "noval.toml", tmp_path / "run") == 0
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert hist["val_loss"] == [None] * 4 and hist["best_loss"] == min(hist["train_loss"])


# -- the bad-input catalogue -------------------------------------------------------------------


def _tampered(src: Path, dst: Path, edit, *, recompute: bool) -> Path:
    """Copy a model file with its metadata edited; the digest recomputed (a deliberate tamper) or kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is no dict
    header["meta"] = edit(header["meta"])
    if recompute:
        header["digest"] = _digest(tensors, header["meta"])
    save_file(tensors, str(dst), metadata=header)
    return dst


def _depth(meta: str, depth) -> str:
    m = json.loads(meta)
    m["config"]["depth"] = depth
    return json.dumps(m, sort_keys=True)


def _without_config(meta: str) -> str:
    m = json.loads(meta)
    del m["config"]
    return json.dumps(m, sort_keys=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    A, Y, _ = ur.data.sparse_nonnegative(8, seed=1)
    np.save(root / "A.npy", A)
    np.save(root / "Y.npy", Y)
    np.save(root / "Yc.npy", Y + 1j)
    model = ur.nets.LPGD(torch.tensor(A), depth=3).save(root / "model.safetensors")
    _tampered(model, root / "edited.safetensors", lambda m: _depth(m, 2), recompute=False)
    _tampered(model, root / "deep.safetensors", lambda m: _depth(m, 10**9), recompute=True)
    _tampered(model, root / "noconfig.safetensors", _without_config, recompute=True)
    _tampered(model, root / "garbage.safetensors", lambda m: "{not json", recompute=True)
    (root / "file").write_text("a file")
    return root


def _cfg(tmp_path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


GOOD = CONFIG.format(seed=0, n_train=200, lr=1e-3)
TRAIN_CASES = {  # config text -> (exit status, what the line must name)
    "typo-key": (GOOD.replace("seed = 0", "sede = 5"), 2, "sede"),
    "typo-section": (GOOD.replace("[train]", "[trian]"), 2, "'trian'"),
    "dtype-typo": (GOOD.replace('"float64"', '"flaot64"'), 2, "'flaot64' is not one of 'float32', 'float64'"),
    "dtype-half": (GOOD.replace('"float64"', '"float16"'), 2, "[model] dtype = 'float16'"),
    "seed-float": (GOOD.replace("seed = 0", "seed = 1.7"), 2, "seed must be integer, got 1.7"),
    "model-key": (GOOD.replace("depth = 2", "depht = 2"), 2, "unknown key [model] depht; valid keys:"),
    "train-key": (GOOD.replace("epochs = 4", "epoch = 4"), 2, "unknown key [train] epoch"),
    "operator-no-n": ('[operator]\nkind = "uniform"\nm = 10\n' + GOOD, 2, "[operator] kind = 'uniform' needs n"),
    "n-train-float": (GOOD.replace("n_train = 200", "n_train = 1e10"), 2, "[data] n_train must be integer"),
    "n-train-huge": (GOOD.replace("n_train = 200", "n_train = 10000000000"), 2, "GiB"),
    "generator": (GOOD.replace('"xie2019"', '"xie"'), 2, "[data] generator = 'xie' is not one of"),
    "diverged": (GOOD.replace("lr = 0.001", "lr = 1e30").replace('"float64"', '"float32"'), 1, "training diverged"),
}


def _one_line(err: str, says: str):
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert says in err, err


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_train_config_is_one_line(tmp_path, capsys, case):
    text, status, says = TRAIN_CASES[case]
    assert _train(_cfg(tmp_path, text), tmp_path / "run") == status
    _one_line(capsys.readouterr().err, says)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_out_folder_is_one_line(tmp_path, files, capsys, monkeypatch):
    config = _cfg(tmp_path, GOOD)
    assert _train(config, files / "file") == 2
    _one_line(capsys.readouterr().err, f"--out {files / 'file'} is a file")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only folder (root ignores modes)
    assert _train(config, tmp_path / "ro") == 2
    _one_line(capsys.readouterr().err, "is not writable")


SOLVE_CASES = {  # argv (with {d} the folder of files) -> (exit status, what the line must name)
    "complex-model": (["--model", "{d}/model.safetensors", "--input", "{d}/Yc.npy"], 2, "complex"),
    "complex-method": (["--method", "apgd", "--operator", "{d}/A.npy", "--input", "{d}/Yc.npy"], 2, "complex"),
    "lam-for-nnls": (
        ["--method", "pgd", "--lam", "0.1", "--operator", "{d}/A.npy", "--input", "{d}/Y.npy"],
        2,
        "--lam is for Lasso methods",
    ),
    "edited": (["--model", "{d}/edited.safetensors", "--input", "{d}/Y.npy"], 2, "digest mismatch"),
    "deep": (["--model", "{d}/deep.safetensors", "--input", "{d}/Y.npy"], 2, "depth must be an integer in"),
    "no-config": (
        ["--model", "{d}/noconfig.safetensors", "--input", "{d}/Y.npy"],
        2,
        "noconfig.safetensors: metadata has no 'config'",
    ),
    "garbage-meta": (
        ["--model", "{d}/garbage.safetensors", "--input", "{d}/Y.npy"],
        2,
        "garbage.safetensors: its metadata is not valid JSON",
    ),
    "no-model": (["--model", "{d}/none.safetensors", "--input", "{d}/Y.npy"], 2, "none.safetensors"),
    "method": (["--method", "magic", "--operator", "{d}/A.npy", "--input", "{d}/Y.npy"], 2, "'magic' unknown"),
    "chunk": (["--method", "pgd", "--operator", "{d}/A.npy", "--input", "{d}/Y.npy", "--chunk", "0"], 2, "--chunk"),
    "threads": (["--method", "pgd", "--operator", "{d}/A.npy", "--input", "{d}/Y.npy", "--threads", "0"], 2, "threads"),
}


@pytest.mark.parametrize("case", sorted(SOLVE_CASES))
def test_bad_solve_input_is_one_line(files, capsys, case):
    argv, status, says = SOLVE_CASES[case]
    out = files / f"out-{case}.npy"
    assert main(["solve", *[a.format(d=files) for a in argv], "--output", str(out), "--quiet"]) == status
    _one_line(capsys.readouterr().err, says)
    assert not out.exists()


def test_api_refuses_edited_and_tampered_files(files):
    for name, says in (
        ("edited", "digest mismatch"),
        ("deep", "depth"),
        ("garbage", "not valid JSON"),
        ("noconfig", "no 'config'"),
    ):
        with pytest.raises(ValueError, match=says) as info:
            ur.load(files / f"{name}.safetensors")
        assert f"{name}.safetensors" in str(info.value)


def test_file_written_before_the_metadata_digest_still_loads(files, tmp_path):
    """An old-form file: digest over the tensors only, no 'covers' in the header."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(files / "model.safetensors"), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is no dict
    old = {"meta": header["meta"], "digest": _digest(tensors)}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    Y = np.load(files / "Y.npy")
    np.testing.assert_array_equal(ur.load(tmp_path / "old.safetensors")(Y), ur.load(files / "model.safetensors")(Y))


def test_solve_output_names_the_file_it_wrote(files, tmp_path, capsys):
    assert (
        main(
            [
                "solve",
                "--method",
                "apgd",
                "--operator",
                str(files / "A.npy"),
                "--input",
                str(files / "Y.npy"),
                "--output",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["output"] == str(tmp_path / "out.npy") and (tmp_path / "out.npy").is_file()
