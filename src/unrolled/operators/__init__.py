"""Linear forward operators acting on batches of signals stored as rows.

Fixed operators (``DenseOperator``, ``Conv2dOperator``, the adjoint ``op.T``) and learned
ones whose weights are parameters (``LearnedDense``, ``LearnedConv2d``, built from a fixed
one by ``learned(op)``). Every operator has forward/adjoint on rows, ``in_shape`` /
``out_shape``, a cached ``lipschitz`` = ‖A‖₂², a ``fingerprint()`` and ``spec()``, which
``from_spec`` turns back into the operator.
"""

from __future__ import annotations

import torch

from .base import Operator, Transpose, power_iteration
from .conv import Conv2dOperator
from .dense import DenseOperator
from .learned import LearnedConv2d, LearnedDense, LearnedOperator, LearnedTranspose
from .psf import GaussianPSF

KINDS = {cls.kind: cls for cls in (DenseOperator, Conv2dOperator, LearnedDense, LearnedConv2d, GaussianPSF)}


def from_spec(config: dict, tensors: dict, *, dtype=None, device=None) -> Operator:
    """Rebuild the operator whose ``spec()`` was ``(config, tensors)``.

    Parameters
    ----------
    config : dict with a ``"kind"`` key (``"dense"``, ``"conv2d"``, ``"learned_dense"``,
        ``"learned_conv2d"`` or ``"transpose"`` with the spec of the transposed operator under ``"of"``).
    tensors : dict of named tensors, as returned by ``spec()``.
    dtype, device : optional conversion of the rebuilt operator.

    Returns
    -------
    Operator of the same kind, map and fingerprint.
    """
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"operator config must be a dict with a 'kind' key, got {config!r}")
    kind = config["kind"]
    if kind == "transpose":
        return from_spec(config.get("of"), tensors, dtype=dtype, device=device).T
    if kind not in KINDS:
        raise ValueError(f"unknown operator kind {kind!r}; known: {sorted(KINDS) + ['transpose']}")
    try:
        op = KINDS[kind].from_spec(config, tensors)
    except KeyError as exc:
        raise ValueError(f"operator spec of kind {kind!r} lacks {exc.args[0]!r}") from None
    return op if dtype is None and device is None else op.to(dtype=dtype, device=device)


def learned(op) -> LearnedOperator:
    """A learned operator initialised to ``op``: its weights are a copy of ``op``'s, as parameters.

    ``DenseOperator`` (or a matrix) → ``LearnedDense``; ``Conv2dOperator`` → ``LearnedConv2d``;
    ``A.T`` → ``learned(A).T``; a ``LearnedOperator`` → an independent copy. The cached
    Lipschitz constant is carried over.
    """
    op = as_operator(op, name="op")
    if isinstance(op, (Transpose, LearnedTranspose)):
        return learned(op.base).T
    if isinstance(op, LearnedOperator):
        config, tensors = op.spec()
        copy = from_spec(config, tensors)
    elif isinstance(op, DenseOperator):
        copy = LearnedDense(op.A)
    elif isinstance(op, Conv2dOperator):
        copy = LearnedConv2d(op.kernel, op.in_shape, stride=op.stride, padding=op.padding)
    else:
        raise TypeError(f"op must be a dense, convolutional or learned operator, got {type(op).__name__}")
    copy._seed_lipschitz(op._cached_lipschitz())
    return copy


def as_operator(A, *, dtype=None, device=None, name: str = "A") -> Operator:
    """Accept an Operator, a NumPy array or a torch tensor; return an Operator.

    A conversion never changes its argument: a ``LearnedOperator`` of another dtype or
    device comes back as a converted copy (``learned(A).to(...)``).
    """
    if isinstance(A, Operator):
        if (dtype is not None and dtype != A.dtype) or (device is not None and torch.device(device) != A.device):
            if isinstance(A, LearnedOperator):
                return learned(A).to(dtype=dtype, device=device)
            return A.to(dtype=dtype, device=device)
        return A
    try:
        return DenseOperator(A, dtype=dtype, device=device)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("A ", f"{name} ", 1)) from None


def mutual_coherence(D) -> float:
    """μ(D) = max_{i≠j} |dᵢᵀdⱼ| / (‖dᵢ‖‖dⱼ‖)."""
    D = as_operator(D).matrix().detach()
    Dn = D / D.norm(dim=0, keepdim=True).clamp_min(torch.finfo(D.dtype).tiny)
    G = (Dn.T @ Dn).abs()
    G.fill_diagonal_(0)
    return float(G.max())


__all__ = [
    "Conv2dOperator",
    "DenseOperator",
    "GaussianPSF",
    "LearnedConv2d",
    "LearnedDense",
    "LearnedOperator",
    "LearnedTranspose",
    "Operator",
    "Transpose",
    "as_operator",
    "from_spec",
    "learned",
    "mutual_coherence",
    "power_iteration",
]
