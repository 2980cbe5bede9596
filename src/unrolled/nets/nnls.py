"""Learned NNLS networks: the steps of ``algorithms/nnls.py`` with trainable parameters.

=========  =====================================================  ==========================
net        layer k (rows: x_k ∈ R^n, y ∈ R^m; x₀ = x₋₁ = 0)        analytic init = solver
=========  =====================================================  ==========================
LPGD       x_{k+1} = ReLU(W x_k + S y)        (xie2019 eq. 1.4)    PGD, α = 1/‖A‖₂²
LAPGD      x_{k+1} = ReLU(W₁x_k + W₂x_{k−1} + S y)   (eq. 1.6)     APGD, constant γ
Vanilla    x₁ = ReLU(S y), x_{k+1} = ReLU(W_k x_k)  (Table 1)      (not a solver)
UPGDM      s_{k+1} = ReLU(s_k − μ_k W₁ᵏ s_k + μ_k W₂ᵏ y)  (sen2024 eq. 5)   PGD
LOGD       s_{l+1} = s_l − η_l [W₁ˡ s_l^P − W₂ˡ y] ⊙ s_l^{P−1}  (sen2024 eq. 6)  OGD, fixed η
=========  =====================================================  ==========================

``init``: ``"analytic"`` — the solver's own weights (W = I − αAᵀA, S = αAᵀ, …), so a
depth-K net returns exactly K solver iterations; ``"paper"`` — xie2019 §3.1, i.i.d.
U[0, 0.001] with W, W₁, W₂ symmetric (xie2019 nets only: sen2024 gives no
initialisation); ``"random"`` — i.i.d. N(0, 1/fan_in) matrices, steps at their
analytic values. ``tied``: one set of weights shared by every layer (xie2019 Fig. 1–2)
or one per layer (sen2024 eq. 5–6).
"""
from __future__ import annotations

import torch
from torch import nn

from .._validate import choice, nonnegative_float, positive_int
from ..algorithms.nnls import APGD, OGD, PGD
from ..problems import NNLS
from .base import UnrolledNet

INITS = ("analytic", "paper", "random")


