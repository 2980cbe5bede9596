"""Certified learned inference: a network's answer with its optimality certificate, and exact
refinement from it.

:func:`certify` returns, per row, the certificate of the network's problem (``net.problem``:
the relative KKT residual for NNLS, the relative duality gap for the Lasso) and the objective
of the network's answer, evaluated in float64. :func:`refine` uses the answer as a warm start
and iterates until every row is certified to ``tol``. The default route exploits the answer's
*support*: the least-squares problem restricted to it is solved for the whole batch at once
and kept where the certificate accepts it, and an exact method fixes only the rows that fail.
NNLS on the CPU: Lawson & Hanson (1995, ch. 23) in C (the active set's compiled loop) started from
the answer's support, whose first solve and KKT check are x_S = (A_SᵀA_S)⁻¹A_Sᵀy and its test, in
one pass over the rows; elsewhere the batched x_S on the support of one projected-gradient step from
the answer, then the active set from that candidate. Lasso: the sign-constrained solution of
:func:`~unrolled.algorithms.lasso.support_polish` on the answer's support, then FISTA with restart
and support polish from the answer.

Measured in ``unrolled bench`` (set ``certified``); the Lasso networks' supports are rarely exact,
so there the refinement is FISTA from a better start.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from ._validate import Kind, as_batch, nonnegative_float, positive_int
from .operators import DenseOperator, as_operator
from .problems import NNLS, Lasso
from .solve import Result

# LH's start from a net's NNLS answer drops entries below this fraction of the row's largest: a small
# spurious entry costs a remove step, a dropped true one an add step (chosen by measurement on a
# trained LAPGD-3, xie 10×20: fewer steps and less time than the whole support or 0.01–0.03)
START_FRACTION = 0.1


@dataclass
class Certified:
    """What :func:`certify` returns, in the caller's kind (a float per row for a vector).

    certificate: the problem's certificate of each answer (batch,); zero exactly at an optimum.
    objective:   the problem's objective of each answer (batch,).
    x:           the network's answers (batch, n).
    """

    certificate: object
    objective: object
    x: object


def float64_problem(net):
    """``net.problem`` on a float64 copy of the net's operator (certificates below float32's floor)."""
    problem = net.problem
    if problem is None or not hasattr(problem, "op"):
        raise TypeError(f"{type(net).__name__} has no single-operator problem to certify")
    if problem.op.dtype == torch.float64:
        return problem
    problem = copy.copy(problem)
    op = net.op.matrix().detach() if isinstance(net.op, torch.nn.Module) else net.op
    problem.op = as_operator(op, dtype=torch.float64)
    return problem


def _scalar_kind(values: torch.Tensor, kind: Kind):
    """Per-row values (batch,) in the caller's kind: a float for a vector, NumPy or torch otherwise."""
    if kind.vector:
        return float(values[0])
    return values.cpu().numpy() if kind.numpy else values


def _answers(net, Y, X):
    """(Y, X, kind): the rows (as given, float64 at least) and the net's answers (computed when X is None)."""
    Y_t, kind = as_batch(Y, "Y", net.m, device=net.op.device)
    Y_t = Y_t.to(torch.promote_types(Y_t.dtype, torch.float64))
    if X is None:
        with torch.no_grad():
            X_t = net(Y_t.to(net.dtype))
    else:
        X_t, _ = as_batch(X, "X", net.n, device=net.op.device)
        if X_t.shape[0] != Y_t.shape[0]:
            raise ValueError(f"X has {X_t.shape[0]} rows but Y has {Y_t.shape[0]}")
    return Y_t, X_t.detach(), kind


def certify(net, Y, X=None) -> Certified:
    """The certificate and objective of the network's answer for every row of ``Y``.

    Parameters
    ----------
    net : UnrolledNet
        A network whose ``net.problem`` has ``certificate`` and ``objective`` (NNLS, Lasso nets).
    Y : array or tensor, shape (batch, m) or (m,)
        Measurements.
    X : array or tensor, shape (batch, n) or (n,), optional
        The network's answers ``net(Y)`` when already computed (no second forward pass).

    Returns
    -------
    Certified
        ``certificate`` and ``objective`` (batch,) and ``x`` (batch, n), in the kind of ``Y``.
    """
    Y_t, X_t, kind = _answers(net, Y, X)
    problem = float64_problem(net)
    X64 = X_t.to(torch.float64)
    with torch.no_grad():
        cert = problem.certificate(X64, Y_t)
        obj = problem.objective(X64, Y_t)
    return Certified(_scalar_kind(cert, kind), _scalar_kind(obj, kind), kind.restore(X_t))


