"""The operator interface, its adjoint as an operator, and the power iteration for ‖A‖₂².

``op.forward(X)`` maps rows x (batch, n) to rows Ax (batch, m) and ``op.adjoint(R)``
maps rows r (batch, m) to Aᵀr (batch, n). One x has the shape ``op.in_shape`` once
unflattened ((n,) for a matrix, (C, H, W) for a convolution), one y ``op.out_shape``.
The Lipschitz constant of the data term ½‖Ax − y‖² is L = ‖A‖₂² (xie2019 §2,
β = ‖A‖₂²); it is exact (SVD) for small dense operators, power iteration otherwise,
and cached.
"""

from __future__ import annotations

import hashlib

import torch


class Operator:
    """A linear map R^n → R^m on row batches. Subclasses define forward/adjoint."""

    kind: str
    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __init__(self):
        self._lipschitz = None

    # -- to be provided -------------------------------------------------
    def forward(self, X: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> tuple[dict, dict]:  # pragma: no cover - abstract
        """``(config, tensors)``: a JSON-able dict with a ``"kind"`` key and the named tensors;
        ``unrolled.operators.from_spec(config, tensors)`` rebuilds the operator."""
        raise NotImplementedError

    def to(self, dtype=None, device=None) -> Operator:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ---------------------------------------------------------
    @property
    def m(self) -> int:
        return self.shape[0]

    @property
    def n(self) -> int:
        return self.shape[1]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one unflattened x."""
        return (self.n,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one unflattened y = Ax."""
        return (self.m,)

    @property
    def T(self) -> Operator:
        """The adjoint Aᵀ as an operator (same Lipschitz constant)."""
        return Transpose(self)

    def normal(self, X: torch.Tensor) -> torch.Tensor:
        """AᵀA x for rows x."""
        return self.adjoint(self.forward(X))

    @property
    def lipschitz(self) -> float:
        """L = ‖A‖₂², the Lipschitz constant of ∇½‖Ax − y‖² (cached)."""
        if self._lipschitz is None:
            self._lipschitz = self._norm_squared()
        return self._lipschitz

    def _cached_lipschitz(self) -> float | None:
        """L if already computed, else None."""
        return self._lipschitz

    def _norm_squared(self) -> float:
        # in float64 whatever the operator's dtype: float32 cannot certify 1e-10
        op = self if self.dtype == torch.float64 else self.to(dtype=torch.float64)
        return power_iteration(op.normal, self.n, dtype=op.dtype, device=self.device)

    def matrix(self) -> torch.Tensor:
        """The dense (m, n) matrix of the operator (built column by column if needed)."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        return self.forward(eye).T.contiguous()

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def hash_key(prefix: str, tensor: torch.Tensor, extra) -> str:
    """``prefix:`` + 16 hex digits of SHA-256 over ``tensor`` at float32 precision and ``str(extra)``.

    Hashing at float32 makes float32 and float64 copies of one operator agree.
    """
    data = tensor.detach().to("cpu", torch.float32).numpy()
    key = data.tobytes() + str(extra).encode()
    return f"{prefix}:" + hashlib.sha256(key).hexdigest()[:16]


class TransposeMixin:
    """forward/adjoint, shapes, fingerprint and spec of Aᵀ, for an operator ``self.base`` = A."""

    kind = "transpose"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.base.n, self.base.m)

    @property
    def in_shape(self):
        return self.base.out_shape

    @property
    def out_shape(self):
        return self.base.in_shape

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def device(self):
        return self.base.device

    @property
    def T(self):
        return self.base

    @property
    def lipschitz(self) -> float:
        return self.base.lipschitz  # ‖Aᵀ‖₂ = ‖A‖₂

    def _cached_lipschitz(self):
        return self.base._cached_lipschitz()

    def forward(self, X):
        return self.base.adjoint(X)

    def adjoint(self, R):
        return self.base.forward(R)

    def matrix(self):
        return self.base.matrix().T

    def fingerprint(self) -> str:
        return self.base.fingerprint() + ".T"

    def spec(self):
        config, tensors = self.base.spec()
        return {"kind": self.kind, "of": config}, tensors


class Transpose(TransposeMixin, Operator):
    """Aᵀ for a fixed operator A: forward is A's adjoint, adjoint is A's forward.

    Convolutional dictionaries are transposed convolutions (sulam2018 §3: Dᵢᵀ is the
    convolution), so a dictionary is ``Conv2dOperator(...).T``.
    """

    def __init__(self, base: Operator):
        super().__init__()
        self.base = base

    def to(self, dtype=None, device=None):
        return self.base.to(dtype=dtype, device=device).T


def power_iteration(
    normal,
    n: int,
    *,
    dtype=torch.float64,
    device=None,
    iters: int = 1000,
    tol: float = 1e-10,
    seed: int = 0,
    krylov: int = 32,
) -> float:
    """Largest eigenvalue of the PSD map ``normal`` (AᵀA): power iteration refined by Rayleigh–Ritz.

    Plain power iteration stalls when the top eigenvalues cluster (smooth convolution
    kernels), and its successive-difference stop then returns a value *below* ‖A‖₂²,
    i.e. a step 1/L that is too long. Here each cycle builds an orthonormal Krylov basis
    of ``krylov`` vectors from the current vector (restarted Lanczos, full
    re-orthogonalisation), takes the top Ritz pair (θ, u) and stops when the residual
    ‖AᵀAu − θu‖ ≤ tol·θ. The Ritz value θ ≤ λ_max, and λ_max − θ ≲ ‖r‖, so θ + ‖r‖ is
    returned: an estimate from above for the step. ``iters`` bounds the number of
    applications of ``normal``.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(1, n, generator=gen, dtype=dtype).to(device)
    v = v / v.norm()
    k = max(1, min(int(krylov), n))
    theta, resid, used = 0.0, 0.0, 0
    while used < iters:
        V, W = [v], []
        for j in range(k):
            W.append(normal(V[j]))
            used += 1
            if j == k - 1 or used >= iters:
                break
            basis = torch.cat(V)
            w = W[j] - (W[j] @ basis.T) @ basis
            w = w - (w @ basis.T) @ basis  # twice is enough (Kahan–Parlett)
            norm = float(w.norm())
            if norm <= 1e-12 * float(W[j].norm()):
                break  # invariant subspace: the Ritz values are exact
            V.append(w / norm)
        basis, images = torch.cat(V[: len(W)]), torch.cat(W)
        H = basis @ images.T
        evals, evecs = torch.linalg.eigh((H + H.T) / 2)
        theta = float(evals[-1])
        if theta <= 0.0:
            return 0.0
        s = evecs[:, -1:].T
        u, Mu = s @ basis, s @ images
        resid = float((Mu - theta * u).norm())
        if resid <= tol * theta:
            break
        v = u / u.norm()
    return theta + resid
