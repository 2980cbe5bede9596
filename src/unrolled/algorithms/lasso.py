"""Lasso steps: ISTA, FISTA and oracle ISTA (OISTA).

Each layer of the LISTA family is one of these steps with its parameters freed.
"""
from __future__ import annotations

import torch

from ..operators import DenseOperator
from ..problems import Lasso
from ._common import GradientStep, soft_threshold


class ISTA:
    """z_{k+1} = ST(z_k − α Dᵀ(Dz_k − x), λα),  α = 1/L, L = ‖D‖₂²   (Moreau talk; sulam2018 §2.2)."""

    name = "ista"

    def __init__(self, problem: Lasso, step: float | None = None):
        self.problem = problem
        self.alpha = 1.0 / problem.op.lipschitz if step is None else float(step)
        self.grad_step = GradientStep(problem.op, self.alpha)
        self.thresh = problem.lam * self.alpha

    def init(self, Y, X0):
        z = torch.zeros(Y.shape[0], self.problem.op.n, dtype=Y.dtype, device=Y.device) if X0 is None else X0.clone()
        return {"x": z, "b": self.grad_step.offset(Y)}

    def step(self, state, k):
        state["x"] = soft_threshold(self.grad_step(state["x"], state["b"]), self.thresh)


class FISTA(ISTA):
    """FISTA (Beck & Teboulle 2009): z_{k+1} = ST(w_k − α∇f(w_k), λα),
    t_{k+1} = (1 + √(1 + 4t_k²))/2,  w_{k+1} = z_{k+1} + (t_k − 1)/t_{k+1} (z_{k+1} − z_k).

    F(z_k) − F* ≤ 2L‖z₀ − z*‖²/(k+1)² (a test). ``restart=True`` resets t per problem
    when (w_k − z_{k+1})ᵀ(z_{k+1} − z_k) > 0 (O'Donoghue & Candès), which keeps the rate
    and is much faster once the support is found.
    """

    name = "fista"

    def __init__(self, problem, step=None, restart: bool = False):
        super().__init__(problem, step)
        self.restart = bool(restart)

    def init(self, Y, X0):
        state = super().init(Y, X0)
        state["w"] = state["x"].clone()
        state["t"] = torch.ones(Y.shape[0], 1, dtype=Y.dtype, device=Y.device)
        return state

    def step(self, state, k):
        z, w, t = state["x"], state["w"], state["t"]
        z_new = soft_threshold(self.grad_step(w, state["b"]), self.thresh)
        t_next = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        if self.restart:
            bad = ((w - z_new) * (z_new - z)).sum(1, keepdim=True) > 0
            t_next = torch.where(bad, torch.ones_like(t), t_next)
            t = torch.where(bad, torch.ones_like(t), t)
        state["w"] = z_new + ((t - 1) / t_next) * (z_new - z)
        state["x"], state["t"] = z_new, t_next


def support_lipschitz(D: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """L_S = ‖D_{·,S}‖₂² for each row's support S (batch, n) → (batch,), by batched eigvalsh."""
    m, n = D.shape
    mask = support.to(D.dtype)
    if m <= n:   # D diag(s) Dᵀ is m × m
        G = torch.einsum("in,bn,jn->bij", D, mask, D)
    else:        # diag(s) DᵀD diag(s) is n × n
        G = (D.T @ D)[None] * mask[:, :, None] * mask[:, None, :]
    return torch.linalg.eigvalsh(G)[:, -1]


class OISTA(ISTA):
    """Oracle ISTA (Moreau talk, "OISTA: Majoration-Minimization"):

    with S = supp(z_k) and L_S = ‖D_{·,S}‖₂², try y = ST(z_k − Dᵀ(Dz_k − x)/L_S, λ/L_S);
    accept it if supp(y) ⊆ S, else take the ISTA step with 1/L. L_S ≤ L, so steps are
    longer; L_S is recomputed only for the problems whose support changed.
    """

    name = "oista"

    def __init__(self, problem, step=None):
        super().__init__(problem, step)
        if not isinstance(problem.op, DenseOperator):
            raise ValueError("oista needs a dense dictionary (it computes ‖D_S‖₂ per support)")
        self.D = problem.op.A

    def init(self, Y, X0):
        state = super().init(Y, X0)
        state["aty"] = self.problem.op.adjoint(Y)
        supp = state["x"] != 0
        state["support"] = supp
        state["L_S"] = support_lipschitz(self.D, supp)
        return state

    def step(self, state, k):
        z, supp, L_S = state["x"], state["support"], state["L_S"]
        grad = self.problem.op.normal(z) - state["aty"]
        ok = L_S > 0
        step = torch.where(ok, 1.0 / L_S.clamp_min(1e-300), torch.full_like(L_S, self.alpha))[:, None]
        y = soft_threshold(z - step * grad, self.problem.lam * step)
        accept = ok & ~((y != 0) & ~supp).any(1)
        if not bool(accept.all()):
            fallback = soft_threshold(z - self.alpha * grad, self.thresh)
            y = torch.where(accept[:, None], y, fallback)
        new_supp = y != 0
        changed = (new_supp != supp).any(1)
        if bool(changed.any()):
            L_S = L_S.clone()
            L_S[changed] = support_lipschitz(self.D, new_supp[changed])
        state["x"], state["support"], state["L_S"] = y, new_supp, L_S
