"""The C loop of Lawson–Hanson (``_lh_source.c``), compiled on first use with the system C compiler.

Built and cached by :func:`unrolled._cbuild.build`. Without a C compiler (or with
``UNROLLED_NO_COMPILE=1``) :func:`library` returns None and the active set runs its batched
torch steps instead: same answers, slower on small problems.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path

import torch

from .._cbuild import build

SOURCE = Path(__file__).with_name("_lh_source.c")
_state: dict = {}


def _build() -> ctypes.CDLL | None:
    """Compile (once per source version and machine type) and load the library; None when impossible."""
    try:
        lib = build("lh_gram", SOURCE.read_text(), ["-O3", "-shared", "-fPIC"], libs=("-lm",))
    except OSError:
        return None
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.lh_gram.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, ctypes.c_double]
    lib.lh_gram.restype = i32
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded C library, or None when no C compiler is available (built once per process)."""
    if "lib" not in _state:
        _state["lib"] = _build()
    return _state["lib"]


@contextmanager
def disabled():
    """Within the block :func:`library` returns None, so the active set runs its torch steps (bench, tests)."""
    missing = object()
    saved = _state.get("lib", missing)
    _state["lib"] = None
    try:
        yield
    finally:
        if saved is missing:
            del _state["lib"]
        else:
            _state["lib"] = saved


def lh_gram(G: torch.Tensor, b: torch.Tensor, thr: torch.Tensor, x0: torch.Tensor, max_steps: int, dtol: float):
    """Lawson–Hanson on the normal equations, row by row in C (see ``_lh_source.c``).

    Parameters
    ----------
    G : tensor (n, n), float64, CPU
        ÃᵀÃ of the column-normalised operator.
    b : tensor (batch, n)
        Ãᵀy per row.
    thr : tensor (batch,)
        LH's stopping threshold per row: stop when max_{j∉P} (b − Gx)_j ≤ thr.
    x0 : tensor (batch, n)
        Feasible starts (≥ 0); their supports are loaded as the passive sets.
    max_steps : int
        LH steps (adds + removes) allowed per row.
    dtol : float
        Relative pivot below which a column counts as dependent on the passive ones.

    Returns
    -------
    (x, steps, stopped)
        Answers (batch, n) float64, LH steps per row (batch,) int64, and whether LH's KKT rule
        stopped the row (batch,) bool (False: ``max_steps`` ran out).
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the compiled Lawson–Hanson loop is not available (no C compiler)")
    f64 = dict(dtype=torch.float64, device="cpu")
    G, b, thr = (t.to(**f64).contiguous() for t in (G, b, thr))
    x = x0.to(**f64).clone().contiguous()
    B, n = b.shape
    steps = torch.empty(B, dtype=torch.int32)
    stopped = torch.empty(B, dtype=torch.int32)
    args = [t.data_ptr() for t in (G, b, thr, x, steps, stopped)]
    if lib.lh_gram(B, n, *args, int(max_steps), float(dtol)) != 0:
        raise MemoryError("lh_gram: could not allocate its O(n²) workspace")
    return x, steps.long(), stopped.bool()
