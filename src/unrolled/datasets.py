"""Training data beyond in-memory tensors: ``torch.utils.data`` datasets, memory-mapped arrays,
fresh samples every epoch.

:func:`unrolled.train` takes, besides tensors and arrays, a map-style ``Dataset`` whose items
are y or (y, x), an ``IterableDataset`` of such items (it yields this rank's items under
``torchrun``, as :class:`FreshSamples` does), or a memory-mapped ``.npy`` (``np.load(path,
mmap_mode="r")``) whose rows are read per batch. :func:`source` wraps each in one interface
(rows by index, or a stream) and a fingerprint that a checkpoint records:

- tensors: sha256 of all the bytes (:func:`unrolled.training.data_fingerprint`);
- a memory-mapped array: its shape, dtype and sha256 of up to ``SAMPLED_ROWS`` rows spread
  evenly over it (first and last included) — neither its path nor its mtime, so a copied or
  moved file still resumes, and reading it stays cheap however large it is;
- a map-style ``Dataset``: its type, length and sha256 of as many sampled items;
- an ``IterableDataset``: its ``fingerprint`` attribute (FreshSamples: the generator, its
  parameters, the operator's hash and the seed), else its type's name.
"""

from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from . import distributed
from ._validate import positive_int

SAMPLED_ROWS = 64
BLOCK = 4096


def _sha(values) -> str:
    h = hashlib.sha256()
    for v in values:
        t = (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v))).detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _sampled(n: int) -> list[int]:
    return sorted({round(i * (n - 1) / (SAMPLED_ROWS - 1)) for i in range(SAMPLED_ROWS)}) if n else []


def array_fingerprint(arr: np.ndarray) -> str:
    """A memory-mapped array's identity: shape, dtype and the bytes of up to 64 evenly spread rows."""
    return f"memmap{tuple(arr.shape)}{arr.dtype}:{_sha(arr[i] for i in _sampled(len(arr)))}"


def dataset_fingerprint(ds) -> str:
    """A dataset's identity: ``ds.fingerprint`` if it has one; else its type, length and sampled items."""
    own = getattr(ds, "fingerprint", None)
    if own is not None:
        return str(own)
    name = type(ds).__qualname__
    if isinstance(ds, IterableDataset):
        return name
    items = [ds[i] for i in _sampled(len(ds))]
    return (
        f"{name}[{len(ds)}]:{_sha(v for item in items for v in (item if isinstance(item, tuple | list) else [item]))}"
    )