def _linear(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Rows X ↦ rows of (W x + b): X Wᵀ (+ b), one ``addmm`` when b is given."""
    return X @ W.T if b is None else torch.addmm(b, X, W.T)


class _NNLSNet(UnrolledNet):
    """Shared plumbing: problem, init choice, tied/untied parameter lists, seeded random init."""

    _inits = INITS
    _tie_option = True  # whether ``tied`` is a constructor argument (saved in the config)

    def __init__(self, A, depth, *, init, tied, seed, **config):
        choice(init, "init", self._inits)
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be True or False, got {tied!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if self._tie_option:
            config["tied"] = tied
        super().__init__(A, depth, None, init=init, seed=seed, **config)
        self.problem = NNLS(self.op)
        self.init, self.tied = init, tied
        self._gen = torch.Generator().manual_seed(seed)

    # -- parameters ------------------------------------------------------
    def _params(self, make, untied: int | None = None) -> nn.ParameterList:
        """One parameter (tied) or ``untied`` (default: depth) of them, each ``make(i)``.

        Untied weights that act on x₀ = 0 would never be used, so e.g. LPGD keeps
        depth − 1 matrices W (layers 2..K) and depth matrices S.
        """
        count = 1 if self.tied else (self.depth if untied is None else untied)
        return nn.ParameterList([nn.Parameter(make(i)) for i in range(count)])

    def _at(self, plist: nn.ParameterList, i: int) -> torch.Tensor:
        return plist[0] if self.tied else plist[i]

    def _uniform(self, rows: int, cols: int, symmetric: bool = False) -> torch.Tensor:
        """xie2019 §3.1: i.i.d. U[0, 0.001]; mirrored from the upper triangle when symmetric."""
        R = torch.rand(rows, cols, generator=self._gen, dtype=torch.float64) * 1e-3
        if symmetric:
            R = torch.triu(R) + torch.triu(R, 1).T
        return R.to(self.operator.dtype)

    def _gauss(self, rows: int, cols: int) -> torch.Tensor:
        R = torch.randn(rows, cols, generator=self._gen, dtype=torch.float64) / cols ** 0.5
        return R.to(self.operator.dtype)

    def _normal_equation_params(self, init: str):
        """W₁ ≈ AᵀA and W₂ ≈ Aᵀ per layer (sen2024 eq. 5–6): exact when analytic, else random at
        the same scale (‖A‖₂² and ‖A‖₂)."""
        if init == "analytic":
            return self._params(lambda k: self.op.gram.clone()), self._params(lambda k: self.op.A.T.clone())
        n, m, scale = self.n, self.m, self.op.lipschitz ** 0.5
        return (self._params(lambda k: self._gauss(n, n) * scale ** 2 / n ** 0.5),
                self._params(lambda k: self._gauss(n, m) * scale))

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(float(value), dtype=self.operator.dtype)


class LPGD(_NNLSNet):
    """Learned PGD (xie2019 Fig. 1): x_{k+1} = ReLU(W x_k + S y), x₀ = 0, W and S shared.

    Analytic init W = I − αAᵀA, S = αAᵀ with α = ``step`` (default 1/‖A‖₂²): then layer k
    returns PGD's iterate k (eq. 1.4). ``skip=False`` is Table 1's "LPGD w/o skip": y
    enters the first layer only, x₁ = ReLU(S y), x_{k+1} = ReLU(W x_k).
    """

    def __init__(self, A, depth: int = 3, *, init: str = "analytic", tied: bool = True, skip: bool = True,
                 step: float | None = None, seed: int = 0):
        if step is not None:
            step = nonnegative_float(step, "step", strict=True)
        if not isinstance(skip, bool):
            raise TypeError(f"skip must be True or False, got {skip!r}")
        super().__init__(A, depth, init=init, tied=tied, seed=seed, skip=skip, step=step)
        self.skip = skip
        pgd = PGD(self.problem, step=step)
        self.alpha = pgd.alpha
        n, m = self.n, self.m
        eye = torch.eye(n, dtype=self.operator.dtype)
        W0 = eye - self.alpha * self.op.gram
        S0 = self.alpha * self.op.A.T
        n_s = self.depth if skip else 1  # without the skip only the first layer sees y
        if init == "analytic":
            self.W = self._params(lambda k: W0.clone(), self.depth - 1)
            self.S = self._params(lambda k: S0.clone(), n_s)
        elif init == "paper":
            self.W = self._params(lambda k: self._uniform(n, n, symmetric=True), self.depth - 1)
            self.S = self._params(lambda k: self._uniform(n, m), n_s)
        else:
            self.W = self._params(lambda k: self._gauss(n, n), self.depth - 1)
            self.S = self._params(lambda k: self._gauss(n, m), n_s)

    def iterates(self, Y, depth):
        b = _linear(Y, self.S[0])
        x = torch.relu(b)
        yield x
        for k in range(1, depth):
            if self.skip:
                bk = b if len(self.S) == 1 else _linear(Y, self.S[k])
                x = torch.relu(_linear(x, self._at(self.W, k - 1), bk))
            else:
                x = torch.relu(_linear(x, self._at(self.W, k - 1)))
            yield x


class LAPGD(_NNLSNet):
    """Learned APGD (xie2019 Fig. 2): x_{k+1} = ReLU(W₁x_k + W₂x_{k−1} + S y), x₀ = x₋₁ = 0.

    Analytic init (eq. 1.6) W₁ = (1+γ)(I − αAᵀA), W₂ = −γ(I − αAᵀA), S = αAᵀ: layer k
    returns APGD's iterate k with constant momentum γ (default 0.9, xie2019 §3.1).
    """

    def __init__(self, A, depth: int = 3, *, init: str = "analytic", tied: bool = True, gamma: float = 0.9,
                 step: float | None = None, seed: int = 0):
        if step is not None:
            step = nonnegative_float(step, "step", strict=True)
        gamma = nonnegative_float(gamma, "gamma")
        super().__init__(A, depth, init=init, tied=tied, seed=seed, gamma=gamma, step=step)
        apgd = APGD(self.problem, step=step, gamma=gamma)
        self.alpha, self.gamma = apgd.alpha, apgd.gamma
        n, m = self.n, self.m
        M = torch.eye(n, dtype=self.operator.dtype) - self.alpha * self.op.gram
        S0 = self.alpha * self.op.A.T
        d = self.depth  # untied: W₁ for layers 2..K, W₂ for layers 3..K (x₀ = x₋₁ = 0)
        if init == "analytic":
            self.W1 = self._params(lambda k: (1 + self.gamma) * M, d - 1)
            self.W2 = self._params(lambda k: -self.gamma * M, max(d - 2, 0))
            self.S = self._params(lambda k: S0.clone())
        elif init == "paper":
            self.W1 = self._params(lambda k: self._uniform(n, n, symmetric=True), d - 1)
            self.W2 = self._params(lambda k: self._uniform(n, n, symmetric=True), max(d - 2, 0))
            self.S = self._params(lambda k: self._uniform(n, m))
        else:
            self.W1 = self._params(lambda k: self._gauss(n, n), d - 1)
            self.W2 = self._params(lambda k: self._gauss(n, n), max(d - 2, 0))
            self.S = self._params(lambda k: self._gauss(n, m))

    def iterates(self, Y, depth):
        b = _linear(Y, self.S[0])
        x_prev, x = None, torch.relu(b)
        yield x
        for k in range(1, depth):
            bk = b if len(self.S) == 1 else _linear(Y, self.S[k])
            u = _linear(x, self._at(self.W1, k - 1), bk)
            if x_prev is not None:  # x₀ = 0: W₂ x₀ vanishes in the second layer
                u = torch.addmm(u, x_prev, self._at(self.W2, k - 2).T)
            x_prev, x = x, torch.relu(u)
            yield x


class Vanilla(_NNLSNet):
    """xie2019 Table 1's vanilla network: a plain ReLU net with the same layers, untied.

    x₁ = ReLU(S y + c₁), x_{k+1} = ReLU(W_k x_k + c_{k+1}) — y enters the first layer
    only and every layer has its own weights (biases c only with ``bias=True``). Its
    ``"analytic"`` init copies PGD's weights (S = αAᵀ, W_k = I − αAᵀA); it is not a
    solver, since y never re-enters.
    """

    _tie_option = False

    def __init__(self, A, depth: int = 3, *, init: str = "paper", bias: bool = False, seed: int = 0):
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        super().__init__(A, depth, init=init, tied=False, seed=seed, bias=bias)
        n, m = self.n, self.m
        alpha = 1.0 / self.op.lipschitz
        if init == "analytic":
            W0 = torch.eye(n, dtype=self.operator.dtype) - alpha * self.op.gram
            self.S = nn.Parameter(alpha * self.op.A.T.clone())
            self.W = nn.ParameterList([nn.Parameter(W0.clone()) for _ in range(depth - 1)])
        elif init == "paper":
            self.S = nn.Parameter(self._uniform(n, m))
            self.W = nn.ParameterList([nn.Parameter(self._uniform(n, n, symmetric=True)) for _ in range(depth - 1)])
        else:
            self.S = nn.Parameter(self._gauss(n, m))
            self.W = nn.ParameterList([nn.Parameter(self._gauss(n, n)) for _ in range(depth - 1)])
        self.c = nn.ParameterList([nn.Parameter(torch.zeros(n, dtype=self.operator.dtype)) for _ in range(depth)]) \
            if bias else None

    def iterates(self, Y, depth):
        x = torch.relu(_linear(Y, self.S, self.c[0] if self.c is not None else None))
        yield x
        for k in range(1, depth):
            x = torch.relu(_linear(x, self.W[k - 1], self.c[k] if self.c is not None else None))
            yield x


class UPGDM(_NNLSNet):
    """Unrolled PGD (sen2024 eq. 5, after Sen et al. ICASSP 2024):

        s_{k+1} = ReLU(s_k − μ_k W₁ᵏ s_k + μ_k W₂ᵏ y),   s₀ = 0,

    with per-layer W₁ᵏ ≈ AᵀA, W₂ᵏ ≈ Aᵀ, μ_k ≈ 1/‖A‖₂² (``tied=True`` shares W₁, W₂;
    the μ_k stay per layer). Analytic init: layer k = PGD's iterate k.
    The steps are stored as μ_k = α·g_k with α = ``step`` (default 1/‖A‖₂²) a fixed buffer
    and the gain g_k (init 1) trained, so that Adam's step is relative to the step's scale.
    """

    _inits = ("analytic", "random")

    def __init__(self, A, depth: int = 5, *, init: str = "analytic", tied: bool = False,
                 step: float | None = None, seed: int = 0):
        if step is not None:
            step = nonnegative_float(step, "step", strict=True)
        super().__init__(A, depth, init=init, tied=tied, seed=seed, step=step)
        self.alpha = PGD(self.problem, step=step).alpha
        self.W1, self.W2 = self._normal_equation_params(init)
        self.register_buffer("step_scale", self._scalar(self.alpha))
        self.mu_gain = nn.ParameterList([nn.Parameter(self._scalar(1.0)) for _ in range(depth)])

    @property
    def mu(self) -> list:
        """The steps μ_k of eq. 5."""
        return [self.step_scale * g for g in self.mu_gain]

    def iterates(self, Y, depth):
        s = Y.new_zeros(Y.shape[0], self.n)
        for k in range(depth):
            W1, W2, mu = self._at(self.W1, k), self._at(self.W2, k), self.step_scale * self.mu_gain[k]
            s = torch.relu(s - mu * _linear(s, W1) + mu * _linear(Y, W2))
            yield s


class LOGD(_NNLSNet):
    """Learned over-parametrized GD (sen2024 eq. 6, Algorithm 3):

        s_{l+1} = s_l − η_l [W₁ˡ s_l^{⊙P} − W₂ˡ y] ⊙ s_l^{⊙(P−1)},   x_l = s_l^{⊙P},

    no activation; per-layer W₁ˡ ≈ AᵀA, W₂ˡ ≈ Aᵀ, η_l (``tied=True`` shares W₁, W₂).
    Layer l outputs the NNLS estimate x_l = s_l^{⊙P}, as OGD does. sen2024's Algorithm 4
    starts from s₀ = 0, a fixed point of the update (s^{P−1} = 0) that would make every
    output zero; like OGD (Chou, Maly & Verdun) we start from the identical vector
    x₀ = ``init_value``·1, i.e. s₀ = init_value^{1/P}·1.

    Analytic init: W₁ = AᵀA, W₂ = Aᵀ, η_l = ``eta`` (default 1/(P‖A‖₂²)): layer l equals
    OGD's iterate l run with ``eta`` as a fixed step and ``x0 = init_value``.
    The steps are stored as η_l = eta·g_l, eta a fixed buffer and the gain g_l (init 1)
    trained, so that Adam's step is relative to the step's scale.
    """

    _inits = ("analytic", "random")

    def __init__(self, A, depth: int = 5, *, init: str = "analytic", tied: bool = False, power: int = 2,
                 eta: float | None = None, init_value: float = 0.1, seed: int = 0):
        if isinstance(power, bool) or not isinstance(power, int) or power < 2:
            raise ValueError(f"power must be an integer >= 2, got {power!r}")
        if eta is not None:
            eta = nonnegative_float(eta, "eta", strict=True)
        init_value = nonnegative_float(init_value, "init_value", strict=True)
        super().__init__(A, depth, init=init, tied=tied, seed=seed, power=power, eta=eta, init_value=init_value)
        self.P, self.init_value = power, init_value
        self.eta0 = 1.0 / (power * self.op.lipschitz) if eta is None else eta
        self.W1, self.W2 = self._normal_equation_params(init)
        self.register_buffer("step_scale", self._scalar(self.eta0))
        self.eta_gain = nn.ParameterList([nn.Parameter(self._scalar(1.0)) for _ in range(depth)])

    @property
    def eta(self) -> list:
        """The steps η_l of eq. 6."""
        return [self.step_scale * g for g in self.eta_gain]

    def ogd(self) -> OGD:
        """The classical method this net unrolls at its analytic init (run it with ``X0=x0(Y)``)."""
        return OGD(self.problem, power=self.P, eta=self.eta0)

    def x0(self, Y: torch.Tensor) -> torch.Tensor:
        return Y.new_full((Y.shape[0], self.n), self.init_value)

    def iterates(self, Y, depth):
        P = self.P
        s = self.x0(Y).pow(1.0 / P)
        for k in range(depth):
            W1, W2, eta = self._at(self.W1, k), self._at(self.W2, k), self.step_scale * self.eta_gain[k]
            grad = _linear(s.pow(P), W1) - _linear(Y, W2)
            sp = s.pow(P - 2) if P > 2 else 1.0
            s = s - eta * grad * sp * s
            yield s.pow(P)


__all__ = ["LPGD", "LAPGD", "Vanilla", "UPGDM", "LOGD"]
