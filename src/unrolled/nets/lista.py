"""The LISTA family: ISTA steps (``algorithms.lasso.ISTA``) with some of their parameters freed.

One layer, written once (:func:`lista_layer`), in row form (codes z are rows (batch, n),
signals y rows (batch, m), D the (m, n) dictionary):

    full     (LISTA, Gregor & LeCun 2010):  z⁺ = η(z W_e⁽ᵗ⁾ + y W_x⁽ᵗ⁾, λβ⁽ᵗ⁾)
    coupled  (LISTA-CP, Chen et al. 2018):  z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) W⁽ᵗ⁾, λβ⁽ᵗ⁾)
    alista   (ALISTA, Liu et al. 2019):     z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) W̃, λβ⁽ᵗ⁾), W̃ = :func:`alista_gain` (D)
    steps    (SLISTA, Ablin et al. 2019):   z⁺ = η(z − α⁽ᵗ⁾ (zDᵀ − y) D, λα⁽ᵗ⁾)

(the Moreau talk's "LISTA – Parametrizations" slides; in its column notation
z − αWᵀ(Dz − x)). η is soft-thresholding ST(u, θ) = sign(u)(|u| − θ)₊, or, with
``nonneg=True``, the prox of θ‖·‖₁ + ι_{≥0}: (u − θ)₊ (ReLU with bias −θ). The first layer
starts from z⁰ = 0, so it is η(y W_x, ·) resp. η(α y W, ·).

Steps and thresholds are stored as logarithms in units of the analytic step s₀ (1/L,
L = ‖D‖₂²; for ALISTA s₀ = 1/‖W̃ᵀD‖₂): α = s₀ e^ρ, β = s₀ e^σ, ρ = σ = 0 at init, so they stay
positive and an optimiser step changes them by a relative amount; matrices are stored divided
by the RMS of their analytic value, so every parameter the optimiser sees is of order one. With the analytic init (W_e = I − DᵀD/L, W_x = D/L, W = D) and
no support selection every net computes ISTA's iterates exactly (a test).

Options: ``tied=True`` shares the matrices across layers (TiLISTA, Liu et al. 2019; steps and
thresholds stay per layer). ``support_selection=True`` (LISTA-CPSS, Chen et al. 2018 eq. 13):
in layer t the largest p_t % of the entries (in magnitude) that pass the threshold are kept
untouched, p_t = min(ss_percent·t, ss_max).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import choice, nonnegative_float, positive_int
from ..operators import DenseOperator, as_operator
from ..problems import Lasso
from .base import UnrolledNet

PARAMETRIZATIONS = ("full", "coupled", "alista", "steps")


# -- the layer -----------------------------------------------------------------------------

def shrink(U: torch.Tensor, theta, *, nonneg: bool = False, keep: int = 0) -> torch.Tensor:
    """η(u, θ): soft-threshold (or (u − θ)₊ when ``nonneg``); the ``keep`` largest entries per row
    (by |u|, or by u when ``nonneg``) that exceed θ pass untouched (support selection,
    Chen et al. 2018 eq. 13)."""
    out = torch.relu(U - theta) if nonneg else torch.sign(U) * torch.relu(U.abs() - theta)
    if keep > 0:
        score = U if nonneg else U.abs()
        kth = torch.topk(score, min(keep, U.shape[1]), dim=1).values[:, -1:]
        mask = (score >= kth) & (score > theta)
        out = torch.where(mask, U, out)
    return out


def lista_layer(Z, Y, D, *, parametrization: str, alpha=None, theta, W=None, We=None, Wx=None,
                nonneg: bool = False, keep: int = 0) -> torch.Tensor:
    """One layer of the LISTA family (see the module docstring); ``Z is None`` means z = 0."""
    if parametrization == "full":
        U = Y @ Wx if Z is None else torch.addmm(Y @ Wx, Z, We)
    else:
        G = D if parametrization == "steps" else W
        if Z is None:
            U = alpha * (Y @ G)
        else:
            U = Z - alpha * ((Z @ D.T - Y) @ G)
    return shrink(U, theta, nonneg=nonneg, keep=keep)


# -- ALISTA's analytic gain -------------------------------------------------------------------

def alista_objective(W, D) -> float:
    """‖WᵀD‖_F², the Frobenius relaxation of the generalised mutual coherence that ALISTA's gain
    minimises subject to diag(WᵀD) = 1 (Liu, Chen, Wang & Yin 2019, ALISTA, eq. 15)."""
    W = torch.as_tensor(W, dtype=torch.float64)
    D = torch.as_tensor(D, dtype=torch.float64)
    return float((W.T @ D).pow(2).sum())


def alista_gain(D, *, tol: float = 1e-12, max_iter: int = 20_000) -> torch.Tensor:
    """W̃ = argmin_W ‖WᵀD‖_F²  s.t.  w_iᵀd_i = 1 ∀i   (ALISTA, Liu et al. 2019, eq. 15).

    Accelerated projected gradient (FISTA with restart): ∇ = 2DDᵀW, step 1/(2‖D‖₂²), and the
    projection onto the affine constraints column by column, w_i ← w_i + (1 − d_iᵀw_i) d_i/‖d_i‖².
    Stops when ‖W_{k+1} − W_k‖_F ≤ tol·‖W_k‖_F. Returns W̃ (m, n) in D's dtype.
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
    W = Dm / norms2                      # feasible start
    V, t = W.clone(), 1.0
    f_old = float((W.T @ Dm).pow(2).sum())
    for _ in range(max_iter):
        W_new = project(V - step * 2 * (G @ V))
        f_new = float((W_new.T @ Dm).pow(2).sum())
        if f_new > f_old:                # adaptive restart keeps the descent monotone
            t, V = 1.0, W.clone()
            W_new = project(V - step * 2 * (G @ V))
            f_new = float((W_new.T @ Dm).pow(2).sum())
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        V = W_new + ((t - 1) / t_new) * (W_new - W)
        delta = float((W_new - W).norm())
        W, t, f_old = W_new, t_new, f_new
        if delta <= tol * float(W.norm()):
            break
    return W.to(op.dtype)


