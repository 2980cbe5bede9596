"""Generic recovery and optimisation metrics, on row batches (estimates and truths of shape (batch, n)).

Inputs may be NumPy arrays or torch tensors. Per-row metrics return a tensor (or NumPy
array, following the input kind) of shape (batch,); aggregate metrics return a float.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validate import as_batch, nonnegative_float

TINY = 1e-30


def _pair(X_hat, X, names=("X_hat", "X")):
    A, kind = as_batch(X_hat, names[0], dtype=torch.float64)
    B, _ = as_batch(X, names[1], dtype=torch.float64)
    if A.shape != B.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    return A, B, kind


def _out(t: torch.Tensor, kind):
    return t.numpy() if kind.numpy else t


def recovery_error(X_hat, X):
    """‖x̂ − x‖₂ per row (xie2019 Fig. 3 reports its mean)."""
    A, B, kind = _pair(X_hat, X)
    return _out((A - B).norm(dim=1), kind)


def nmse_db(X_hat, X) -> float:
    """NMSE in dB = 10 log10( Σ‖x̂ − x‖² / Σ‖x‖² ) over the batch (Chen et al. 2018, §5)."""
    A, B, _ = _pair(X_hat, X)
    num = float((A - B).pow(2).sum())
    den = float(B.pow(2).sum())
    if den <= 0:
        raise ValueError("X is all zero: NMSE is undefined")
    return 10.0 * math.log10(max(num, TINY) / den)


def objective_gap(problem, X_hat, Y, F_star=None):
    """F(x̂) − F(x*) per row, with F = ``problem.objective`` (Moreau talk: loss against layers).

    ``F_star`` (per row) is the optimal value; if omitted it is computed with
    ``ur.lasso(..., method="fista")`` to a relative duality gap of 1e-10 (Lasso only).
    """
    Xh, kind = as_batch(X_hat, "X_hat", dtype=torch.float64)
    Yt, _ = as_batch(Y, "Y", dtype=torch.float64)
    if Xh.shape[0] != Yt.shape[0]:
        raise ValueError(f"X_hat has {Xh.shape[0]} rows but Y has {Yt.shape[0]}")
    problem = _as_float64(problem)
    if F_star is None:
        F_star = lasso_optimum(problem, Yt)[1]
    F_star = (
        torch.as_tensor(np.asarray(F_star, dtype=np.float64))
        if not isinstance(F_star, torch.Tensor)
        else F_star.to(torch.float64)
    )
    return _out(problem.objective(Xh, Yt) - F_star.reshape(-1), kind)


def _as_float64(problem):
    from .problems import NNLS, Lasso

    if problem.op.dtype == torch.float64:
        return problem
    op = problem.op.to(dtype=torch.float64)
    return Lasso(op, problem.lam) if isinstance(problem, Lasso) else NNLS(op)


def lasso_optimum(problem, Y, *, tol: float = 1e-10, max_iter: int = 100_000):
    """(z*, F(z*)) for every row of ``Y`` by FISTA with restart to a relative duality gap ``tol``."""
    from .problems import Lasso
    from .solvers import lasso

    if not isinstance(problem, Lasso):
        raise TypeError("lasso_optimum needs a unrolled.problems.Lasso problem")
    problem = _as_float64(problem)
    Yt, _ = as_batch(Y, "Y", dtype=torch.float64)
    res = lasso(problem.op, Yt, problem.lam, method="fista", restart=True, tol=tol, max_iter=max_iter, check_every=20)
    Z = res.x if res.x.dim() == 2 else res.x[None]
    return Z, problem.objective(Z, Yt)


def _supports(X_hat, X, tol):
    tol = nonnegative_float(tol, "tol")
    A, B, _ = _pair(X_hat, X)
    return A.abs() > tol, B.abs() > tol


def support_f1(X_hat, X, tol: float = 1e-8) -> float:
    """Mean over rows of F1 = 2|Ŝ ∩ S| / (|Ŝ| + |S|) between supports {|x| > tol} (1 when both empty)."""
    Sh, S = _supports(X_hat, X, tol)
    inter = (Sh & S).sum(1).double()
    denom = (Sh.sum(1) + S.sum(1)).double()
    f1 = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
    return float(f1.mean())


def jaccard(X_hat, X, tol: float = 1e-8) -> float:
    """Mean over rows of |Ŝ ∩ S| / |Ŝ ∪ S| between supports {|x| > tol} (1 when both empty)."""
    Sh, S = _supports(X_hat, X, tol)
    inter = (Sh & S).sum(1).double()
    union = (Sh | S).sum(1).double()
    j = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return float(j.mean())


__all__ = ["recovery_error", "nmse_db", "objective_gap", "lasso_optimum", "support_f1", "jaccard"]