class FreshSamples(IterableDataset):
    """New (y, x) samples every epoch from a generator of :data:`unrolled.data.GENERATORS`.

    Chen et al. (2018, §4) train LISTA on a stream of fresh samples rather than a fixed set.
    Each epoch yields ``n_samples`` pairs in all, dealt to the ranks of a ``torchrun`` job
    (rank r makes ``len(range(r, n_samples, world))`` of them); they are drawn in blocks of
    ``block`` rows, block b of epoch e on rank r of a world of w seeded by (seed, e, r, w, b),
    so an epoch is the same whenever it is replayed (a resumed run follows an uninterrupted
    one) and only one block is in memory.

    Parameters
    ----------
    generator : str or callable
        A name of ``unrolled.data.GENERATORS`` or ``fn(n, *, A, seed, **params) -> (A, Y, X)``.
    n_samples : int
        Samples per epoch over all ranks.
    A : array, shape (m, n)
        The operator (fixed: only the signals are fresh).
    seed : int
        Seeds every epoch's draw.
    block : int
        Rows drawn at a time.
    **params
        The generator's other arguments (e.g. ``sparsities``, ``p``).
    """

    def __init__(self, generator, n_samples: int, *, A, seed: int = 0, block: int = BLOCK, **params):
        from .data import GENERATORS

        if isinstance(generator, str):
            if generator not in GENERATORS:
                raise ValueError(f"generator {generator!r} is not one of {', '.join(sorted(GENERATORS))}")
            self.name, self.generator = generator, GENERATORS[generator]
        elif callable(generator):
            self.name, self.generator = getattr(generator, "__name__", type(generator).__name__), generator
        else:
            raise TypeError(f"generator must be a name or a function, got {type(generator).__name__}")
        if A is None:
            raise ValueError("FreshSamples needs the operator A (fresh signals, one operator)")
        self.n_samples, self.block = positive_int(n_samples, "n_samples"), positive_int(block, "block")
        self.A, self.seed, self.params, self.epoch = np.asarray(A), int(seed), params, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of ``epoch`` on the next iteration (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    @property
    def fingerprint(self) -> str:
        """The generator, its parameters, the operator's hash, the sample count and the seed."""
        params = json.dumps(self.params, sort_keys=True, default=str)
        return f"fresh:{self.name}:{params}:{_sha([self.A])}:{self.n_samples}:{self.seed}"

    def __iter__(self):
        rank, world = distributed.rank(), distributed.world_size()
        count = distributed.local_count(self.n_samples)
        for b, start in enumerate(range(0, count, self.block)):
            state = np.random.SeedSequence([self.seed, self.epoch, rank, world, b]).generate_state(1)[0]
            _, Y, X = self.generator(min(self.block, count - start), A=self.A, seed=int(state), **self.params)
            Y = torch.from_numpy(np.ascontiguousarray(Y))
            if X is None:
                yield from Y
            else:
                yield from zip(Y, torch.from_numpy(np.ascontiguousarray(X)), strict=True)


def _stack(values, name: str, width: int, dtype, device) -> torch.Tensor:
    t = values if isinstance(values, torch.Tensor) else torch.stack([torch.as_tensor(v) for v in values])
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name} items must have {width} entries, got shape {tuple(t.shape[1:])}")
    t = t.to(dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


class _Source:
    """Rows of y (and x) for training: ``take(idx)`` by index (``rows`` of them) or ``stream``."""

    rows: int | None = None

    def __init__(self, name: str, m: int, n: int, needs_x: bool, dtype, device):
        self.name, self.m, self.n, self.needs_x = name, m, n, needs_x
        self.dtype, self.device = dtype, device

    def _pair(self, ys, xs) -> tuple[torch.Tensor, torch.Tensor]:
        Y = _stack(ys, f"{self.name}Y", self.m, self.dtype, self.device)
        if not self.needs_x:
            return Y, Y.new_zeros(Y.shape[0], 0)
        if xs is None:
            raise ValueError(f"{self.name}X is required: the items must be (y, x) pairs")
        return Y, _stack(xs, f"{self.name}X", self.n, self.dtype, self.device)

    def _split(self, items):
        pairs = [it if isinstance(it, tuple | list) else (it, None) for it in items]
        ys = [p[0] for p in pairs]
        xs = [p[1] for p in pairs] if pairs and all(len(p) > 1 and p[1] is not None for p in pairs) else None
        return self._pair(ys, xs)

    def chunks(self, size: int):
        """All rows (unsharded), ``size`` at a time, for evaluation."""
        if self.rows is None:
            yield from self.stream(size, shard=False)
            return
        for i in range(0, self.rows, size):
            yield self.take(torch.arange(i, min(i + size, self.rows)))


class TensorRows(_Source):
    """In-memory (N, m) and (N, n) tensors, already checked and converted (the original path)."""

    def __init__(self, Y: torch.Tensor, X: torch.Tensor, given_x: bool):
        self.Y, self.X, self.rows, self.given_x = Y, X, Y.shape[0], given_x

    def take(self, idx: torch.Tensor):
        idx = idx.to(self.Y.device)
        return self.Y[idx], self.X[idx]

    def chunks(self, size: int):
        for i in range(0, self.rows, size):
            yield self.Y[i : i + size], self.X[i : i + size]

    def fingerprint(self) -> list:
        return [self.Y, self.X if self.given_x else None]  # computed targets are not part of the input


class ArrayRows(_Source):
    """A memory-mapped (N, m) array of y (and (N, n) of x): rows read per batch."""

    def __init__(self, Y, X, **kw):
        super().__init__(**kw)
        if Y.ndim != 2 or Y.shape[1] != self.m:
            raise ValueError(f"{self.name}Y must have shape (rows, {self.m}), got {Y.shape}")
        if not len(Y):
            raise ValueError(f"{self.name}Y is empty")
        if X is not None and (X.ndim != 2 or X.shape != (Y.shape[0], self.n)):
            raise ValueError(f"{self.name}X must have shape ({Y.shape[0]}, {self.n}), got {X.shape}")
        self.Y, self.X, self.rows = Y, X, len(Y)

    def take(self, idx: torch.Tensor):
        rows = idx.cpu().numpy()
        X = None if self.X is None else torch.from_numpy(np.array(self.X[rows]))
        return self._pair(torch.from_numpy(np.array(self.Y[rows])), X)

    def fingerprint(self) -> list:
        return [array_fingerprint(self.Y), None if self.X is None else array_fingerprint(self.X)]


class DatasetRows(_Source):
    """A map-style ``torch.utils.data.Dataset`` of y or (y, x) items (``__getitems__`` used if defined)."""

    def __init__(self, ds, **kw):
        super().__init__(**kw)
        self.ds, self.rows = ds, len(ds)
        if not self.rows:
            raise ValueError(f"{self.name}Y dataset is empty")
        self._split([ds[0]])  # the first item's shape, checked before training starts

    def take(self, idx: torch.Tensor):
        rows = idx.tolist()
        get = getattr(self.ds, "__getitems__", None)
        return self._split(get(rows) if get is not None else [self.ds[i] for i in rows])

    def fingerprint(self) -> list:
        return [dataset_fingerprint(self.ds)]


class StreamRows(_Source):
    """An ``IterableDataset`` of y or (y, x) items, read once per epoch, in its own order."""

    def __init__(self, ds, **kw):
        super().__init__(**kw)
        self.ds = ds

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.ds, "set_epoch", None)):
            self.ds.set_epoch(epoch)

    def stream(self, batch: int, shard: bool = True):
        """(Y, X) batches of this rank's items: ``batch`` rows of the global batch (its share when ``shard``)."""
        size = distributed.local_count(batch) if shard else batch
        items = []
        for item in self.ds:
            items.append(item)
            if len(items) == size:
                yield self._split(items)
                items = []
        if items:
            yield self._split(items)

    def fingerprint(self) -> list:
        return [dataset_fingerprint(self.ds)]


