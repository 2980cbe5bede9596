"""Lasso steps: ISTA, FISTA, oracle ISTA (OISTA) and ADMM.

The ISTA and ADMM updates are written once (:func:`ista_step`, :func:`admm_step`); the solver
methods call them with the analytic parameters and each layer of the LISTA family and of LADMM
(``nets/lista.py``) with its trainable ones.
"""

from __future__ import annotations

import torch

from .._validate import nonnegative_float
from ..operators import DenseOperator
from ..problems import Lasso
from ._common import (
    GradientStep,
    fista_momentum,
    momentum_state,
    soft_threshold,
    starting_point,
)


def ista_step(z, b, affine, theta, *, nonneg: bool = False, keep: int = 0):
    """z⁺ = η(W z + b, θ)   (ISTA, Daubechies et al. 2004; LISTA, Gregor & LeCun 2010 eq. 3).

    ``affine(z, b)`` computes the affine part (z None: z = 0), η is :func:`soft_threshold`
    with threshold θ (float or tensor), ``nonneg`` and ``keep`` (support selection).
    """
    return soft_threshold(affine(z, b), theta, nonneg=nonneg, keep=keep)


class ISTA:
    """z_{k+1} = ST(z_k − α Dᵀ(Dz_k − x), λα),  α = 1/L, L = ‖D‖₂²   (Moreau talk; sulam2018 §2.2)."""

    name = "ista"

    def __init__(self, problem: Lasso, step: float | None = None):
        self.problem = problem
        self.alpha = 1.0 / problem.op.lipschitz if step is None else nonnegative_float(step, "step", strict=True)
        self.grad_step = GradientStep(problem.op, self.alpha)
        self.thresh = problem.lam * self.alpha
        self.nonneg = problem.positive  # the non-negative Lasso's prox: (u − θ)₊

    def init(self, Y, X0):
        return {"x": starting_point(Y, X0, self.problem.op.n), "b": self.grad_step.offset(Y)}

    def step(self, state, k):
        state["x"] = ista_step(state["x"], state["b"], self.grad_step, self.thresh, nonneg=self.nonneg)


