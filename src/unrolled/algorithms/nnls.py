"""NNLS steps: projected gradient (PGD), accelerated PGD (APGD), over-parametrized GD (OGD).

Each update is written once as a function of (iterate, offset, affine part), called by the
solver methods below with the analytic affine part (:class:`~._common.GradientStep`) and by
the networks of ``nets/nnls.py`` with their trainable one. A method keeps the analytic
parameters computed from the operator; ``state`` holds per-problem tensors only (leading
dimension = batch), so the solver may drop rows.
"""

from __future__ import annotations

import torch

from .._validate import nonnegative_float
from ..problems import NNLS
from ._common import (
    GradientStep,
    extrapolate,
    fista_momentum,
    momentum_state,
    project_nonnegative,
    restart_test,
    starting_point,
)

# -- the steps -------------------------------------------------------------------------------------


def pgd_step(x, b, affine, *previous):
    """x⁺ = ReLU(W x + b)   (xie2019 eq. 1.4); ``affine(x, b)`` computes W x + b (x None: x = 0).

    With ``previous`` = (x_{k−1},) it is LAPGD's layer x⁺ = ReLU(W₁x + W₂x_{k−1} + b) (eq. 1.6),
    ``affine(x, b, x_prev)``; the solver's APGD calls it on the extrapolated point instead.
    """
    return project_nonnegative(affine(x, b, *previous))


def ogd_step(s, grad, power: int, eta):
    """s⁺ = s − η g ⊙ s^{⊙(P−1)}   (sen2024 eq. 3 / 6), g = ∇f(s^{⊙P}) (rows).

    ``eta`` is a number or tensor, or a callable ``eta(s, d)`` of s and d = g ⊙ s^{⊙(P−2)}
    (OGD's adaptive rule).
    """
    d = grad * s.pow(power - 2) if power > 2 else grad
    if callable(eta):
        eta = eta(s, d)
    return s - eta * d * s


def alpha_of(problem: NNLS, step) -> float:
    """The step α: ``step`` if given (> 0), else 1/L with L = ‖A‖₂²."""
    return 1.0 / problem.op.lipschitz if step is None else nonnegative_float(step, "step", strict=True)


# -- the solver methods ----------------------------------------------------------------------------


class PGD:
    """x_{k+1} = ReLU((I − αAᵀA) x_k + αAᵀy) = ReLU(W x_k + S y)   (xie2019 eq. 1.4).

    With α = 1/L, L = ‖A‖₂², the objective never increases (a test).
    """

    name = "pgd"

    def __init__(self, problem: NNLS, step: float | None = None):
        self.problem = problem
        self.alpha = alpha_of(problem, step)
        self.grad_step = GradientStep(problem.op, self.alpha)

    def init(self, Y, X0):
        return {"x": starting_point(Y, X0, self.problem.op.n).clamp_(min=0), "b": self.grad_step.offset(Y)}

    def step(self, state, k):
        state["x"] = pgd_step(state["x"], state["b"], self.grad_step)


class APGD(PGD):
    """Accelerated PGD (xie2019 eq. 1.5–1.6):

        x_{k+1} = ReLU(z_k − α∇f(z_k)),   z_{k+1} = x_{k+1} + γ (x_{k+1} − x_k),

    i.e. x_{k+1} = ReLU(W₁x_k + W₂x_{k−1} + Sy) with W₁ = (1+γ)(I − αAᵀA), W₂ = −γ(I − αAᵀA).
    ``momentum="constant"`` uses the paper's fixed γ (0.9); ``"nesterov"`` the FISTA
    schedule γ_k = (t_k − 1)/t_{k+1}, with ``restart=True`` resetting t when the objective
    would rise (O'Donoghue & Candès' gradient test).
    """

    name = "apgd"

    def __init__(self, problem, step=None, gamma: float = 0.9, momentum: str = "constant", restart: bool = False):
        super().__init__(problem, step)
        if momentum not in ("constant", "nesterov"):
            raise ValueError(f"unknown momentum {momentum!r}; choose 'constant' or 'nesterov'")
        if not 0 <= gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        self.gamma, self.momentum, self.restart = float(gamma), momentum, bool(restart)

    def init(self, Y, X0):
        state = super().init(Y, X0)
        state["x_prev"], state["t"] = momentum_state(state["x"])
        return state

    def step(self, state, k):
        x, t = state["x"], state["t"]
        beta = self.gamma
        if self.momentum == "nesterov":
            state["t"], beta = fista_momentum(t)
        z = extrapolate(x, state["x_prev"], beta)
        x_new = pgd_step(z, state["b"], self.grad_step)
        if self.restart:
            state["t"] = torch.where(restart_test(z, x_new, x), torch.ones_like(t), state["t"])
        state["x_prev"], state["x"] = x, x_new


class OGD:
    """Over-parametrized gradient descent (sen2024 eq. 2–3, after Chou, Maly & Verdun):

        s_{k+1} = s_k − η_k [Aᵀ(A s_k^{⊙P} − y)] ⊙ s_k^{⊙(P−1)},   x = s^{⊙P} ≥ 0,

    from the identical initialisation s₀ = c·1. The step η_k = κ / (P max(L ‖s_k‖∞^{2P−2}, ‖g ⊙ s_k^{P−2}‖∞))
    keeps the induced step on x = s^P below 1/L (κ ≤ 1) and the factor 1 − η g s^{P−2} in (1/2, 3/2),
    so s never changes sign (x stays ≥ 0 for odd P too) and small starts grow geometrically.
    ``eta`` (a float) replaces it by the fixed step η_k = eta of sen2024 eq. 3, the one
    a LOGD layer holds as a parameter (``nets.LOGD`` with analytic init).
    """

    name = "ogd"

    def __init__(
        self, problem: NNLS, power: int = 2, kappa: float = 1.0, init_scale: float = 1e-3, eta: float | None = None
    ):
        if int(power) != power or power < 2:
            raise ValueError(f"power must be an integer >= 2, got {power!r}")
        if eta is not None and not float(eta) > 0:
            raise ValueError(f"eta must be a positive number, got {eta!r}")
        self.problem, self.P, self.kappa, self.init_scale = problem, int(power), float(kappa), float(init_scale)
        self.eta = None if eta is None else float(eta)
        self.L = problem.op.lipschitz

    def init(self, Y, X0):
        op = self.problem.op
        if X0 is None:
            # x₀ = c·1 with c a small fraction of the first PGD step's size ‖Aᵀy‖∞/L (c = 0: x = 0 is optimal)
            c = self.init_scale * op.adjoint(Y).abs().amax(1, keepdim=True) / self.L
            x0 = c.expand(Y.shape[0], op.n)
        else:
            x0 = X0.clamp(min=0)
        s = x0.pow(1.0 / self.P).clone()
        return {"s": s, "x": s.pow(self.P), "aty": op.adjoint(Y)}

    def adaptive_eta(self, s, d):
        """κ/(P max(L‖s‖∞^{2P−2}, ‖d‖∞)): |η d| ≤ κ/P < 1 keeps s > 0 (x = s^P ≥ 0 for odd P)."""
        curv = self.L * s.abs().amax(1, keepdim=True) ** (2 * self.P - 2)
        return self.kappa / (self.P * torch.maximum(curv, d.abs().amax(1, keepdim=True)).clamp_min(1e-300))

    def step(self, state, k):
        grad = self.problem.op.normal(state["x"]) - state["aty"]
        s = ogd_step(state["s"], grad, self.P, self.adaptive_eta if self.eta is None else self.eta)
        state["s"], state["x"] = s, s.pow(self.P)
