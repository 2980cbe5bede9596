"""Out-of-core batch solving: an input larger than memory solved chunk by chunk, resumably.

The input is a ``.npy`` file (read through a memory map of one chunk's rows at a time), a Zarr
array (``store.zarr``, or one array of a Zarr group) or an ``.npz`` (loaded). The output is a
``.npy`` file (each chunk written through a memory map of its own rows) or a Zarr array chunked
like the solve. Both are written under a hidden partial name next to the output, with a small
JSON sidecar listing the chunks done and the run they belong to; a run that stops (killed,
interrupted, out of disk) resumes where it stopped when rerun, and a rerun of another model,
method or input onto the same output is refused with the reason. When every chunk is done the
partial output is renamed to the output and the sidecar removed.

With a Dask ``scheduler`` (an address, or ``"local"``: a ``LocalCluster`` of the machine's
cores, one thread each) every chunk is a task: the worker builds the solver once (cached per
worker), reads its rows from the input and writes its answers into the output store itself, so
the input and output paths must be on a file system the workers share. Memory per process is
bounded by the chunk size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._threads import threads

# -- the input --------------------------------------------------------------------------------


def is_zarr(path) -> bool:
    """Whether ``path`` names a Zarr store (a ``.zarr`` name, or a folder with Zarr metadata)."""
    p = Path(path)
    return p.suffix == ".zarr" or any((p / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


@dataclass(frozen=True)
class Source:
    """Where the rows come from: a path and, for an ``.npz`` or a Zarr group, the array's name."""

    path: str
    key: str | None = None

    def open(self) -> Rows:
        if is_zarr(self.path):
            return _ZarrRows(self.path, self.key)
        if Path(self.path).suffix == ".npy":
            rows = _NpyRows(self.path)
            return rows if not rows.fortran else _ArrayRows(np.load(self.path, mmap_mode="r"), self.path)
        return _ArrayRows(_load_npz(self.path, self.key), self.path)


def _load_npz(path: str, key: str | None) -> np.ndarray:
    with np.load(path) as z:
        names = list(z.keys())
        if key is None and len(names) == 1:
            key = names[0]
        if key not in names:
            raise ValueError(f"{path} holds {names}; say which with --key")
        return z[key]


class Rows:
    """A (rows, m) array read a slice at a time; ``vector`` when the stored array is one signal."""

    shape: tuple[int, int]
    dtype: np.dtype
    vector: bool = False

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self) -> dict:
        """What names this input: shape, dtype and a digest of its first and last rows."""
        digest = hashlib.sha256()
        for start in (0, max(len(self) - 1, 0)):
            digest.update(np.ascontiguousarray(self.read(start, start + 1)).tobytes())
        return {"shape": list(self.shape), "dtype": str(self.dtype), "rows_digest": digest.hexdigest()[:16]}


def _as_rows_shape(shape: tuple, dtype: np.dtype, path) -> tuple[tuple[int, int], bool]:
    if dtype.kind not in "fiub":
        what = "complex numbers; unrolled solves real problems" if dtype.kind == "c" else f"{dtype}, not real numbers"
        raise ValueError(f"input {path} holds {what}")
    if len(shape) not in (1, 2) or int(np.prod(shape)) == 0:
        raise ValueError(f"input {path} must be a vector or a non-empty (batch, m) array, got shape {tuple(shape)}")
    return ((1, shape[0]), True) if len(shape) == 1 else ((shape[0], shape[1]), False)


def npy_header(path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, byte offset of the data) of a ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        return shape, fortran, dtype, fh.tell()


class _NpyRows(Rows):
    """A C-ordered ``.npy`` file: each read maps only the rows asked for, and unmaps them after."""

    def __init__(self, path: str):
        shape, fortran, dtype, self.offset = npy_header(path)
        self.path, self.dtype, self.fortran = path, dtype, fortran and len(shape) > 1
        self.shape, self.vector = _as_rows_shape(shape, dtype, path)

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, len(self))
        row_bytes = self.shape[1] * self.dtype.itemsize
        mapped = np.memmap(
            self.path, self.dtype, "r", offset=self.offset + start * row_bytes, shape=(stop - start, self.shape[1])
        )
        rows = np.array(mapped)
        del mapped
        return rows


class _ZarrRows(Rows):
    def __init__(self, path: str, key: str | None):
        import zarr

        node = zarr.open(path, mode="r")
        if isinstance(node, zarr.Group):
            names = sorted(node.array_keys())
            if key is None and len(names) == 1:
                key = names[0]
            if key not in names:
                raise ValueError(f"Zarr group {path} holds arrays {names}; say which with --key")
            node = node[key]
        self.array, self.dtype = node, np.dtype(node.dtype)
        self.shape, self.vector = _as_rows_shape(node.shape, self.dtype, path)

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.asarray(self.array[start:stop] if not self.vector else self.array[:])
        return rows.reshape(-1, self.shape[1])


