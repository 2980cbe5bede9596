"""The public solver functions: ``nnls``, ``lasso`` and ``ml_bp``.

They validate inputs at the boundary (shapes, NaN, magnitudes whose products would
overflow or underflow), answer the trivial problems directly (a zero operator: x = 0),
build the method from the operator's analytic parameters, and run it batched with
:func:`unrolled.solve.iterate`.

Default routes (``method=None``), chosen by measured size thresholds (``unrolled bench``
reports them): NNLS by the exact active set when A is dense with at most
``ACTIVE_SET_MAX_N`` columns, otherwise APGD with Nesterov momentum and adaptive restart
whose uncertified rows the active set finishes;
the Lasso by FISTA with adaptive restart and support polish, iterating in float32 when the
data are float64 and fit float32's range (the certificate stays in float64); ML-BP by ADMM, certified by
its relative duality gap. The papers' variants stay available by name with their defaults.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validate import as_batch, choice, nonnegative_float, positive_int
from .algorithms.active_set import ActiveSet
from .algorithms.lasso import ADMM as LassoADMM
from .algorithms.lasso import FISTA, ISTA, OISTA, WorkingSet
from .algorithms.mlbp import METHODS as MLBP_METHODS
from .algorithms.mlbp import LayeredBP
from .algorithms.nnls import APGD, OGD, PGD
from .operators import DenseOperator, Operator, as_operator
from .problems import MLBP, NNLS, Lasso
from .solve import HISTORY, Result, finish, iterate

NNLS_METHODS = {"pgd": PGD, "apgd": APGD, "ogd": OGD, "active-set": ActiveSet}
LASSO_METHODS = {"ista": ISTA, "fista": FISTA, "oista": OISTA, "admm": LassoADMM, "working-set": WorkingSet}
ACTIVE_SET_MAX_N = 64
MLBP_PROBLEM_OPTIONS = ("steps", "mu_scale")


# -- boundary checks -----------------------------------------------------------
def _magnitude_range(dtype) -> tuple[float, float]:
    """Norms whose squares stay normal, finite numbers of ``dtype``: [√tiny, √max]."""
    info = torch.finfo(dtype)
    return math.sqrt(info.tiny), math.sqrt(info.max)


def _check_scale(op: Operator, Y: torch.Tensor, name: str) -> None:
    """Refuse an operator or data whose squares or products overflow/underflow ``dtype``.

    A zero operator passes (its answer is x = 0); ``‖A‖₂² = op.lipschitz`` is computed in float64.
    """
    lo, hi = _magnitude_range(Y.dtype)
    try:
        L = op.lipschitz
    except OverflowError:  # float(s) ** 2 in Python
        L = math.inf
    if not math.isfinite(L):
        raise ValueError(
            f"{name} is too large: ‖{name}‖₂² overflows (inf); rescale {name} and Y "
            f"(norms must lie in [{lo:.1e}, {hi:.1e}] for {Y.dtype})"
        )
    norm = math.sqrt(L)
    if L > 0 and not lo <= norm <= hi:
        raise ValueError(
            f"{name} is out of range: ‖{name}‖₂ = {norm:.1e}, outside [{lo:.1e}, {hi:.1e}] "
            f"for {Y.dtype} (its products would over- or underflow); rescale {name} and Y"
        )
    if L == 0 and isinstance(op, DenseOperator) and bool((op.A != 0).any()):
        raise ValueError(f"{name} is too small: ‖{name}‖₂² underflows to 0; rescale {name} and Y")
    peak = float(Y.abs().max())
    if peak > 0 and not lo <= peak <= hi:
        raise ValueError(
            f"Y is out of range: max |y| = {peak:.1e}, outside [{lo:.1e}, {hi:.1e}] "
            f"for {Y.dtype} (½‖y‖² would over- or underflow); rescale {name} and Y"
        )
    if L > 0 and not bool(torch.isfinite(op.adjoint(Y)).all()):
        raise ValueError(f"{name}ᵀY overflows (inf); rescale {name} and Y")


def _fits(op: Operator, Y: torch.Tensor, dtype) -> bool:
    """Whether the problem's magnitudes lie in the safe range of ``dtype`` too (for iterating in it)."""
    lo, hi = _magnitude_range(dtype)
    peak = float(Y.abs().max())
    return lo <= math.sqrt(op.lipschitz) <= hi and (peak == 0 or lo <= peak <= hi)


