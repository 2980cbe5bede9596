"""The LISTA family: ISTA steps (``algorithms.lasso.ista_step``) with some of their parameters freed.

Every layer is the solver's own :func:`~unrolled.algorithms.lasso.ista_step`; the
parametrization only chooses its affine part. In row form (codes z are rows (batch, n),
signals y rows (batch, m), D the (m, n) dictionary):

    full     (LISTA, Gregor & LeCun 2010):  z⁺ = η(z W_e⁽ᵗ⁾ + y W_x⁽ᵗ⁾, λβ⁽ᵗ⁾)
    coupled  (LISTA-CP, Chen et al. 2018):  z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) W⁽ᵗ⁾, λβ⁽ᵗ⁾)
    alista   (ALISTA, Liu et al. 2019):     z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) W̃, λβ⁽ᵗ⁾), W̃ = :func:`alista_gain` (D)
    steps    (SLISTA, Ablin et al. 2019):   z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) D, λα⁽ᵗ⁾)

(the Moreau talk's "LISTA – Parametrizations" slides; in its column notation
z − αWᵀ(Dz − x)). η is :func:`~unrolled.algorithms._common.soft_threshold`, or, with
``nonneg=True``, the prox of θ‖·‖₁ + ι_{≥0}. The first layer starts from z⁰ = 0.

"full" holds matrices of D's size and densifies the operator; "coupled" keeps D as an operator and
holds W as a matrix for a dense D or as a learned operator of D's shape (``operators.learned``)
otherwise; "steps" and ALISTA with ``gain="dictionary"`` use D itself: these run on any operator
(a convolution included) without densifying it.

Steps and thresholds are stored as logarithms in units of the analytic step s₀ (1/L,
L = ‖D‖₂²; for ALISTA s₀ = 1/‖W̃ᵀD‖₂): α = s₀ e^ρ, β = s₀ e^σ, ρ = σ = 0 at init, so they stay
positive and an optimiser step changes them by a relative amount; matrices are stored divided
by the RMS of their analytic value, so every parameter the optimiser sees is of order one. With
the analytic init (W_e = I − DᵀD/L, W_x = D/L, W = D) and no support selection every net
computes ISTA's iterates exactly (a test).

Options: ``tied=True`` shares the matrices across layers (TiLISTA, Liu et al. 2019; steps and
thresholds stay per layer). ``support_selection=True`` (LISTA-CPSS, Chen et al. 2018 eq. 13):
in layer t the largest p_t % of the entries (in magnitude) that pass the threshold are kept
untouched, p_t = min(ss_percent·t, ss_max).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import operators
from .._validate import choice, nonnegative_float, positive_int
from ..algorithms._common import (
    CoupledPair,
    GradientStep,
    LinearStep,
    extrapolate,
    fista_momentum,
    fused_matrices,
    restart_test,
)
from ..algorithms.lasso import ADMM, RidgeSolve, admm_step, ista_step
from ..operators import DenseOperator, as_operator
from ..problems import Lasso
from .base import UnrolledNet

PARAMETRIZATIONS = ("full", "coupled", "alista", "steps")


# -- ALISTA's analytic gain -------------------------------------------------------------------


def alista_objective(W, D) -> float:
    """‖WᵀD‖_F², the Frobenius relaxation of the generalised mutual coherence that ALISTA's gain
    minimises subject to diag(WᵀD) = 1 (Liu, Chen, Wang & Yin 2019, ALISTA, eq. 15)."""
    W = torch.as_tensor(W, dtype=torch.float64)
    D = torch.as_tensor(D, dtype=torch.float64)
    return float((W.T @ D).pow(2).sum())


def alista_gain(D, *, tol: float = 1e-12, max_iter: int = 20_000) -> torch.Tensor:
    """W̃ = argmin_W ‖WᵀD‖_F²  s.t.  w_iᵀd_i = 1 ∀i   (ALISTA, Liu et al. 2019, eq. 15).

    FISTA with the gradient restart test: ∇ = 2DDᵀW, step 1/(2‖D‖₂²), and the projection onto
    the affine constraints column by column, w_i ← w_i + (1 − d_iᵀw_i) d_i/‖d_i‖².
    Stops when ‖W_{k+1} − W_k‖_F ≤ tol·‖W_k‖_F.

    Parameters
    ----------
    D : array, tensor or Operator, shape (m, n)
    tol : float
    max_iter : int

    Returns
    -------
    W̃ : tensor (m, n) in D's dtype.
    """
    op = as_operator(D, name="D")
    Dm = op.matrix().detach().to(torch.float64)
    tol = nonnegative_float(tol, "tol")
    max_iter = positive_int(max_iter, "max_iter")
    norms2 = Dm.pow(2).sum(0, keepdim=True)
    if (norms2 <= 0).any():
        raise ValueError("D has a zero column: the ALISTA constraint w_iᵀd_i = 1 cannot hold")

    def project(W):
        return W + (1 - (W * Dm).sum(0, keepdim=True)) * Dm / norms2

    G = Dm @ Dm.T
    step = 1.0 / (2 * float(torch.linalg.matrix_norm(G, ord=2)))
    W = Dm / norms2  # feasible start
    V, t = W.clone(), torch.ones(1, 1, dtype=torch.float64)
    for _ in range(max_iter):
        W_new = project(V - step * 2 * (G @ V))
        t, beta = fista_momentum(t, restart_test(V.reshape(1, -1), W_new.reshape(1, -1), W.reshape(1, -1)))
        V = extrapolate(W_new, W, beta)
        delta = float((W_new - W).norm())
        W = W_new
        if delta <= tol * float(W.norm()):
            break
    return W.to(op.dtype)


# -- the networks -------------------------------------------------------------------------------


class LISTAFamily(UnrolledNet):
    """``depth`` ISTA layers with some parameters learned, for the Lasso min_z ½‖Dz − y‖² + λ‖z‖₁.

    Layer t: z⁺ = η(u, λβ⁽ᵗ⁾) with u the affine part of the parametrization (module docstring).

    Parameters
    ----------
    operator : Operator or array (m, n)
        The dictionary D: a matrix, a convolution or a learned operator.
    depth : int
        Number of layers T.
    lam : float
        λ (may also be given as the third positional argument).
    init : {"analytic"}
        W_e = I − DᵀD/L, W_x = D/L, W = D, steps 1/L: every net computes ISTA's iterates exactly
        (without support selection).
    tied : bool
        Share the matrices across layers (TiLISTA; steps and thresholds stay per layer).
    parametrization : {"full", "coupled", "alista", "steps"}
        For ``LISTAFamily`` itself; the subclasses fix it.
    support_selection : bool
        LISTA-CPSS (Chen et al. 2018 eq. 13): in layer t the largest p_t % of the entries that pass
        the threshold are kept untouched, p_t = min(ss_percent·t, ss_max).
    ss_percent, ss_max : float
        Percentages of support selection.
    nonneg : bool
        Use the prox of θ‖·‖₁ + ι_{≥0}.
    gain : {"coherence", "dictionary"}
        ALISTA's W̃: :func:`alista_gain` (dense D) or D itself (the analytic net is then ISTA).

    Returns
    -------
    ``net(Y)``: codes Ẑ (batch, n) for signals Y (batch, m) (or images, see ``UnrolledNet.forward``).
    ``net.problem`` is ``Lasso(D, λ)`` (the unsupervised loss and the metrics use it).
    """

    PARAMETRIZATION: str | None = None
    TIE_OPTION = True

    def __init__(
        self,
        operator,
        depth: int,
        lam: float = 0.1,
        *,
        init: str = "analytic",
        tied: bool = False,
        parametrization: str | None = None,
        support_selection: bool = False,
        ss_percent: float = 1.2,
        ss_max: float = 13.0,
        nonneg: bool = False,
        gain: str = "coherence",
    ):
        fixed = self.PARAMETRIZATION
        if fixed is not None and parametrization not in (None, fixed):
            raise ValueError(f"{type(self).__name__} has parametrization {fixed!r}, got {parametrization!r}")
        param = choice(fixed or parametrization or "coupled", "parametrization", PARAMETRIZATIONS)
        lam = nonnegative_float(lam, "lam")
        gain = choice(gain, "gain", ("coherence", "dictionary"))
        if support_selection and param in ("steps",):
            raise ValueError(
                "support_selection is an option of the full/coupled/alista parametrizations, not of "
                "SLISTA (its threshold is tied to its step)"
            )
        if tied and param in ("alista", "steps"):
            raise ValueError(f"tied=True has no meaning for parametrization {param!r} (no per-layer matrices)")
        config = dict(
            lam=lam,
            support_selection=bool(support_selection),
            ss_percent=nonnegative_float(ss_percent, "ss_percent"),
            ss_max=nonnegative_float(ss_max, "ss_max"),
            nonneg=bool(nonneg),
        )
        if fixed is None:
            config["parametrization"] = param
        if param == "alista":
            config["gain"] = gain
        op = as_operator(operator)
        super().__init__(op, depth, Lasso(op, lam), init=init, tied=tied, **config)
        self.parametrization, self.lam, self.nonneg = param, lam, bool(nonneg)
        self.support_selection = bool(support_selection)
        self.ss_percent, self.ss_max = config["ss_percent"], config["ss_max"]
        s0 = self._build_gain(gain) if param == "alista" else 1.0 / self.op.lipschitz
        if isinstance(self.op, nn.Module):  # a learned D's L moves with its weights; the step unit must not
            self.register_buffer("s0", self.scalar(s0))
        else:
            self.s0 = s0
        T = self.depth
        self.a = nn.ParameterList([nn.Parameter(self.scalar(0.0)) for _ in range(T)]) if param != "full" else None
        self.b = nn.ParameterList([nn.Parameter(self.scalar(0.0)) for _ in range(T)]) if param != "steps" else None
        self.scales = {}
        if param == "full":
            W_e, W_x = (M.T for M in fused_matrices(self.dense(), s0))
            self.Wx = self._matrices("Wx", W_x)
            self.We = self._matrices("We", W_e, T - 1)
        elif param == "coupled":
            if isinstance(self.op, DenseOperator):
                self.W = self._matrices("W", self.op.A)
            else:
                self.W = nn.ModuleList([operators.learned(self.op) for _ in range(1 if tied else T)])

    def _build_gain(self, gain: str) -> float:
        """ALISTA's W̃ (a buffer ``gain`` when D is dense) and the step unit s₀ = 1/‖W̃ᵀD‖₂."""
        if gain == "coherence" or isinstance(self.op, DenseOperator):
            D = self.dense().A
            Wg = alista_gain(self.op) if gain == "coherence" else D.clone()
            self.register_buffer("gain", Wg.to(D.dtype))
            return 1.0 / float(torch.linalg.matrix_norm((Wg.T @ D).to(torch.float64), ord=2))
        self.gain = None
        return 1.0 / self.op.lipschitz

    def _matrices(self, name: str, value: torch.Tensor, untied: int | None = None) -> nn.ParameterList:
        """Per-layer matrices stored divided by the RMS c of their analytic value (order one for the optimiser)."""
        c = float(value.to(torch.float64).pow(2).mean().sqrt()) or 1.0
        self.scales[name] = c
        return self.layer_list(lambda k: self.initial(value / c), untied)

    # -- per-layer access ----------------------------------------------------------------------
    def _mat(self, name, t):
        """The matrix ``name`` of layer t, in its true scale."""
        return self.scales[name] * self.at(getattr(self, name), t)

    def _alpha(self, t):
        return self.s0 * torch.exp(self.a[t]) if self.a is not None else None

    def _beta(self, t):
        return self.s0 * torch.exp(self.b[t]) if self.b is not None else self._alpha(t)

    def steps(self) -> torch.Tensor:
        """α⁽ᵗ⁾ per layer (for "full": the step implied by the threshold, β⁽ᵗ⁾)."""
        with torch.no_grad():
            return torch.stack([self._alpha(t) if self.a is not None else self._beta(t) for t in range(self.depth)])

    def thresholds(self) -> torch.Tensor:
        """θ⁽ᵗ⁾ = λβ⁽ᵗ⁾ per layer (λα⁽ᵗ⁾ for SLISTA)."""
        with torch.no_grad():
            return self.lam * torch.stack([self._beta(t) for t in range(self.depth)])

    def keep(self, t: int) -> int:
        """Entries kept by support selection in layer t (0-based): ⌊p_t n/100⌋, p_t = min(ss_percent (t+1), ss_max)."""
        if not self.support_selection:
            return 0
        p = min(self.ss_percent * (t + 1), self.ss_max)
        return int(p * self.n / 100)

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The parameters that belong to layer t (0-based); tied matrices count in every layer."""
        self.check_layer(t)
        ps = [p[t] for p in (self.a, self.b) if p is not None]
        if self.parametrization == "full":
            ps.append(self.at(self.Wx, t))
            if self.tied or t > 0:
                ps.append(self.at(self.We, t - 1))
        elif self.parametrization == "coupled":
            W = self.at(self.W, t)
            ps.extend(W.parameters() if isinstance(W, nn.Module) else [W])
        return ps

    def layer_matrix(self, t: int) -> torch.Tensor | None:
        """The gain W⁽ᵗ⁾ of a coupled layer, or W_x⁽ᵗ⁾ of a full one (row form, shape (m, n))."""
        if self.parametrization == "full":
            return self._mat("Wx", t).detach()
        if self.parametrization == "coupled":
            W = self.at(self.W, t)
            return W.matrix().detach() if isinstance(W, nn.Module) else self._mat("W", t).detach()
        if self.parametrization == "alista" and self.gain is not None:
            return self.gain.detach()
        return self.dense().A.detach()

    def affine(self, t: int):
        """The affine part of layer t (an object with ``offset(Y)`` and ``__call__(z, b)``)."""
        if self.parametrization == "full":
            return LinearStep(self.scales["We"] * self.at(self.We, t - 1) if t else None, self._mat("Wx", t))
        if self.parametrization == "coupled":
            W = self.at(self.W, t)
            gain = W if isinstance(W, nn.Module) else self._mat("W", t)
        elif self.parametrization == "alista" and self.gain is not None:
            gain = self.gain
        else:
            gain = self.op
        return GradientStep(CoupledPair(self.op, gain), self._alpha(t))

    def iterates(self, Y, depth):
        Z = None
        for t in range(depth):
            affine = self.affine(t)
            Z = ista_step(Z, affine.offset(Y), affine, self.lam * self._beta(t), nonneg=self.nonneg, keep=self.keep(t))
            yield Z


_SUBCLASS_SECTIONS = """
    Parameters
    ----------
    operator, depth, lam, init, tied, support_selection, ss_percent, ss_max, nonneg, gain
        As for :class:`LISTAFamily` (``gain`` for ALISTA only).

    Returns
    -------
    ``net(Y)``: codes Ẑ (batch, n) for signals Y (batch, m).
    """


def _family_member(cls):
    """Append the shared Parameters / Returns sections to a fixed-parametrization subclass's docstring."""
    cls.__doc__ += _SUBCLASS_SECTIONS
    return cls