# -- the networks -------------------------------------------------------------------------------

def _scalar(value: float, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.tensor(float(value), dtype=like.dtype, device=like.device))


class LISTAFamily(UnrolledNet):
    """``depth`` layers of :func:`lista_layer` for the Lasso min_z ½‖Dz − y‖² + λ‖z‖₁.

    Parameters: ``A`` the dictionary D (m, n); ``lam`` λ; ``parametrization`` one of
    "full", "coupled", "alista", "steps"; ``tied``; ``support_selection`` with ``ss_percent``,
    ``ss_max`` (percent); ``nonneg``; ``gain`` for "alista": "coherence" (:func:`alista_gain`)
    or "dictionary" (W̃ = D, which makes the analytic net exactly ISTA).
    ``net.problem`` is ``Lasso(D, λ)`` (the unsupervised loss and the metrics use it).
    """

    PARAMETRIZATION: str | None = None

    def __init__(self, A, depth: int, lam: float = 0.1, *, parametrization: str | None = None, tied: bool = False,
                 support_selection: bool = False, ss_percent: float = 1.2, ss_max: float = 13.0,
                 nonneg: bool = False, gain: str = "coherence"):
        fixed = self.PARAMETRIZATION
        if fixed is not None and parametrization not in (None, fixed):
            raise ValueError(f"{type(self).__name__} has parametrization {fixed!r}, got {parametrization!r}")
        param = choice(fixed or parametrization or "coupled", "parametrization", PARAMETRIZATIONS)
        lam = nonnegative_float(lam, "lam")
        gain = choice(gain, "gain", ("coherence", "dictionary"))
        if support_selection and param in ("steps",):
            raise ValueError("support_selection is an option of the full/coupled/alista parametrizations, not of "
                             "SLISTA (its threshold is tied to its step)")
        if tied and param in ("alista", "steps"):
            raise ValueError(f"tied=True has no meaning for parametrization {param!r} (no per-layer matrices)")
        config = dict(lam=lam, tied=bool(tied), support_selection=bool(support_selection),
                      ss_percent=nonnegative_float(ss_percent, "ss_percent"),
                      ss_max=nonnegative_float(ss_max, "ss_max"), nonneg=bool(nonneg))
        if fixed is None:
            config["parametrization"] = param
        if param == "alista":
            config["gain"] = gain
        super().__init__(A, depth, None, **config)
        self.parametrization, self.lam = param, lam
        self.tied, self.nonneg = bool(tied), bool(nonneg)
        self.support_selection = bool(support_selection)
        self.ss_percent, self.ss_max = config["ss_percent"], config["ss_max"]
        D = self.operator
        T = self.depth
        L = self.op.lipschitz
        if param == "alista":
            Wg = alista_gain(self.op) if gain == "coherence" else D.clone()
            self.register_buffer("gain", Wg.to(D.dtype))
            s0 = 1.0 / float(torch.linalg.matrix_norm((Wg.T @ D).to(torch.float64), ord=2))
        else:
            s0 = 1.0 / L
        self.s0 = s0
        self.a = nn.ParameterList([_scalar(0.0, D) for _ in range(T)]) if param != "full" else None
        self.b = nn.ParameterList([_scalar(0.0, D) for _ in range(T)]) if param != "steps" else None
        n_mats = 1 if tied else T
        self.scales = {}

        def mats(value, count):
            c = float(value.to(torch.float64).pow(2).mean().sqrt()) or 1.0
            return c, nn.ParameterList([nn.Parameter((value / c).detach().clone()) for _ in range(count)])

        if param == "full":
            eye = torch.eye(self.n, dtype=D.dtype, device=D.device)
            self.scales["Wx"], self.Wx = mats(D * s0, n_mats)
            self.scales["We"], self.We = mats(eye - s0 * (D.T @ D), 1 if tied else T - 1)
        elif param == "coupled":
            self.scales["W"], self.W = mats(D, n_mats)

    @property
    def problem(self) -> Lasso:
        """Lasso(D, λ) on the network's own operator buffer, so it follows ``.to()``/``.double()``."""
        D = self.operator
        key = (D.dtype, D.device, D.data_ptr())
        cache = self.__dict__.get("_problem_cache")
        if cache is None or cache[0] != key:
            cache = (key, Lasso(DenseOperator(D.detach()), self.__dict__.get("lam", 0.0)))
            self.__dict__["_problem_cache"] = cache
        return cache[1]

    @problem.setter
    def problem(self, value):   # the base class assigns None; the problem is always derived from D, λ
        pass

    # -- per-layer access ----------------------------------------------------------------------
    def _mat(self, name, t):
        """The matrix ``name`` of layer t, in its true scale."""
        plist = getattr(self, name)
        return self.scales[name] * (plist[0] if self.tied else plist[t])

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
        if not 0 <= t < self.depth:
            raise ValueError(f"layer {t} out of range for depth {self.depth}")
        ps = []
        if self.a is not None:
            ps.append(self.a[t])
        if self.b is not None:
            ps.append(self.b[t])
        if self.parametrization == "full":
            ps.append(self.Wx[0 if self.tied else t])
            if self.tied:
                ps.append(self.We[0])
            elif t > 0:
                ps.append(self.We[t - 1])
        elif self.parametrization == "coupled":
            ps.append(self.W[0 if self.tied else t])
        return ps

    def layer_matrix(self, t: int) -> torch.Tensor | None:
        """The gain W⁽ᵗ⁾ of a coupled layer, or W_x⁽ᵗ⁾ of a full one (row form, shape (m, n))."""
        if self.parametrization == "full":
            return self._mat("Wx", t).detach()
        if self.parametrization == "coupled":
            return self._mat("W", t).detach()
        return self.gain.detach() if self.parametrization == "alista" else self.operator.detach()

    def iterates(self, Y, depth):
        D = self.operator
        Z = None
        for t in range(depth):
            a = self._alpha(t)
            theta = self.lam * self._beta(t)
            kw = {}
            if self.parametrization == "full":
                We = None
                if t:
                    We = self.scales["We"] * (self.We[0] if self.tied else self.We[t - 1])
                kw = {"Wx": self._mat("Wx", t), "We": We}
            elif self.parametrization == "coupled":
                kw = {"W": self._mat("W", t)}
            elif self.parametrization == "alista":
                kw = {"W": self.gain}
            Z = lista_layer(Z, Y, D, parametrization=self.parametrization, alpha=a, theta=theta,
                            nonneg=self.nonneg, keep=self.keep(t), **kw)
            yield Z