def _setup(A, Y, x0, *, nonnegative_x0=False, name="A"):
    """Operator, batch of measurements and warm start, all in one dtype/device."""
    Y_t, kind = as_batch(Y, "Y")
    op = as_operator(A, name=name)
    dtype = torch.promote_types(op.dtype, Y_t.dtype)
    op = as_operator(op, dtype=dtype, device=Y_t.device)
    Y_t, _ = as_batch(Y_t, "Y", op.m, dtype=dtype)
    _check_scale(op, Y_t, name)
    X0 = None
    if x0 is not None:
        X0, _ = as_batch(x0, "x0", op.n, dtype=dtype, device=Y_t.device, nonnegative=nonnegative_x0)
        if X0.shape[0] == 1 and Y_t.shape[0] > 1:
            X0 = X0.expand(Y_t.shape[0], -1)
        if X0.shape[0] != Y_t.shape[0]:
            raise ValueError(f"x0 has {X0.shape[0]} rows but Y has {Y_t.shape[0]}")
    return op, Y_t, X0, kind


def _zero_answer(problem, n: int, Y: torch.Tensor, kind, certified: str) -> Result:
    """The answer for a zero operator: x = 0 is optimal (objective ½‖y‖², certificate 0)."""
    B = Y.shape[0]
    X = torch.zeros(B, n, dtype=Y.dtype, device=Y.device)
    obj = 0.5 * Y.pow(2).sum(1)
    cert = torch.zeros_like(obj)
    history = {
        "iteration": np.zeros(1, dtype=int),
        "time": np.zeros(1),
        "objective_mean": np.asarray([float(obj.mean())]),
        "certificate_max": np.zeros(1),
        "certificate_median": np.zeros(1),
    }
    return finish(
        X, torch.zeros(B, dtype=torch.long), torch.ones(B, dtype=torch.bool), obj, cert, history, certified, kind
    )


def _nnls_route(op: Operator) -> tuple[str, dict]:
    """The default NNLS method for this operator (see the module docstring)."""
    if isinstance(op, DenseOperator) and op.n <= ACTIVE_SET_MAX_N:
        return "active-set", {}
    return "apgd", {"momentum": "nesterov", "restart": True}


# -- public functions ------------------------------------------------------------
def nnls(
    A,
    Y,
    method: str | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    x0=None,
    check_every: int = 10,
    progress: bool = False,
    history: str = "summary",
    **options,
) -> Result:
    """Non-negative least squares for every row y of ``Y``: min_x ½‖Ax − y‖² s.t. x ≥ 0.

    Parameters
    ----------
    A : array, Tensor or Operator, shape (m, n)
        The forward operator (xie2019 eq. 1.1, sen2024 eq. 1).
    Y : array or Tensor, shape (batch, m) or (m,)
        Measurements, one problem per row.
    method : str, optional
        ``None`` (default): the fastest certified route, the exact active set for a dense A
        with n ≤ ``ACTIVE_SET_MAX_N``, else APGD with Nesterov momentum and restart, whose
        uncertified rows (badly scaled, ill-conditioned) the active set then finishes
        (``n_iter`` adds both; ``history["active_set"]`` is the second stage's history).
        By name: ``"pgd"`` (xie2019 eq. 1.4), ``"apgd"`` (eq. 1.5–1.6; ``gamma=0.9``,
        ``momentum="constant"|"nesterov"``, ``restart``), ``"ogd"`` (sen2024 eq. 3;
        ``power=2``) or ``"active-set"`` (Lawson–Hanson, exact; ``warm_start``, ``rtol``; on the
        CPU run row by row in C when a C compiler is available, see ``algorithms.active_set``).
    tol : float
        Stop a problem when its certificate, the column-normalised relative KKT residual
        (:meth:`unrolled.problems.NNLS.certificate`), is ≤ ``tol``.
    max_iter, check_every : int
        Iteration budget, and how often the certificate is checked.
    x0 : array or Tensor, shape (batch, n) or (n,), optional
        Non-negative warm start (a start already within ``tol`` returns after 0 iterations).
    progress : bool
        Show a progress bar.
    history : {"summary", "full"}
        Per-check summaries only (bounded memory), or also every problem at every check.
    **options
        Options of the method.

    Returns
    -------
    Result
        ``x`` of shape (batch, n) (or (n,)) in the caller's kind, ``n_iter``, ``converged``,
        ``objective``, ``certificate`` (shape (batch,)), ``certified``, ``history``.
    """
    op, Y_t, X0, kind = _setup(A, Y, x0, nonnegative_x0=True)
    problem = NNLS(op)
    auto = method is None
    if auto:
        method, defaults = _nnls_route(op)
        options = {**defaults, **options}
    choice(method, "method", NNLS_METHODS)
    if op.lipschitz == 0:
        return _zero_answer(problem, op.n, Y_t, kind, problem.certified)
    run = dict(tol=tol, max_iter=max_iter, check_every=check_every, progress=progress, history=history)
    if method == "active-set" and ActiveSet.compiled(Y_t):  # LH in C: same steps, no per-step overhead
        positive_int(check_every, "check_every")  # (validated as iterate does; LH in C has no checks)
        solver = ActiveSet(problem, **options)
        tol, max_iter = nonnegative_float(tol, "tol"), positive_int(max_iter, "max_iter")
        history = choice(history, "history", HISTORY)
        return solver.run_compiled(Y_t, X0, tol=tol, max_iter=max_iter, history=history, progress=progress, kind=kind)
    if not (auto and method == "apgd" and isinstance(op, DenseOperator)):
        return iterate(NNLS_METHODS[method](problem, **options), problem, Y_t, X0, kind=kind, **run)
    res = iterate(APGD(problem, **options), problem, Y_t, X0, **run)
    return _finish_by_active_set(problem, Y_t, res, kind, run)