def is_data_source(value) -> bool:
    """Whether ``value`` is read lazily (a Dataset, an IterableDataset or a memory-mapped array)."""
    return isinstance(value, Dataset | IterableDataset | np.memmap)


def source(Y, X, *, name: str, m: int, n: int, needs_x: bool, dtype, device) -> _Source:
    """The lazy source of ``Y`` (a Dataset, IterableDataset or memory-mapped array; X only with a memmap)."""
    kw = {"name": name, "m": m, "n": n, "needs_x": needs_x, "dtype": dtype, "device": device}
    if isinstance(Y, np.memmap):
        if X is not None and not isinstance(X, np.ndarray):
            raise TypeError(f"{name}X must be an array (memory-mapped or not) alongside a memory-mapped {name}Y")
        return ArrayRows(Y, X if needs_x else None, **kw)
    if X is not None:
        raise ValueError(f"{name}X must be None when {name}Y is a dataset: give (y, x) items")
    if isinstance(Y, IterableDataset):
        return StreamRows(Y, **kw)
    if not hasattr(Y, "__len__") or not inspect.ismethod(getattr(Y, "__getitem__", None)):
        raise TypeError(f"{name}Y dataset {type(Y).__name__} has no __len__/__getitem__")
    return DatasetRows(Y, **kw)
