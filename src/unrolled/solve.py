"""Batched iteration of a step to a tolerance: the classical-solver side of every algorithm.

A *method* (the solver-method contract is declared in ``unrolled.protocols``) holds the
analytic parameters computed from the operator and exposes ``init(Y, X0) -> state`` and
``step(state, k)``; ``state["x"]`` is the iterate. :func:`iterate` runs it on a whole
batch, checks the problem's certificate before the first step and then every
``check_every`` iterations, and drops the rows that have converged from the working
batch, so that easy problems stop costing time while hard ones finish.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ._validate import Kind, choice, nonnegative_float, positive_int

HISTORY = ("summary", "full")
CHUNK = 65_536  # rows solved at a time by default (summary history): bounds the working memory


@dataclass
class Result:
    """What a solver returns (per problem: an array of shape (batch,), or a scalar for a vector y).

    Attributes
    ----------
    x : ndarray or Tensor, (batch, n) or (n,)
        The solution, in the caller's kind (NumPy/torch, vector/batch).
    n_iter : int or ndarray of int, (batch,)
        Iterations run per problem (0 when the start already met ``tol``).
    converged : bool or ndarray of bool, (batch,)
        Whether the certificate reached ``tol``.
    history : dict of ndarray
        ``iteration`` and ``time`` (s), shape (checks,), and per check the summaries of the
        problems still running at it: ``objective_mean``, ``certificate_max`` and
        ``certificate_median`` (shape (checks,)); for a batch solved in chunks also ``chunk``
        (the chunk of each check; the chunks' summaries follow each other). With ``history="full"`` also ``objective``
        and ``certificate`` of every problem at every check, shape (checks, batch) (frozen
        once a problem converged; (checks,) for a vector y): memory grows with batch × checks.
    objective : float or ndarray, (batch,)
        Final objective per problem.
    certificate : float or ndarray, (batch,)
        Final certificate per problem (what ``tol`` was compared with).
    certified : str
        What the certificate measures, e.g. ``"relative duality gap"`` or, for ML-ISTA /
        ML-FISTA, ``"ML-ISTA fixed-point residual (not the optimality of F)"``.
    """

    x: object
    n_iter: object
    converged: object
    history: dict = field(default_factory=dict)
    objective: object = None
    certificate: object = None
    certified: str = ""


def _take(state: dict, rows: torch.Tensor, batch: int) -> dict:
    """Keep only ``rows`` of every per-problem tensor in ``state``."""
    return {
        k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch else v)
        for k, v in state.items()
    }


class _History:
    """Per-check summaries (bounded: O(checks)) and, if asked, per-problem values (O(checks × batch))."""

    def __init__(self, full: bool):
        self.full = full
        self.rows = {k: [] for k in ("iteration", "time", "objective_mean", "certificate_max", "certificate_median")}
        if full:
            self.rows.update(objective=[], certificate=[])

    def record(self, k: int, t: float, obj_active, cert_active, obj, cert):
        r = self.rows
        r["iteration"].append(k)
        r["time"].append(t)
        r["objective_mean"].append(float(obj_active.mean()))
        r["certificate_max"].append(float(cert_active.max()))
        r["certificate_median"].append(float(cert_active.median()))
        if self.full:
            r["objective"].append(obj.cpu().clone())
            r["certificate"].append(cert.cpu().clone())

    def arrays(self, vector: bool) -> dict:
        out = {k: np.asarray(v) for k, v in self.rows.items() if k not in ("objective", "certificate")}
        if self.full:
            for key in ("objective", "certificate"):
                a = torch.stack(self.rows[key]).numpy()
                out[key] = a[:, 0] if vector else a
        return out


def iterate(
    method,
    problem,
    Y: torch.Tensor,
    X0: torch.Tensor | None,
    *,
    tol: float,
    max_iter: int,
    check_every: int = 1,
    progress: bool = False,
    kind: Kind | None = None,
    history: str = "summary",
    chunk: int | None = CHUNK,
) -> Result:
    """Run ``method`` on every row of ``Y`` until ``problem.certificate <= tol`` or ``max_iter``.

    The certificate is checked at the start too, so a warm start already within ``tol``
    returns after 0 iterations. ``history`` is ``"summary"`` (per-check summaries) or
    ``"full"`` (also every problem's objective and certificate at every check). With the
    summary history, a batch of more than ``chunk`` rows is solved ``chunk`` rows at a time
    (bounding the method's working memory); the summaries of the chunks then follow each
    other and ``history["chunk"]`` gives the chunk of each check.
    """
    tol = nonnegative_float(tol, "tol")
    max_iter = positive_int(max_iter, "max_iter")
    check_every = positive_int(check_every, "check_every")
    full = choice(history, "history", HISTORY) == "full"
    args = (method, problem, tol, max_iter, check_every, progress, full)
    if full or chunk is None or Y.shape[0] <= chunk:
        out = _run(Y, X0, *args)
        return finish(*out[:5], out[5].arrays(bool(kind and kind.vector)), out[6], kind)
    parts = [
        _run(Y[i : i + chunk], None if X0 is None else X0[i : i + chunk], *args) for i in range(0, Y.shape[0], chunk)
    ]
    merged = [torch.cat([p[j] for p in parts]) for j in range(5)]
    hists = [p[5].arrays(False) for p in parts]
    history = {key: np.concatenate([h[key] for h in hists]) for key in hists[0]}
    history["chunk"] = np.concatenate([np.full(len(h["iteration"]), i) for i, h in enumerate(hists)])
    return finish(*merged, history, parts[0][6], kind)


def _run(Y, X0, method, problem, tol, max_iter, check_every, progress, full):
    """One batch to convergence: (x, n_iter, converged, objective, certificate, history, certified)."""
    hist = _History(full)
    B = Y.shape[0]
    state = method.init(Y, X0)
    state["y"] = Y
    x_out = state["x"].clone()
    n_iter = torch.full((B,), max_iter, dtype=torch.long)
    converged = torch.zeros(B, dtype=torch.bool)
    active = torch.arange(B, device=Y.device)
    # a method may certify itself from its full state (ADMM: its own dual; layered BP: every layer)
    certify = getattr(method, "certificate", None) or (lambda st: problem.certificate(st["x"], st["y"]))
    certified = getattr(method, "certified", None) or problem.certified
    sync = getattr(method, "sync", None)
    obj = problem.objective(x_out, Y)
    cert = certify(state)
    hist.record(0, 0.0, obj, cert, obj, cert)
    start = time.perf_counter()
    bar = tqdm(total=max_iter, desc=method.name, disable=not progress, leave=False)

    def drop(stop, done, k):
        """Store the rows that stop at iteration k; shrink the working state to the others."""
        nonlocal state, active
        rows = active[stop]
        x_out[rows] = state["x"][stop]
        n_iter[rows.cpu()] = k
        converged[active[done].cpu()] = True
        keep = (~stop).nonzero().squeeze(1)
        state = _take(state, keep, len(active))
        active = active[keep]

    with torch.no_grad():
        done0 = cert <= tol
        if bool(done0.any()):
            drop(done0, done0, 0)
        for k in range(1, max_iter + 1):
            if len(active) == 0:
                break
            method.step(state, k)
            # a method may mark rows it has finished (exact methods: active-set)
            fin = state.get("finished")
            if k % check_every and k != max_iter and not (fin is not None and 2 * int(fin.sum()) >= len(fin)):
                continue  # (rows a method has finished are dropped once they are half the batch)
            if sync is not None:
                sync(state)  # a method iterating in lower precision refreshes state["x"]
            c = certify(state)
            o = problem.objective(state["x"], state["y"])
            obj[active], cert[active] = o, c
            hist.record(k, time.perf_counter() - start, o, c, obj, cert)
            bar.update(k - bar.n)
            bar.set_postfix(active=len(active), worst=f"{float(c.max()):.2e}")
            done = c <= tol
            stop = done if fin is None else done | fin
            if bool(stop.any()):
                drop(stop, done, k)
        if len(active):
            x_out[active] = state["x"]
    bar.close()
    return x_out, n_iter, converged, obj, cert, hist, certified


def finish(x, n_iter, converged, obj, cert, history: dict, certified: str, kind: Kind | None) -> Result:
    """Package per-problem tensors as a :class:`Result` in the caller's kind."""
    if kind is None:
        return Result(x, n_iter.numpy(), converged.numpy(), history, obj.cpu().numpy(), cert.cpu().numpy(), certified)
    if kind.vector:
        return Result(
            kind.restore(x), int(n_iter[0]), bool(converged[0]), history, float(obj[0]), float(cert[0]), certified
        )
    return Result(
        kind.restore(x), n_iter.numpy(), converged.numpy(), history, obj.cpu().numpy(), cert.cpu().numpy(), certified
    )