def support_least_squares(G: torch.Tensor, aty: torch.Tensor, X: torch.Tensor, rank: int) -> torch.Tensor:
    """x_S = (A_SᵀA_S)⁻¹ A_Sᵀy on each row's support S = {j : x_j > 0}, clamped at 0, for the whole batch.

    At most ``rank`` = min(m, n) of the largest entries form S (beyond that A_SᵀA_S is singular);
    rows whose Gram is singular keep their input. NNLS's KKT conditions (x ≥ 0, ∇f ≥ 0 and
    x ⊙ ∇f = 0) hold at x_S exactly when x_S > 0 on S and Aᵀ(Ax_S − y) ≥ 0 off S; the caller checks
    them through the certificate.

    Parameters
    ----------
    G : tensor (n, n)
        AᵀA.
    aty : tensor (batch, n)
        Aᵀy per row.
    X : tensor (batch, n)
        The rows whose supports are used.
    rank : int
        min(m, n) for A of shape (m, n).

    Returns
    -------
    tensor (batch, n)
        The non-negative least-squares candidates.
    """
    n = X.shape[1]
    k = min(int((X > 0).sum(1).max()), n, rank)
    if k == 0:
        return X.clamp(min=0)
    vals, idx = X.topk(k, dim=1)
    valid = vals > 0
    Gs = G[idx.unsqueeze(2), idx.unsqueeze(1)].masked_fill_(~(valid.unsqueeze(2) & valid.unsqueeze(1)), 0.0)
    Gs.diagonal(dim1=1, dim2=2).add_(~valid)  # identity on the unused slots
    L, info = torch.linalg.cholesky_ex(Gs)
    xs = torch.cholesky_solve((aty.gather(1, idx) * valid).unsqueeze(2), L).squeeze(2) * valid
    out = torch.zeros_like(X).scatter_(1, idx, xs).clamp_(min=0)
    return torch.where((info == 0).unsqueeze(1), out, X.clamp(min=0))


def _pg_ranked(problem, Y, X):
    """(x − ∇f(x)/L)₊: one projected-gradient step from x, so that entries the KKT conditions want
    (∇f_j < 0) join the support that the exact solution is looked for on."""
    op = problem.op
    return (X - op.adjoint(op.forward(X) - Y) / op.lipschitz).clamp(min=0)


def _support_candidates(problem, Y, X):
    """The exact solution on each row's support where the support gives one (see module docstring)."""
    op = problem.op
    if isinstance(problem, Lasso):
        from .algorithms.lasso import support_polish

        out = X.clone()
        rows = ((X != 0).sum(1) <= op.m).nonzero().squeeze(1)  # a larger support has no unique solution on it
        if len(rows):
            out[rows] = support_polish(op.gram, op.adjoint(Y[rows]), X[rows], problem.lam)[0]
        return out
    return support_least_squares(op.gram, op.adjoint(Y), _pg_ranked(problem, Y, X), min(op.shape))


def _certified(problem) -> str:
    return "relative duality gap" if isinstance(problem, Lasso) else "relative KKT residual"


def _support_step(problem, Y, X, tol):
    """(candidates, their certificates, mask of those ≤ tol) for the rows ``Y`` with answers ``X``."""
    with torch.no_grad():
        cand = _support_candidates(problem, Y, X)
        c_cand = problem.certificate(cand, Y)
    return cand, c_cand, c_cand <= tol


