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

Every layer is :func:`~unrolled.algorithms.nnls.pgd_step` or
:func:`~unrolled.algorithms.nnls.ogd_step`, the solvers' own update, with the affine part
built from the net's parameters. ``init``: ``"analytic"`` — the solver's own weights
(W = I − αAᵀA, S = αAᵀ, …), so a depth-K net returns exactly K solver iterations;
``"paper"`` — xie2019 §3.1, i.i.d. U[0, 0.001] with W, W₁, W₂ symmetric (xie2019 nets only:
sen2024 gives no initialisation); ``"random"`` — i.i.d. N(0, 1/fan_in) matrices, steps at
their analytic values. ``tied``: one set of weights shared by every layer (xie2019 Fig. 1–2)
or one per layer (sen2024 eq. 5–6). These nets hold full matrices, so they densify the operator.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import nonnegative_float
from ..algorithms._common import GradientStep, LinearStep, NormalPair, fused_matrices
from ..algorithms.nnls import alpha_of, ogd_step, pgd_step
from ..operators import as_operator
from ..problems import NNLS
from .base import UnrolledNet


def _optional_step(step):
    return None if step is None else nonnegative_float(step, "step", strict=True)


class _NNLSNet(UnrolledNet):
    """Shared plumbing: the problem NNLS(A) and the densified operator's analytic matrices."""

    INITS = ("analytic", "paper", "random")
    TIE_OPTION = True
    LAYERS: dict = {}  # parameter (list) name → the first layer (0-based) that uses its entry 0

    def __init__(self, operator, depth, *, init, tied, seed, **config):
        op = as_operator(operator)
        super().__init__(op, depth, NNLS(op), init=init, tied=tied, seed=seed, **config)

    def _fused(self, alpha):
        """(W, S) = (I − αAᵀA, αAᵀ) of the dense operator."""
        return fused_matrices(self.dense(), alpha)

    def _normal_equation_params(self, step: float) -> nn.ParameterList:
        """W₁ ≈ AᵀA and W₂ ≈ Aᵀ per layer (sen2024 eq. 5–6): exact when analytic, else random at
        the same scale (‖A‖₂² and ‖A‖₂); the per-layer steps as ``step_scale`` (a buffer, = step)
        times gains (returned, init 1), so that Adam's step is relative to the step's scale."""
        A = self.dense()
        L = A.lipschitz
        self.W1 = self.layer_list(lambda k: self.initial(A.gram, random_scale=L / self.n**0.5))
        self.W2 = self.layer_list(lambda k: self.initial(A.A.T, random_scale=L**0.5))
        self.register_buffer("step_scale", self.scalar(step))
        return nn.ParameterList([nn.Parameter(self.scalar(1.0)) for _ in range(self.depth)])

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The parameters that belong to layer t (0-based); tied or single ones count in every layer using them."""
        self.check_layer(t)
        ps = []
        for name, first in self.LAYERS.items():
            entries = getattr(self, name)
            if entries is None or t < first:
                continue
            if isinstance(entries, nn.Parameter):
                ps += [entries] if t == first else []
            elif len(entries) == 1 or self.tied:
                ps.append(entries[0])
            elif t - first < len(entries):
                ps.append(entries[t - first])
        return ps

    def _layer_pair(self, k: int) -> tuple[NormalPair, torch.Tensor]:
        """Layer k's (W₁, W₂) pair and its step."""
        gains = getattr(self, self.GAINS)
        return NormalPair(self.at(self.W1, k), self.at(self.W2, k)), self.step_scale * gains[k]


