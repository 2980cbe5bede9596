"""A spatially varying (non-stationary) Gaussian point-spread function as an operator.

The forward model of single-molecule localisation microscopy (xie2019 §3.3, Fig. 4): an
emitter at the node (p, q) of a grid ``upsample`` times finer than the camera, with width
σ(p, q) depending on where it sits, lights camera pixel (r, c) with the fraction of its
photons that falls inside that pixel,

    A[(r, c), (p, q)] = Δ(c; x_q, σ_x(p, q)) · Δ(r; y_p, σ_y(p, q)),
    Δ(i; μ, σ) = Φ((e_{i+1} − μ)/σ) − Φ((e_i − μ)/σ),

e_i = i·pixel the pixel edges, x_q = (q + ½)·pixel/upsample the node centres, Φ the normal
CDF. Every column is separable, but its factors change with the column, so no single pair of
row/column blur matrices (and no convolution) represents A when σ varies in 2-D. The map is
stored dense: exact (nothing truncated), differentiable, fast on a GPU, and what the learned nets
densify anyway; a contraction of the per-emitter factors is far slower, and a truncated sparse
(CSR) form only somewhat faster on CPU (measured in the README, SMLM section).
"""

from __future__ import annotations

import math

import torch

from .._validate import positive_int, to_tensor
from .base import Operator, hash_key


