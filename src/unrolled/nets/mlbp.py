"""Multi-layer sparse coding networks (sulam2018 §3–4; Sulam talk "Generalizing Recurrent CNNs").

Every net runs the solver's own step on learned parameters: ML-ISTA / ML-FISTA call
:func:`~unrolled.algorithms.mlbp.ml_ista_layers` (the solver's map T), layered BP calls
:func:`~unrolled.algorithms.lasso.ista_step` layer after layer. The parameters are

* the dictionaries D_1, …, D_L, learned operators (``unrolled.operators.learned``): dense
  matrices or multi-channel strided convolutions (for those, pass ``Conv2dOperator(k, …).T``:
  Dᵢᵀ is the convolution, Dᵢ its transpose);
* the steps η_i, stored as η_i = s_i e^{σ_i} with s_i the analytic step (a buffer) and σ_i = 0 at init;
* the biases b_i, one per atom (dense) or per channel (convolutional), used as thresholds:
  z_i = η(v_i, −b_i), i.e. ReLU(v_i + b_i) with ``nonneg=True``.

They are shared by every unfolding (the nets are recurrent), so a net has the same parameters
whatever its depth. ``depth`` counts passes: depth = k + 1 for k unfoldings, and depth 1 is the
feed-forward network z_i = η(η_i D_iᵀz_{i−1}, −b_i), z_0 = y. With ``init="analytic"``
(b_i = −μ_iλ_i, η_i those of :class:`~unrolled.problems.MLBP`) ``MLISTANet`` / ``MLFISTANet``
yield the iterates of ``ml_bp(..., method="ml-ista" | "ml-fista")`` and ``LayeredBPNet`` (b_i =
−λ_i/‖D_i‖²) those of ``method="layered-bp"`` with ``max_iter = depth`` inner iterations (tests).

``MLISTANet`` / ``MLFISTANet`` take the layer-wise relaxation ρ of sulam2018 Supplementary B
(``rho``, ``net.rho = …`` on the caller's schedule); at ρ = 0 they are the cascade of
:class:`~unrolled.algorithms.mlbp.LayeredBP` (ISTA resp. FISTA), another test.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import operators
from .._validate import choice, nonnegative_float, positive_int
from ..algorithms._common import GradientStep, extrapolate, fista_momentum
from ..algorithms.lasso import ista_step
from ..algorithms.mlbp import ml_ista_layers, representations
from ..operators import as_operator
from ..problems import MLBP
from .base import UnrolledNet


def _channels(op) -> int:
    """Biases per code of D (n entries): one per channel of a (C, H, W) code, else one per entry."""
    shape = tuple(op.in_shape)
    return shape[0] if len(shape) == 3 else op.n


def _stack_entry(op) -> dict:
    """The JSON a saved net needs to rebuild D_i (i ≥ 2) before its weights are loaded."""
    config, tensors = op.spec()
    return {"operator": config, "weight": list(tensors["weight"].shape)}


def _placeholder(entry: dict, dtype) -> operators.LearnedOperator:
    """D_i of a saved net with placeholder weights (ones), overwritten by ``load_state_dict``."""
    return operators.from_spec(entry["operator"], {"weight": torch.ones(entry["weight"], dtype=dtype)})


class _MultiLayerNet(UnrolledNet):
    """The parameters and storage shared by the multi-layer nets.

    Parameters
    ----------
    operator : list of L operators or arrays, D_i of shape (n_{i−1}, n_i)
        The dictionaries, copied into learned operators (a single operator is L = 1).
    depth : int
        Passes, k + 1 for k unfoldings.
    lams : float or list of L floats
        λ_i ≥ 0: the analytic thresholds (a float: the same λ for every layer).
    init : {"analytic"}
        Steps and thresholds of the solver (module docstring).
    tied : bool
        True (default; the paper's recurrent nets): one set of steps and biases for every pass, so
        every depth has the same parameters. False: steps and biases per pass (the dictionaries,
        the model, stay shared).
    nonneg : bool
        Non-negative codes: the prox is ReLU(v + b).
    mu_scale : float
        μ = mu_scale/‖D_1‖² for the analytic steps (as :class:`~unrolled.problems.MLBP`).
    stack : list of dict
        Set by ``unrolled.load`` only (D_2, …, D_L of a saved net; ``operator`` is then D_1).

    Returns
    -------
    ``net(Y)``: the deepest codes γ_L (batch, n_L) for signals Y (batch, n_0); images
    (batch, *D_1.out_shape) give codes (batch, *D_L.in_shape).
    """

    TIE_OPTION = True

    def __init__(
        self,
        operator,
        depth: int,
        lams=0.1,
        *,
        init: str = "analytic",
        tied: bool = True,
        nonneg: bool = False,
        mu_scale: float = 1.0,
        stack: list | None = None,
    ):
        ops = list(operator) if isinstance(operator, (list, tuple)) else [operator]
        if not ops:
            raise ValueError("operator must hold at least one dictionary D_1")
        first = operators.learned(as_operator(ops[0], name="D_1"))
        if stack is None:
            rest = [
                operators.learned(as_operator(D, dtype=first.dtype, device=first.device, name=f"D_{i}"))
                for i, D in enumerate(ops[1:], start=2)
            ]
        else:
            rest = [_placeholder(entry, first.dtype) for entry in stack]
        ops = [first, *rest]
        lams = [nonnegative_float(v, "lams") for v in ([lams] * len(ops) if np.ndim(lams) == 0 else list(lams))]
        if len(lams) != len(ops):
            raise ValueError(f"need one λ per layer: {len(ops)} dictionaries, {len(lams)} λ")
        for i in range(1, len(ops)):
            if ops[i].m != ops[i - 1].n:
                raise ValueError(f"D_{i + 1} has {ops[i].m} rows but D_{i} has {ops[i - 1].n} columns")
        super().__init__(
            first,
            depth,
            None,
            init=init,
            tied=tied,
            lams=lams,
            nonneg=bool(nonneg),
            mu_scale=nonnegative_float(mu_scale, "mu_scale", strict=True),
            stack=[_stack_entry(op) for op in rest],
        )
        self.stack = nn.ModuleList(rest)
        self.lams, self.nonneg = lams, bool(nonneg)
        problem = MLBP([op.frozen() for op in ops], lams, mu_scale=mu_scale) if stack is None else None
        units = self.analytic_steps(problem)
        self.register_buffer("step_unit", torch.tensor(units, dtype=first.dtype, device=first.device))
        self.log_steps = self.layer_list(lambda t: torch.zeros(len(ops), dtype=first.dtype, device=first.device))
        thetas = self.analytic_thresholds(problem)
        self.biases = nn.ModuleList(
            [
                self.layer_list(
                    lambda t, c=channels, theta=theta: torch.full((c,), -theta, dtype=first.dtype, device=first.device)
                )
                for channels, theta in zip(map(_channels, ops), thetas)
            ]
        )

    # -- the analytic values (placeholders when loading: the state dict overwrites them) --------------
    def analytic_steps(self, problem: MLBP | None) -> list[float]:
        return [1.0] * len(self.lams) if problem is None else problem.etas

    def analytic_thresholds(self, problem: MLBP | None) -> list[float]:
        return [0.0] * len(self.lams) if problem is None else [mu * lam for mu, lam in zip(problem.mus, self.lams)]

    # -- the current parameters -------------------------------------------------------------------
    @property
    def dictionaries(self) -> list:
        """[D_1, …, D_L], learned operators."""
        return [self.op, *self.stack]

    @property
    def n(self) -> int:
        """The length of the deepest code γ_L (D_L's columns)."""
        return self.dictionaries[-1].n

    def steps(self, t: int = 0) -> torch.Tensor:
        """η_i = s_i e^{σ_i} of pass t, shape (L,)."""
        return self.step_unit * self.at(self.log_steps, t).exp()

    def bias(self, t: int = 0) -> list[torch.Tensor]:
        """[b_1, …, b_L] of pass t, shapes (n_i,) or (C_i,) (one per channel)."""
        return [self.at(b, t) for b in self.biases]

    def thresholds(self, t: int = 0) -> list[torch.Tensor]:
        """θ_i = −b_i of pass t broadcast over the entries of a code, shapes (n_i,)."""
        return [-b.repeat_interleave(op.n // b.numel()) for b, op in zip(self.bias(t), self.dictionaries)]

    def pass_parameters(self, depth: int) -> list[tuple]:
        """[(steps, thresholds)] of passes 0..depth−1 (computed once when tied)."""
        if self.tied:
            return [(self.steps(), self.thresholds())] * depth
        return [(self.steps(t), self.thresholds(t)) for t in range(depth)]

    def mlbp(self) -> MLBP:
        """P_ML on (fixed copies of) the current dictionaries and first pass's steps (objective, certificate)."""
        return MLBP(
            [op.frozen() for op in self.dictionaries], self.lams, steps=[float(s) for s in self.steps().detach()]
        )

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """The dictionaries and the steps and biases of pass t (all of them when tied)."""
        self.check_layer(t)
        own = [self.at(self.log_steps, t), *self.bias(t)]
        return [p for op in self.dictionaries for p in op.parameters()] + own

    def forward(self, Y, *, depth: int | None = None, return_all: bool = False):
        """As :meth:`UnrolledNet.forward`; images (batch, *D_1.out_shape) give codes (batch, *D_L.in_shape)."""
        shape = tuple(self.op.out_shape)
        if not (isinstance(Y, torch.Tensor) and len(shape) > 1 and tuple(Y.shape[1:]) == shape):
            return super().forward(Y, depth=depth, return_all=return_all)
        outs = super().forward(Y.reshape(Y.shape[0], -1), depth=depth, return_all=True)
        outs = [o.reshape(o.shape[0], *self.stack_shape) for o in outs]
        return outs if return_all else outs[-1]

    @property
    def stack_shape(self) -> tuple:
        """The shape of one deepest code, D_L's ``in_shape``."""
        return tuple(self.dictionaries[-1].in_shape)


def conv_dictionaries(
    image_shape, channels, kernels, strides, *, seed: int = 0, unit_norm: bool = True, dtype=torch.float32
) -> list:
    """Random convolutional dictionaries D_1, …, D_L for the multi-layer nets (Dᵢᵀ the strided
    convolution, no padding), filters i.i.d. U(−1/√f, 1/√f) with f = C_{i−1}·k_i² (torch's default
    for a convolution), each then scaled to ‖D_i‖₂ = 1 when ``unit_norm`` (so the analytic steps of
    the nets are 1 and their codes keep the signal's scale).

    Parameters
    ----------
    image_shape : (C, H, W)
        The signal's shape, e.g. (1, 28, 28) for MNIST.
    channels, kernels, strides : sequences of L ints
        Filters, kernel sizes and strides of each layer (sulam2018 §4 on MNIST: (64, 128, 512),
        (6, 6, 4), (2, 2, 1)).
    seed : int
    unit_norm : bool
        Scale every D_i to spectral norm 1 (power iteration, float64).
    dtype : torch dtype

    Returns
    -------
    list of L operators, D_i of shape (n_{i−1}, n_i), for ``MLISTANet(dictionaries, …)``.
    """
    if not len(channels) == len(kernels) == len(strides) > 0:
        raise ValueError("channels, kernels and strides need one entry per layer, and at least one layer")
    gen = torch.Generator().manual_seed(seed)
    shape, ops = tuple(image_shape), []
    for i, (c, k, s) in enumerate(zip(channels, kernels, strides), start=1):
        c, k, s = positive_int(c, f"channels[{i}]"), positive_int(k, f"kernels[{i}]"), positive_int(s, f"strides[{i}]")
        bound = 1.0 / (shape[0] * k * k) ** 0.5
        kernel = (2 * torch.rand(c, shape[0], k, k, generator=gen, dtype=torch.float64) - 1) * bound
        conv = operators.Conv2dOperator(kernel, shape, stride=s, padding=0)
        scale = conv.lipschitz**0.5 if unit_norm else 1.0
        conv = operators.Conv2dOperator((kernel / scale).to(dtype), shape, stride=s, padding=0)
        ops.append(conv.T)
        shape = tuple(conv.out_shape)
    return ops


def rho_schedule(epochs: int, final: float = 1.0, steepness: float = 10.0):
    """An ``on_epoch`` callback for ``ur.train`` moving ρ from 0 to ``final`` along a sigmoid
    (sulam2018 Supplementary B: ρ = 0, the layer-wise relaxed model, progressively to ρ = 1;
    ``final=0.5`` for SVHN, §4).

    Parameters
    ----------
    epochs : int
        The run's epochs: ρ = 0 at epoch 0 and ρ = ``final`` at epoch ``epochs − 1``.
    final : float in [0, 1]
        The last value of ρ.
    steepness : float > 0
        s of ρ_e = final · (σ(s(t − ½)) − σ(−s/2)) / (σ(s/2) − σ(−s/2)), t = e / (epochs − 1).

    Returns
    -------
    callable ``(model, epoch, history=None) -> None``, ``ur.train``'s ``on_epoch``: sets ``model.rho``
    (or ``model.net.rho`` for a
    :class:`~unrolled.nets.Classifier`).
    """
    epochs = positive_int(epochs, "epochs")
    final = _MLISTAFamily._checked_rho(final)
    steepness = nonnegative_float(steepness, "steepness", strict=True)
    low, high = torch.sigmoid(torch.tensor(-steepness / 2)), torch.sigmoid(torch.tensor(steepness / 2))

    def set_rho(model, epoch: int, history=None) -> None:
        net = getattr(model, "net", model)
        if not isinstance(net, _MLISTAFamily):
            raise TypeError(f"rho_schedule needs an MLISTANet or MLFISTANet, got {type(net).__name__}")
        t = epoch / (epochs - 1) if epochs > 1 else 1.0
        value = (torch.sigmoid(torch.tensor(steepness * (t - 0.5))) - low) / (high - low)
        net.rho = min(1.0, max(0.0, final * float(value)))

    return set_rho


class _MLISTAFamily(_MultiLayerNet):
    """The ML-ISTA step with learned parameters and the layer-wise relaxation ρ of sulam2018
    Supplementary B (``rho``: 1 the global model, 0 the layer-wise relaxed one; set ``net.rho``
    during training on any schedule, e.g. a sigmoid from 0 to 1 as in the paper, or to 0.5 for
    SVHN; it is saved with the net). Other parameters: see :class:`_MultiLayerNet`."""

    def __init__(
        self,
        operator,
        depth: int,
        lams=0.1,
        *,
        init: str = "analytic",
        tied: bool = True,
        nonneg: bool = False,
        mu_scale: float = 1.0,
        rho: float = 1.0,
        stack: list | None = None,
    ):
        rho = self._checked_rho(rho)
        super().__init__(operator, depth, lams, init=init, tied=tied, nonneg=nonneg, mu_scale=mu_scale, stack=stack)
        self.config["rho"] = rho
        self.register_buffer("relaxation", self.scalar(rho))

    @staticmethod
    def _checked_rho(value) -> float:
        rho = nonnegative_float(value, "rho")
        if rho > 1:
            raise ValueError(f"rho must be in [0, 1], got {value!r}")
        return rho

    @property
    def rho(self) -> float:
        """The relaxation ρ ∈ [0, 1] used by the next forward pass."""
        return float(self.relaxation)

    @rho.setter
    def rho(self, value) -> None:
        self.relaxation.fill_(self._checked_rho(value))

    def ml_ista_pass(self, previous, Y, steps, thresholds, rho: float) -> list[torch.Tensor]:
        """[z_1, …, z_L] of one step from the layer outputs ``previous`` (None: γ = 0)."""
        hats = None if previous is None else representations(self.dictionaries, previous[-1])
        return [
            z
            for _, z in ml_ista_layers(
                hats, Y, self.dictionaries, steps, thresholds, nonneg=self.nonneg, rho=rho, previous=previous
            )
        ]


class MLISTANet(_MLISTAFamily):
    """ML-ISTA unfolded (sulam2018 §4, Algorithm 2 with learned parameters): γ^{t+1} = T(γ^t), γ⁰ = 0,
    T = :func:`~unrolled.algorithms.mlbp.ml_ista_layers` (relaxed by ρ). Parameters: see
    :class:`_MultiLayerNet` and :class:`_MLISTAFamily`."""

    def iterates(self, Y, depth):
        layers, rho = None, self.rho
        for steps, thresholds in self.pass_parameters(depth):
            layers = self.ml_ista_pass(layers, Y, steps, thresholds, rho)
            yield layers[-1]


class MLFISTANet(_MLISTAFamily):
    """ML-FISTA unfolded (sulam2018 Algorithm 3 with learned parameters): γ^{t+1} = T(w^t),
    w^{t+1} = γ^{t+1} + (s_t − 1)/s_{t+1}(γ^{t+1} − γ^t), s_{t+1} = (1 + √(1 + 4s_t²))/2, w⁰ = γ⁰ = 0.
    With ρ < 1 every layer's output carries state and is extrapolated alike. Parameters: see
    :class:`_MultiLayerNet` and :class:`_MLISTAFamily`."""

    def iterates(self, Y, depth):
        layers, points, s, rho = None, None, 1.0, self.rho
        for steps, thresholds in self.pass_parameters(depth):
            new = self.ml_ista_pass(points, Y, steps, thresholds, rho)
            s, beta = fista_momentum(s)
            if layers is None:
                points = new
            elif rho == 1:
                points = [*new[:-1], extrapolate(new[-1], layers[-1], beta)]
            else:
                points = [extrapolate(a, b, beta) for a, b in zip(new, layers)]
            layers = new
            yield layers[-1]


class LayeredBPNet(_MultiLayerNet):
    """Layered BP unfolded (sulam2018 §4, [23]): layer i runs ``depth`` ISTA (or FISTA, ``inner="fista"``)
    steps z ← η(z − η_i D_iᵀ(D_i z − z_{i−1}), −b_i) from z = 0 on the finished z_{i−1} (z_0 = y);
    yields the deepest layer's iterates. Analytic steps η_i = 1/‖D_i‖², thresholds λ_i η_i.

    Parameters
    ----------
    inner : {"ista", "fista"}
        The pursuit of each layer (the paper's network: "ista").
    Others: see :class:`_MultiLayerNet` (``mu_scale`` is not used).
    """

    def __init__(
        self,
        operator,
        depth: int,
        lams=0.1,
        *,
        init: str = "analytic",
        tied: bool = True,
        nonneg: bool = False,
        mu_scale: float = 1.0,
        inner: str = "ista",
        stack: list | None = None,
    ):
        inner = choice(inner, "inner", ("ista", "fista"))
        super().__init__(operator, depth, lams, init=init, tied=tied, nonneg=nonneg, mu_scale=mu_scale, stack=stack)
        self.inner = self.config["inner"] = inner

    def analytic_steps(self, problem):
        return [1.0] * len(self.lams) if problem is None else [1.0 / op.lipschitz for op in problem.ops]

    def analytic_thresholds(self, problem):
        return (
            [0.0] * len(self.lams)
            if problem is None
            else [lam / op.lipschitz for op, lam in zip(problem.ops, self.lams)]
        )

    def iterates(self, Y, depth):
        target, passes, L = Y, self.pass_parameters(depth), len(self.lams)
        for i, op in enumerate(self.dictionaries):
            z, w, s = None, None, 1.0
            for steps, thresholds in passes:
                grad_step = GradientStep(op, steps[i])
                z_new = ista_step(w, grad_step.offset(target), grad_step, thresholds[i], nonneg=self.nonneg)
                if self.inner == "fista":
                    s, beta = fista_momentum(s)
                    w = z_new if z is None else extrapolate(z_new, z, beta)
                else:
                    w = z_new
                z = z_new
                if i == L - 1:
                    yield z
            target = z
