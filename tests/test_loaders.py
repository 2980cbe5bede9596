"""Image-set loaders (data/images.py): tiny files written in each format (MNIST / Fashion-MNIST IDX,
gzipped or not; SVHN .mat; CIFAR-10 binary records) come back as the images and labels written;
a missing file is refused in one line naming the expected files."""

import numpy as np
import pytest
from scipy.io import savemat

from unrolled.data import images
from unrolled.data.images import (
    load_cifar10,
    load_fashion_mnist,
    load_image_set,
    load_mnist,
    load_svhn,
    write_idx,
)


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_mnist_idx_round_trip(tmp_path, ext):
    written = {}
    for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
        P, y = pixels((n, 28, 28), n), np.arange(n, dtype=np.uint8) % 10
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", P)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", y)
        written[split] = (P, y)
    for split, (P, y) in written.items():
        X, labels = load_mnist(tmp_path, split)
        assert X.dtype == np.float32 and X.shape == (len(P), 1, 28, 28)
        assert np.array_equal(np.rint(X[:, 0] * 255).astype(np.uint8), P)
        assert labels.dtype == np.int64 and np.array_equal(labels, y)
        X2, labels2 = load_fashion_mnist(tmp_path, split)
        assert np.array_equal(X2, X) and np.array_equal(labels2, labels)


def test_svhn_mat_round_trip_maps_label_10_to_0(tmp_path):
    P = pixels((32, 32, 3, 4))
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": P, "y": y})
    for where in (tmp_path, tmp_path / "test_32x32.mat"):
        X, labels = load_svhn(where, "test")
        assert X.dtype == np.float32 and X.shape == (4, 3, 32, 32)
        assert np.array_equal(np.rint(X * 255).astype(np.uint8), P.transpose(3, 2, 0, 1))
        assert np.array_equal(X[2, 1, 5, 7], P[5, 7, 1, 2] / np.float32(255))  # channel, row, column
        assert labels.tolist() == [0, 1, 9, 0]


def test_cifar10_binary_round_trip(tmp_path):
    written = []
    for i in range(1, 6):
        labels = np.array([i % 10, (3 * i) % 10], dtype=np.uint8)
        P = pixels((2, 3, 32, 32), i)
        records = np.concatenate([labels[:, None], P.reshape(2, -1)], axis=1)
        (tmp_path / f"data_batch_{i}.bin").write_bytes(records.tobytes())
        written.append((P, labels))
    X, labels = load_cifar10(tmp_path, "train")
    assert X.dtype == np.float32 and X.shape == (10, 3, 32, 32)
    assert np.array_equal(np.rint(X * 255).astype(np.uint8), np.concatenate([p for p, _ in written]))
    assert np.array_equal(labels, np.concatenate([lab for _, lab in written]))
    (tmp_path / "test_batch.bin").write_bytes(b"\x07" * 3073 + b"\x01")  # one record and a stray byte
    with pytest.raises(ValueError, match="3073-byte records"):
        load_cifar10(tmp_path, "test")


def test_missing_files_are_named_in_one_line(tmp_path, monkeypatch):
    cases = [
        (lambda: load_mnist(tmp_path, "test"), "t10k-images-idx3-ubyte"),
        (lambda: load_svhn(tmp_path, "train"), "train_32x32.mat"),
        (lambda: load_cifar10(tmp_path, "train"), "data_batch_1.bin"),
    ]
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "absent")
    cases.append((lambda: load_fashion_mnist(None, "train"), "make data"))
    for load, expected in cases:
        with pytest.raises(FileNotFoundError, match=expected) as err:
            load()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="--data svhn=PATH"):
        load_image_set("svhn")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "val")


def test_digits_split_into_images():
    Xtr, ytr = load_image_set("digits", split="train")
    Xte, yte = load_image_set("digits", split="test")
    assert Xtr.shape[1:] == (1, 8, 8) and len(Xtr) + len(Xte) == 1797 and 0 <= Xtr.min() and Xtr.max() <= 1
    assert ytr.dtype == np.int64 and set(yte) == set(range(10))
