"""sen2024 §V (``unrolled reproduce sen-digit3``): PSNR / SSIM by hand, the noise, the MNIST path, a small run."""

import math

import numpy as np
import pytest

from unrolled.data.images import write_idx
from unrolled.experiments import reproduce
from unrolled.experiments import sen2024 as sen

C1, C2 = 0.01**2, 0.03**2  # (K₁R)², (K₂R)² with R = 1 (Wang et al. 2004)


def test_psnr_by_hand():
    x = np.zeros((1, 4))
    assert sen.psnr(x + 0.1, x)[0] == pytest.approx(20.0)  # MSE 0.01 → 10 log₁₀(1/0.01)
    assert sen.psnr(x + 0.5, x, data_range=2.0)[0] == pytest.approx(10 * math.log10(4 / 0.25))


def test_ssim_of_constant_images_by_hand():
    # σ_x = σ_y = σ_xy = 0: SSIM = (2ab + C₁)/(a² + b² + C₁) in every window
    a, b = 0.3, 0.7
    got = sen.ssim(np.full((1, 64), a), np.full((1, 64), b), (8, 8))[0]
    assert got == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-12)


def test_ssim_of_a_structured_pair_by_hand():
    # one 7×7 window (σ = 1.5). z = +1 left of the centre column, −1 right of it, 0 on it: the
    # Gaussian window is symmetric, so Σ w z = 0 and Σ w z² = 1 − g₃, g₃ the centre weight of the
    # normalised 1-D Gaussian, 1/(1 + 2e^{−1/4.5} + 2e^{−4/4.5} + 2e^{−9/4.5}).
    # x = a + t z, y = b + u z: μ = a, b; σ_x² = t²v, σ_y² = u²v, σ_xy = tuv with v = 1 − g₃.
    g3 = 1 / (1 + 2 * math.exp(-1 / 4.5) + 2 * math.exp(-4 / 4.5) + 2 * math.exp(-9 / 4.5))
    v = 1 - g3
    z = np.zeros((7, 7))
    z[:, :3], z[:, 4:] = 1.0, -1.0
    a, t, b, u = 0.5, 0.2, 0.4, -0.1
    x, y = (a + t * z).reshape(1, -1), (b + u * z).reshape(1, -1)
    expected = (2 * a * b + C1) * (2 * t * u * v + C2) / ((a * a + b * b + C1) * ((t * t + u * u) * v + C2))
    assert sen.ssim(x, y, (7, 7))[0] == pytest.approx(expected, rel=1e-10)
    assert sen.ssim(x, x, (7, 7))[0] == pytest.approx(1.0)


def test_positive_noise_is_subtracted_and_cycles():
    clean = np.random.default_rng(0).uniform(0, 1, (3, 5))
    noisy, target = sen.positive_noise(clean, 7, 0.2, np.random.default_rng(1))
    assert noisy.shape == target.shape == (7, 5)
    assert np.array_equal(target[3], clean[0]) and (noisy <= target).all() and (noisy < target).mean() > 0.9


def _mnist_dir(tmp_path, n_three=460):
    rng = np.random.default_rng(0)
    labels = np.array([3] * n_three + [1] * 40, dtype=np.uint8)
    images = rng.integers(0, 256, (labels.size, 28, 28)).astype(np.uint8)
    images[labels == 1] = 0
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    return tmp_path


def test_mnist_threes_from_idx_files(tmp_path):
    train, val, test, shape = sen.digit_threes({"mnist": str(_mnist_dir(tmp_path))}, seed=0)
    assert shape == (28, 28) and (train.shape, val.shape, test.shape) == ((300, 784), (50, 784), (100, 784))
    assert train.max() <= 1 and min(a.sum(1).min() for a in (train, val, test)) > 0  # no digit 1 (all zero)
    with pytest.raises(FileNotFoundError, match="no such file"):
        sen.digit_threes({"mnist": str(tmp_path / "missing")}, seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train-images-idx3"):
        sen.digit_threes({"mnist": str(tmp_path / "empty")}, seed=0)
    with pytest.raises(ValueError, match="takes --data mnist"):
        sen.digit_threes({"fashion-mnist": "x"}, seed=0)


def test_offline_split_is_disjoint():
    train, val, test, shape = sen.digit_threes(None, seed=0)
    assert shape == (8, 8) and (train.shape[0], val.shape[0], test.shape[0]) == (113, 20, 50)
    rows = {r.tobytes() for r in train} & {r.tobytes() for r in test}
    assert not rows


def test_sen_digit3_small_run(tmp_path, monkeypatch):
    # the quick recipe cut to a few epochs (the test budget); the claim itself is checked by the full run
    monkeypatch.setitem(sen.DIGIT_RECIPES, "quick", dict(sen.DIGIT_RECIPES["quick"], epochs=4, depth=3))
    res = reproduce("sen-digit3", quick=True, out=tmp_path)
    assert (tmp_path / "digit3_grid.png").is_file() and (tmp_path / "results.json").is_file()
    s = res["summary"]
    assert set(s) >= {"UPGDM", "LOGD", "OGD (fixed η, = LOGD at init)", "OGD (adaptive η)", "PGD"}
    assert res["operator"]["m"] == res["operator"]["n"] == 64 and res["noise_sigma"] == sen.NOISE_SIGMA
    for name in ("UPGDM", "LOGD"):  # a few epochs already beat 3 plain PGD iterations
        assert s[name]["psnr"][0] > s["PGD"]["psnr"][0]
        assert 0 < s[name]["ssim"][0] <= 1
    assert set(res["claims"]) == {"LOGD_psnr_ge_UPGDM", "UPGDM_psnr_ge_OGD", "LOGD_psnr_ge_UPGDM_every_seed"}


@pytest.mark.parametrize(
    "item, culprit", [("mnist=/nonexistent/mnist", "no such file"), ("fashion-mnist=/x", "takes --data mnist")]
)
def test_cli_refuses_bad_data_in_one_line(tmp_path, capsys, item, culprit):
    from unrolled.cli import main

    rc = main(["reproduce", "sen-digit3", "--quick", "--out", str(tmp_path), "--data", item])
    err = capsys.readouterr().err
    assert rc == 2 and culprit in err and len(err.strip().splitlines()) == 1
