"""The optimisation problems, with objectives and optimality certificates.

All functions act on row batches: X (batch, n), Y (batch, m); they return one value
per row. A certificate is zero exactly at an optimum and is scale-free, so that
``tol`` means the same thing for every problem.
"""
from __future__ import annotations

import torch

from .operators import Operator

TINY = 1e-30


class NNLS:
    """min_x ½‖Ax − y‖²  s.t.  x ≥ 0   (xie2019 eq. 1.1, sen2024 eq. 1)."""

    name = "nnls"

    def __init__(self, op: Operator):
        self.op = op

    def objective(self, X, Y):
        return 0.5 * (self.op.forward(X) - Y).pow(2).sum(1)

    def certificate(self, X, Y):
        """Relative KKT residual ‖min(Lx, ∇f(x))‖∞ / ‖Aᵀy‖∞, with ∇f(x) = Aᵀ(Ax − y).

        min(x, ∇f/L) is the natural residual x − P₊(x − ∇f/L) of projected gradient:
        zero iff x ≥ 0, ∇f ≥ 0 and x ⊙ ∇f = 0 (the KKT conditions).
        """
        grad = self.op.adjoint(self.op.forward(X) - Y)
        scale = self.op.adjoint(Y).abs().amax(1).clamp_min(TINY)
        resid = torch.minimum(self.op.lipschitz * X, grad).abs().amax(1)
        return resid / scale


class Lasso:
    """min_z ½‖Dz − y‖² + λ‖z‖₁   (BPDN; sulam2018 eq. 1, Moreau talk)."""

    name = "lasso"

    def __init__(self, op: Operator, lam: float):
        self.op, self.lam = op, float(lam)

    def objective(self, Z, Y):
        return 0.5 * (self.op.forward(Z) - Y).pow(2).sum(1) + self.lam * Z.abs().sum(1)

    def lambda_max(self, Y):
        """λ_max = ‖Dᵀy‖∞: z = 0 is optimal iff λ ≥ λ_max."""
        return self.op.adjoint(Y).abs().amax(1)

    def dual_point(self, Z, Y):
        """Feasible dual ν = (y − Dz)/max(1, ‖Dᵀ(y − Dz)‖∞/λ)."""
        R = Y - self.op.forward(Z)
        scale = (self.op.adjoint(R).abs().amax(1) / max(self.lam, TINY)).clamp_min(1.0)
        return R / scale[:, None]

    def duality_gap(self, Z, Y):
        """P(z) − D(ν) ≥ 0, with D(ν) = ½‖y‖² − ½‖y − ν‖² for dual-feasible ν."""
        nu = self.dual_point(Z, Y)
        dual = 0.5 * Y.pow(2).sum(1) - 0.5 * (Y - nu).pow(2).sum(1)
        return self.objective(Z, Y) - dual

    def certificate(self, Z, Y):
        """Relative duality gap (P − D)/P: bounds the relative sub-optimality."""
        return self.duality_gap(Z, Y).clamp_min(0) / self.objective(Z, Y).clamp_min(TINY)