class LPGD(_NNLSNet):
    """Learned PGD (xie2019 Fig. 1): x_{k+1} = ReLU(W x_k + S y), x₀ = 0, W and S shared.

    Parameters
    ----------
    operator : Operator or array (m, n)
        The measurement operator A (densified: W and S are full matrices).
    depth : int
        Number of layers K (default 3).
    init : {"analytic", "paper", "random"}
        Analytic: W = I − αAᵀA, S = αAᵀ with α = ``step`` (default 1/‖A‖₂²), so layer k
        returns PGD's iterate k (eq. 1.4).
    tied : bool
        One W, S for every layer (default) or one per layer.
    skip : bool
        False is Table 1's "LPGD w/o skip": y enters the first layer only,
        x₁ = ReLU(S y), x_{k+1} = ReLU(W x_k).
    step : float, optional
        The step α of the analytic init.
    seed : int
        Seed of the random inits.

    Returns
    -------
    ``net(Y)``: X̂ (batch, n) ≥ 0 for Y (batch, m).
    """

    LAYERS = {"W": 1, "S": 0}

    def __init__(
        self,
        operator,
        depth: int = 3,
        *,
        init: str = "analytic",
        tied: bool = True,
        skip: bool = True,
        step: float | None = None,
        seed: int = 0,
    ):
        step = _optional_step(step)
        if not isinstance(skip, bool):
            raise TypeError(f"skip must be True or False, got {skip!r}")
        super().__init__(operator, depth, init=init, tied=tied, seed=seed, skip=skip, step=step)
        self.skip = skip
        self.alpha = alpha_of(self.problem, step)
        W0, S0 = self._fused(self.alpha)
        self.W = self.layer_list(lambda k: self.initial(W0, symmetric=True), self.depth - 1)
        self.S = self.layer_list(lambda k: self.initial(S0), self.depth if skip else 1)

    def iterates(self, Y, depth):
        b, x = None, None
        for k in range(depth):
            if k == 0 or (self.skip and len(self.S) > 1):
                b = Y @ self.S[k].T
            elif not self.skip:
                b = None
            W = self.at(self.W, k - 1).T if k else None
            x = pgd_step(x, b, LinearStep(W, None))
            yield x


class LAPGD(_NNLSNet):
    """Learned APGD (xie2019 Fig. 2): x_{k+1} = ReLU(W₁x_k + W₂x_{k−1} + S y), x₀ = x₋₁ = 0.

    Parameters
    ----------
    operator : Operator or array (m, n)
        The measurement operator A (densified).
    depth : int
        Number of layers K (default 3).
    init : {"analytic", "paper", "random"}
        Analytic (eq. 1.6): W₁ = (1+γ)(I − αAᵀA), W₂ = −γ(I − αAᵀA), S = αAᵀ: layer k returns
        APGD's iterate k with constant momentum γ.
    tied : bool
        One W₁, W₂, S for every layer (default) or one per layer.
    gamma : float
        The momentum γ of the analytic init (default 0.9, xie2019 §3.1).
    step : float, optional
        The step α (default 1/‖A‖₂²).
    seed : int
        Seed of the random inits.

    Returns
    -------
    ``net(Y)``: X̂ (batch, n) ≥ 0 for Y (batch, m).
    """

    LAYERS = {"W1": 1, "W2": 2, "S": 0}

    def __init__(
        self,
        operator,
        depth: int = 3,
        *,
        init: str = "analytic",
        tied: bool = True,
        gamma: float = 0.9,
        step: float | None = None,
        seed: int = 0,
    ):
        step = _optional_step(step)
        gamma = nonnegative_float(gamma, "gamma")
        super().__init__(operator, depth, init=init, tied=tied, seed=seed, gamma=gamma, step=step)
        self.alpha, self.gamma = alpha_of(self.problem, step), gamma
        M, S0 = self._fused(self.alpha)
        d = self.depth  # untied: W₁ for layers 2..K, W₂ for layers 3..K (x₀ = x₋₁ = 0)
        self.W1 = self.layer_list(lambda k: self.initial((1 + gamma) * M, symmetric=True), d - 1)
        self.W2 = self.layer_list(lambda k: self.initial(-gamma * M, symmetric=True), max(d - 2, 0))
        self.S = self.layer_list(lambda k: self.initial(S0))

    def iterates(self, Y, depth):
        b = Y @ self.S[0].T
        x_prev, x = None, None
        for k in range(depth):
            if k and len(self.S) > 1:
                b = Y @ self.S[k].T
            W1 = self.at(self.W1, k - 1).T if k else None
            W2 = self.at(self.W2, k - 2).T if k > 1 else None  # x₀ = 0: W₂ x₀ vanishes in layer 2
            previous = (x_prev,) if W2 is not None else ()
            x_prev, x = x, pgd_step(x, b, LinearStep(W1, None, W2), *previous)
            yield x