def _exact_solver(problem, Y, X0, *, tol, max_iter, method, options):
    """The solver run on the rows the support step did not certify, from the network's answers."""
    from .solvers import lasso, nnls

    dense = isinstance(problem.op, DenseOperator)
    if isinstance(problem, Lasso):
        if method is None:
            method, options = "fista", ({"restart": True, "polish": True} if dense else {"restart": True}) | options
        if getattr(problem, "positive", False):  # (a non-negative Lasso, where the problem has that option)
            options = {"positive": True} | options
        return lasso(problem.op, Y, problem.lam, method, tol=tol, max_iter=max_iter, x0=X0, **options)
    if method is None:
        method = "active-set" if dense else "apgd"
    return nnls(problem.op, Y, method, tol=tol, max_iter=max_iter, x0=X0.clamp(min=0), **options)


@dataclass
class _Rows:
    """The rows being refined: answers ``X``, certificates, objectives and iterations of every row
    (updated in place), the problem and measurements, and the history."""

    problem: object
    Y: torch.Tensor
    X: torch.Tensor
    cert: torch.Tensor
    obj: torch.Tensor
    n_iter: torch.Tensor
    hist: object
    start: float

    def update(self, rows, X, n_iter):
        """Store answers for ``rows`` with their iterations; recompute their certificates and objectives."""
        self.X[rows] = X
        self.n_iter[rows.cpu()] = n_iter
        with torch.no_grad():
            self.cert[rows] = self.problem.certificate(X, self.Y[rows])
            self.obj[rows] = self.problem.objective(X, self.Y[rows])
        self.hist.add(int(self.n_iter.max()), self.cert, self.obj, time.perf_counter() - self.start)


def _refine_nnls(r: _Rows, todo, tol, method, max_iter, options) -> None:
    """NNLS rows above ``tol``: Lawson–Hanson (in C, :meth:`ActiveSet.lh_rows`) started from the net's
    answer restricted to its entries ≥ ``START_FRACTION`` × its largest (column-normalised): its first
    solve is the least-squares solution on that support, its first KKT check accepts it or LH goes
    on from there, all in one pass over the rows (1 + LH's steps iterations). Without the C loop
    (GPU, no compiler): the batched support step, then the exact solver on the rows it does not certify."""
    from .algorithms.active_set import ActiveSet

    problem, Y = r.problem, r.Y
    dense = isinstance(problem.op, DenseOperator)
    if method is None and dense and ActiveSet.compiled(Y) and set(options) <= {"rtol", "check_every"}:
        solver = ActiveSet(problem, **{k: v for k, v in options.items() if k == "rtol"})  # (LH in C has no checks)
        start = r.X[todo] * solver.c  # normalised; its small entries are left for LH to add back if needed
        start = start.masked_fill_(start < START_FRACTION * start.amax(1, keepdim=True), 0.0)
        x, steps = solver.lh_rows(Y[todo], start, max_iter)
        r.update(todo, x, 1 + steps)
        return
    offset, starts = 0, r.X[todo]
    if method is None and dense:
        cand, _, ok = _support_step(problem, Y[todo], r.X[todo], tol)
        r.update(todo[ok], cand[ok], 1)
        todo, offset, starts = todo[~ok], 1, cand[~ok]  # the active set starts from the (feasible) candidate
    if len(todo):
        res = _exact_solver(problem, Y[todo], starts, tol=tol, max_iter=max_iter, method=method, options=options)
        r.update(todo, res.x, offset + torch.as_tensor(res.n_iter))


def _refine_lasso(r: _Rows, todo, tol, method, max_iter, options) -> None:
    """Lasso rows above ``tol``: the support step where the operator is dense, then FISTA with
    restart and polish from the answers on the rows it does not certify."""
    problem, Y = r.problem, r.Y
    offset = 0
    if method is None and isinstance(problem.op, DenseOperator):
        cand, _, ok = _support_step(problem, Y[todo], r.X[todo], tol)
        r.update(todo[ok], cand[ok], 1)
        todo, offset = todo[~ok], 1
    if len(todo):
        res = _exact_solver(problem, Y[todo], r.X[todo], tol=tol, max_iter=max_iter, method=method, options=options)
        r.update(todo, res.x, offset + torch.as_tensor(res.n_iter))