class FISTA(ISTA):
    """FISTA (Beck & Teboulle 2009): z_{k+1} = ST(w_k − α∇f(w_k), λα),
    t_{k+1} = (1 + √(1 + 4t_k²))/2,  w_{k+1} = z_{k+1} + (t_k − 1)/t_{k+1} (z_{k+1} − z_k).

    F(z_k) − F* ≤ 2L‖z₀ − z*‖²/(k+1)² (a test). ``restart=True`` resets t per problem
    when (w_k − z_{k+1})ᵀ(z_{k+1} − z_k) > 0 (O'Donoghue & Candès), which keeps the rate
    and is much faster once the support is found.

    Speed options (the certificate, in the problem's dtype, still decides convergence):
      polish:    every ``polish`` iterations (``True`` = 20), replace z by the exact Lasso
                 solution on its support where the KKT conditions certify it, for the
                 rows whose support did not change since the previous attempt
                 (:func:`support_polish`), so rows stop once their support is right.
      precision: ``"float32"`` iterates in float32 (faster matmuls; see ``unrolled bench``) while the
                 certificate and the polish stay in float64; rows not converged after
                 ``low_iters`` iterations continue in full precision.
    """

    name = "fista"

    def __init__(
        self,
        problem,
        step=None,
        restart: bool = False,
        polish: int | bool = 0,
        precision: str | None = None,
        low_iters: int = 2000,
    ):
        super().__init__(problem, step)
        self.restart = bool(restart)
        self.polish = 20 if polish is True else int(polish)
        if self.polish < 0:
            raise ValueError(f"polish must be a non-negative integer or a bool, got {polish!r}")
        if self.polish and not isinstance(problem.op, DenseOperator):
            raise ValueError("polish needs a dense dictionary (it solves the KKT system on the support)")
        if precision not in (None, "float32", "float64"):
            raise ValueError(f"precision must be None, 'float32' or 'float64', got {precision!r}")
        self.low = precision == "float32" and problem.op.dtype != torch.float32
        self.low_iters = int(low_iters)
        if self.low:
            self.grad_low = GradientStep(problem.op.to(dtype=torch.float32), self.alpha)

    def init(self, Y, X0):
        state = super().init(Y, X0)
        if self.low:
            state["z"] = state["x"].float()
            state["b"] = state["b"].float()
            state["polished"] = torch.zeros(Y.shape[0], dtype=torch.bool, device=Y.device)
        state["w"], state["t"] = momentum_state(state.get("z", state["x"]))
        return state

    def sync(self, state):
        """Make ``state["x"]`` the current iterate in the problem's dtype (called before checks)."""
        if "z" in state:
            z = state["z"].to(state["x"].dtype)
            state["x"] = torch.where(state["polished"].unsqueeze(1), state["x"], z)

    def _to_full(self, state):
        self.sync(state)
        state["w"] = state["w"].to(state["x"].dtype)
        state["t"] = state["t"].to(state["x"].dtype)
        state["b"] = self.grad_step.offset(state["y"])
        del state["z"], state["polished"]

    def step(self, state, k):
        low = "z" in state
        if low and k > self.low_iters:
            self._to_full(state)
            low = False
        key = "z" if low else "x"
        z, w, t = state[key], state["w"], state["t"]
        z_new = ista_step(w, state["b"], self.grad_low if low else self.grad_step, self.thresh, nonneg=self.nonneg)
        delta = z_new - z  # once, for the restart test and the extrapolation (the step is memory-bound)
        restart = torch.linalg.vecdot(w - z_new, delta).unsqueeze(1) > 0 if self.restart else None
        state["t"], beta = fista_momentum(t, restart)
        state["w"] = torch.addcmul(z_new, beta, delta)
        state[key] = z_new
        if self.polish and k % self.polish == 0:
            self._polish(state, low)

    def _polish(self, state, low):
        """Polish the rows whose support has not changed since the last attempt."""
        z = state["z"].to(state["x"].dtype) if low else state["x"]
        supp = z != 0
        prev = state.get("supp_prev")
        state["supp_prev"] = supp
        if prev is None:
            return
        stable = (supp == prev).all(1)
        # a failed attempt is not repeated until the support changes
        tried = state.get("tried", torch.zeros_like(stable)) & stable
        todo = stable & ~tried
        if low:
            todo &= ~state["polished"]
        rows = todo.nonzero().squeeze(1)
        state["tried"] = tried | todo
        if len(rows) == 0:
            return
        op = self.problem.op
        zp, ok = support_polish(op.gram, op.adjoint(state["y"][rows]), z[rows], self.problem.lam)
        if bool(ok.any()):
            rows, zp = rows[ok], zp[ok]
            if low:  # the exact solution is kept in full precision for the certificate
                x, pol = state["x"].clone(), state["polished"].clone()
                x[rows], pol[rows] = zp, True
                state["x"], state["polished"] = x, pol
            z_keep = zp.to(state["w"].dtype)
            state["z" if low else "x"][rows] = z_keep
            state["w"][rows] = z_keep
            state["t"][rows] = 1.0


def support_polish(G: torch.Tensor, aty: torch.Tensor, Z: torch.Tensor, lam: float, chunk: int = 4096):
    """Exact Lasso solutions on the rows' supports, where the KKT conditions certify them.

    With S = supp(z) and σ = sign(z_S), the Lasso optimality conditions
    D_Sᵀ(y − D_S z_S) = λσ and ‖D_{S^c}ᵀ(y − D_S z_S)‖∞ ≤ λ (Fuchs 2004; Tibshirani 2013,
    "The lasso problem and uniqueness", eq. 5) give z_S = (D_SᵀD_S)⁻¹(D_Sᵀy − λσ).
    G = DᵀD (n × n) and aty = Dᵀy (batch, n). Returns (Z_p, ok): ok marks rows whose z_S
    keeps the signs σ and is dual-feasible, i.e. Z_p is a solution there (batched
    Cholesky on the compact |S| × |S| Grams gathered from G; rows with |S| > m skipped).
    """
    B, n = Z.shape
    S = Z != 0
    cnt = S.sum(1)
    out, ok = Z.clone(), torch.zeros(B, dtype=torch.bool, device=Z.device)
    cand = (cnt > 0).nonzero().squeeze(1)
    tiny = torch.finfo(Z.dtype).tiny
    for start in range(0, len(cand), chunk):
        rows = cand[start : start + chunk]
        Zc, ac, cc = Z[rows], aty[rows], cnt[rows]
        k = int(cc.max())
        order = torch.topk(S[rows].to(torch.int8), k, dim=1, sorted=True).indices  # the support first
        valid = torch.arange(k, device=Z.device) < cc.unsqueeze(1)
        sig = torch.sign(Zc.gather(1, order)) * valid
        rhs = ac.gather(1, order) * valid - lam * sig
        L, info = torch.linalg.cholesky_ex(_gather_gram(G, order, valid))
        zs = torch.cholesky_solve(rhs.unsqueeze(2), L).squeeze(2) * valid
        good = (info == 0) & ((torch.sign(zs) == sig) | ~valid).all(1)
        zp = torch.zeros_like(Zc).scatter_(1, order, zs)
        corr = ac - zp @ G
        good &= (corr.abs() <= lam * (1 + 1e-9) + tiny).all(1)
        out[rows[good]] = zp[good]
        ok[rows[good]] = True
    return out, ok


