"""Multi-layer basis pursuit (sulam2018): ML-ISTA, ML-FISTA, ADMM and layered BP, any number of layers.

All solve (or, for layered BP, approximate) P_ML of :class:`unrolled.problems.MLBP`,

    min_γ ½‖y − D_(1,L)γ‖² + Σ_{i<L} λ_i‖D_(i+1,L)γ‖₁ + λ_L‖γ‖₁     (sulam2018 eq. 6),

on row batches. Method classes follow :class:`unrolled.protocols.SolverMethod`
(``__init__(problem, **options)``, ``init(Y, X0) -> state``, ``step(state, k)``,
``state["x"]`` = γ_L); :func:`unrolled.solvers.ml_bp` is the public entry point (``unrolled.ml_bp``).

What each converges to (measured in tests/test_mlbp.py):

* ``ml-ista`` / ``ml-fista``: the fixed point of the ML-ISTA map T of :class:`MLBP`
  (stop rule: ``MLBP.certificate``, the relative fixed-point residual). That point is
  within O(μ) of the minimiser of F (TPAMI theorem, sulam2019 talk "Convergence for
  ML-ISTA": F − F* ≤ ηε + (β + κt)μ);
  ``MLBP.duality_gap`` bounds F − F* from above.
* ``admm``: the exact minimiser (stop rule: relative duality gap built from ADMM's own
  dual variables, which tends to 0).
* ``layered-bp``: not P_ML at all but the layer-by-layer pursuit of [23] (Papyan et al.),
  γ̂_i = argmin ½‖γ̂_{i−1} − D_iγ‖² + λ_i‖γ‖₁, γ̂_0 = y.
"""

from __future__ import annotations

import torch

from .._validate import choice, nonnegative_float
from ..problems import MLBP, Lasso, ratio
from ._common import (
    GradientStep,
    NormalPair,
    extrapolate,
    fista_momentum,
    momentum_state,
    restart_test,
    soft_threshold,
    starting_point,
)
from .lasso import ista_step


def representations(ops, G: torch.Tensor) -> list[torch.Tensor]:
    """[γ̂_0 = D_(1,L)γ, γ̂_1, …, γ̂_L = γ] for rows γ (batch, n_L): γ̂_{i−1} = D_iγ̂_i."""
    hats = [G]
    for op in reversed(ops):
        hats.append(op.forward(hats[-1]))
    return hats[::-1]


def ml_ista_layers(hats, Y, ops, steps, thresholds, *, nonneg: bool = False, rho: float = 1.0, previous=None):
    """The layers of one ML-ISTA step T(γ) (sulam2018 Algorithm 2, TPAMI form), written once for the
    solver (analytic parameters) and the networks (learned ones): with z_0 = y,

        v_i = γ̂_i − η_i D_iᵀ(γ̂_{i−1} − z_{i−1}),   z_i = η(v_i, θ_i),   i = 1..L,   T(γ) = z_L.

    Parameters
    ----------
    hats : list of L + 1 tensors or None
        :func:`representations` of γ; None stands for γ = 0, where v_i = η_i D_iᵀz_{i−1}: the
        feed-forward pass z_i = η(η_i D_iᵀz_{i−1}, θ_i) (the talk's γ₂ = ReLU(μ₂D₂ᵀReLU(μ₁D₁ᵀy + b₁) + b₂)).
    Y : tensor (batch, n_0)
    ops : L operators D_i of shape (n_{i−1}, n_i) (fixed or learned)
    steps : L floats or scalar tensors η_i
    thresholds : L floats or tensors θ_i broadcasting against (batch, n_i) (μ_iλ_i for the solver)
    nonneg : bool
        η is the prox of θ‖·‖₁ + ι_{≥0}, (v − θ)₊, instead of soft thresholding.
    rho : float in [0, 1]
        The layer-wise relaxation of sulam2018 Supplementary B: with the previous step's layer outputs
        ``previous`` = [γ_1, …, γ_L] (tensors (batch, n_i)), γ̂_i ← ργ̂_i + (1 − ρ)γ_i and
        v_i = γ̂_i − η_i D_iᵀ(D_iγ̂_i − z_{i−1}). ρ = 1 (default) is T; ρ = 0 makes each layer one
        proximal-gradient step on its own pursuit ½‖z_{i−1} − D_iγ‖² + λ_i‖γ‖₁ (the cascade of
        :class:`LayeredBP`).

    Yields
    ------
    (v_i, z_i) : tensors (batch, n_i), the pre-threshold and the output of layer i.
    """
    z = Y
    for i, (op, eta, theta) in enumerate(zip(ops, steps, thresholds), start=1):
        if hats is None:
            v = eta * op.adjoint(z)
        elif rho == 1:
            v = hats[i] - eta * op.adjoint(hats[i - 1] - z)
        else:
            hat = torch.lerp(previous[i - 1], hats[i], rho)
            v = hat - eta * op.adjoint(op.forward(hat) - z)
        z = soft_threshold(v, theta, nonneg=nonneg)
        yield v, z


