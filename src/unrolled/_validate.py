"""Input checks and conversions at the public boundary.

Every public function converts its inputs here, so that a wrong shape, a NaN or a
negative regularisation weight gives one clear error naming the argument instead
of a traceback from deep inside torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_FLOATS = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Kind:
    """How the caller gave a signal: NumPy or torch, single vector or batch."""

    numpy: bool
    vector: bool

    def restore(self, t: torch.Tensor):
        """Return ``t`` (a batch) in the caller's kind: vector if a vector came in, NumPy if NumPy."""
        if self.vector:
            t = t[0] if t.dim() >= 1 and t.shape[0] == 1 else t
        t = t.detach()
        return t.cpu().numpy() if self.numpy else t


def to_tensor(value, name: str, *, dtype=None, device=None) -> torch.Tensor:
    """Turn an array-like into a floating tensor, refusing NaN/inf and non-numbers."""
    if isinstance(value, torch.Tensor):
        t = value
    elif type(value).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a SciPy sparse matrix: sparse input is not supported; pass {name}.toarray()")
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be an array or tensor, got {type(value).__name__}") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # torch warns on read-only arrays
    if t.is_complex():
        raise TypeError(f"{name} must be real, got a complex {t.dtype}")
    if dtype is None:  # integers/bools: float64 from NumPy (NumPy's default), torch's default otherwise
        dtype = (
            t.dtype
            if t.dtype in _FLOATS
            else (torch.get_default_dtype() if isinstance(value, torch.Tensor) else torch.float64)
        )
    t = t.to(dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def as_batch(
    value, name: str, width: int | None = None, *, dtype=None, device=None, nonnegative: bool = False
) -> tuple[torch.Tensor, Kind]:
    """Signals as rows: accept shape (width,) or (batch, width); return a 2-D tensor and its kind."""
    kind = Kind(numpy=not isinstance(value, torch.Tensor), vector=np.ndim(value) == 1)
    t = to_tensor(value, name, dtype=dtype, device=device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a vector or a (batch, {width or 'width'}) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if width is not None and t.shape[1] != width:
        raise ValueError(f"{name} has {t.shape[1]} entries per signal, expected {width} (shape {tuple(t.shape)})")
    if nonnegative and (t < 0).any():
        raise ValueError(f"{name} must be non-negative")
    return t, kind


def positive_int(value, name: str) -> int:
    """A strictly positive integer (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def nonnegative_float(value, name: str, *, strict: bool = False) -> float:
    """A finite float >= 0 (> 0 when strict)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def choice(value, name: str, options) -> str:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value
