"""Multi-layer basis pursuit (sulam2018): ML-ISTA, ML-FISTA, ADMM and layered BP, any number of layers.

All solve (or, for layered BP, approximate) P_ML of :class:`unrolled.problems.MLBP`,

    min_γ ½‖y − D_(1,L)γ‖² + Σ_{i<L} λ_i‖D_(i+1,L)γ‖₁ + λ_L‖γ‖₁     (sulam2018 eq. 6),

on row batches. Method classes follow :class:`unrolled.protocols.SolverMethod`
(``__init__(problem, **options)``, ``init(Y, X0) -> state``, ``step(state, k)``,
``state["x"]`` = γ_L); :func:`ml_bp` is the public entry point (``unrolled.ml_bp``).

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

from .._validate import as_batch, choice, nonnegative_float
from ..operators import as_operator
from ..problems import MLBP, Lasso
from ..solve import Result, iterate
from ._common import (TINY, GradientStep, NormalPair, extrapolate, fista_momentum, momentum_state, restart_test,
                      soft_threshold, starting_point)
from .lasso import ista_step


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

    def __init__(self, problem: MLBP, rho: float | None = None, inner: str = "fista", inner_iter: int = 1000,
                 inner_tol: float = 1e-6, adaptive: bool = True, adapt_until: int = 200):
        self.problem = problem
        self.inner = choice(inner, "inner", ("fista", "ista"))
        self.inner_iter = int(inner_iter)
        if self.inner_iter < 1:
            raise ValueError(f"inner_iter must be a positive integer, got {inner_iter!r}")
        self.inner_tol = nonnegative_float(inner_tol, "inner_tol")
        self.adaptive, self.adapt_until = bool(adaptive), int(adapt_until)
        self.P = _products(problem)
        A = self.P[0]
        self.rho0 = float(torch.linalg.matrix_norm(A.double(), ord=2) ** 2) if rho is None else \
            nonnegative_float(rho, "rho", strict=True)
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
        quadratic = GradientStep(NormalPair(M, None), alpha)   # the gradient step on ½γᵀMγ − bᵀγ
        w, t, j = g, 1.0, 0
        for j in range(1, self.inner_iter + 1):
            g_new = ista_step(w, alpha * b, quadratic, thresh)
            # prox-gradient residual at the point where the gradient was taken (the gradient
            # mapping, for ISTA and FISTA alike), relative to the iterate
            change = (g_new - w).abs().amax(1) / g_new.abs().amax(1).clamp_min(TINY)
            if self.inner == "fista":
                t, beta = fista_momentum(t)
                w = extrapolate(g_new, g, beta)
            else:
                w = g_new
            g = g_new
            if float(change.max()) <= self.inner_tol:
                break
        return g, j

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
        return gap.clamp_min(0) / obj.clamp_min(TINY)


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

    def __init__(self, problem: MLBP, momentum: bool = True):
        self.problem = problem
        self.momentum = bool(momentum)
        self.lassos = [Lasso(op, lam) for op, lam in zip(problem.ops, problem.lams)]
        self.grad_steps = [GradientStep(op, 1.0 / max(op.lipschitz, TINY)) for op in problem.ops]

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
PROBLEM_OPTIONS = ("steps", "mu_scale")


def _is_seq(v) -> bool:
    return isinstance(v, (list, tuple))


def _parse(args):
    """Both call forms → (Ds, Y, lams, method-or-None)."""
    if not args:
        raise TypeError("ml_bp needs dictionaries, Y and λ: ml_bp([D1, D2], Y, [lam1, lam2]) or "
                        "ml_bp(D1, D2, Y, lam1, lam2)")
    if _is_seq(args[0]):
        if len(args) not in (3, 4):
            raise TypeError(f"ml_bp(Ds, Y, lams[, method]) takes 3 or 4 positional arguments, got {len(args)}")
        Ds, Y, lams = args[:3]
        if not _is_seq(lams):
            lams = [lams]
        return list(Ds), Y, list(lams), (args[3] if len(args) == 4 else None)
    if len(args) % 2 == 0 or len(args) < 3:
        raise TypeError("ml_bp(D1, ..., DL, Y, lam1, ..., lamL) takes 2L + 1 positional arguments, "
                        f"got {len(args)}")
    L = (len(args) - 1) // 2
    return list(args[:L]), args[L], list(args[L + 1:]), None


def ml_bp(*args, method: str = "ml-fista", tol: float = 1e-6, max_iter: int = 10_000, x0=None,
          check_every: int = 10, progress: bool = False, **options) -> Result:
    """Solve multi-layer basis pursuit (sulam2018 eq. 6) for every row y of ``Y``:

        min_γ ½‖y − D_(1,L)γ‖² + Σ_{i<L} λ_i‖D_(i+1,L)γ‖₁ + λ_L‖γ‖₁.

    Call as ``ml_bp([D1, ..., DL], Y, [lam1, ..., lamL])`` or ``ml_bp(D1, D2, Y, lam1, lam2)``
    (any L); D_i has shape (n_{i−1}, n_i), Y is (batch, n_0) or a vector; returns
    ``Result`` with x = γ_L (batch, n_L) in the caller's kind.

    method: ``"ml-fista"`` (Algorithm 3; ``restart``), ``"ml-ista"`` (Algorithm 2),
    ``"admm"`` (Algorithm 1; ``rho``, ``inner="fista"|"ista"``, ``inner_iter``, ``inner_tol``)
    or ``"layered-bp"`` (the layer-wise pursuit of [23], each layer by ``ur.lasso`` FISTA to
    ``tol``; x0 warm-starts the deepest layer). ``steps`` (L step sizes η_i) or ``mu_scale``
    (μ = mu_scale/‖D_1‖²) set the ML-ISTA map (see :class:`unrolled.problems.MLBP`).
    Stopping: ML-(F)ISTA on the relative fixed-point residual ``MLBP.certificate`` ≤ tol,
    ADMM on its relative duality gap ≤ tol, layered BP on every layer's relative gap ≤ tol.
    """
    Ds, Y, lams, pos_method = _parse(args)
    if pos_method is not None:
        method = pos_method
    choice(method, "method", METHODS)
    if len(lams) != len(Ds):
        raise ValueError(f"need one λ per layer: got {len(Ds)} dictionaries and {len(lams)} λ values")
    lams = [nonnegative_float(v, f"lam{i}") for i, v in enumerate(lams, start=1)]
    Y_t, kind = as_batch(Y, "Y")
    ops = [as_operator(D, name=f"D{i}") for i, D in enumerate(Ds, start=1)]
    dtype = Y_t.dtype
    for op in ops:
        dtype = torch.promote_types(dtype, op.dtype)
    ops = [as_operator(op, dtype=dtype, device=Y_t.device) for op in ops]
    for i in range(1, len(ops)):
        if ops[i - 1].n != ops[i].m:
            raise ValueError(f"D{i} has {ops[i - 1].n} columns but D{i + 1} has {ops[i].m} rows: "
                             f"D_i must be (n_(i-1), n_i) so that D{i} @ D{i + 1} is defined")
    Y_t, _ = as_batch(Y_t, "Y", ops[0].m, dtype=dtype)
    X0 = None
    if x0 is not None:
        X0, _ = as_batch(x0, "x0", ops[-1].n, dtype=dtype, device=Y_t.device)
        if X0.shape[0] == 1 and Y_t.shape[0] > 1:
            X0 = X0.expand(Y_t.shape[0], -1)
        if X0.shape[0] != Y_t.shape[0]:
            raise ValueError(f"x0 has {X0.shape[0]} rows but Y has {Y_t.shape[0]}")
    prob_opts = {k: options.pop(k) for k in PROBLEM_OPTIONS if k in options}
    problem = MLBP(ops, lams, **prob_opts)
    if method == "layered-bp":
        return _layered(problem, Y_t, X0, tol=tol, max_iter=max_iter, check_every=check_every,
                        progress=progress, kind=kind, **options)
    return iterate(METHODS[method](problem, **options), problem, Y_t, X0, tol=tol, max_iter=max_iter,
                   check_every=check_every, progress=progress, kind=kind)


def _layered(problem: MLBP, Y, X0, *, tol, max_iter, check_every, progress, kind, **options) -> Result:
    """Layered BP by ``ur.lasso`` (FISTA unless ``inner="ista"``) one layer after the other."""
    import numpy as np

    from ..solvers import lasso
    inner = options.pop("inner", "fista")
    state, target, n_iter, conv, layers, elapsed = {"y": Y}, Y, 0, True, [], 0.0
    for i, (op, lam) in enumerate(zip(problem.ops, problem.lams), start=1):
        res = lasso(op, target, lam, method=inner, tol=tol, max_iter=max_iter, check_every=check_every,
                    progress=progress, x0=X0 if i == problem.L else None, **options)
        target = state[f"z{i}"] = res.x
        n_iter = n_iter + torch.as_tensor(res.n_iter)
        conv = conv & torch.as_tensor(res.converged)
        elapsed += float(res.history["time"][-1])
        layers.append(res.history)
    G = target
    cert = LayeredBP(problem).certificate(state)
    obj0, obj = problem.objective(torch.zeros_like(G), Y), problem.objective(G, Y)
    history = {"iteration": np.asarray([0, int(n_iter.max())]), "time": np.asarray([0.0, elapsed]),
               "objective": torch.stack([obj0, obj]).cpu().numpy(),
               "certificate": torch.stack([torch.full_like(cert, float("inf")), cert]).cpu().numpy(),
               "layers": layers}
    n_iter, conv = n_iter.numpy(), conv.numpy()
    if kind.vector:
        history["objective"], history["certificate"] = history["objective"][:, 0], history["certificate"][:, 0]
        return Result(kind.restore(G), int(n_iter[0]), bool(conv[0]), history)
    return Result(kind.restore(G), n_iter, conv, history)


__all__ = ["ml_bp", "MLISTA", "MLFISTA", "ADMM", "LayeredBP", "METHODS"]
