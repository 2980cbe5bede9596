"""unrolled.data returns one kind: NumPy float64 arrays (labels int64), never torch tensors."""

import inspect

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled import data
from unrolled.data import generators, images, lasso, mlsc

D_SMALL = np.random.default_rng(0).standard_normal((6, 9))


def _idx_files(tmp_path):
    images.write_idx(tmp_path / "img.idx", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    images.write_idx(tmp_path / "lab.idx.gz", np.array([3, 7], dtype=np.uint8))
    return tmp_path / "img.idx", tmp_path / "lab.idx.gz"


def _image_set_files(tmp_path, kind):
    """Tiny test-split files of an image set: MNIST IDX, SVHN .mat or CIFAR-10 binary."""
    if kind == "idx":
        images.write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4, 4), dtype=np.uint8))
        images.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 7], dtype=np.uint8))
    elif kind == "svhn":
        from scipy.io import savemat

        savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[10], [2]])})
    else:
        (tmp_path / "test_batch.bin").write_bytes(bytes(2 * images.CIFAR_RECORD))
    return tmp_path


# how to call every public data function on a small case; a new public function must be added here
CALLS = {
    "make_operator": lambda tmp: [data.make_operator(kind, 4, 6, seed=1) for kind in data.OPERATORS],
    "sparse_nonnegative": lambda tmp: generators.sparse_nonnegative(5, seed=1),
    "gaussian_nonnegative": lambda tmp: generators.gaussian_nonnegative(5, m=4, n=8, seed=1),
    "equiregularized_signals": lambda tmp: data.equiregularized_signals(5, m=6, n=9, seed=1),
    "bernoulli_gaussian_signals": lambda tmp: data.bernoulli_gaussian_signals(5, m=6, n=9, snr_db=20.0, seed=1),
    "sphere_dictionary": lambda tmp: lasso.sphere_dictionary(4, 7, seed=1),
    "gaussian_dictionary": lambda tmp: lasso.gaussian_dictionary(4, 7, seed=1),
    "equiregularization": lambda tmp: lasso.equiregularization(D_SMALL, 3, seed=1),
    "scale_to_equiregularization": lambda tmp: lasso.scale_to_equiregularization(D_SMALL, np.ones((2, 6))),
    "bernoulli_gaussian": lambda tmp: lasso.bernoulli_gaussian(3, 7, 0.5, seed=1),
    "sparse_measurements": lambda tmp: lasso.sparse_measurements(D_SMALL, 3, snr_db=30.0, seed=1),
    "mlsc_dictionaries": lambda tmp: mlsc.mlsc_dictionaries(10, 14, 12, seed=1),
    "mlsc_signals": lambda tmp: tuple(
        mlsc.mlsc_signals(*mlsc.mlsc_dictionaries(10, 14, 12, seed=1), 3, s1=8, s2=8, seed=1)
    ),
    "load_idx_images": lambda tmp: images.load_idx_images(*_idx_files(tmp))[:2],
    "load_digits": lambda tmp: images.load_digits(),
    "digits_lasso_data": lambda tmp: images.digits_lasso_data(20, 10, 5, seed=1),
    "read_idx": lambda tmp: images.read_idx(_idx_files(tmp)[0]),
    "as_matrix": lambda tmp: generators.as_matrix(torch.ones(2, 3)),
    "load_mnist": lambda tmp: images.load_mnist(_image_set_files(tmp, "idx"), "test"),
    "load_fashion_mnist": lambda tmp: images.load_fashion_mnist(_image_set_files(tmp, "idx"), "test"),
    "load_svhn": lambda tmp: images.load_svhn(_image_set_files(tmp, "svhn"), "test"),
    "load_cifar10": lambda tmp: images.load_cifar10(_image_set_files(tmp, "cifar"), "test"),
    "load_image_set": lambda tmp: images.load_image_set("digits", split="test"),
}
NOT_DATA = {"write_idx", "MLSCSignals"}  # a writer and a result type
IMAGE_SETS = {"load_mnist", "load_fashion_mnist", "load_svhn", "load_cifar10", "load_image_set"}
LABELS = {"load_idx_images", "load_digits", *IMAGE_SETS}  # (X, labels): labels are int64
# a file reader returns the file's own dtype; the image sets float32 (N, C, H, W), as the nets train
FILE_DTYPE = {"read_idx": np.uint8, **dict.fromkeys(IMAGE_SETS, np.float32)}


def _public_functions():
    names = set()
    for module in (data, generators, images, lasso, mlsc):
        names |= {n for n in getattr(module, "__all__", []) if callable(getattr(module, n))}
    return names - NOT_DATA


def test_every_public_data_function_has_a_kind_check():
    assert _public_functions() <= set(CALLS), sorted(_public_functions() - set(CALLS))


def _arrays(value):
    if isinstance(value, (tuple, list)):
        return [a for v in value if v is not None for a in _arrays(v)]
    return [value]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_data_returns_numpy_float64(name, tmp_path):
    if "digits" in name:
        pytest.importorskip("sklearn")
    arrays = _arrays(CALLS[name](tmp_path))
    assert arrays
    if name in LABELS:
        *arrays, labels = arrays
        assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    expected = FILE_DTYPE.get(name, np.float64)
    for a in arrays:
        assert isinstance(a, np.ndarray) and a.dtype == expected, (name, type(a), getattr(a, "dtype", None))


@pytest.mark.parametrize("name", sorted(data.GENERATORS))
def test_generators_return_numpy_float64_and_accept_a_tensor_operator(name):
    A, Y, X = data.GENERATORS[name](4, seed=2)
    again = data.GENERATORS[name](3, A=torch.as_tensor(A, dtype=torch.float32), seed=3)
    for a in (A, Y, X, *again):
        assert a is None or (isinstance(a, np.ndarray) and a.dtype == np.float64)
    assert Y.shape[1] == A.shape[0] and np.array_equal(again[0], A.astype(np.float32).astype(np.float64))


def test_generators_are_seeded_and_keep_their_draws():
    """Same seed, same arrays; the Lasso draws still come from torch's seeded generator."""
    D = lasso.sphere_dictionary(5, 8, seed=4)
    g = torch.Generator().manual_seed(4)
    ref = torch.randn(5, 8, generator=g, dtype=torch.float64)
    np.testing.assert_array_equal(D, (ref / ref.norm(dim=0, keepdim=True)).numpy())
    np.testing.assert_array_equal(lasso.equiregularization(D, 3, seed=1), lasso.equiregularization(D, 3, seed=1))
    Y = lasso.equiregularization(D, 3, seed=1)
    np.testing.assert_allclose(np.abs(Y @ D).max(1), 1.0, rtol=1e-14)


def test_learned_operator_is_not_changed_by_data_functions():
    op = ur.learned(ur.DenseOperator(D_SMALL.astype(np.float32)))
    Y, _ = lasso.sparse_measurements(op, 2, seed=1)
    assert op.dtype == torch.float32 and Y.dtype == np.float64
    assert lasso.equiregularization(op, 2, seed=1).dtype == np.float64


def test_signatures_take_no_dtype():
    """One kind: no data function offers a dtype switch."""
    for name in _public_functions():
        fn = next(getattr(m, name) for m in (data, generators, images, lasso, mlsc) if hasattr(m, name))
        assert "dtype" not in inspect.signature(fn).parameters, name
