"""Image data that is available offline: scikit-learn's 8×8 digits, and an IDX reader/writer for
MNIST / Fashion-MNIST files given a path (nothing is downloaded). Images come back as NumPy
float64 rows, labels as NumPy int64; ``read_idx`` returns the file's own dtype.

Classification sets (sulam2018 §4) as images (N, C, H, W) float32 in [0, 1] with int64 labels:
:func:`load_mnist`, :func:`load_fashion_mnist` (IDX; by default at Debian's
``dataset-fashion-mnist`` path, ``make data``), :func:`load_svhn` (the ``.mat`` files of the
original site) and :func:`load_cifar10` (the *binary* version, read as bytes, never unpickled);
:func:`load_image_set` picks one by name. A missing file is refused in one line naming the files
expected."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from .._validate import positive_int

# IDX type codes (LeCun's MNIST page): code -> (numpy dtype, big-endian)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
_IDX_CODES = {np.dtype(v): k for k, v in _IDX_TYPES.items()}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST format; ``.gz`` accepted): magic 0x0000, type code, ndim, then
    ndim big-endian int32 sizes, then the data big-endian. Returns a NumPy array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[code]).newbyteorder(">")
    count = int(np.prod(shape)) if ndim else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header says {count} values of {dtype.itemsize} bytes but the file holds "
            f"{len(raw) - offset} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=offset, count=count)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (``.gz`` compresses); the inverse of :func:`read_idx`."""
    arr = np.asarray(array)
    if arr.dtype not in _IDX_CODES:
        raise ValueError(
            f"array dtype {arr.dtype} has no IDX type code; use one of "
            f"{', '.join(str(np.dtype(t)) for t in _IDX_TYPES.values())}"
        )
    header = bytes([0, 0, _IDX_CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    body = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + body)
    return path


def load_idx_images(images_path, labels_path=None):
    """Images from an MNIST/Fashion-MNIST IDX file as float64 rows in [0, 1] (N, H·W), and the
    labels (int64, (N,)) when ``labels_path`` is given. Returns (X, labels or None, (H, W))."""
    imgs = read_idx(images_path)
    if imgs.ndim != 3:
        raise ValueError(f"{images_path}: expected an (N, H, W) image file, got shape {imgs.shape}")
    N, H, W = imgs.shape
    scale = 255.0 if imgs.dtype == np.uint8 else 1.0
    X = imgs.reshape(N, H * W).astype(np.float64) / scale
    labels = None
    if labels_path is not None:
        lab = read_idx(labels_path)
        if lab.shape != (N,):
            raise ValueError(f"{labels_path}: expected {N} labels, got shape {lab.shape}")
        labels = lab.astype(np.int64)
    return X, labels, (H, W)


def load_digits():
    """scikit-learn's 8×8 digits (1797 images, shipped with scikit-learn, Pedregosa et al. 2011) as
    float64 rows in [0, 1] of shape (1797, 64), with their int64 labels (1797,)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as exc:  # pragma: no cover - scikit-learn is a test/data extra
        raise ImportError("the digits data needs scikit-learn (pip install 'unrolled[data]')") from exc
    d = _load()
    return d.data / 16.0, d.target.astype(np.int64)


def digits_lasso_data(n_atoms: int = 256, n_train: int = 1000, n_test: int = 300, *, seed: int = 0):
    """Sparse coding of digit images (Moreau talk, "Performance on semi-real datasets").

    The images are centred by the mean image. The dictionary D (64, n_atoms) is ``n_atoms``
    images drawn at random, each scaled to unit norm; the signals are the other images,
    each scaled into the equiregularization set (x/‖Dᵀx‖∞, so λ_max = 1).
    Returns (D (64, n_atoms), Y_train (n_train, 64), Y_test (n_test, 64)), float64 arrays.
    """
    from .lasso import scale_to_equiregularization

    n_atoms, n_train, n_test = (
        positive_int(v, k) for v, k in ((n_atoms, "n_atoms"), (n_train, "n_train"), (n_test, "n_test"))
    )
    X = torch.from_numpy(load_digits()[0])
    if n_atoms + n_train + n_test > X.shape[0]:
        raise ValueError(
            f"n_atoms + n_train + n_test = {n_atoms + n_train + n_test} exceeds the {X.shape[0]} digit images"
        )
    X = X - X.mean(0, keepdim=True)
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    atoms = X[perm[:n_atoms]]
    D = (atoms / atoms.norm(dim=1, keepdim=True)).T.contiguous()
    rest = X[perm[n_atoms:]]
    rest = rest[rest.norm(dim=1) > 1e-8]
    Y_train = scale_to_equiregularization(D, rest[:n_train])
    Y_test = scale_to_equiregularization(D, rest[n_train : n_train + n_test])
    return D.numpy(), Y_train, Y_test


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SETS = ("fashion-mnist", "mnist", "svhn", "cifar10", "digits")
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _split(split: str) -> str:
    if split not in _IDX_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _as_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1]."""
    return pixels.astype(np.float32) / np.float32(255.0)


def _idx_pair(root: Path, split: str, what: str, hint: str = "") -> tuple[Path, Path]:
    prefix = _IDX_PREFIX[_split(split)]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = []
    for name in names:
        hit = next((root / (name + ext) for ext in ("", ".gz") if (root / (name + ext)).is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"no {what} {split} files in {root}: expected {names[0]}[.gz] and {names[1]}[.gz]{hint}"
            )
        found.append(hit)
    return found[0], found[1]


def load_mnist(path, split: str = "train", *, what: str = "MNIST") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files (LeCun's layout; gzipped or not) in the folder ``path``.

    Parameters
    ----------
    path : str or Path
        Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
    split : {"train", "test"}
    what : str
        The data set's name in error messages.

    Returns
    -------
    images : float32 array (N, 1, H, W) in [0, 1]
    labels : int64 array (N,)
    """
    images_path, labels_path = _idx_pair(Path(path), split, what)
    X, labels, (H, W) = load_idx_images(images_path, labels_path)
    return X.reshape(-1, 1, H, W).astype(np.float32), labels


def load_fashion_mnist(path=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Xiao et al. 2017; MNIST's IDX layout) from ``path``, by default Debian's
    ``dataset-fashion-mnist`` folder :data:`FASHION_MNIST_DIR` (``make data`` installs it).
    Returns (images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)."""
    root = FASHION_MNIST_DIR if path is None else Path(path)
    hint = "; install them with `make data` (apt-get install dataset-fashion-mnist)" if path is None else ""
    images_path, labels_path = _idx_pair(root, split, "Fashion-MNIST", hint)
    X, labels, (H, W) = load_idx_images(images_path, labels_path)
    return X.reshape(-1, 1, H, W).astype(np.float32), labels


def load_svhn(path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """SVHN's cropped digits (Netzer et al. 2011), the ``.mat`` files of the original site.

    Parameters
    ----------
    path : str or Path
        ``{split}_32x32.mat`` itself, or the folder holding ``train_32x32.mat`` / ``test_32x32.mat``;
        each holds ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) with 10 for the digit 0.
    split : {"train", "test"}

    Returns
    -------
    images : float32 array (N, 3, 32, 32) in [0, 1]
    labels : int64 array (N,), 0–9
    """
    from scipy.io import loadmat

    path = Path(path)
    name = f"{_split(split)}_32x32.mat"
    file = path if path.is_file() else path / name
    if not file.is_file():
        raise FileNotFoundError(f"no SVHN {split} file at {path}: expected {name} (X (32, 32, 3, N), y (N, 1))")
    mat = loadmat(str(file))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{file}: an SVHN file holds the variables X and y, found {sorted(mat)}")
    X, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if X.ndim != 4 or X.shape[2] != 3 or X.shape[3] != y.shape[0]:
        raise ValueError(f"{file}: expected X of shape (H, W, 3, N) with N = {y.shape[0]} labels, got {X.shape}")
    labels = y.astype(np.int64) % 10
    if labels.min() < 0 or not np.array_equal(labels, y % 10):
        raise ValueError(f"{file}: labels must be the integers 1–10")
    return _as_images(X.transpose(3, 2, 0, 1)), labels


CIFAR_RECORD = 1 + 3 * 32 * 32


def load_cifar10(path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (Krizhevsky 2009), the *binary* version: records of one label byte and 3072 pixel
    bytes (1024 red, 1024 green, 1024 blue, row-major), read as bytes (never unpickled).

    Parameters
    ----------
    path : str or Path
        The folder with ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin``
        (or the folder above it, ``cifar-10-batches-bin``).
    split : {"train", "test"}

    Returns
    -------
    images : float32 array (N, 3, 32, 32) in [0, 1]
    labels : int64 array (N,), 0–9
    """
    root = Path(path)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if _split(split) == "train" else ["test_batch.bin"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"no CIFAR-10 binary {split} files in {path}: expected {', '.join(names)}")
    records = []
    for name in names:
        raw = np.fromfile(root / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise ValueError(f"{root / name}: {raw.size} bytes is not a whole number of {CIFAR_RECORD}-byte records")
        records.append(raw.reshape(-1, CIFAR_RECORD))
    data = np.concatenate(records)
    labels = data[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: a CIFAR-10 label byte is above 9 ({labels.max()}); is this the binary version?")
    return _as_images(data[:, 1:].reshape(-1, 3, 32, 32)), labels


DIGITS_TRAIN = 1437  # the first 80 % of scikit-learn's 1797 digits; the rest is the test split


def load_image_set(name: str, path=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One of :data:`IMAGE_SETS` as (images (N, C, H, W) float32 in [0, 1], labels (N,) int64).

    ``path`` is required for "mnist", "svhn" and "cifar10"; "fashion-mnist" defaults to
    :data:`FASHION_MNIST_DIR`; "digits" (scikit-learn's 8×8 digits, 1 × 8 × 8) takes none and
    splits at :data:`DIGITS_TRAIN`."""
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; choose from {', '.join(IMAGE_SETS)}")
    _split(split)
    if name == "digits":
        X, y = load_digits()
        part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
        return X[part].reshape(-1, 1, 8, 8).astype(np.float32), y[part]
    if name == "fashion-mnist":
        return load_fashion_mnist(path, split)
    if path is None:
        raise ValueError(f"the {name} data set needs a path (--data {name}=PATH)")
    loader = {"mnist": load_mnist, "svhn": load_svhn, "cifar10": load_cifar10}[name]
    return loader(path, split)


__all__ = [
    "FASHION_MNIST_DIR",
    "IMAGE_SETS",
    "digits_lasso_data",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_idx_images",
    "load_image_set",
    "load_mnist",
    "load_svhn",
    "read_idx",
    "write_idx",
]