def _sigma_map(sigma, grid: tuple[int, int]) -> torch.Tensor:
    """σ as a float64 (2, Gh, Gw) tensor of (σ_x, σ_y) in nm; a scalar or a (Gh, Gw) map is isotropic."""
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        sigma = torch.full(grid, float(sigma), dtype=torch.float64)
    s = to_tensor(sigma, "sigma", dtype=torch.float64).cpu()
    if s.dim() == 2:
        s = s.expand(2, *s.shape)
    if tuple(s.shape) != (2, *grid):
        raise ValueError(f"sigma must be a scalar, a {grid} map or a (2, *{grid}) map, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError("sigma must be finite and > 0 everywhere")
    return s.contiguous()


def pixel_fractions(n_pixels: int, pixel: float, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Δ(i; μ, σ) for every pixel i along one axis: shape (n_pixels, *centres.shape).

    Parameters
    ----------
    n_pixels : int
    pixel : float
        Pixel size (nm).
    centres, sigma : tensors of one shape
        Emitter coordinates μ and widths σ along this axis (nm).
    """
    edges = torch.arange(n_pixels + 1, dtype=torch.float64) * pixel
    z = (edges.reshape(-1, *([1] * centres.dim())) - centres) / (sigma * math.sqrt(2.0))
    cdf = 0.5 * (1.0 + torch.erf(z))
    return cdf[1:] - cdf[:-1]


def psf_matrix(sigma: torch.Tensor, camera_shape: tuple[int, int], pixel: float, upsample: int) -> torch.Tensor:
    """The (H·W, Gh·Gw) float64 matrix A of the module docstring for σ of shape (2, Gh, Gw)."""
    H, W = camera_shape
    Gh, Gw = H * upsample, W * upsample
    step = pixel / upsample
    ys = ((torch.arange(Gh, dtype=torch.float64) + 0.5) * step)[:, None].expand(Gh, Gw)
    xs = ((torch.arange(Gw, dtype=torch.float64) + 0.5) * step)[None, :].expand(Gh, Gw)
    fx = pixel_fractions(W, pixel, xs, sigma[0])  # (W, Gh, Gw)
    fy = pixel_fractions(H, pixel, ys, sigma[1])  # (H, Gh, Gw)
    return torch.einsum("rpq,cpq->rcpq", fy, fx).reshape(H * W, Gh * Gw)


class GaussianPSF(Operator):
    """Camera frames of emitters on a fine grid through a spatially varying Gaussian PSF.

    x: photons per grid node, one image (1, H·u, W·u) flattened as a row; y = A x: expected
    photons per camera pixel, (1, H, W) flattened (background and noise are the simulator's,
    :func:`unrolled.data.smlm.simulate`).

    Parameters
    ----------
    sigma : float, array (Gh, Gw) or (2, Gh, Gw)
        PSF width in nm at every grid node (Gh = H·upsample, Gw = W·upsample): isotropic, or
        (σ_x, σ_y) per node (astigmatism).
    camera_shape : (H, W)
        Camera pixels (xie2019 Fig. 4: 32×32).
    pixel_nm : float
        Camera pixel size in nm (default 200).
    upsample : int
        Grid nodes per camera pixel along each axis (default 2: a 64×64 grid of 100 nm).
    dtype, device : torch dtype and device of the matrix (default float32, CPU).
    """

    kind = "gaussian_psf"

    def __init__(self, sigma, camera_shape, *, pixel_nm: float = 200.0, upsample: int = 2, dtype=None, device=None):
        super().__init__()
        if not isinstance(camera_shape, (tuple, list)) or len(camera_shape) != 2:
            raise ValueError(f"camera_shape must be (H, W), got {camera_shape!r}")
        self.camera_shape = tuple(positive_int(s, "camera_shape") for s in camera_shape)
        self.upsample = positive_int(upsample, "upsample")
        self.pixel_nm = float(pixel_nm)
        if not (math.isfinite(self.pixel_nm) and self.pixel_nm > 0):
            raise ValueError(f"pixel_nm must be a finite number > 0, got {pixel_nm!r}")
        H, W = self.camera_shape
        self.grid_shape = (H * self.upsample, W * self.upsample)
        self.sigma = _sigma_map(sigma, self.grid_shape)
        A64 = psf_matrix(self.sigma, self.camera_shape, self.pixel_nm, self.upsample)
        self.A = A64.to(dtype=dtype or torch.float32, device=device).contiguous()
        self.shape = tuple(self.A.shape)
        self.dtype, self.device = self.A.dtype, self.A.device

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (1, *self.grid_shape)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (1, *self.camera_shape)

    @property
    def grid_nm(self) -> float:
        """Grid spacing in nm."""
        return self.pixel_nm / self.upsample

    def forward(self, X):
        return X @ self.A.T

    def adjoint(self, R):
        return R @ self.A

    def matrix(self):
        return self.A

    def _norm_squared(self) -> float:
        # λ_max of the smaller Gram matrix, in float64: exact, and faster than an SVD of A
        A = self.A.detach().to(torch.float64)
        gram = A @ A.T if self.m <= self.n else A.T @ A
        return float(torch.linalg.eigvalsh(gram)[-1])

    def _geometry(self) -> dict:
        return {"camera_shape": list(self.camera_shape), "pixel_nm": self.pixel_nm, "upsample": self.upsample}

    def fingerprint(self) -> str:
        return hash_key(self.kind, self.sigma, tuple(sorted(self._geometry().items())))

    def spec(self):
        return {"kind": self.kind, **self._geometry()}, {"sigma": self.sigma.to(dtype=self.dtype, device=self.device)}

    @classmethod
    def from_spec(cls, config: dict, tensors: dict) -> GaussianPSF:
        sigma = tensors["sigma"]
        return cls(
            sigma,
            tuple(config["camera_shape"]),
            pixel_nm=config["pixel_nm"],
            upsample=config["upsample"],
            dtype=sigma.dtype,
            device=sigma.device,
        )

    def to(self, dtype=None, device=None) -> GaussianPSF:
        op = GaussianPSF.__new__(GaussianPSF)
        Operator.__init__(op)
        op.__dict__.update({k: v for k, v in self.__dict__.items() if k != "A"})
        op.A = self.A.to(dtype=dtype or self.dtype, device=device or self.device)
        op.dtype, op.device = op.A.dtype, op.A.device
        op._lipschitz = self._lipschitz
        return op

    def __repr__(self):
        lo, hi = float(self.sigma.min()), float(self.sigma.max())
        return (
            f"GaussianPSF(camera={self.camera_shape}, grid={self.grid_shape}, pixel={self.pixel_nm:g} nm, "
            f"sigma {lo:.0f}–{hi:.0f} nm, dtype={self.dtype})"
        )