def support_lipschitz(D: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """L_S = ‖D_{·,S}‖₂² for each row's support S (batch, n) → (batch,), by batched eigvalsh."""
    m, n = D.shape
    mask = support.to(D.dtype)
    if m <= n:  # D diag(s) Dᵀ is m × m
        G = torch.einsum("in,bn,jn->bij", D, mask, D)
    else:  # diag(s) DᵀD diag(s) is n × n
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
        # the ISTA step with a precomputed gradient: its affine part is the shift z + (−s g)
        y = ista_step(z, -step * grad, torch.add, self.problem.lam * step)
        accept = ok & ~((y != 0) & ~supp).any(1)
        if not bool(accept.all()):
            fallback = ista_step(z, -self.alpha * grad, torch.add, self.thresh)
            y = torch.where(accept[:, None], y, fallback)
        new_supp = y != 0
        changed = (new_supp != supp).any(1)
        if bool(changed.any()):
            L_S = L_S.clone()
            L_S[changed] = support_lipschitz(self.D, new_supp[changed])
        state["x"], state["support"], state["L_S"] = y, new_supp, L_S


# -- ADMM ------------------------------------------------------------------------------------------


class RidgeSolve:
    """r ↦ (DᵀD + ρI)⁻¹ r for rows r, from the eigendecomposition DᵀD = V diag(e) Vᵀ computed once;
    ρ a float or a (trainable) tensor, so the map is differentiable in ρ."""

    def __init__(self, V: torch.Tensor, evals: torch.Tensor):
        self.V, self.evals = V, evals

    @classmethod
    def of(cls, op) -> RidgeSolve:
        """From the operator D (densified once)."""
        evals, V = torch.linalg.eigh(DenseOperator(op.matrix().detach()).gram)
        return cls(V, evals.clamp_min(0))

    def __call__(self, R: torch.Tensor, rho) -> torch.Tensor:
        return ((R @ self.V) / (self.evals + rho)) @ self.V.T

    def balanced_rho(self) -> float:
        """√(e_max e_min) over the non-zero eigenvalues e of DᵀD."""
        e_max = float(self.evals.max())
        positive = self.evals[self.evals > 1e-12 * e_max]
        return (e_max * float(positive.min())) ** 0.5 if e_max > 0 else 1.0


def admm_step(v, u, aty, solve, rho, theta):
    """One scaled ADMM iteration for min ½‖Dz − y‖² + λ‖v‖₁ s.t. z = v (Boyd et al. 2011, §6.4):

        z⁺ = (DᵀD + ρI)⁻¹(Dᵀy + ρ(v − u)),   v⁺ = ST(z⁺ + u, θ),   u⁺ = u + z⁺ − v⁺,

    θ = λ/ρ for the solver. ``solve(R, ρ)`` applies (DᵀD + ρI)⁻¹ (:class:`RidgeSolve`). Returns (v⁺, u⁺).
    """
    z = solve(aty + rho * (v - u), rho)
    v_new = soft_threshold(z + u, theta)
    return v_new, u + z - v_new


class ADMM:
    """ADMM for the Lasso (Boyd, Parikh, Chu, Peleato & Eckstein 2011, §6.4): :func:`admm_step` with a
    fixed ρ, by default the geometric mean √(e_max e_min) of the largest and smallest non-zero
    eigenvalues of DᵀD (the choice of Ghadimi, Teixeira, Shames & Johansson 2015 for quadratic
    problems; it scales with D², so the iterates do not depend on the scale of D). The iterate
    is v (sparse); the stop rule is the Lasso certificate (relative duality gap) of v.
    """

    name = "admm"

    def __init__(self, problem: Lasso, rho: float | None = None):
        self.problem = problem
        self.solve = RidgeSolve.of(problem.op)
        self.rho = self.solve.balanced_rho() if rho is None else nonnegative_float(rho, "rho", strict=True)

    def init(self, Y, X0):
        v = starting_point(Y, X0, self.problem.op.n)
        return {"x": v, "u": torch.zeros_like(v), "aty": self.problem.op.adjoint(Y)}

    def step(self, state, k):
        state["x"], state["u"] = admm_step(
            state["x"], state["u"], state["aty"], self.solve, self.rho, self.problem.lam / self.rho
        )


# -- working set with an exact sub-problem solver ----------------------------------------------------


def _gather_gram(G: torch.Tensor, order: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The compact Grams G[S, S] (batch, k, k) of index lists ``order`` (batch, k), identity on padding."""
    n = G.shape[0]
    Gs = torch.take(G, order.unsqueeze(2) * n + order.unsqueeze(1))
    Gs.masked_fill_(~(valid.unsqueeze(2) & valid.unsqueeze(1)), 0.0)
    Gs.diagonal(dim1=1, dim2=2).add_((~valid).to(G.dtype))
    return Gs


def signed_least_squares(G, aty, S, sign, lam):
    """t_S = (D_SᵀD_S)⁻¹(D_Sᵀy − λθ_S) on each row's working set S with signs θ (0 off S).

    The minimiser of ½‖Dz − y‖² + λθᵀz over z supported on S (the Lasso objective wherever
    sign(z_S) = θ_S; Osborne, Presnell & Turlach 2000, "On the LASSO and its dual", §3).
    G = DᵀD (n, n), aty = Dᵀy (batch, n), S (batch, n) bool, sign (batch, n).
    Returns (t (batch, n), ok (batch,) bool: the Gram D_SᵀD_S was positive definite).
    """
    B, n = S.shape
    cnt = S.sum(1)
    k = max(int(cnt.max()), 1)
    order = torch.topk(S.to(torch.int8), k, dim=1, sorted=True).indices  # the members of S first
    valid = torch.arange(k, device=S.device) < cnt.unsqueeze(1)
    rhs = (aty.gather(1, order) - lam * sign.gather(1, order)) * valid
    L, info = torch.linalg.cholesky_ex(_gather_gram(G, order, valid))
    ts = torch.cholesky_solve(rhs.unsqueeze(2), L).squeeze(2) * valid
    return torch.zeros_like(aty).scatter_(1, order, ts), info == 0


class WorkingSet:
    """Working-set Lasso with an exact sub-problem solver, batched (``ur.lasso(..., "working-set")``).

    ``warm`` FISTA iterations (restart, support polish, float32 iterations for float64 data) give a
    first working set S, the iterate's support (its m largest entries at most). Each following
    iteration is one round of the primal active-set method of Osborne, Presnell & Turlach (2000,
    "On the LASSO and its dual", §3), the Lasso's Lawson–Hanson, on the whole batch at once:

    1. on S with the signs θ fixed the Lasso is a least-squares problem,
       t_S = (D_SᵀD_S)⁻¹(D_Sᵀy − λθ_S) (:func:`signed_least_squares`, a padded batched Cholesky);
    2. z moves toward t as far as the signs allow, z ← z + α(t − z), α = min(1, min_j z_j/(z_j − t_j))
       over the j whose t_j has the wrong sign, and those reaching 0 leave S (the objective decreases);
    3. where t was reached, the dual constraint ‖Dᵀ(y − Dz)‖∞ ≤ λ is checked on all columns: the
       ``grow`` most violating columns join S with θ_j = sign(d_j); with none the KKT conditions hold.

    Rows certified by the relative duality gap leave the batch (as for every method). A row whose
    round cannot go on (singular D_SᵀD_S, no room left in S, ``max_rounds`` spent) stops
    uncertified (``converged`` False). ``positive`` admits only d_j > λ (θ = +1). Needs a dense D
    and λ > 0. Not the default route: on the CPU a round's batched Cholesky costs many FISTA
    iterations, and at 64×256 neither route is faster at every thread count (README, Speed).

    Parameters
    ----------
    problem : Lasso
        The problem (dense D, λ > 0).
    warm : int
        FISTA iterations before the first round (0: rounds from the start point's support).
    grow : int
        Columns added per round at most.
    precision : {"float32", None}
        Iterate the warm-up in float32 for float64 data (the rounds stay in the problem's dtype).
    """

    name = "working-set"
    chunk = 4096  # rows per padded Cholesky (k² numbers per row, k ≤ min(m, n))

    def __init__(self, problem: Lasso, warm: int = 100, grow: int = 8, precision: str | None = "float32"):
        if not isinstance(problem.op, DenseOperator):
            raise ValueError("working-set needs a dense dictionary (it solves the sub-problems by Cholesky)")
        if problem.lam <= 0:
            raise ValueError("working-set needs lam > 0 (use fista for least squares)")
        self.problem = problem
        self.warm, self.grow = int(warm), int(grow)
        if self.warm < 0 or self.grow < 1:
            raise ValueError(f"warm must be >= 0 and grow >= 1, got warm={warm!r}, grow={grow!r}")
        self.max_rounds = 2 * min(problem.op.shape) + 10
        low = precision if problem.op.dtype == torch.float64 else None
        polish = 0 if problem.positive else 20
        self.fista = FISTA(problem, restart=True, polish=polish, precision=low) if self.warm else None

    def init(self, Y, X0):
        if self.fista is None:
            state = {"x": starting_point(Y, X0, self.problem.op.n)}
            self._start(state)
        else:
            state = self.fista.init(Y, X0)
        state["aty"] = self.problem.op.adjoint(Y)
        return state

    def sync(self, state):
        if "ws" not in state:
            self.fista.sync(state)

    def _start(self, state):
        """The first working set: the iterate's support (its m largest entries at most)."""
        if self.fista is not None:
            self.fista.sync(state)
            for key in ("z", "w", "t", "b", "polished", "supp_prev", "tried"):
                state.pop(key, None)
        x, m = state["x"], self.problem.op.m
        if x.shape[1] > m:
            keep = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.abs().topk(m, dim=1).indices, True)
            x = torch.where(keep, x, torch.zeros_like(x))
        state["x"], state["ws"], state["sign"] = x, x != 0, torch.sign(x)
        state["finished"] = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def step(self, state, k):
        if "ws" not in state:
            if k <= self.warm:
                self.fista.step(state, k)
                return
            self._start(state)
        if k > self.warm + self.max_rounds:
            state["finished"][:] = True
            return
        todo = (~state["finished"]).nonzero().squeeze(1)
        for start in range(0, len(todo), self.chunk):
            self._round(state, todo[start : start + self.chunk])

    def _round(self, state, rows):
        x, S, sign = state["x"][rows], state["ws"][rows], state["sign"][rows]
        aty = state["aty"][rows]
        t, ok = signed_least_squares(self.problem.op.gram, aty, S, sign, self.problem.lam)
        wrong = S & (sign * t <= 0)
        ratio = torch.where(wrong, x / torch.where(wrong & (x != t), x - t, torch.ones_like(x)), 2.0)
        alpha = ratio.amin(1, keepdim=True).clamp(0.0, 1.0)
        leave = wrong & (ratio <= alpha)
        x = torch.where(S & ~leave, x + alpha * (t - x), torch.zeros_like(x))
        S = S & ~leave
        reached = ((alpha.squeeze(1) >= 1.0) & ok).nonzero().squeeze(1)
        finished = ~ok
        if len(reached):
            grown = self._grow(x[reached], S[reached], sign[reached], aty[reached])
            S[reached], sign[reached], finished[reached] = grown
        keep = ok.unsqueeze(1)
        state["x"][rows] = torch.where(keep, x, state["x"][rows])
        state["ws"][rows] = torch.where(keep, S, state["ws"][rows])
        state["sign"][rows] = torch.where(keep & S, sign, torch.zeros_like(sign))
        state["finished"][rows] = finished

    def _grow(self, x, S, sign, aty):
        """Add the ``grow`` most violating columns to S; rows with none to add (KKT holds, or S is full) finish."""
        op, lam = self.problem.op, self.problem.lam
        d = aty - op.normal(x)
        excess = (d if self.problem.positive else d.abs()) - lam * (1 + 1e-9)
        excess = torch.where(S, torch.zeros_like(excess), excess)
        room = op.m - S.sum(1)
        top, idx = excess.topk(min(self.grow, excess.shape[1]), dim=1)
        add = (top > 0) & (torch.arange(idx.shape[1], device=x.device) < room.unsqueeze(1))
        S = S.scatter(1, idx, S.gather(1, idx) | add)
        sign = sign.scatter(1, idx, torch.where(add, torch.sign(d.gather(1, idx)), sign.gather(1, idx)))
        return S, sign, ~add.any(1)
