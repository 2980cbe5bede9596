"""Image data that is available offline: scikit-learn's 8×8 digits, and an IDX reader/writer for
MNIST / Fashion-MNIST files given a path (nothing is downloaded). Images come back as NumPy
float64 rows, labels as NumPy int64; ``read_idx`` returns the file's own dtype."""

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


__all__ = ["digits_lasso_data", "load_digits", "load_idx_images", "read_idx", "write_idx"]