@_family_member
class LISTA(LISTAFamily):
    """LISTA (Gregor & LeCun 2010, eq. 3): z⁺ = η(W_e⁽ᵗ⁾z + W_x⁽ᵗ⁾x, θ⁽ᵗ⁾), untied (``tied=True``: one W_e, W_x).

    Holds W_e (n, n) and W_x (m, n), so it densifies the operator.
    """

    PARAMETRIZATION = "full"


@_family_member
class LISTA_CP(LISTAFamily):
    """LISTA-CP (Chen et al. 2018, eq. 10): z⁺ = η(z − α⁽ᵗ⁾W⁽ᵗ⁾ᵀ(Dz − x), θ⁽ᵗ⁾); ``support_selection=True``
    gives LISTA-CPSS, ``tied=True`` TiLISTA. W⁽ᵗ⁾ has D's shape: a matrix for a dense D, a learned
    operator (``operators.learned(D)``) otherwise.
    """

    PARAMETRIZATION = "coupled"


@_family_member
class ALISTA(LISTAFamily):
    """ALISTA (Liu et al. 2019): z⁺ = η(z − α⁽ᵗ⁾W̃ᵀ(Dz − x), θ⁽ᵗ⁾), W̃ fixed; only α⁽ᵗ⁾, θ⁽ᵗ⁾
    are learned. W̃ = :func:`alista_gain` (D) (``gain="coherence"``, densifies) or D itself
    (``gain="dictionary"``, any operator).
    """

    PARAMETRIZATION = "alista"


