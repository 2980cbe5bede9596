"""Pieces shared by the steps of every family: the fused gradient step and the prox maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..operators import DenseOperator, Operator


class GradientStep:
    """u ↦ u − α Aᵀ(Au − y) = (I − αAᵀA) u + αAᵀy   (xie2019 eq. 1.4 before the ReLU).

    For a dense A with n ≤ 2m (no more flops than two products) this is one fused ``addmm``
    with W = I − αAᵀA (n × n);
    otherwise two products with A. ``offset(Y)`` gives the row constant b = αAᵀy,
    computed once per problem, so one iteration is one matmul plus elementwise work.
    """

    def __init__(self, op: Operator, alpha: float):
        self.op, self.alpha = op, float(alpha)
        self.W = None
        if isinstance(op, DenseOperator) and op.n <= 2 * op.m:
            self.W = torch.eye(op.n, dtype=op.dtype, device=op.device) - self.alpha * op.gram

    def offset(self, Y: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.op.adjoint(Y)

    def __call__(self, U: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.W is not None:
            return torch.addmm(b, U, self.W)
        if isinstance(self.op, DenseOperator):
            return torch.addmm(U + b, self.op.forward(U), self.op.A, alpha=-self.alpha)
        return U + b - self.alpha * self.op.normal(U)


def soft_threshold(U: torch.Tensor, thresh) -> torch.Tensor:
    """ST(u, θ) = sign(u) max(|u| − θ, 0), the prox of θ‖·‖₁; θ a float or per-row/entry tensor."""
    if isinstance(thresh, torch.Tensor):
        return torch.sign(U) * (U.abs() - thresh).clamp_min(0)
    return F.softshrink(U, float(thresh)) if thresh > 0 else U.clone()


def fista_momentum(t: float) -> tuple[float, float]:
    """Beck–Teboulle schedule: t⁺ = (1 + √(1 + 4t²))/2, extrapolation weight (t − 1)/t⁺."""
    t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
    return t_next, (t - 1.0) / t_next
