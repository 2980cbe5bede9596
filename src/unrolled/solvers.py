"""The public solver functions: ``nnls``, ``lasso`` (and ``ml_bp`` in ``algorithms.mlbp``).

They validate inputs at the boundary, build the method from the operator's analytic
parameters, and run it batched with :func:`unrolled.solve.iterate`.
"""
from __future__ import annotations

import torch

from ._validate import as_batch, choice, nonnegative_float
from .algorithms.lasso import ADMM as LassoADMM, FISTA, ISTA, OISTA
from .algorithms.nnls import APGD, OGD, PGD
from .algorithms.active_set import ActiveSet
from .operators import as_operator
from .problems import NNLS, Lasso
from .solve import Result, iterate

NNLS_METHODS = {"pgd": PGD, "apgd": APGD, "ogd": OGD, "active-set": ActiveSet}
LASSO_METHODS = {"ista": ISTA, "fista": FISTA, "oista": OISTA, "admm": LassoADMM}


def _setup(A, Y, x0, *, nonnegative_x0=False, name="A"):
    """Operator, batch of measurements and warm start, all in one dtype/device."""
    Y_t, kind = as_batch(Y, "Y")
    op = as_operator(A, name=name)
    dtype = torch.promote_types(op.dtype, Y_t.dtype)
    op = as_operator(op, dtype=dtype, device=Y_t.device)
    Y_t, _ = as_batch(Y_t, "Y", op.m, dtype=dtype)
    X0 = None
    if x0 is not None:
        X0, _ = as_batch(x0, "x0", op.n, dtype=dtype, device=Y_t.device, nonnegative=nonnegative_x0)
        if X0.shape[0] == 1 and Y_t.shape[0] > 1:
            X0 = X0.expand(Y_t.shape[0], -1)
        if X0.shape[0] != Y_t.shape[0]:
            raise ValueError(f"x0 has {X0.shape[0]} rows but Y has {Y_t.shape[0]}")
    return op, Y_t, X0, kind


def nnls(A, Y, method: str = "apgd", *, tol: float = 1e-6, max_iter: int = 10_000, x0=None,
         check_every: int = 10, progress: bool = False, **options) -> Result:
    """Solve min_x ½‖Ax − y‖² s.t. x ≥ 0 for every row y of ``Y``.

    method: ``"pgd"`` (xie2019 eq. 1.4), ``"apgd"`` (eq. 1.5–1.6; ``gamma=0.9``,
    ``momentum="constant"|"nesterov"``, ``restart``), ``"ogd"`` (sen2024 eq. 3;
    ``power=2``) or ``"active-set"`` (Lawson–Hanson, exact).
    Stops when the relative KKT residual (``NNLS.certificate``) is ≤ ``tol``.
    """
    methods = NNLS_METHODS
    choice(method, "method", methods)
    op, Y_t, X0, kind = _setup(A, Y, x0, nonnegative_x0=True)
    problem = NNLS(op)
    return iterate(methods[method](problem, **options), problem, Y_t, X0, tol=tol, max_iter=max_iter,
                   check_every=check_every, progress=progress, kind=kind)


def lasso(D, Y, lam: float, method: str = "fista", *, tol: float = 1e-6, max_iter: int = 10_000, x0=None,
          check_every: int = 10, progress: bool = False, **options) -> Result:
    """Solve min_z ½‖Dz − y‖² + λ‖z‖₁ for every row y of ``Y``.

    method: ``"ista"``, ``"fista"`` (``restart=True`` for adaptive restart) or ``"oista"``
    (Moreau talk). Stops when the relative duality gap (``Lasso.certificate``) is ≤ ``tol``.
    """
    lam = nonnegative_float(lam, "lam")
    choice(method, "method", LASSO_METHODS)
    op, Y_t, X0, kind = _setup(D, Y, x0, name="D")
    problem = Lasso(op, lam)
    return iterate(LASSO_METHODS[method](problem, **options), problem, Y_t, X0, tol=tol, max_iter=max_iter,
                   check_every=check_every, progress=progress, kind=kind)


__all__ = ["nnls", "lasso", "NNLS_METHODS", "LASSO_METHODS"]