class _ArrayRows(Rows):
    def __init__(self, array: np.ndarray, path):
        self.array, self.dtype = array, array.dtype
        self.shape, self.vector = _as_rows_shape(array.shape, array.dtype, path)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.array(self.array.reshape(self.shape)[start:stop])


# -- the output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An output store of ``rows`` answers of ``width`` entries (width 0: one number per row):
    a ``.npy`` file or a Zarr array, at ``path`` (the partial name while the run lasts)."""

    path: str
    rows: int
    width: int
    dtype: str
    chunk: int
    vector: bool = False

    def _row(self) -> tuple:
        return (self.width,) if self.width else ()

    def _shape(self) -> tuple:
        return self._row() if self.vector else (self.rows, *self._row())

    def create(self) -> None:
        """Make the empty store (a .npy of zeros is sparse on disk; a Zarr array holds no chunk yet)."""
        if is_zarr(self.path):
            import zarr

            chunks = self._shape() if self.vector else (self.chunk, *self._row())
            zarr.open_array(self.path, mode="w", shape=self._shape(), chunks=chunks, dtype=self.dtype)
        else:
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.dtype(self.dtype), shape=self._shape()).flush()

    def write(self, start: int, values: np.ndarray) -> None:
        """Write rows ``start : start + len(values)`` (flushed before returning)."""
        values = np.asarray(values, dtype=np.dtype(self.dtype)).reshape(-1, *self._row())
        if self.vector:
            values = values[0]
        if is_zarr(self.path):
            import zarr

            array = zarr.open_array(self.path, mode="r+")
            array[() if self.vector else slice(start, start + len(values))] = values
            return
        row_bytes = max(self.width, 1) * np.dtype(self.dtype).itemsize
        offset = npy_header(self.path)[3] + start * row_bytes
        mapped = np.memmap(self.path, np.dtype(self.dtype), "r+", offset=offset, shape=values.shape)
        mapped[...] = values
        mapped.flush()
        del mapped


def _replace(partial: Path, final: Path) -> None:
    """Move a finished store (file or folder) onto its final name."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(partial, final)


def partial_path(final: Path) -> Path:
    """The hidden name a store is written under until it is complete (same suffix, same kind)."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


# -- the record of chunks done ----------------------------------------------------------------


class Sidecar:
    """``.NAME.progress.json`` next to the output: the run's identity and the chunks done with
    their statistics (converged count, iteration sum), rewritten atomically after each chunk."""

    def __init__(self, final: Path, run: dict):
        self.path = final.with_name(f".{final.name}.progress.json")
        self.run, self.done = run, {}

    def resume(self, partials: list[Path]) -> bool:
        """Load the chunks done by an earlier run of the same ``run``; False when there is none.
        Raise ValueError (one line, the first difference) when the partial output was made by
        another run."""
        if not self.path.exists() or not all(p.exists() for p in partials):
            return False
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False
        for key, value in self.run.items():
            if saved["run"].get(key) != value:
                raise ValueError(
                    f"the partial output {partials[0]} was made by a run with {key} = {saved['run'].get(key)!r}, "
                    f"not {value!r}; delete it (and {self.path.name}) or choose another --output"
                )
        self.run, self.done = saved["run"], {int(k): v for k, v in saved["done"].items()}
        return True

    def record(self, index: int, stats: list) -> None:
        self.done[index] = stats
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"run": self.run, "done": self.done}))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# -- solving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solver:
    """``build(options)`` returns ``apply(Y) -> (X, converged, n_iter, certificate)`` (the last three
    None or per-row arrays); ``build`` must be a module-level function, so that the solver
    pickles for Dask workers, which build it once each (``get``)."""

    build: Callable
    options: str  # JSON of the build options

    def get(self):
        key = (self.build.__module__, self.build.__qualname__, self.options)
        if key not in _BUILT:
            _BUILT.clear()
            _BUILT[key] = self.build(json.loads(self.options))
        return _BUILT[key]


_BUILT: dict = {}


def solve_chunk(solver: Solver, source: Source, targets: tuple, index: int, chunk: int, n_threads) -> list:
    """Solve chunk ``index`` of ``source`` and write it into ``targets`` (answers, then the
    certificates if any); returns [converged count, iteration sum] (None when not reported)."""
    start = index * chunk
    with threads(n_threads):
        answers = solver.get()(source.open().read(start, start + chunk))
    return write_chunk(targets, start, *answers)


def write_chunk(targets, start: int, X, converged, n_iter, cert) -> list:
    """Write one chunk's answers (and certificates) at row ``start``; its [converged count, iteration sum]."""
    targets[0].write(start, np.atleast_2d(X))
    if len(targets) > 1:
        targets[1].write(start, np.atleast_1d(cert))
    if converged is None:
        return [None, None]
    return [float(np.sum(converged)), float(np.sum(n_iter))]