def refine(net, Y, tol: float = 1e-6, method: str | None = None, max_iter: int = 10_000, **options) -> Result:
    """Certified answers from a network: its output refined until every row's certificate is ≤ ``tol``.

    Rows the network already solves to ``tol`` are returned as they are (0 iterations). With
    ``method=None`` the other rows go through the exact solution on the answer's support (module
    docstring; 1 iteration) and, where that is not certified, an exact method (NNLS: Lawson–Hanson
    continued from that support; Lasso: ``"fista"`` with restart and polish; ``"apgd"`` / plain
    FISTA on a non-dense operator). A named ``method`` (any of ``ur.nnls`` / ``ur.lasso``'s, e.g.
    ``"pgd"``) skips the support step and runs that solver from the network's answers: an
    analytic-init net of depth K refined with its own solver is the solver run K more iterations.

    Parameters
    ----------
    net : UnrolledNet
        An NNLS or Lasso network.
    Y : array or tensor, shape (batch, m) or (m,)
        Measurements.
    tol : float
        Certificate to reach on every row (``net.problem.certificate``, float64).
    method : str, optional
        The solver of the remaining rows (default: the support route above).
    max_iter : int
        Iterations of that solver.
    **options
        Passed to the solver (e.g. ``check_every``).

    Returns
    -------
    Result
        ``x`` (batch, n) in the caller's kind (float64), ``n_iter`` (0 for rows the net solved),
        ``converged``, and a history whose entry 0 is the network's answer (its ``time`` the
        network's forward pass and certificate) followed by the refinement's stages.
    """
    tol = nonnegative_float(tol, "tol")
    max_iter = positive_int(max_iter, "max_iter")
    start = time.perf_counter()
    Y_t, X_t, kind = _answers(net, Y, None)
    problem = float64_problem(net)
    X = X_t.to(torch.float64)
    if isinstance(problem, NNLS):
        X = X.clamp(min=0)
    with torch.no_grad():
        cert, obj = problem.certificate(X, Y_t), problem.objective(X, Y_t)
    hist = _History(cert, obj, time.perf_counter() - start, tol, _certified(problem))
    rows = _Rows(problem, Y_t, X, cert, obj, torch.zeros(len(X), dtype=torch.long), hist, start)
    todo = (cert > tol).nonzero().squeeze(1)
    if len(todo):
        stage = _refine_nnls if isinstance(problem, NNLS) else _refine_lasso
        stage(rows, todo, tol, method, max_iter, options)
    return _result(rows.X, rows.n_iter, hist, kind)


class _History:
    """Per-row objective and certificate at the network's answer and after each refinement stage."""

    def __init__(self, cert, obj, seconds, tol: float, certified: str):
        self.tol, self.certified = tol, certified
        self.iteration, self.time, self.cert, self.obj = [], [], [], []
        self.add(0, cert, obj, seconds)

    def add(self, k, cert, obj, seconds):
        self.iteration.append(k)
        self.time.append(seconds)
        self.cert.append(cert.cpu().clone())
        self.obj.append(obj.cpu().clone())

    def arrays(self, vector: bool) -> dict:
        """Per-row ``objective`` / ``certificate`` (stages, batch) and their per-stage summaries."""
        cert, obj = torch.stack(self.cert), torch.stack(self.obj)
        out = {
            "iteration": np.asarray(self.iteration),
            "time": np.asarray(self.time),
            "objective_mean": obj.mean(1).numpy(),
            "certificate_max": cert.amax(1).numpy(),
            "certificate_median": cert.median(1).values.numpy(),
            "objective": obj.numpy(),
            "certificate": cert.numpy(),
        }
        if vector:
            out["objective"], out["certificate"] = out["objective"][:, 0], out["certificate"][:, 0]
        return out


def _result(X, n_iter, hist: _History, kind: Kind) -> Result:
    """The Result in the caller's kind, with the final objective and certificate."""
    cert, obj = hist.cert[-1], hist.obj[-1]
    converged = cert <= hist.tol
    per_row = (lambda t: t[0].item()) if kind.vector else (lambda t: t.numpy())
    extra = {"objective": per_row(obj), "certificate": per_row(cert), "certified": hist.certified}
    return Result(kind.restore(X), per_row(n_iter), per_row(converged), hist.arrays(kind.vector), **extra)


__all__ = ["Certified", "certify", "refine", "support_least_squares"]
