"""Batched iteration of a step to a tolerance: the classical-solver side of every algorithm.

A *method* (see ``algorithms/``) holds the analytic parameters computed from the operator
and exposes ``init(Y, X0) -> state`` and ``step(state, k)``; ``state["x"]`` is the iterate.
:func:`iterate` runs it on a whole batch, checks the problem's certificate every
``check_every`` iterations, and drops the rows that have converged from the working
batch, so that easy problems stop costing time while hard ones finish.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ._validate import Kind, nonnegative_float, positive_int


@dataclass
class Result:
    """What a solver returns.

    x:         the solution, in the caller's kind (NumPy/torch, vector/batch).
    n_iter:    iterations run, per problem (an int for a single vector).
    converged: whether the certificate reached ``tol``, per problem.
    history:   dict of NumPy arrays: ``iteration``, ``time`` (s) and, per problem,
               ``objective`` and ``certificate`` at every check (frozen once converged).
    """

    x: object
    n_iter: object
    converged: object
    history: dict = field(default_factory=dict)

    @property
    def objective(self):
        """Final objective per problem."""
        return self.history["objective"][-1]


def _take(state: dict, rows: torch.Tensor, batch: int) -> dict:
    """Keep only ``rows`` of every per-problem tensor in ``state``."""
    return {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch else v)
            for k, v in state.items()}


def iterate(method, problem, Y: torch.Tensor, X0: torch.Tensor | None, *, tol: float, max_iter: int,
            check_every: int = 1, progress: bool = False, kind: Kind | None = None) -> Result:
    """Run ``method`` on every row of ``Y`` until ``problem.certificate <= tol`` or ``max_iter``."""
    tol = nonnegative_float(tol, "tol")
    max_iter = positive_int(max_iter, "max_iter")
    check_every = positive_int(check_every, "check_every")
    B = Y.shape[0]
    state = method.init(Y, X0)
    state["y"] = Y
    x_out = state["x"].clone()
    n_iter = torch.full((B,), max_iter, dtype=torch.long)
    converged = torch.zeros(B, dtype=torch.bool)
    active = torch.arange(B, device=Y.device)
    # a method may certify itself from its full state (ADMM: its own dual; layered BP: every layer)
    certify = getattr(method, "certificate", None) or (lambda st: problem.certificate(st["x"], st["y"]))
    sync = getattr(method, "sync", None)
    obj = problem.objective(x_out, Y)
    cert = certify(state)
    hist = {"iteration": [0], "time": [0.0], "objective": [obj.cpu().clone()], "certificate": [cert.cpu().clone()]}
    start = time.perf_counter()
    bar = tqdm(total=max_iter, desc=method.name, disable=not progress, leave=False)
    with torch.no_grad():
        for k in range(1, max_iter + 1):
            method.step(state, k)
            # a method may mark rows it has finished (exact methods: active-set)
            fin = state.get("finished")
            if k % check_every and k != max_iter and not (fin is not None and 2 * int(fin.sum()) >= len(fin)):
                continue  # (rows a method has finished are dropped once they are half the batch)
            if sync is not None:
                sync(state)  # a method iterating in lower precision refreshes state["x"]
            x, y = state["x"], state["y"]
            c = certify(state)
            obj[active] = problem.objective(x, y)
            cert[active] = c
            hist["iteration"].append(k)
            hist["time"].append(time.perf_counter() - start)
            hist["objective"].append(obj.cpu().clone())
            hist["certificate"].append(cert.cpu().clone())
            bar.update(k - bar.n)
            bar.set_postfix(active=len(active), worst=f"{float(c.max()):.2e}")
            done = c <= tol
            stop = done if fin is None else done | fin
            if bool(stop.any()):
                rows = active[stop]
                x_out[rows] = x[stop]
                n_iter[rows.cpu()] = k
                converged[active[done].cpu()] = True
                keep = (~stop).nonzero().squeeze(1)
                state = _take(state, keep, len(active))
                active = active[keep]
                if len(active) == 0:
                    break
        if len(active):
            x_out[active] = state["x"]
    bar.close()
    history = {"iteration": np.asarray(hist["iteration"]), "time": np.asarray(hist["time"]),
               "objective": torch.stack(hist["objective"]).numpy(),
               "certificate": torch.stack(hist["certificate"]).numpy()}
    if kind is None:
        return Result(x_out, n_iter.numpy(), converged.numpy(), history)
    if kind.vector:
        history["objective"] = history["objective"][:, 0]
        history["certificate"] = history["certificate"][:, 0]
        return Result(kind.restore(x_out), int(n_iter[0]), bool(converged[0]), history)
    return Result(kind.restore(x_out), n_iter.numpy(), converged.numpy(), history)