def _zeros(problem, Y, X0):
    return starting_point(Y, X0, problem.ops[-1].n)


class MLISTA:
    """ML-ISTA (sulam2018 Algorithm 2 / eq. 5, TPAMI step sizes): γ_{k+1} = T(γ_k).

    T and its steps (μ_i, t) live in the problem (:class:`unrolled.problems.MLBP`), since
    the fixed point depends on them. For λ_1 = … = λ_{L−1} = 0 this is exactly ISTA on
    D_(1,L) with step μ_L (a test).
    """

    name = "ml-ista"

    def __init__(self, problem: MLBP):
        self.problem = problem

    def init(self, Y, X0):
        return {"x": _zeros(self.problem, Y, X0), "y": Y}

    def step(self, state, k):
        state["x"] = self.problem.ml_ista_map(state["x"], state["y"])


class MLFISTA(MLISTA):
    """ML-FISTA (sulam2018 Algorithm 3): γ_{k+1} = T(w_k), t_{k+1} = (1 + √(1 + 4t_k²))/2,
    w_{k+1} = γ_{k+1} + (t_k − 1)/t_{k+1} (γ_{k+1} − γ_k).

    (Algorithm 3 as printed writes the weight t_k/(t_{k+1} − 1); the proof in §A.2 and
    Beck–Teboulle use (t_k − 1)/t_{k+1}, which is what is implemented.) ``restart=True``
    resets t per problem when (w_k − γ_{k+1})ᵀ(γ_{k+1} − γ_k) > 0 (O'Donoghue–Candès).
    """

    name = "ml-fista"

    def __init__(self, problem: MLBP, restart: bool = False):
        super().__init__(problem)
        self.restart = bool(restart)

    def init(self, Y, X0):
        state = super().init(Y, X0)
        state["w"], state["t"] = momentum_state(state["x"])
        return state

    def step(self, state, k):
        g, w, t = state["x"], state["w"], state["t"]
        g_new = self.problem.ml_ista_map(w, state["y"])
        state["t"], beta = fista_momentum(t, restart_test(w, g_new, g) if self.restart else None)
        state["w"] = extrapolate(g_new, g, beta)
        state["x"] = g_new


def _products(problem: MLBP):
    """Dense P_i = D_(i+1,L) (n_i × n_L) for i = 0..L−1 (P_0 = D_(1,L))."""
    P = [problem.ops[-1].matrix()]
    for op in reversed(problem.ops[:-1]):
        P.append(op.matrix() @ P[-1])
    return P[::-1]