def check_scheduler(scheduler) -> None:
    """Refuse, before any work, a scheduler that is neither ``"local"`` nor a Dask address, or Dask missing."""
    if scheduler is None:
        return
    address = r"(tcp|tls|inproc|ucx|ws|wss)://\S+|[\w.\-]+:\d+"
    if not isinstance(scheduler, str) or (scheduler != "local" and not re.fullmatch(address, scheduler)):
        raise ValueError(f"scheduler {scheduler!r}: expected 'local' or a Dask scheduler address (tcp://host:8786)")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("a Dask scheduler needs dask.distributed: pip install 'unrolled[scale]'") from None


def _client(scheduler: str):
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=os.cpu_count(), threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=30), None
    except OSError as exc:
        raise ValueError(f"scheduler {scheduler!r}: cannot connect ({str(exc).splitlines()[0]})") from None


def _pending_by_dask(scheduler, todo, solver, source, targets, chunk, sidecar, bar) -> None:
    from distributed import as_completed

    client, cluster = _client(scheduler)
    try:
        futures = {client.submit(solve_chunk, solver, source, targets, i, chunk, 1, pure=False): i for i in todo}
        for future in as_completed(futures):
            sidecar.record(futures[future], future.result())
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def solve_store(
    solver: Solver,
    source: Source,
    output: Path,
    *,
    chunk: int,
    run: dict,
    certificates: Path | None = None,
    n_threads=None,
    scheduler: str | None = None,
    progress: bool = True,
) -> dict:
    """Solve every row of ``source`` into ``output`` (``.npy`` or ``.zarr``) chunk by chunk, resuming
    a stopped run of the same ``run`` (a dict naming the model / method and the input).

    Parameters
    ----------
    solver : Solver
        Builds ``apply(Y (chunk, m)) -> (X (chunk, n), converged, n_iter, certificate)``.
    source : Source
        The input rows (batch, m).
    output, certificates : Path
        The answers (batch, n) and, when given, each row's certificate (batch,) as ``.npy``.
    chunk : int
        Rows per chunk: the memory bound, and the unit of progress and resumption.
    run : dict
        What the output is made from; a partial output of another ``run`` is refused.
    n_threads : int or None
        torch threads in this process (Dask workers use one each).
    scheduler : str, optional
        A Dask scheduler address, or "local".
    progress : bool
        Show a progress bar (tqdm) over chunks.

    Returns
    -------
    dict
        ``rows``, ``chunks``, ``resumed`` (chunks found done), and ``converged`` /
        ``mean_iterations`` over every row when the solver reports them.
    """
    from tqdm.auto import tqdm

    check_scheduler(scheduler)
    rows = source.open()
    n_chunks = -(-len(rows) // chunk)
    run = {**run, "input": rows.identity(), "chunk": chunk}
    finals = [output] + ([certificates] if certificates else [])
    partials = [partial_path(p) for p in finals]
    sidecar = Sidecar(output, run)
    resumed = sidecar.resume(partials)
    todo = [i for i in range(n_chunks) if i not in sidecar.done]
    resumed_chunks = n_chunks - len(todo)
    with tqdm(total=n_chunks, initial=resumed_chunks, desc="solve", unit="chunk", disable=not progress) as bar:
        if not resumed:  # the first chunk, solved here, fixes the stores' width and dtype
            for p in partials:
                p.parent.mkdir(parents=True, exist_ok=True)
            with threads(n_threads):
                answers = solver.get()(rows.read(0, chunk))
            X, cert = np.atleast_2d(answers[0]), answers[3]
            targets = [Target(str(partials[0]), len(rows), X.shape[1], X.dtype.str, chunk, rows.vector)]
            if certificates:
                targets.append(Target(str(partials[1]), len(rows), 0, np.asarray(cert).dtype.str, chunk, rows.vector))
            for t in targets:
                t.create()
            sidecar.run["stores"] = [[t.width, t.dtype] for t in targets]
            sidecar.record(0, write_chunk(targets, 0, *answers))
            bar.update(1)
            todo = todo[1:]
        targets = tuple(
            Target(str(p), len(rows), w, dt, chunk, rows.vector) for p, (w, dt) in zip(partials, sidecar.run["stores"])
        )
        if scheduler and todo:
            _pending_by_dask(scheduler, todo, solver, source, targets, chunk, sidecar, bar)
        for i in todo if not scheduler else ():
            sidecar.record(i, solve_chunk(solver, source, targets, i, chunk, n_threads))
            bar.update(1)
    for partial, final in zip(partials, finals):
        _replace(partial, final)
    sidecar.remove()
    stats = np.array([s for s in sidecar.done.values()], dtype=float)
    out = {"rows": len(rows), "chunks": n_chunks, "resumed_chunks": resumed_chunks}
    if not np.isnan(stats).any():
        out.update(converged=float(stats[:, 0].sum()) / len(rows), mean_iterations=float(stats[:, 1].sum()) / len(rows))
    return out
