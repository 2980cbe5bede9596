"""Operators whose weights are trainable parameters: a matrix, or convolution filters.

A ``LearnedOperator`` is both a ``torch.nn.Module`` (its weights are ``nn.Parameter``s,
``.to()``/``.double()`` act in place as on any module, it saves with the network that
holds it) and an ``Operator`` (forward/adjoint on row batches, differentiable in the
weights). Its Lipschitz constant and fingerprint are those of the current weights:
cached, and recomputed when a parameter's version counter or storage changes (an
optimiser step, ``load_state_dict``, a dtype/device move). Writes through ``.data``
bypass the version counter; write under ``torch.no_grad()`` instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Operator, TransposeMixin
from .conv import Conv2dOperator, ConvGeometry, ConvShapes, as_kernel, flipped
from .dense import DenseOperator, as_matrix


class LearnedOperator(nn.Module, Operator):
    """Base of the trainable operators; subclasses define ``frozen()`` (a fixed copy of the weights)."""

    def __init__(self):
        nn.Module.__init__(self)
        Operator.__init__(self)
        self._cache = {}

    def frozen(self) -> Operator:  # pragma: no cover - abstract
        """A fixed operator holding a detached copy of the current weights."""
        raise NotImplementedError

    def _weights_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self.parameters())

    def _cached(self, name: str, compute):
        key = self._weights_key()
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, compute())
            self._cache[name] = hit
        return hit[1]

    def _cached_lipschitz(self):
        hit = self._cache.get("lipschitz")
        return hit[1] if hit is not None and hit[0] == self._weights_key() else None

    def _seed_lipschitz(self, value) -> None:
        if value is not None:
            self._cache["lipschitz"] = (self._weights_key(), value)

    @property
    def lipschitz(self) -> float:
        """‖A‖₂² of the current weights, computed without autograd, cached until they change."""
        return self._cached("lipschitz", lambda: self.frozen().lipschitz)

    def fingerprint(self) -> str:
        """The fingerprint of the current weights: that of ``frozen()``, the same linear map."""
        return self._cached("fingerprint", lambda: self.frozen().fingerprint())

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def T(self):
        return LearnedTranspose(self)

    def _apply(self, fn, *args, **kwargs):
        # a dtype/device move keeps the cached constants: re-key them to the moved weights
        before = self._weights_key()
        kept = {name: value for name, (key, value) in self._cache.items() if key == before}
        out = super()._apply(fn, *args, **kwargs)
        after = self._weights_key()
        self._cache = {name: (after, value) for name, value in kept.items()}
        return out


class LearnedDense(LearnedOperator):
    """A trainable matrix: ``weight`` (m, n) is an ``nn.Parameter``; forward X ↦ X Wᵀ, adjoint R ↦ R W.

    Parameters
    ----------
    A : array or tensor, shape (m, n), the initial weights (copied).
    dtype, device : optional conversion of ``A``.
    """

    kind = "learned_dense"

    def __init__(self, A, *, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(as_matrix(A, "A", dtype=dtype, device=device).detach().clone())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    def forward(self, X):
        return X @ self.weight.T

    def adjoint(self, R):
        return R @ self.weight

    def matrix(self):
        return self.weight

    def frozen(self) -> DenseOperator:
        return DenseOperator(self.weight.detach().clone())

    def spec(self):
        return {"kind": self.kind}, {"weight": self.weight.detach()}

    @classmethod
    def from_spec(cls, config: dict, tensors: dict) -> LearnedDense:
        return cls(tensors["weight"])


class LearnedConv2d(ConvShapes, LearnedOperator):
    """Trainable convolution filters: ``weight`` (C_out, C_in, kh, kw) is an ``nn.Parameter``.

    The map is that of ``Conv2dOperator(weight, image_shape, stride=..., padding=...)``
    (convolution, not correlation); the adjoint is the transposed convolution.

    Parameters
    ----------
    kernel : array or tensor, shape (C_out, C_in, kh, kw) or (kh, kw), the initial filters (copied).
    image_shape : (H, W) or (C_in, H, W)
    stride : int or (sh, sw)
    padding : int, (ph, pw) or None (kh // 2 on both axes)
    dtype, device : optional conversion of ``kernel``.
    """

    kind = "learned_conv2d"

    def __init__(self, kernel, image_shape, *, stride=1, padding=None, dtype=None, device=None):
        super().__init__()
        kernel = as_kernel(kernel, dtype=dtype, device=device)
        self.geometry = ConvGeometry.of(kernel.shape, image_shape, stride, padding)
        self.weight = nn.Parameter(kernel.detach().clone())

    def forward(self, X):
        return self.geometry.forward(X, flipped(self.weight))

    def adjoint(self, R):
        return self.geometry.adjoint(R, flipped(self.weight))

    def frozen(self) -> Conv2dOperator:
        return Conv2dOperator(self.weight.detach().clone(), self.in_shape, stride=self.stride, padding=self.padding)

    def spec(self):
        return {"kind": self.kind, **self.geometry.config()}, {"weight": self.weight.detach()}

    @classmethod
    def from_spec(cls, config: dict, tensors: dict) -> LearnedConv2d:
        return cls(
            tensors["weight"],
            tuple(config["image_shape"]),
            stride=tuple(config["stride"]),
            padding=tuple(config["padding"]),
        )


class LearnedTranspose(TransposeMixin, LearnedOperator):
    """Aᵀ for a learned A, sharing A's parameters (registered as the submodule ``base``)."""

    def __init__(self, base: LearnedOperator):
        super().__init__()
        self.base = base

    def frozen(self) -> Operator:
        return self.base.frozen().T
