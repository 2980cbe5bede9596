"""How many torch threads a call uses: the caller's choice, or one for small work.

Small batched problems (a few hundred flops per row and op) run fastest on one thread; a
second thread only adds synchronisation, and on a machine where another process keeps a
core busy it makes them many times slower. ``ONE_THREAD_BELOW`` is the size where two
threads stopped losing on a two-core machine with a busy neighbour (issue #9).
``threads(n)`` sets the count for a block and restores the caller's afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ._validate import positive_int

# multiply-adds of one product (rows × m × n) below which one thread is the default
ONE_THREAD_BELOW = 100_000_000


def default_threads(rows: int, m: int, n: int) -> int | None:
    """1 where a product of ``rows`` signals with an m × n operator is small work; None
    (torch's own count) otherwise."""
    return 1 if rows * m * n < ONE_THREAD_BELOW else None


@contextmanager
def threads(n: int | None):
    """Run the block with ``n`` torch threads (None: leave the count alone), then restore."""
    if n is None:
        yield
        return
    n = positive_int(n, "threads")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
