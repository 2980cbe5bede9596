"""Pieces shared by the steps of every family, each written once.

* the affine part of a proximal-gradient step, u = x − α∇f(x) = W x + b, in the forms the
  solvers and the networks give it (:class:`GradientStep`, :class:`LinearStep`) and the pairs
  (normal map, adjoint) it is built from (:class:`NormalPair`, :class:`CoupledPair`);
* the proximal maps: :func:`project_nonnegative` and :func:`soft_threshold` (plain, the
  non-negative prox and support selection);
* FISTA's momentum schedule :func:`fista_momentum`, its extrapolation and the restart test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..operators import DenseOperator, Operator

# -- the affine part: u = W x + b ------------------------------------------------------------------


def fused_matrices(op: DenseOperator, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, S) = (I − αAᵀA, αAᵀ): x − α∇½‖Ax − y‖² = W x + S y   (xie2019 eq. 1.4); W (n, n), S (n, m)."""
    eye = torch.eye(op.n, dtype=op.dtype, device=op.device)
    return eye - alpha * op.gram, alpha * op.A.T


class GradientStep:
    """u = x − α∇f(x) for f = ½‖Ax − y‖²: the affine part of every proximal-gradient step.

    ``pair`` gives A: an :class:`Operator` (the solvers), a :class:`CoupledPair` (A kept, its adjoint
    replaced by a learned gain) or a :class:`NormalPair` (AᵀA and Aᵀ learned). α is a float or a
    (trainable) scalar tensor. ``offset(Y)`` computes what the step needs of y once per problem,
    so an iteration is one or two products plus elementwise work, in one of three forms:

    * fused, for a dense A with n ≤ 2m and a fixed α (no more flops than two products):
      u = x W + b with W = I − αAᵀA (n × n) and b = αAᵀy, one ``addmm``;
    * residual, for a pair with ``forward`` (any operator, a coupled pair): u = x − αAᵀ(Ax − b) with b = y;
    * normal, for a :class:`NormalPair`: u = x − α W₁x + b with b = αW₂y.

    ``x`` None stands for x = 0 (a network's first layer).
    """

    def __init__(self, pair, alpha):
        self.pair, self.alpha = pair, alpha if isinstance(alpha, torch.Tensor) else float(alpha)
        self.W = None
        if isinstance(pair, DenseOperator) and isinstance(self.alpha, float) and pair.n <= 2 * pair.m:
            self.W = fused_matrices(pair, self.alpha)[0]
        self.residual = self.W is None and hasattr(pair, "forward")

    def offset(self, Y: torch.Tensor) -> torch.Tensor:
        return Y if self.residual else self.alpha * self.pair.adjoint(Y)

    def __call__(self, U: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        if U is None:  # x = 0: u = αAᵀy (a fresh tensor, which the prox may overwrite)
            return self.alpha * self.pair.adjoint(b) if self.residual else b.clone()
        if self.W is not None:
            return torch.addmm(b, U, self.W)
        if not self.residual:
            return U + b - self.alpha * self.pair.normal(U)
        if isinstance(self.pair, DenseOperator) and isinstance(self.alpha, float):
            return torch.addmm(U, self.pair.forward(U) - b, self.pair.A, alpha=-self.alpha)
        return U - self.alpha * self.pair.adjoint(self.pair.forward(U) - b)


class LinearStep:
    """u ↦ U W + b (+ U_prev W_prev) with b = Y S, rows; W (n, n), S (m, n), W_prev (n, n).

    The affine part with every matrix free (LPGD, LISTA; with ``W_prev`` the momentum form of
    LAPGD, xie2019 eq. 1.6). ``U is None`` stands for x = 0 (the first layer): u = b, returned as
    a copy so that the prox may work in place. ``W`` or ``S`` None drops its term (y entering
    the first layer only).
    """

    def __init__(self, W: torch.Tensor | None, S: torch.Tensor | None, W_prev: torch.Tensor | None = None):
        self.W, self.S, self.W_prev = W, S, W_prev

    def offset(self, Y: torch.Tensor) -> torch.Tensor | None:
        return None if self.S is None else Y @ self.S

    def __call__(self, U, b, U_prev=None):
        if U is None or self.W is None:
            return b.clone()
        u = U @ self.W if b is None else torch.addmm(b, U, self.W)
        return u if U_prev is None else torch.addmm(u, U_prev, self.W_prev)


class NormalPair:
    """normal(u) = u W₁ᵀ ≈ AᵀAu and adjoint(y) = y W₂ᵀ ≈ Aᵀy with both matrices learned (sen2024 eq. 5–6)."""

    def __init__(self, W1: torch.Tensor, W2: torch.Tensor):
        self.W1, self.W2 = W1, W2

    def normal(self, U):
        return U @ self.W1.T

    def adjoint(self, Y):
        return Y @ self.W2.T


class CoupledPair:
    """forward(u) = Au and adjoint(r) = Wᵀr: the operator A kept, its adjoint replaced by a gain W.

    ``gain`` is an operator of A's shape (applied by its adjoint) or a row-form matrix (m, n)
    (LISTA-CP, ALISTA; Chen et al. 2018 eq. 10). ``A`` is never densified.
    """

    def __init__(self, op: Operator, gain):
        self.op, self.gain = op, gain

    def forward(self, U):
        return self.op.forward(U)

    def adjoint(self, R):
        return R @ self.gain if isinstance(self.gain, torch.Tensor) else self.gain.adjoint(R)


# -- proximal maps -------------------------------------------------------------------------------


def project_nonnegative(U: torch.Tensor) -> torch.Tensor:
    """P₊(u) = max(u, 0), the prox of ι_{≥0} (the ReLU of xie2019 eq. 1.4), in place."""
    return U.relu_()


def soft_threshold(U: torch.Tensor, theta, *, nonneg: bool = False, keep: int = 0) -> torch.Tensor:
    """η(u, θ): ST(u, θ) = sign(u)(|u| − θ)₊, the prox of θ‖·‖₁; with ``nonneg`` (u − θ)₊, the prox of
    θ‖·‖₁ + ι_{≥0}. θ is a float or a tensor broadcasting against U.

    ``keep`` > 0 is LISTA-CPSS's support selection (Chen et al. 2018 eq. 13): the ``keep`` largest
    entries per row (by |u|, or u when ``nonneg``) that exceed θ pass untouched.
    """
    if nonneg:
        out = torch.relu(U - theta)
    elif isinstance(theta, torch.Tensor):
        out = torch.sign(U) * torch.relu(U.abs() - theta)
    else:
        out = F.softshrink(U, float(theta)) if theta > 0 else U.clone()
    if keep > 0:
        score = U if nonneg else U.abs()
        kth = torch.topk(score, min(keep, U.shape[1]), dim=1).values[:, -1:]
        out = torch.where((score >= kth) & (score > theta), U, out)
    return out


# -- momentum ------------------------------------------------------------------------------------


def starting_point(Y: torch.Tensor, X0: torch.Tensor | None, n: int) -> torch.Tensor:
    """The first iterate: a copy of the warm start X0, else zeros (batch, n) in Y's dtype/device."""
    return torch.zeros(Y.shape[0], n, dtype=Y.dtype, device=Y.device) if X0 is None else X0.clone()


def momentum_state(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting momentum state of rows x: a copy of x and t = 1 per row (batch, 1)."""
    return x.clone(), torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)


def fista_momentum(t, restart=None):
    """Beck–Teboulle schedule t⁺ = (1 + √(1 + 4t²))/2 and weight β = (t − 1)/t⁺ (float or per-row tensor).

    ``restart`` (per-row bool, see :func:`restart_test`) resets those rows: t⁺ = 1, β = 0.
    """
    t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
    beta = (t - 1) / t_next
    if restart is not None:
        t_next = torch.where(restart, torch.ones_like(t_next), t_next)
        beta = torch.where(restart, torch.zeros_like(beta), beta)
    return t_next, beta


def restart_test(w: torch.Tensor, x_new: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """O'Donoghue & Candès' gradient test per row: (w − x⁺)ᵀ(x⁺ − x) > 0, the step goes against
    the momentum. Rows (batch, n) → (batch, 1) bool."""
    return torch.linalg.vecdot(w - x_new, x_new - x).unsqueeze(1) > 0


def extrapolate(x_new: torch.Tensor, x: torch.Tensor, beta) -> torch.Tensor:
    """w = x⁺ + β(x⁺ − x), one fused pass when β is a per-row tensor."""
    if isinstance(beta, torch.Tensor):
        return torch.addcmul(x_new, beta, x_new - x)
    return torch.add(x_new, x_new - x, alpha=beta)
