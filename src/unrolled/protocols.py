"""The two contracts the package is built on, declared once.

* :class:`SolverMethod` — what :func:`unrolled.solve.iterate` runs: the classical side of an
  algorithm, its step iterated with the analytic parameters (``algorithms/``).
* :class:`Network` — what ``ur.train``, ``unrolled.staged`` and ``ur.load`` use: the learned
  side, the same step stacked ``depth`` times with trainable parameters (``nets/``).

Both are :class:`typing.Protocol` s: a class satisfies one by having the members, not by
inheriting from it (``isinstance`` works for the required members).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class SolverMethod(Protocol):
    """One iterative method, holding the analytic parameters computed from its problem's operator.

    Required: ``name``, ``init`` and ``step``. Optional (looked up with ``getattr``):

    * ``certificate(state) -> (batch,)`` — the method certifies itself from its full state (ADMM:
      its own duals; layered BP: every layer) instead of ``problem.certificate(x, y)``;
    * ``sync(state)`` — refresh ``state["x"]`` before a check (a method iterating in lower
      precision keeps its iterate elsewhere);
    * ``state["finished"]`` — a (batch,) bool tensor of rows the method has solved exactly (the
      active-set method); they are dropped like converged rows.

    ``state`` is a dict; every tensor in it whose leading dimension is the batch is per problem, and
    the driver may keep only some rows of all of them at once. ``state["x"]`` is the iterate
    (batch, n) and ``state["y"]`` the data (batch, m), set by the driver.
    """

    name: str

    def init(self, Y: torch.Tensor, X0: torch.Tensor | None) -> dict[str, Any]:
        """The state before the first step for data Y (batch, m) and a warm start X0 (batch, n) or None."""
        ...

    def step(self, state: dict[str, Any], k: int) -> None:
        """Iteration k (1-based), in place on ``state``; runs under ``torch.no_grad()``."""
        ...


@runtime_checkable
class Network(Protocol):
    """An unrolled network (``torch.nn.Module``): layer k computes iterate k of its algorithm.

    ``problem`` is the optimisation problem the net approximates (``NNLS``, ``Lasso``; it has
    ``objective(X, Y)`` and ``certificate(X, Y)``, and follows ``.to()``), used by the
    unsupervised loss and the metrics. ``layer_parameters(t)`` is needed for staged training only.
    """

    depth: int
    problem: Any

    def iterates(self, Y: torch.Tensor, depth: int) -> Iterator[torch.Tensor]:
        """Yield x₁, …, x_depth, each (batch, n), for rows Y (batch, m); differentiable in the parameters."""
        ...

    def layer_parameters(self, t: int) -> list[torch.nn.Parameter]:
        """The parameters that belong to layer t (0-based; tied ones count in every layer)."""
        ...


__all__ = ["SolverMethod", "Network"]
