"""Exact NNLS: the Lawson–Hanson active-set method, batched.

Lawson & Hanson, *Solving Least Squares Problems* (SIAM 1995), ch. 23, algorithm NNLS.
For min_x ½‖Ax − y‖² s.t. x ≥ 0 it keeps a passive set P (the free variables) and a
feasible iterate x with supp(x) ⊆ P, and repeats:

* **add** (outer loop, steps 2–6): with w = Aᵀ(y − Ax) (= −∇f), stop if w_j ≤ 0 for every
  j ∉ P (the KKT conditions hold); otherwise move the most violating j = argmax_{j∉P} w_j
  into P;
* **solve** (step 7): s = argmin ‖A_P s − y‖ on P (s = 0 off P);
* **remove** (inner loop, steps 8–11): if some s_j ≤ 0 on P, move x to the boundary,
  x ← x + α(s − x) with α = min_{j∈P, s_j≤0} x_j/(x_j − s_j), and drop the index that
  hit zero from P; otherwise x ← s.

Two routes to the same steps. On the CPU with a C compiler, ``ur.nnls(..., "active-set")``
runs LH row after row in C (``_lh_source.c``, compiled on first use by ``_compiled``):
Cholesky of the passive Gram matrix updated per add / remove, on the normal equations of
the normalised problem below; on tiny problems the per-step cost of batched tensor ops
dominates, so the loop in C is several times faster. Otherwise (a GPU, no compiler, or
``iterate(ActiveSet(...))``) the batched torch steps: every row has its own P, and a
``step`` performs one add or one remove for every unfinished row at once. The
least-squares solves use, per row, the inverse H = (A_PᵀA_P)⁻¹ of the passive Gram
matrix, kept in a compact slot layout that grows with the largest |P| up to
k = min(m, n), and updated by the bordering formulas (one rank-one update per
add or remove: O(k²) per row instead of a fresh factorisation):

    add j:    u = H g, d = G_jj − gᵀu  (g = G_{P,j}),   H ← H + v vᵀ/d,  v = u − e_j;
    remove j: H ← H − H_{:,j} H_{j,:} / H_jj.

LH runs on the column-normalised problem Ã = A diag(1/c), c_j = ‖a_j‖₂, x̃ = c ⊙ x
(the same solution, rescaled), so that neither the Gram inverse nor the stopping rule
depends on column scale: with columns whose norms differ by 10¹³, the Gram matrix of A
would lose every digit of the small column and a threshold relative to ‖Aᵀy‖∞ would call
its gradient zero.

d = ‖(I − Π_P) a_j‖² > 0 is the squared distance of column j to span(A_P); a column
with d ≤ 1e-10·G_jj (an angle below 1e-5 to span(A_P)) is (numerically) dependent and is
skipped for that row: d comes from the updated inverse, whose rounding grows along a long
add/remove path, and a tighter test let an exactly dependent column in. Each
solve is followed by one step of iterative refinement s ← s + H (Aᵀy − AᵀA s)_P, so
the result matches a QR-based LH (SciPy's ``nnls``) to rounding.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..operators import DenseOperator
from ..problems import NNLS, ratio, row_norm
from ..solve import CHUNK, Result, _History, finish
from ._compiled import lh_gram, library


class ActiveSet:
    """Batched Lawson–Hanson NNLS (exact; one add or remove per row and ``step``).

    Options:
      warm_start: run this many APGD iterations (Nesterov momentum with restart) and
                  start LH from their support instead of P = ∅ (fewer LH steps when
                  the solution has many non-zeros). An ``x0`` given to ``ur.nnls`` is
                  used the same way.
      rtol:       LH stops a row when max_{j∉P} w_j/‖a_j‖ ≤ rtol · ‖y‖₂, w = Aᵀ(y − Ax)
                  (default 10·max(m, n)·ε of float64); scale-free like the certificate.
      refine:     iterative-refinement steps per solve (default 1).

    Stopping: a row leaves the batch when LH stops (``state["finished"]``) or when the
    certificate is ≤ ``tol`` at a check, whichever comes first; pass a tiny ``tol``
    (e.g. 1e-12) to get LH's own end point, equal to SciPy's ``nnls`` to rounding.
    ``n_iter`` counts LH steps (adds + removes) up to the check that dropped the row.
    Memory: B·k² float64 numbers for the inverses, k = min(m, n).
    """

    name = "active-set"

    def __init__(self, problem: NNLS, warm_start: int = 0, rtol: float | None = None, refine: int = 1):
        op = problem.op
        if not isinstance(op, DenseOperator):
            raise ValueError("active-set needs a dense matrix A (it forms AᵀA)")
        if isinstance(warm_start, bool) or not isinstance(warm_start, int) or warm_start < 0:
            raise ValueError(f"warm_start must be a non-negative integer, got {warm_start!r}")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be a non-negative integer, got {refine!r}")
        # the linear algebra runs in float64 whatever the input dtype (float32 LH loses
        # the last columns of a nearly square A_P); x is returned in the input dtype
        self.dtype = op.dtype
        self.c = problem.col_norms.to(torch.float64)
        A = op.A.to(torch.float64) / self.c
        eps = torch.finfo(torch.float64).eps
        m, n = op.shape
        if rtol is None:
            rtol = 10.0 * max(m, n) * eps
        elif not float(rtol) >= 0:
            raise ValueError(f"rtol must be a non-negative number, got {rtol!r}")
        self.problem, self.A = problem, A
        self.m, self.n, self.k = m, n, min(m, n)
        self.warm_start, self.rtol, self.refine = int(warm_start), float(rtol), int(refine)
        self.dtol = 1e-10
        # Gram padded with a zero row/column: index n is the "empty slot" column
        self.G_pad = F.pad(A.T @ A, (0, 1, 0, 1))
        self.A_pad = F.pad(A, (0, 1))
        self.diag = self.G_pad.diagonal().clone()
        self.use_gram = n <= 2 * m

    # -- helpers ----------------------------------------------------------
    # Rows are kept in a padded layout (B, n + 1): column n is the "empty slot" column
    # (zero in AᵀA, Aᵀy and x), so gathers and scatters through ``slots`` need no masks.
    def _residual(self, aty, s):
        """w = Aᵀy − AᵀA s (padded rows), in the cheaper product order.

        Written as (G sᵀ)ᵀ (G symmetric): for a thin batch of short rows MKL's GEMM is
        about 2× faster in that layout than s G.
        """
        if self.use_gram:
            return aty - torch.mm(self.G_pad, s.T).T
        return aty - torch.mm(self.A_pad.T, torch.mm(self.A_pad, s.T)).T

    def _scatter(self, vals, slots):
        """Compact slot values (B, k) → padded rows (B, n + 1)."""
        out = torch.zeros(vals.shape[0], self.n + 1, dtype=vals.dtype, device=vals.device)
        return out.scatter_(1, slots, vals)

    @staticmethod
    def _bmv(H, v):
        return torch.bmm(H, v.unsqueeze(2)).squeeze(2)

    def _load_support(self, state, X0):
        """Start LH from the support of X0 ≥ 0 (its largest entries, one per slot): H = (A_PᵀA_P)⁻¹ by Cholesky."""
        n = self.n
        vals, idx = X0.topk(state["slots"].shape[1], dim=1)
        valid = vals > 0
        slots = torch.where(valid, idx, torch.full_like(idx, n))
        Gs = self.G_pad[slots[:, :, None], slots[:, None, :]]
        Gs = Gs + torch.diag_embed((~valid).to(Gs.dtype))  # identity on empty slots
        L, info = torch.linalg.cholesky_ex(Gs)
        ok = info == 0
        if bool(ok.any()):
            H = torch.cholesky_inverse(L[ok])
            v = valid[ok].to(H.dtype)
            H = H * v[:, :, None] * v[:, None, :]
            good = ok.nonzero().squeeze(1)
            state["H"][good] = H
            state["slots"][good] = slots[ok]
            P = torch.zeros(len(good), n + 1, dtype=torch.bool, device=X0.device)
            P.scatter_(1, slots[ok], True)
            P[:, n] = False
            state["P"][good] = P
            state["xp"][good] = torch.where(P, F.pad(X0[ok], (0, 1)), torch.zeros_like(P, dtype=X0.dtype))
            state["x"] = self._x(state["xp"])

    def _grow(self, state):
        """One more slot for every row (zero row/column in H, slot index n): the passive sets
        have outgrown the slots. Starting small keeps H as large as the supports, not min(m, n)."""
        state["H"] = F.pad(state["H"], (0, 1, 0, 1))
        state["slots"] = F.pad(state["slots"], (0, 1), value=self.n)
        return state["H"], state["slots"]

    def _x(self, xp):
        """x = x̃ / c in the input dtype, from the padded normalised rows."""
        return (xp[:, : self.n] / self.c).to(self.dtype)

    # -- protocol ---------------------------------------------------------
    def _start(self, Y, X0):
        """The normalised feasible start c ⊙ x0 (APGD's point after ``warm_start`` steps if no x0), or None."""
        if X0 is None and self.warm_start > 0:
            from .nnls import APGD

            apgd = APGD(self.problem, momentum="nesterov", restart=True)
            st = apgd.init(Y, None)
            for it in range(1, self.warm_start + 1):
                apgd.step(st, it)
            X0 = st["x"]
        return None if X0 is None else (X0.to(torch.float64) * self.c).clamp(min=0)

    def init(self, Y, X0):
        B, n = Y.shape[0], self.n
        dev, dt = Y.device, torch.float64
        X0 = self._start(Y, X0)
        # slots: as many as the largest starting support (at least one), grown on demand up to k
        slots = 1 if X0 is None else min(self.k, max(1, int((X0 > 0).sum(1).max())))
        aty = F.pad(Y.to(dt) @ self.A, (0, 1))
        xp = torch.zeros(B, n + 1, dtype=dt, device=dev)
        state = {
            "x": self._x(xp),
            "xp": xp,
            "aty": aty,
            "thr": self.rtol * row_norm(Y.to(dt)),
            "H": torch.zeros(B, slots, slots, dtype=dt, device=dev),
            "slots": torch.full((B, slots), n, dtype=torch.long, device=dev),
            "P": torch.zeros(B, n + 1, dtype=torch.bool, device=dev),
            "blocked": torch.zeros(B, n + 1, dtype=torch.bool, device=dev),  # P ∪ skipped ∪ {n}
            "finished": torch.zeros(B, dtype=torch.bool, device=dev),
        }
        if X0 is not None:
            self._load_support(state, X0)
        state["blocked"] = state["P"].clone()
        state["blocked"][:, n] = True
        return state

    def _solve(self, state):
        """s = argmin_{s_P} ‖A_P s − y‖ (0 off P) via H, refined; also w = Aᵀy − AᵀA s."""
        H, slots, aty = state["H"], state["slots"], state["aty"]
        s_s = self._bmv(H, aty.gather(1, slots))
        s = self._scatter(s_s, slots)
        w = self._residual(aty, s)
        for _ in range(self.refine):
            s_s = s_s + self._bmv(H, w.gather(1, slots))
            s = self._scatter(s_s, slots)
            w = self._residual(aty, s)
        return s, w

    def step(self, state, k):
        xp, P, H, slots = state["xp"], state["P"], state["H"], state["slots"]
        finished, blocked = state["finished"], state["blocked"]
        B, n = xp.shape[0], self.n
        rows = torch.arange(B, device=xp.device)
        s, w = self._solve(state)

        # inner loop (remove) where the LS solution leaves the feasible set
        neg = P & (s <= 0)
        infeasible = neg.any(1) & ~finished
        ratio = (xp / (xp - s).clamp_min_(torch.finfo(xp.dtype).tiny)).masked_fill_(~neg, float("inf"))
        alpha, j_rm = ratio.min(1)
        x_in = torch.lerp(xp, s, alpha.clamp_(0, 1).unsqueeze(1)).clamp_(min=0)
        x_in.scatter_(1, j_rm.unsqueeze(1), 0.0)

        # outer loop (add) where it is feasible: x = s, then the most violating j ∉ P
        feasible = ~infeasible & ~finished
        w_j, j_add = w.masked_fill(blocked, -float("inf")).max(1)
        want = feasible & (w_j > state["thr"])
        if H.shape[1] < self.k and bool((want & ~(slots == n).any(1)).any()):
            H, slots = self._grow(state)
        empty = slots == n
        f_add = empty.to(torch.int8).argmax(1)
        want = want & empty.any(1)
        g = self.G_pad[slots, j_add.unsqueeze(1)]
        u = self._bmv(H, g)
        d = self.diag[j_add] - (g * u).sum(1)
        dependent = want & ~(d > self.dtol * self.diag[j_add])
        add = want & ~dependent

        # one rank-one update per row: add (v = u − e_f, c = 1/d) or remove (v = H[:, f], c = −1/H_ff)
        f_rm = (slots == j_rm.unsqueeze(1)).to(torch.int8).argmax(1)
        v_add = u.scatter_(1, f_add.unsqueeze(1), -1.0)
        v_rm = H[rows, :, f_rm]
        h_ff = v_rm.gather(1, f_rm.unsqueeze(1)).squeeze(1)
        c = torch.where(add, 1.0 / d, torch.where(infeasible, -1.0 / h_ff, torch.zeros_like(d)))
        c = torch.nan_to_num_(c, nan=0.0, posinf=0.0, neginf=0.0)
        v = torch.where(add.unsqueeze(1), v_add, v_rm)
        H.addcmul_((c.unsqueeze(1) * v).unsqueeze(2), v.unsqueeze(1))  # in place; faster than baddbmm_ for small k
        r_idx = infeasible.nonzero().squeeze(1)
        if len(r_idx):
            f = f_rm[r_idx]
            H[r_idx, f, :] = 0
            H[r_idx, :, f] = 0
            slots[r_idx, f] = n
            P[r_idx, j_rm[r_idx]] = False
            # P shrank: skipped (dependent) columns may be independent again
            blocked[r_idx] = P[r_idx]
            blocked[r_idx, n] = True
        a_idx = add.nonzero().squeeze(1)
        if len(a_idx):
            slots[a_idx, f_add[a_idx]] = j_add[a_idx]
            P[a_idx, j_add[a_idx]] = True
        d_idx = want.nonzero().squeeze(1)
        if len(d_idx):
            blocked[d_idx, j_add[d_idx]] = True

        xp = torch.where(feasible.unsqueeze(1), s.clamp_(min=0), torch.where(infeasible.unsqueeze(1), x_in, xp))
        state["xp"], state["x"] = xp, self._x(xp)
        state["finished"] = finished | (feasible & ~want)

    # -- the compiled route -------------------------------------------------
    @staticmethod
    def compiled(Y: torch.Tensor) -> bool:
        """Whether :meth:`run_compiled` can solve ``Y``: CPU data and a C compiler (``_compiled``)."""
        return Y.device.type == "cpu" and library() is not None

    def lh_rows(self, Y, start, max_iter: int, progress: bool = False):
        """LH in C (``_lh_source.c``: the same steps, one row after another, no per-step Python
        overhead) on every row of ``Y``, ``CHUNK`` rows per call, each to LH's own stop (``rtol``)
        or ``max_iter`` steps.

        Parameters
        ----------
        Y : tensor (batch, m)
            Measurements (CPU).
        start : tensor (batch, n) or None
            Normalised feasible starts c ⊙ x0 ≥ 0 (their supports are loaded as P), or None for P = ∅.
        max_iter : int
            LH steps (adds + removes) per row.

        Returns
        -------
        (x, steps)
            Answers (batch, n) in the operator's dtype and LH steps per row (batch,).
        """
        B, dt = Y.shape[0], torch.float64
        x = torch.empty(B, self.n, dtype=self.dtype)
        steps = torch.empty(B, dtype=torch.long)
        G = self.G_pad[: self.n, : self.n]
        chunks = range(0, B, CHUNK)
        for i in tqdm(chunks, desc=self.name, leave=False) if progress else chunks:
            Yr = Y[i : i + CHUNK].to(dt)
            s0 = torch.zeros(len(Yr), self.n, dtype=dt) if start is None else start[i : i + CHUNK]
            xr, st, _ = lh_gram(G, Yr @ self.A, self.rtol * row_norm(Yr), s0, max_iter, self.dtol)
            x[i : i + CHUNK], steps[i : i + CHUNK] = (xr / self.c).to(self.dtype), st
        return x, steps

    def run_compiled(
        self, Y, X0, *, tol: float, max_iter: int, history: str = "summary", progress: bool = False, kind=None
    ) -> Result:
        """Every row by :meth:`lh_rows` (``refine`` is always 1 there). Rows whose start is within
        ``tol`` keep it (0 steps); ``converged`` is the final certificate ≤ ``tol``;
        ``history``: the start and the end."""
        problem = self.problem
        t0 = time.perf_counter()
        start = self._start(Y, X0)
        if start is None:  # at x = 0: f = ½‖y‖², certificate max_j (Aᵀy)_j⁺ / c_j / ‖y‖ (problems.NNLS)
            x = torch.zeros(Y.shape[0], self.n, dtype=self.dtype)
            obj = 0.5 * Y.pow(2).sum(1)
            cert = ratio((problem.op.adjoint(Y) / self.c.to(self.dtype)).clamp(min=0).amax(1), row_norm(Y))
        else:
            x = (start / self.c).to(self.dtype)
            obj, cert = problem.objective(x, Y), problem.certificate(x, Y)
        hist = _History(history == "full")
        hist.record(0, 0.0, obj, cert, obj, cert)
        n_iter = torch.zeros(Y.shape[0], dtype=torch.long)
        todo = (cert > tol).nonzero().squeeze(1)
        if len(todo):
            todo = slice(None) if len(todo) == len(Y) else todo  # (all rows: views, not copies)
            x[todo], n_iter[todo] = self.lh_rows(Y[todo], None if start is None else start[todo], max_iter, progress)
            obj[todo], cert[todo] = problem.objective(x[todo], Y[todo]), problem.certificate(x[todo], Y[todo])
            hist.record(int(n_iter.max()), time.perf_counter() - t0, obj[todo], cert[todo], obj, cert)
        vector = bool(kind and kind.vector)
        return finish(x, n_iter, cert <= tol, obj, cert, hist.arrays(vector), problem.certified, kind)
