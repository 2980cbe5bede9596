"""A dense matrix as an operator."""

from __future__ import annotations

import torch

from .._validate import to_tensor
from .base import Operator, hash_key, power_iteration

EXACT_NORM_MAX = 2048  # min(m, n) up to which ‖A‖₂ is computed exactly


def as_matrix(A, name: str, *, dtype=None, device=None) -> torch.Tensor:
    """``A`` as a non-empty 2-D floating tensor (ValueError naming ``name`` otherwise)."""
    A = to_tensor(A, name, dtype=dtype, device=device)
    if A.dim() != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {tuple(A.shape)}")
    return A


def dense_fingerprint(A: torch.Tensor) -> str:
    """The fingerprint of the matrix ``A`` (unchanged since the first saved models)."""
    return hash_key("dense", A, tuple(A.shape))


def dense_norm_squared(A: torch.Tensor) -> float:
    """‖A‖₂², in float64 without autograd: exact up to EXACT_NORM_MAX, power iteration beyond."""
    with torch.no_grad():
        if min(A.shape) <= EXACT_NORM_MAX:
            return float(torch.linalg.matrix_norm(A.detach().to(torch.float64), ord=2)) ** 2
        A64 = A.detach().to(torch.float64)
        return power_iteration(lambda X: (X @ A64.T) @ A64, A.shape[1], device=A.device)


class DenseOperator(Operator):
    """A dense matrix A of shape (m, n); forward X ↦ X Aᵀ, adjoint R ↦ R A.

    Parameters
    ----------
    A : array or tensor, shape (m, n)
    dtype, device : optional conversion of ``A``.
    """

    kind = "dense"

    def __init__(self, A, *, dtype=None, device=None):
        super().__init__()
        A = as_matrix(A, "A", dtype=dtype, device=device)
        self.A = A.contiguous()
        self.shape = tuple(A.shape)
        self.dtype, self.device = A.dtype, A.device
        self._gram = None
        self._fingerprint = None

    def forward(self, X):
        return X @ self.A.T

    def adjoint(self, R):
        return R @ self.A

    @property
    def gram(self) -> torch.Tensor:
        """AᵀA (n, n), cached."""
        if self._gram is None:
            self._gram = self.A.T @ self.A
        return self._gram

    def normal(self, X):
        # one (n × n) product beats two (m × n) ones when n < 2m
        if self.n < 2 * self.m:
            return X @ self.gram
        return self.adjoint(self.forward(X))

    def _norm_squared(self) -> float:
        return dense_norm_squared(self.A)

    def matrix(self):
        return self.A

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = dense_fingerprint(self.A)
        return self._fingerprint

    def spec(self):
        return {"kind": self.kind}, {"A": self.A}

    @classmethod
    def from_spec(cls, config: dict, tensors: dict) -> DenseOperator:
        return cls(tensors["A"])

    def to(self, dtype=None, device=None):
        op = DenseOperator(self.A.to(dtype=dtype or self.dtype, device=device or self.device))
        op._lipschitz = self._lipschitz
        return op