class LISTA(LISTAFamily):
    """LISTA (Gregor & LeCun 2010): z⁺ = η(W_e⁽ᵗ⁾z + W_x⁽ᵗ⁾x, θ⁽ᵗ⁾), untied (``tied=True``: one W_e, W_x)."""

    PARAMETRIZATION = "full"


class LISTA_CP(LISTAFamily):
    """LISTA-CP (Chen et al. 2018, eq. 10): z⁺ = η(z − α⁽ᵗ⁾W⁽ᵗ⁾ᵀ(Dz − x), θ⁽ᵗ⁾); ``support_selection=True``
    gives LISTA-CPSS, ``tied=True`` TiLISTA."""

    PARAMETRIZATION = "coupled"


class ALISTA(LISTAFamily):
    """ALISTA (Liu et al. 2019): z⁺ = η(z − α⁽ᵗ⁾W̃ᵀ(Dz − x), θ⁽ᵗ⁾), W̃ from :func:`alista_gain`;
    only α⁽ᵗ⁾, θ⁽ᵗ⁾ are learned."""

    PARAMETRIZATION = "alista"


class SLISTA(LISTAFamily):
    """SLISTA (Ablin, Moreau, Massias & Gramfort 2019; Moreau talk "Restricted parametrization"):
    z⁺ = ST(z − α⁽ᵗ⁾Dᵀ(Dz − x), λα⁽ᵗ⁾); only the steps α⁽ᵗ⁾ are learned."""

    PARAMETRIZATION = "steps"


__all__ = ["LISTAFamily", "LISTA", "LISTA_CP", "ALISTA", "SLISTA", "lista_layer", "shrink", "alista_gain",
           "alista_objective", "PARAMETRIZATIONS"]
