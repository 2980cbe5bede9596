"""Linear forward operators acting on batches of signals stored as rows.

``op.forward(X)`` maps rows x (batch, n) to rows Ax (batch, m) and ``op.adjoint(R)``
maps rows r (batch, m) to Aᵀr (batch, n). The Lipschitz constant of the data term
½‖Ax − y‖² is L = ‖A‖₂² (xie2019 §2, β = ‖A‖₂²); it is exact (SVD) for small
operators, power iteration otherwise, and cached.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from ._validate import positive_int, to_tensor

EXACT_NORM_MAX = 2048  # min(m, n) up to which ‖A‖₂ is computed exactly


class Operator:
    """A linear map R^n → R^m on row batches. Subclasses define forward/adjoint."""

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

    # -- shared ---------------------------------------------------------
    @property
    def m(self) -> int:
        return self.shape[0]

    @property
    def n(self) -> int:
        return self.shape[1]

    def normal(self, X: torch.Tensor) -> torch.Tensor:
        """AᵀA x for rows x."""
        return self.adjoint(self.forward(X))

    @property
    def lipschitz(self) -> float:
        """L = ‖A‖₂², the Lipschitz constant of ∇½‖Ax − y‖² (cached)."""
        if self._lipschitz is None:
            self._lipschitz = self._norm_squared()
        return self._lipschitz

    def _norm_squared(self) -> float:
        # in float64 whatever the operator's dtype: float32 cannot certify 1e-10
        op = self
        if self.dtype != torch.float64:
            try:
                op = self.to(dtype=torch.float64)
            except NotImplementedError:
                pass
        return power_iteration(op.normal, self.n, dtype=op.dtype, device=self.device)

    def matrix(self) -> torch.Tensor:
        """The dense (m, n) matrix of the operator (built column by column if needed)."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        return self.forward(eye).T.contiguous()

    def to(self, dtype=None, device=None) -> "Operator":  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def power_iteration(normal, n: int, *, dtype=torch.float64, device=None, iters: int = 1000,
                    tol: float = 1e-10, seed: int = 0, krylov: int = 32) -> float:
    """Largest eigenvalue of the PSD map ``normal`` (AᵀA): power iteration refined by Rayleigh–Ritz.

    Plain power iteration stalls when the top eigenvalues cluster (smooth convolution
    kernels), and its successive-difference stop then returns a value *below* ‖A‖₂²
    (1.8e-4 relative on a 4×4 kernel), i.e. a step 1/L that is too long. Here each
    cycle builds an orthonormal Krylov basis of ``krylov`` vectors from the current
    vector (restarted Lanczos, full re-orthogonalisation), takes the top Ritz pair
    (θ, u) and stops when the residual ‖AᵀAu − θu‖ ≤ tol·θ. The Ritz value θ ≤ λ_max,
    and λ_max − θ ≲ ‖r‖, so θ + ‖r‖ is returned: an estimate from above for the step.
    ``iters`` bounds the number of applications of ``normal``.
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
        basis, images = torch.cat(V[:len(W)]), torch.cat(W)
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


class DenseOperator(Operator):
    """A dense matrix A of shape (m, n); forward X ↦ X Aᵀ, adjoint R ↦ R A."""

    def __init__(self, A, *, dtype=None, device=None):
        super().__init__()
        A = to_tensor(A, "A", dtype=dtype, device=device)
        if A.dim() != 2 or A.shape[0] == 0 or A.shape[1] == 0:
            raise ValueError(f"A must be a non-empty 2-D matrix, got shape {tuple(A.shape)}")
        self.A = A.contiguous()
        self.shape = tuple(A.shape)
        self.dtype, self.device = A.dtype, A.device
        self._gram = None
        self._fingerprint = None

    def forward(self, X):
        return X @ self.A.T

    def adjoint(self, R):
        return R @ self.A

    @property
    def gram(self) -> torch.Tensor:
        """AᵀA (n, n), cached."""
        if self._gram is None:
            self._gram = self.A.T @ self.A
        return self._gram

    def normal(self, X):
        # one (n × n) product beats two (m × n) ones when n < 2m
        if self.n < 2 * self.m:
            return X @ self.gram
        return self.adjoint(self.forward(X))

    def _norm_squared(self) -> float:
        if min(self.shape) <= EXACT_NORM_MAX:
            s = torch.linalg.matrix_norm(self.A.to(torch.float64), ord=2)
            return float(s) ** 2
        return super()._norm_squared()

    def matrix(self):
        return self.A

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            # hashed at float32 precision, so float32 and float64 copies of one matrix agree
            data = self.A.detach().to("cpu", torch.float32).numpy()
            key = data.tobytes() + str(self.shape).encode()
            self._fingerprint = "dense:" + hashlib.sha256(key).hexdigest()[:16]
        return self._fingerprint

    def to(self, dtype=None, device=None):
        op = DenseOperator(self.A.to(dtype=dtype or self.dtype, device=device or self.device))
        op._lipschitz = self._lipschitz
        return op


class Conv2dOperator(Operator):
    """2-D convolution with a point-spread function, then optional down-sampling.

    An image of ``image_shape`` (H, W), flattened as a row, is convolved ('valid' after
    zero padding of ``padding`` pixels) with ``kernel`` (kh, kw) and sampled every
    ``stride`` pixels: y = S (k ∗ x). The adjoint is the transposed convolution.
    """

    def __init__(self, kernel, image_shape, *, stride: int = 1, padding: int | None = None,
                 dtype=None, device=None):
        super().__init__()
        k = to_tensor(kernel, "kernel", dtype=dtype, device=device)
        if k.dim() != 2:
            raise ValueError(f"kernel must be 2-D (kh, kw), got shape {tuple(k.shape)}")
        if len(image_shape) != 2:
            raise ValueError(f"image_shape must be (H, W), got {image_shape!r}")
        H, W = (positive_int(s, "image_shape") for s in image_shape)
        self.stride = positive_int(stride, "stride")
        self.padding = k.shape[0] // 2 if padding is None else int(padding)
        self.kernel = k
        self.image_shape = (H, W)
        self._weight = k.flip(0, 1)[None, None].contiguous()  # conv2d correlates; flip to convolve
        out = F.conv2d(torch.zeros(1, 1, H, W, dtype=k.dtype, device=k.device), self._weight,
                       stride=self.stride, padding=self.padding)
        self.out_shape = tuple(out.shape[-2:])
        self.shape = (self.out_shape[0] * self.out_shape[1], H * W)
        self.dtype, self.device = k.dtype, k.device
        # output_padding so that the transpose lands exactly on (H, W)
        full = F.conv_transpose2d(out, self._weight, stride=self.stride, padding=self.padding)
        self._output_padding = (H - full.shape[-2], W - full.shape[-1])

    def forward(self, X):
        B = X.shape[0]
        out = F.conv2d(X.reshape(B, 1, *self.image_shape), self._weight, stride=self.stride,
                       padding=self.padding)
        return out.reshape(B, -1)

    def adjoint(self, R):
        B = R.shape[0]
        out = F.conv_transpose2d(R.reshape(B, 1, *self.out_shape), self._weight, stride=self.stride,
                                 padding=self.padding, output_padding=self._output_padding)
        return out.reshape(B, -1)

    def fingerprint(self) -> str:
        data = self.kernel.detach().to("cpu", torch.float32).numpy()
        key = data.tobytes() + str((self.image_shape, self.stride, self.padding)).encode()
        return "conv2d:" + hashlib.sha256(key).hexdigest()[:16]

    def to(self, dtype=None, device=None):
        return Conv2dOperator(self.kernel.to(dtype=dtype or self.dtype, device=device or self.device),
                              self.image_shape, stride=self.stride, padding=self.padding)


def as_operator(A, *, dtype=None, device=None, name: str = "A") -> Operator:
    """Accept an Operator, a NumPy array or a torch tensor; return an Operator."""
    if isinstance(A, Operator):
        if (dtype is not None and dtype != A.dtype) or (device is not None and torch.device(device) != A.device):
            return A.to(dtype=dtype, device=device)
        return A
    try:
        return DenseOperator(A, dtype=dtype, device=device)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("A ", f"{name} ", 1)) from None


def mutual_coherence(D) -> float:
    """μ(D) = max_{i≠j} |dᵢᵀdⱼ| / (‖dᵢ‖‖dⱼ‖)."""
    D = as_operator(D).matrix()
    Dn = D / D.norm(dim=0, keepdim=True).clamp_min(torch.finfo(D.dtype).tiny)
    G = (Dn.T @ Dn).abs()
    G.fill_diagonal_(0)
    return float(G.max())


__all__ = ["Operator", "DenseOperator", "Conv2dOperator", "as_operator", "power_iteration",
           "mutual_coherence"]