def _finish_by_active_set(problem: NNLS, Y: torch.Tensor, res: Result, kind, run: dict) -> Result:
    """The default route's second stage: rows APGD left uncertified (ill-conditioned or badly
    scaled ones) are finished by the exact active set, warm-started at APGD's point, a bounded
    number of rows at a time (its inverses take k² numbers per row, k = min(m, n))."""
    x, n_iter, conv = res.x, torch.as_tensor(res.n_iter), torch.as_tensor(res.converged)
    obj, cert = torch.as_tensor(res.objective), torch.as_tensor(res.certificate)
    rows = (~conv).nonzero().squeeze(1)
    if len(rows):
        k = min(problem.op.shape)
        rest = iterate(ActiveSet(problem), problem, Y[rows], x[rows], **run, chunk=max(1, 2**24 // k**2))
        x[rows], n_iter[rows] = rest.x, n_iter[rows] + torch.as_tensor(rest.n_iter)
        conv[rows], obj[rows], cert[rows] = (
            torch.as_tensor(v) for v in (rest.converged, rest.objective, rest.certificate)
        )
        res.history["active_set"] = rest.history
    return finish(x, n_iter, conv, obj, cert, res.history, res.certified, kind)


def lasso(
    D,
    Y,
    lam: float,
    method: str | None = None,
    *,
    positive: bool = False,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    x0=None,
    check_every: int = 10,
    progress: bool = False,
    history: str = "summary",
    **options,
) -> Result:
    """The Lasso for every row y of ``Y``: min_z ½‖Dz − y‖² + λ‖z‖₁ (z ≥ 0 if ``positive``).

    λ is scikit-learn's ``alpha`` × n_samples (n_samples = m): ``sklearn.linear_model.Lasso``
    minimises (1/2m)‖y − Dz‖² + α‖z‖₁, our objective / m, and its ``dual_gap_`` is our
    duality gap / m.

    Parameters
    ----------
    D : array, Tensor or Operator, shape (m, n)
        The dictionary (BPDN; sulam2018 eq. 1, Moreau talk).
    Y : array or Tensor, shape (batch, m) or (m,)
        Signals, one problem per row.
    lam : float
        λ ≥ 0 (λ = 0 is least squares).
    method : str, optional
        ``None`` (default): FISTA with adaptive restart and support polish (no polish for
        ``positive`` or a matrix-free D), iterating in float32 for float64 data that fit its
        range (the certificate and polish stay in float64). By name: ``"ista"``, ``"fista"`` (``restart``,
        ``polish``, ``precision="float32"``), ``"oista"`` (Moreau talk), ``"admm"`` or
        ``"working-set"`` (:class:`~unrolled.algorithms.lasso.WorkingSet`: ``warm``, ``grow``,
        ``precision``; exact, dense D and λ > 0).
    positive : bool
        Solve the non-negative Lasso (z ≥ 0), which the ``nonneg`` LISTA nets assume.
    tol : float
        Stop a problem when its relative duality gap (:meth:`unrolled.problems.Lasso.certificate`)
        is ≤ ``tol``.
    max_iter, check_every, x0, progress, history, **options
        As for :func:`nnls`.

    Returns
    -------
    Result
        ``x`` of shape (batch, n) (or (n,)), as for :func:`nnls`.
    """
    lam = nonnegative_float(lam, "lam")
    op, Y_t, X0, kind = _setup(D, Y, x0, name="D", nonnegative_x0=positive)
    problem = Lasso(op, lam, positive=positive)
    if method is None:
        method = "fista"
        defaults = {"restart": True, "polish": isinstance(op, DenseOperator) and not positive}
        if op.dtype == torch.float64 and op.lipschitz > 0 and _fits(op, Y_t, torch.float32):
            defaults["precision"] = "float32"
        options = {**defaults, **options}
    choice(method, "method", LASSO_METHODS)
    if positive and (method in ("oista", "admm") or options.get("polish")):
        raise ValueError(
            f"positive=True works with ista, fista without polish and working-set, not with method={method!r}"
            f"{' and polish' if options.get('polish') else ''}"
        )
    if op.lipschitz == 0:
        return _zero_answer(problem, op.n, Y_t, kind, problem.certified)
    return iterate(
        LASSO_METHODS[method](problem, **options),
        problem,
        Y_t,
        X0,
        tol=tol,
        max_iter=max_iter,
        check_every=check_every,
        progress=progress,
        kind=kind,
        history=history,
    )


def _is_seq(v) -> bool:
    return isinstance(v, (list, tuple))


def _parse_ml_bp(args):
    """Both call forms of :func:`ml_bp` → (Ds, Y, lams, method-or-None)."""
    if not args:
        raise TypeError(
            "ml_bp needs dictionaries, Y and λ: ml_bp([D1, D2], Y, [lam1, lam2]) or ml_bp(D1, D2, Y, lam1, lam2)"
        )
    if _is_seq(args[0]):
        if len(args) not in (3, 4):
            raise TypeError(f"ml_bp(Ds, Y, lams[, method]) takes 3 or 4 positional arguments, got {len(args)}")
        Ds, Y, lams = args[:3]
        if not _is_seq(lams):
            lams = [lams]
        return list(Ds), Y, list(lams), (args[3] if len(args) == 4 else None)
    if len(args) % 2 == 0 or len(args) < 3:
        raise TypeError(f"ml_bp(D1, ..., DL, Y, lam1, ..., lamL) takes 2L + 1 positional arguments, got {len(args)}")
    L = (len(args) - 1) // 2
    return list(args[:L]), args[L], list(args[L + 1 :]), None


def _ml_bp_setup(Ds, Y, lams, x0):
    """Validated operators (one dtype/device), λ's, batch and warm start of :func:`ml_bp`."""
    if len(lams) != len(Ds):
        raise ValueError(f"need one λ per layer: got {len(Ds)} dictionaries and {len(lams)} λ values")
    lams = [nonnegative_float(v, f"lam{i}") for i, v in enumerate(lams, start=1)]
    Y_t, kind = as_batch(Y, "Y")
    ops = [as_operator(D, name=f"D{i}") for i, D in enumerate(Ds, start=1)]
    dtype = Y_t.dtype
    for op in ops:
        dtype = torch.promote_types(dtype, op.dtype)
    ops = [as_operator(op, dtype=dtype, device=Y_t.device) for op in ops]
    for i in range(1, len(ops)):
        if ops[i - 1].n != ops[i].m:
            raise ValueError(
                f"D{i} has {ops[i - 1].n} columns but D{i + 1} has {ops[i].m} rows: "
                f"D_i must be (n_(i-1), n_i) so that D{i} @ D{i + 1} is defined"
            )
    Y_t, _ = as_batch(Y_t, "Y", ops[0].m, dtype=dtype)
    product = ops[-1].matrix()
    for op in reversed(ops[:-1]):
        product = op.forward(product.T).T
    _check_scale(DenseOperator(product), Y_t, "D_(1,L)")
    X0 = None
    if x0 is not None:
        X0, _ = as_batch(x0, "x0", ops[-1].n, dtype=dtype, device=Y_t.device)
        if X0.shape[0] == 1 and Y_t.shape[0] > 1:
            X0 = X0.expand(Y_t.shape[0], -1)
        if X0.shape[0] != Y_t.shape[0]:
            raise ValueError(f"x0 has {X0.shape[0]} rows but Y has {Y_t.shape[0]}")
    return ops, lams, Y_t, X0, kind, bool((product == 0).all())


def ml_bp(
    *args,
    method: str | None = None,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    x0=None,
    check_every: int = 10,
    progress: bool = False,
    history: str = "summary",
    **options,
) -> Result:
    """Multi-layer basis pursuit (sulam2018 eq. 6) for every row y of ``Y``:

        F(γ) = ½‖y − D_(1,L)γ‖² + Σ_{i<L} λ_i‖D_(i+1,L)γ‖₁ + λ_L‖γ‖₁,   D_(i,L) = D_i⋯D_L.

    Call as ``ml_bp([D1, ..., DL], Y, [lam1, ..., lamL])`` or ``ml_bp(D1, D2, Y, lam1, lam2)``
    (any L).

    Parameters
    ----------
    D1, ..., DL : array, Tensor or Operator, shapes (n_{i−1}, n_i)
        The dictionaries.
    Y : array or Tensor, shape (batch, n_0) or (n_0,)
        Signals, one problem per row.
    lam1, ..., lamL : float
        λ_i ≥ 0.
    method : str, optional
        ``None`` (default): ``"admm"``, which solves the stated problem; ``tol`` is checked on
        its relative duality gap (F − D)/F. By name: ``"admm"`` (Algorithm 1; ``rho``,
        ``inner="fista"|"ista"``, ``inner_iter``, ``inner_tol``), ``"ml-fista"`` (Algorithm 3;
        ``restart``) and ``"ml-ista"`` (Algorithm 2), which converge to the fixed point of
        the ML-ISTA map at their fixed μ, O(μ) above the optimum of F (``tol`` is checked on
        the fixed-point residual: ``Result.certified`` says so), and ``"layered-bp"`` (the
        layer-wise pursuit of [23], each layer by ``ur.lasso`` to ``tol``; x0 warm-starts
        the deepest layer). ``steps`` (L step sizes η_i) or ``mu_scale`` (μ = mu_scale/‖D_1‖²)
        set the ML-ISTA map (see :class:`unrolled.problems.MLBP`).
    tol, max_iter, check_every, x0, progress, history, **options
        As for :func:`nnls`; x0 has shape (batch, n_L) or (n_L,).

    Returns
    -------
    Result
        ``x`` = γ_L of shape (batch, n_L) (or (n_L,)) in the caller's kind, ``n_iter``,
        ``converged``, ``objective`` F, ``certificate``, ``certified``, ``history``.
    """
    Ds, Y, lams, pos_method = _parse_ml_bp(args)
    method = pos_method if pos_method is not None else (method or "admm")
    choice(method, "method", MLBP_METHODS)
    ops, lams, Y_t, X0, kind, zero = _ml_bp_setup(Ds, Y, lams, x0)
    prob_opts = {k: options.pop(k) for k in MLBP_PROBLEM_OPTIONS if k in options}
    if zero:
        return _zero_answer(None, ops[-1].n, Y_t, kind, "relative duality gap")
    problem = MLBP(ops, lams, **prob_opts)
    if method == "layered-bp":
        return _layered(
            problem,
            Y_t,
            X0,
            tol=tol,
            max_iter=max_iter,
            check_every=check_every,
            progress=progress,
            kind=kind,
            **options,
        )
    return iterate(
        MLBP_METHODS[method](problem, **options),
        problem,
        Y_t,
        X0,
        tol=tol,
        max_iter=max_iter,
        check_every=check_every,
        progress=progress,
        kind=kind,
        history=history,
    )


def _layered(problem: MLBP, Y, X0, *, tol, max_iter, check_every, progress, kind, **options) -> Result:
    """Layered BP by :func:`lasso` (FISTA unless ``inner="ista"``) one layer after the other."""
    inner = options.pop("inner", "fista")
    state, target, n_iter, conv, layers, elapsed = {"y": Y}, Y, 0, True, [], 0.0
    for i, (op, lam) in enumerate(zip(problem.ops, problem.lams), start=1):
        res = lasso(
            op,
            target,
            lam,
            method=inner,
            tol=tol,
            max_iter=max_iter,
            check_every=check_every,
            progress=progress,
            x0=X0 if i == problem.L else None,
            **options,
        )
        target = state[f"z{i}"] = res.x
        n_iter = n_iter + torch.as_tensor(res.n_iter)
        conv = conv & torch.as_tensor(res.converged)
        elapsed += float(res.history["time"][-1])
        layers.append(res.history)
    G = target
    method = LayeredBP(problem)
    cert = method.certificate(state)
    obj = problem.objective(G, Y)
    history = {
        "iteration": np.asarray([0, int(n_iter.max())]),
        "time": np.asarray([0.0, elapsed]),
        "objective_mean": np.asarray([float(problem.objective(torch.zeros_like(G), Y).mean()), float(obj.mean())]),
        "certificate_max": np.asarray([float("inf"), float(cert.max())]),
        "certificate_median": np.asarray([float("inf"), float(cert.median())]),
        "layers": layers,
    }
    return finish(G, n_iter, conv, obj, cert, history, method.certified, kind)


__all__ = ["nnls", "lasso", "ml_bp", "NNLS_METHODS", "LASSO_METHODS", "ACTIVE_SET_MAX_N"]