class Vanilla(_NNLSNet):
    """xie2019 Table 1's vanilla network: a plain ReLU net with the same layers, untied.

    x₁ = ReLU(S y + c₁), x_{k+1} = ReLU(W_k x_k + c_{k+1}): y enters the first layer only and
    every layer has its own weights. Not a solver (y never re-enters).

    Parameters
    ----------
    operator : Operator or array (m, n)
        The measurement operator A (densified; it fixes the shapes and the analytic init).
    depth : int
        Number of layers K (default 3).
    init : {"paper", "analytic", "random"}
        "analytic" copies PGD's weights (S = αAᵀ, W_k = I − αAᵀA).
    tied : False
        Accepted for the common signature; the layers are untied by definition.
    bias : bool
        Add the biases c_k (default False).
    seed : int
        Seed of the random inits.

    Returns
    -------
    ``net(Y)``: X̂ (batch, n) ≥ 0 for Y (batch, m).
    """

    TIE_OPTION = False
    LAYERS = {"S": 0, "W": 1, "c": 0}

    def __init__(
        self, operator, depth: int = 3, *, init: str = "paper", tied: bool = False, bias: bool = False, seed: int = 0
    ):
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if tied is not False:
            raise ValueError("Vanilla is untied by definition (xie2019 Table 1): tied must be False")
        super().__init__(operator, depth, init=init, tied=False, seed=seed, bias=bias)
        W0, S0 = self._fused(1.0 / self.op.lipschitz)
        self.S = nn.Parameter(self.initial(S0))
        self.W = self.layer_list(lambda k: self.initial(W0, symmetric=True), self.depth - 1)
        zero = torch.zeros(self.n, dtype=self.dtype, device=self.op.device)
        self.c = self.layer_list(lambda k: zero.clone()) if bias else None

    def iterates(self, Y, depth):
        x = None
        for k in range(depth):
            b = Y @ self.S.T if k == 0 else None
            if self.c is not None:
                b = self.c[k] if b is None else b + self.c[k]
            x = pgd_step(x, b, LinearStep(self.W[k - 1].T if k else None, None))
            yield x


class UPGDM(_NNLSNet):
    """Unrolled PGD (sen2024 eq. 5, after Sen et al. ICASSP 2024):

        s_{k+1} = ReLU(s_k − μ_k W₁ᵏ s_k + μ_k W₂ᵏ y),   s₀ = 0.

    The steps are stored as μ_k = α·g_k with α a fixed buffer and the gain g_k (init 1) trained,
    so that Adam's step is relative to the step's scale.

    Parameters
    ----------
    operator, depth : Operator or array (m, n), int
        A (densified) and the number of layers (default 5).
    init : {"analytic", "random"}
        Analytic: W₁ᵏ = AᵀA, W₂ᵏ = Aᵀ, μ_k = α: layer k = PGD's iterate k.
    tied : bool
        Share W₁, W₂ across layers (the μ_k stay per layer); default False.
    step : float, optional
        α (default 1/‖A‖₂²).
    seed : int
        Seed of the random init.

    Returns
    -------
    ``net(Y)``: X̂ (batch, n) ≥ 0 for Y (batch, m).
    """

    INITS = ("analytic", "random")
    GAINS = "mu_gain"
    LAYERS = {"W1": 0, "W2": 0, "mu_gain": 0}

    def __init__(
        self,
        operator,
        depth: int = 5,
        *,
        init: str = "analytic",
        tied: bool = False,
        step: float | None = None,
        seed: int = 0,
    ):
        step = _optional_step(step)
        super().__init__(operator, depth, init=init, tied=tied, seed=seed, step=step)
        self.alpha = alpha_of(self.problem, step)
        self.mu_gain = self._normal_equation_params(self.alpha)

    @property
    def mu(self) -> list:
        """The steps μ_k of eq. 5."""
        return [self._layer_pair(k)[1] for k in range(self.depth)]

    def iterates(self, Y, depth):
        s = Y.new_zeros(Y.shape[0], self.n)
        for k in range(depth):
            grad_step = GradientStep(*self._layer_pair(k))
            s = pgd_step(s, grad_step.offset(Y), grad_step)
            yield s