class ADMM:
    """ADMM for P_ML (sulam2018 Algorithm 1), generalised to L layers by splitting
    z_i = D_(i+1,L)γ for every analysis term i < L (scaled duals u_i):

        γ ← argmin ½‖y − D_(1,L)γ‖² + (ρ/2)Σ_i‖z_i − D_(i+1,L)γ + u_i‖² + λ_L‖γ‖₁   (inner BP)
        z_i ← ST(D_(i+1,L)γ − u_i, λ_i/ρ),   u_i ← u_i + z_i − D_(i+1,L)γ.

    The inner BP is solved by FISTA (``inner="fista"``) or ISTA (``inner="ista"``) on the
    merged quadratic ½γᵀMγ − bᵀγ, M = D_(1,L)ᵀD_(1,L) + ρΣ_iD_(i+1,L)ᵀD_(i+1,L), warm-started
    at the previous γ, until the largest relative prox-gradient residual ‖T(w) − w‖∞/‖T(w)‖∞ of
    any row is ≤ ``inner_tol`` or
    ``inner_iter`` steps (momentum restarts every outer iteration). ``rho`` starts at
    ‖D_(1,L)‖² unless given; with ``adaptive=True`` it is rebalanced by Boyd et al.'s residual
    balancing (§3.4.1: ×2 when the primal residual ‖z − Dγ‖ exceeds 10× the dual one
    ρ‖Dᵀ(z − z_prev)‖, ÷2 in the opposite case, u rescaled) during the first ``adapt_until``
    iterations, then frozen, so the usual convergence theory applies (the best fixed ρ
    depends strongly on λ, hence the default). Needs dense
    dictionaries. Its certificate is the relative duality gap (F(γ) − D)/F(γ) with the
    analysis duals w_i = −ρu_i, which satisfy |w_i| ≤ λ_i and w_i ∈ λ_i∂‖z_i‖₁ by the
    z-update; it tends to 0 at the minimiser. ``state["inner"]`` counts inner iterations.
    """

    name = "admm"
    certified = "relative duality gap"

    def __init__(
        self,
        problem: MLBP,
        rho: float | None = None,
        inner: str = "fista",
        inner_iter: int = 1000,
        inner_tol: float = 1e-6,
        adaptive: bool = True,
        adapt_until: int = 200,
    ):
        self.problem = problem
        self.inner = choice(inner, "inner", ("fista", "ista"))
        self.inner_iter = int(inner_iter)
        if self.inner_iter < 1:
            raise ValueError(f"inner_iter must be a positive integer, got {inner_iter!r}")
        self.inner_tol = nonnegative_float(inner_tol, "inner_tol")
        self.adaptive, self.adapt_until = bool(adaptive), int(adapt_until)
        self.P = _products(problem)
        A = self.P[0]
        self.rho0 = (
            float(torch.linalg.matrix_norm(A.double(), ord=2) ** 2)
            if rho is None
            else nonnegative_float(rho, "rho", strict=True)
        )
        self.AtA = A.T @ A
        self.PtP = sum((P.T @ P for P in self.P[1:]), torch.zeros_like(self.AtA))
        self._systems = {}
        self.n_aux = problem.L - 1

    def _system(self, rho):
        """(M, ‖M‖₂) of the inner BP for this ρ (cached)."""
        if rho not in self._systems:
            M = self.AtA + rho * self.PtP
            self._systems[rho] = (M, float(torch.linalg.eigvalsh(M.double())[-1]) * (1 + 1e-12))
        return self._systems[rho]

    def init(self, Y, X0):
        g = _zeros(self.problem, Y, X0)
        state = {"x": g, "y": Y, "aty": Y @ self.P[0], "inner": 0, "rho": self.rho0}
        for i in range(1, self.n_aux + 1):
            z = g @ self.P[i].T
            state[f"z{i}"] = z
            state[f"u{i}"] = torch.zeros_like(z)
        return state

    def _inner(self, g, b, M, LM):
        alpha, thresh = 1.0 / LM, self.problem.lams[-1] / LM
        quadratic = GradientStep(NormalPair(M, None), alpha)  # the gradient step on ½γᵀMγ − bᵀγ
        w, t, used = g, 1.0, 0
        for used in range(1, self.inner_iter + 1):  # noqa: B007 (the count is returned)
            g_new = ista_step(w, alpha * b, quadratic, thresh)
            # prox-gradient residual at the point where the gradient was taken (the gradient
            # mapping, for ISTA and FISTA alike), relative to the iterate
            change = ratio((g_new - w).abs().amax(1), g_new.abs().amax(1))
            if self.inner == "fista":
                t, beta = fista_momentum(t)
                w = extrapolate(g_new, g, beta)
            else:
                w = g_new
            g = g_new
            if float(change.max()) <= self.inner_tol:
                break
        return g, used

    def step(self, state, k):
        rho = state["rho"]
        M, LM = self._system(rho)
        b = state["aty"]
        for i in range(1, self.n_aux + 1):
            b = b + rho * ((state[f"z{i}"] + state[f"u{i}"]) @ self.P[i])
        g, j = self._inner(state["x"], b, M, LM)
        state["inner"] += j
        r2 = s2 = 0.0
        for i, lam in enumerate(self.problem.lams[:-1], start=1):
            Pg = g @ self.P[i].T
            z = soft_threshold(Pg - state[f"u{i}"], lam / rho)
            if self.adaptive and k <= self.adapt_until:
                r2 += float((z - Pg).pow(2).sum())
                s2 += float((rho * ((z - state[f"z{i}"]) @ self.P[i])).pow(2).sum())
            state[f"z{i}"], state[f"u{i}"] = z, state[f"u{i}"] + z - Pg
        state["x"] = g
        if self.adaptive and k <= self.adapt_until and self.n_aux:
            factor = 2.0 if r2 > 100 * s2 else 0.5 if s2 > 100 * r2 else 1.0
            if factor != 1.0:
                state["rho"] = rho * factor
                for i in range(1, self.n_aux + 1):
                    state[f"u{i}"] = state[f"u{i}"] / factor

    def duals(self, state):
        return [-state["rho"] * state[f"u{i}"] for i in range(1, self.n_aux + 1)]

    def certificate(self, state):
        g, y = state["x"], state["y"]
        obj = self.problem.objective(g, y)
        gap = obj - self.problem.dual_value(g, y, self.duals(state))
        return ratio(gap.clamp_min(0), obj)


