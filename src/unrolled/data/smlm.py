"""A simulator of single-molecule localisation microscopy (xie2019 §3.3, Fig. 4).

Filaments (smooth random curves) carry fluorophores; in each frame a few of them, drawn
at random along the filaments, emit a random number of photons through a spatially varying
Gaussian PSF (:class:`unrolled.operators.GaussianPSF`) onto a camera of 200 nm pixels; the
frame is the expected photon count plus a constant background, with Poisson shot noise and
Gaussian read noise. Emitters sit anywhere (not on the grid): the forward operator is the
model, the simulator the world. Positions are in nm from the field's top-left corner,
x along the columns, y along the rows; a positions table has the columns
(frame, x_nm, y_nm, photons), frames counted from 0.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validate import nonnegative_float, positive_int
from ..operators.psf import GaussianPSF, pixel_fractions


def field_sigma(
    grid_shape, grid_nm: float, *, centre_nm: float = 150.0, edge_nm: float = 250.0, astigmatism: float = 0.1
) -> np.ndarray:
    """A PSF width map that varies in 2-D: (σ_x, σ_y) per grid node, shape (2, Gh, Gw), nm.

    σ_x grows from ``centre_nm`` at the field's centre to ``edge_nm`` in its corners (∝ r²,
    a defocus-like field curvature); σ_y = σ_x (1 + astigmatism · dx·dy / (hx·hy)), hx, hy
    the half-widths of the field: wider along one diagonal, narrower along the other.
    """
    Gh, Gw = (positive_int(g, "grid_shape") for g in grid_shape)
    hy, hx = Gh * grid_nm / 2, Gw * grid_nm / 2
    dy, dx = np.meshgrid((np.arange(Gh) + 0.5) * grid_nm - hy, (np.arange(Gw) + 0.5) * grid_nm - hx, indexing="ij")
    sx = centre_nm + (edge_nm - centre_nm) * (dx**2 + dy**2) / (hx**2 + hy**2)
    return np.stack([sx, sx * (1.0 + astigmatism * dx * dy / (hx * hy))])


def psf_operator(camera_shape=(32, 32), *, pixel_nm: float = 200.0, upsample: int = 2, dtype=None, **sigma):
    """The simulator's forward operator: a :class:`GaussianPSF` with the :func:`field_sigma` map
    (``sigma`` keywords: ``centre_nm``, ``edge_nm``, ``astigmatism``)."""
    grid = tuple(positive_int(s, "camera_shape") * upsample for s in camera_shape)
    sig = field_sigma(grid, pixel_nm / upsample, **sigma)
    return GaussianPSF(sig, camera_shape, pixel_nm=pixel_nm, upsample=upsample, dtype=dtype)


def filaments(n: int, field_nm, *, seed: int = 0, points: int = 2000) -> list[np.ndarray]:
    """``n`` smooth random curves (cubic Bézier, control points inside the field), each sampled
    at ``points`` points equally spaced along its length: a list of (points, 2) arrays of (x, y) nm."""
    rng = np.random.default_rng(seed)
    size = np.asarray(field_nm, dtype=float)[::-1]  # (W, H) in nm: (x, y) order
    t = np.linspace(0.0, 1.0, 4 * points)[:, None]
    basis = np.hstack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3])
    curves = []
    for _ in range(positive_int(n, "n")):
        ctrl = rng.uniform(0.1, 0.9, (4, 2)) * size
        dense = basis @ ctrl
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        s = np.linspace(0.0, arc[-1], points)
        curves.append(np.stack([np.interp(s, arc, dense[:, 0]), np.interp(s, arc, dense[:, 1])], 1))
    return curves


def bilinear(coords_nm: np.ndarray, grid_shape, grid_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """The 4 grid nodes around each point and their bilinear weights.

    Parameters
    ----------
    coords_nm : array (K, 2) of (x, y) in nm; node (p, q) sits at ((q + ½)h, (p + ½)h).

    Returns
    -------
    flat indices (K, 4) into the row-major (Gh, Gw) grid, weights (K, 4) summing to 1
    (points beyond the outer nodes take the nearest edge node's share).
    """
    Gh, Gw = grid_shape
    u = np.clip(coords_nm[:, 0] / grid_nm - 0.5, 0.0, Gw - 1.0)
    v = np.clip(coords_nm[:, 1] / grid_nm - 0.5, 0.0, Gh - 1.0)
    q0, p0 = np.minimum(np.floor(u), Gw - 2).astype(int), np.minimum(np.floor(v), Gh - 2).astype(int)
    fu, fv = u - q0, v - p0
    idx = np.stack([p0 * Gw + q0, p0 * Gw + q0 + 1, (p0 + 1) * Gw + q0, (p0 + 1) * Gw + q0 + 1], 1)
    w = np.stack([(1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu], 1)
    return idx, w


def grid_truth(positions: np.ndarray, n_frames: int, grid_shape, grid_nm: float, *, dtype=np.float64) -> np.ndarray:
    """The training target of each frame: every emitter's photons split bilinearly over its 4
    nearest grid nodes (so the weighted centroid of the target is the emitter's position).

    Returns
    -------
    array (n_frames, Gh·Gw)
    """
    X = np.zeros((positive_int(n_frames, "n_frames"), grid_shape[0] * grid_shape[1]), dtype=dtype)
    idx, w = bilinear(positions[:, 1:3], grid_shape, grid_nm)
    frames = np.repeat(positions[:, 0].astype(int), 4)
    np.add.at(X, (frames, idx.ravel()), (w * positions[:, 3:4]).ravel())
    return X


def draw_emitters(curves, n_frames: int, rng, *, per_frame: float, photons, jitter_nm: float, field_nm):
    """The positions table (K, 4): Poisson(``per_frame``) emitters per frame, uniform along the
    curves (a curve chosen in proportion to its length), displaced by N(0, jitter²) per axis
    and kept inside the field; photons U[photons[0], photons[1]]."""
    counts = rng.poisson(per_frame, n_frames)
    K = int(counts.sum())
    lengths = np.array([np.linalg.norm(np.diff(c, axis=0), axis=1).sum() for c in curves])
    which = rng.choice(len(curves), K, p=lengths / lengths.sum())
    pts = np.array([curves[c][rng.integers(len(curves[c]))] for c in which]).reshape(K, 2)
    pts = pts + rng.normal(0.0, jitter_nm, (K, 2))
    pts = np.clip(pts, 0.0, np.asarray(field_nm, dtype=float)[::-1] - 1e-6)
    flux = rng.uniform(photons[0], photons[1], K)
    return np.column_stack([np.repeat(np.arange(n_frames), counts), pts, flux])


def expected_frames(positions: np.ndarray, n_frames: int, psf: GaussianPSF, *, chunk: int = 20000) -> np.ndarray:
    """Noise-free frames (n_frames, H, W): each emitter's photons through the PSF at its own,
    off-grid position, its width interpolated bilinearly from the operator's map."""
    H, W = psf.camera_shape
    sigma = psf.sigma.numpy().reshape(2, -1)
    frames = torch.zeros(n_frames, H, W, dtype=torch.float64)
    for s in range(0, len(positions), chunk):
        part = positions[s : s + chunk]
        idx, w = bilinear(part[:, 1:3], psf.grid_shape, psf.grid_nm)
        sx, sy = ((sigma[a][idx] * w).sum(1) for a in (0, 1))
        t = {k: torch.as_tensor(v) for k, v in dict(x=part[:, 1], y=part[:, 2], sx=sx, sy=sy).items()}
        fx = pixel_fractions(W, psf.pixel_nm, t["x"], t["sx"])  # (W, K)
        fy = pixel_fractions(H, psf.pixel_nm, t["y"], t["sy"])  # (H, K)
        spots = torch.einsum("rk,ck,k->krc", fy, fx, torch.as_tensor(part[:, 3]))
        frames.index_add_(0, torch.as_tensor(part[:, 0].astype(np.int64)), spots)
    return frames.numpy()


def simulate(
    n_frames: int,
    psf: GaussianPSF | None = None,
    *,
    structures=None,
    n_filaments: int = 4,
    per_frame: float = 3.0,
    photons=(1000.0, 4000.0),
    background: float = 20.0,
    read_noise: float = 2.0,
    jitter_nm: float = 10.0,
    seed: int = 0,
):
    """Simulated SMLM frames with their ground truth.

    Parameters
    ----------
    n_frames : int
    psf : GaussianPSF, optional
        The microscope (default :func:`psf_operator`: 32×32 pixels of 200 nm, a 64×64 grid,
        σ from 150 nm at the centre to 250 nm in the corners).
    structures : list of (k, 2) arrays of (x, y) nm, optional
        Curves the fluorophores sit on (default: ``n_filaments`` :func:`filaments`).
    per_frame : float
        Mean number of active emitters per frame (Poisson).
    photons : (low, high)
        Photons per emitter and frame, uniform.
    background : float
        Expected background photons per pixel.
    read_noise : float
        Standard deviation of the camera's Gaussian read noise (photons).
    jitter_nm : float
        Standard deviation of an emitter's distance to its filament, per axis.
    seed : int

    Returns
    -------
    frames : array (n_frames, H, W), photons per pixel (Poisson(expected + background) + read noise)
    positions : array (K, 4), columns (frame, x_nm, y_nm, photons)
    structures : the curves used
    """
    psf = psf_operator() if psf is None else psf
    if not isinstance(psf, GaussianPSF):
        raise TypeError(f"psf must be a GaussianPSF, got {type(psf).__name__}")
    n_frames = positive_int(n_frames, "n_frames")
    lo, hi = (nonnegative_float(p, "photons", strict=True) for p in photons)
    if hi < lo:
        raise ValueError(f"photons must be (low, high) with low <= high, got {photons!r}")
    background = nonnegative_float(background, "background")
    read_noise = nonnegative_float(read_noise, "read_noise")
    rng = np.random.default_rng(seed)
    field = tuple(s * psf.pixel_nm for s in psf.camera_shape)
    if structures is None:
        structures = filaments(n_filaments, field, seed=seed + 1)
    positions = draw_emitters(
        structures,
        n_frames,
        rng,
        per_frame=nonnegative_float(per_frame, "per_frame"),
        photons=(lo, hi),
        jitter_nm=nonnegative_float(jitter_nm, "jitter_nm"),
        field_nm=field,
    )
    mean = expected_frames(positions, n_frames, psf) + background
    frames = rng.poisson(mean).astype(np.float64) + rng.normal(0.0, read_noise, mean.shape)
    return frames, positions, structures


__all__ = ["bilinear", "field_sigma", "filaments", "grid_truth", "psf_operator", "simulate"]