class LOGD(_NNLSNet):
    """Learned over-parametrized GD (sen2024 eq. 6, Algorithm 3):

        s_{l+1} = s_l − η_l [W₁ˡ s_l^{⊙P} − W₂ˡ y] ⊙ s_l^{⊙(P−1)},   x_l = s_l^{⊙P},

    no activation. sen2024's Algorithm 4 starts from s₀ = 0, a fixed point of the update
    (s^{P−1} = 0) that would make every output zero; like OGD (Chou, Maly & Verdun) we start
    from the identical vector x₀ = ``init_value``·1, i.e. s₀ = init_value^{1/P}·1. The steps
    are stored as η_l = eta·g_l, eta a fixed buffer and the gain g_l (init 1) trained.

    Parameters
    ----------
    operator, depth : Operator or array (m, n), int
        A (densified) and the number of layers (default 5).
    init : {"analytic", "random"}
        Analytic: W₁ = AᵀA, W₂ = Aᵀ, η_l = ``eta``: layer l equals OGD's iterate l run with
        ``eta`` as a fixed step and ``x0 = init_value``.
    tied : bool
        Share W₁, W₂ across layers (default False).
    power : int
        P ≥ 2.
    eta : float, optional
        The fixed step (default 1/(P‖A‖₂²)).
    init_value : float
        x₀ = init_value·1.
    seed : int
        Seed of the random init.

    Returns
    -------
    ``net(Y)``: X̂ = s^{⊙P} (batch, n) for Y (batch, m).
    """

    INITS = ("analytic", "random")
    GAINS = "eta_gain"
    LAYERS = {"W1": 0, "W2": 0, "eta_gain": 0}

    def __init__(
        self,
        operator,
        depth: int = 5,
        *,
        init: str = "analytic",
        tied: bool = False,
        power: int = 2,
        eta: float | None = None,
        init_value: float = 0.1,
        seed: int = 0,
    ):
        if isinstance(power, bool) or not isinstance(power, int) or power < 2:
            raise ValueError(f"power must be an integer >= 2, got {power!r}")
        if eta is not None:
            eta = nonnegative_float(eta, "eta", strict=True)
        init_value = nonnegative_float(init_value, "init_value", strict=True)
        super().__init__(operator, depth, init=init, tied=tied, seed=seed, power=power, eta=eta, init_value=init_value)
        self.P, self.init_value = power, init_value
        self.eta0 = 1.0 / (power * self.op.lipschitz) if eta is None else eta
        self.eta_gain = self._normal_equation_params(self.eta0)

    @property
    def eta(self) -> list:
        """The steps η_l of eq. 6."""
        return [self._layer_pair(k)[1] for k in range(self.depth)]

    def iterates(self, Y, depth):
        P = self.P
        s = Y.new_full((Y.shape[0], self.n), self.init_value).pow(1.0 / P)
        for k in range(depth):
            pair, eta = self._layer_pair(k)
            s = ogd_step(s, pair.normal(s.pow(P)) - pair.adjoint(Y), P, eta)
            yield s.pow(P)


__all__ = ["LPGD", "LAPGD", "Vanilla", "UPGDM", "LOGD"]