class LayeredBP:
    """Layered basis pursuit ([23] Papyan–Romano–Elad; sulam2018 §2.1) as one step:

        γ̂_i = argmin_γ ½‖γ̂_{i−1} − D_iγ‖² + λ_i‖γ‖₁,   γ̂_0 = y,   i = 1..L,

    iterated as a cascade: each step makes one FISTA (``momentum=True``) or ISTA step on
    every layer, layer i using the freshly updated γ̂_{i−1} as its target, so a depth-K
    unrolling is the LayeredBP network. Fixed point = the sequential layered pursuit
    (``ml_bp(..., method="layered-bp")`` computes that one by ``ur.lasso`` layer by layer).
    Certificate: the largest relative Lasso duality gap over the layers.
    """

    name = "layered-bp"
    certified = "largest relative Lasso duality gap of the layers (layered pursuit, not P_ML)"

    def __init__(self, problem: MLBP, momentum: bool = True):
        self.problem = problem
        self.momentum = bool(momentum)
        self.lassos = [Lasso(op, lam) for op, lam in zip(problem.ops, problem.lams)]
        self.grad_steps = [GradientStep(op, 1.0 / op.lipschitz if op.lipschitz > 0 else 0.0) for op in problem.ops]

    def init(self, Y, X0):
        L, state = self.problem.L, {"y": Y}
        for i, op in enumerate(self.problem.ops, start=1):
            z = starting_point(Y, X0 if i == L else None, op.n)
            state[f"z{i}"], state[f"w{i}"] = z, z.clone()
            state[f"t{i}"] = torch.ones(Y.shape[0], 1, dtype=Y.dtype, device=Y.device)
        state["x"] = state[f"z{L}"]
        return state

    def step(self, state, k):
        target = state["y"]
        for i, (grad_step, lam) in enumerate(zip(self.grad_steps, self.problem.lams), start=1):
            z, w, t = state[f"z{i}"], state[f"w{i}"], state[f"t{i}"]
            z_new = ista_step(w if self.momentum else z, grad_step.offset(target), grad_step, grad_step.alpha * lam)
            if self.momentum:
                state[f"t{i}"], beta = fista_momentum(t)
                state[f"w{i}"] = extrapolate(z_new, z, beta)
            state[f"z{i}"] = z_new
            target = z_new
        state["x"] = state[f"z{self.problem.L}"]

    def certificate(self, state):
        target, worst = state["y"], None
        for i, lasso in enumerate(self.lassos, start=1):
            c = lasso.certificate(state[f"z{i}"], target)
            worst = c if worst is None else torch.maximum(worst, c)
            target = state[f"z{i}"]
        return worst


METHODS = {"ml-ista": MLISTA, "ml-fista": MLFISTA, "admm": ADMM, "layered-bp": LayeredBP}


__all__ = ["representations", "ml_ista_layers", "MLISTA", "MLFISTA", "ADMM", "LayeredBP", "METHODS"]