@_family_member
class SLISTA(LISTAFamily):
    """SLISTA (Ablin, Moreau, Massias & Gramfort 2019; Moreau talk "Restricted parametrization"):
    z⁺ = ST(z − α⁽ᵗ⁾Dᵀ(Dz − x), λα⁽ᵗ⁾); only the steps α⁽ᵗ⁾ are learned. Runs on any operator.
    """

    PARAMETRIZATION = "steps"


class LADMM(UnrolledNet):
    """Learned ADMM for the Lasso: layer k is :func:`~unrolled.algorithms.lasso.admm_step` with its
    penalty ρ_k and threshold θ_k learned (the unrolled ADMM of the recipe in CONTRIBUTING.md):

        z⁺ = (DᵀD + ρ_kI)⁻¹(Dᵀy + ρ_k(v − u)),   v⁺ = ST(z⁺ + u, θ_k),   u⁺ = u + z⁺ − v⁺.

    Stored as ρ_k = ρ₀e^{r_k}, θ_k = (λ/ρ₀)e^{s_k} (r = s = 0 at init), so they stay positive.

    Parameters
    ----------
    operator : Operator or array (m, n)
        The dictionary D (densified: the layer solves with DᵀD + ρI).
    depth : int
        Number of layers.
    lam : float
        λ (also the third positional argument).
    init : {"analytic"}
        ρ_k = ρ₀, θ_k = λ/ρ₀: layer k equals the ADMM solver's iterate k (``ur.lasso(..., method="admm")``).
    tied : bool
        One (ρ, θ) for every layer.
    rho : float, optional
        ρ₀ (default: the solver's, √(e_max e_min) of DᵀD).

    Returns
    -------
    ``net(Y)``: codes V̂ (batch, n) for signals Y (batch, m).
    """

    TIE_OPTION = True

    def __init__(
        self,
        operator,
        depth: int,
        lam: float = 0.1,
        *,
        init: str = "analytic",
        tied: bool = False,
        rho: float | None = None,
    ):
        lam = nonnegative_float(lam, "lam")
        op = as_operator(operator)
        super().__init__(op, depth, Lasso(op, lam), init=init, tied=tied, lam=lam, rho=rho)
        self.lam = lam
        admm = ADMM(self.problem, rho=rho)
        self.rho0 = admm.rho
        self.register_buffer("ridge_V", admm.solve.V, persistent=False)  # recomputed, but moved by .to()
        self.register_buffer("ridge_evals", admm.solve.evals, persistent=False)
        self.log_rho = self.layer_list(lambda k: self.scalar(0.0))
        self.log_theta = self.layer_list(lambda k: self.scalar(0.0))

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Layer t's (log ρ, log θ)."""
        self.check_layer(t)
        return [self.at(self.log_rho, t), self.at(self.log_theta, t)]

    def iterates(self, Y, depth):
        solve = RidgeSolve(self.ridge_V, self.ridge_evals)
        aty = self.op.adjoint(Y)
        v = Y.new_zeros(Y.shape[0], self.n)
        u = torch.zeros_like(v)
        for k in range(depth):
            rho = self.rho0 * torch.exp(self.at(self.log_rho, k))
            theta = self.lam / self.rho0 * torch.exp(self.at(self.log_theta, k))
            v, u = admm_step(v, u, aty, solve, rho, theta)
            yield v


__all__ = [
    "LISTAFamily",
    "LISTA",
    "LISTA_CP",
    "ALISTA",
    "SLISTA",
    "LADMM",
    "alista_gain",
    "alista_objective",
    "PARAMETRIZATIONS",
]
